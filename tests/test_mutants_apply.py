"""tests/mutants.py must stay in step with the code: every mutant's text is still in its file exactly once."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("mutants", ROOT / "tests" / "mutants.py")
mutants = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mutants)


def test_every_mutant_still_applies_to_the_code():
    stale = []
    for name, file, edits, what, _ in mutants.MUTANTS:
        text = (ROOT / file).read_text()
        stale += [f"{name} ({file}): {old[:60]!r} occurs {text.count(old)} times" for old, _ in edits
                  if text.count(old) != 1]
    assert not stale, "update tests/mutants.py: " + "; ".join(stale)


def test_mutant_names_are_unique_and_enough():
    names = [m[0] for m in mutants.MUTANTS]
    assert len(names) == len(set(names)) and len(names) >= 40
