# Makes the repository root importable for the tests (pytest puts this folder on sys.path).
