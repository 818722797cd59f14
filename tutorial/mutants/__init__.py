"""Known wrong answers, one per file: the worked solutions with one typical mistake each. EXERCISE names the exercise
the mistake breaks and HINT a phrase the checker's hint for it must contain (tests/test_tutorial.py checks both)."""
