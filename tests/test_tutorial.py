"""The exercises cannot rot and the checker cannot be fooled: the worked solutions and the right alternatives pass
every exercise, untouched stubs fail cleanly, every known wrong answer in tutorial/mutants/ fails its exercise with
its hint and passes the others, a file that patches the project, exits, prints PASS lines or loops fails with a
one-line reason, class mode writes one row per file and exercise, and the tutorial's commands run as written.
(The checker's bad commands: test_cli.py.)"""
import csv
import importlib
import inspect
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tutorial import check
from tutorial.check import starter
from tutorial.exercises import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "tutorial" / "solutions" / "my_losses.py"
MUTANTS = sorted(p for p in (ROOT / "tutorial" / "mutants").glob("*.py") if p.name != "__init__.py")
RIGHT = sorted(p for p in (ROOT / "tutorial" / "alternatives").glob("*.py") if p.name != "__init__.py")


def checker(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "tutorial.check", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def exercise_and_hint(path):
    """A mutant file's EXERCISE and HINT, read from its text (never imported: the checker's process stays clean)."""
    m = re.search(r"^EXERCISE, HINT = (\d+), (['\"])(.*)\2$", path.read_text(), re.M)
    return int(m.group(1)), m.group(3)


def test_solutions_pass_every_exercise_within_a_minute():
    t0 = time.time()
    p = checker("all", "--impl", str(SOLUTIONS))
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count(": PASS") == len(EXERCISES)
    assert time.time() - t0 < 60 * 3  # the target is 60 s on 2 idle cores; 3x slack for load


@pytest.mark.parametrize("path", RIGHT, ids=lambda p: p.stem)
def test_right_answers_written_differently_pass(path):
    results = check.grade(str(path), list(EXERCISES))
    assert all(r[1] for r in results), [r[:4] for r in results if not r[1]]


def test_untouched_stubs_fail_cleanly(tmp_path):
    p = checker("--init", str(tmp_path / "mine.py"))
    assert p.returncode == 0 and (tmp_path / "mine.py").exists()
    p = checker("all", "--impl", str(tmp_path / "mine.py"))
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr
    assert p.stdout.count(": FAIL") == len(EXERCISES)
    assert p.stdout.count("is not implemented yet") == len(EXERCISES) - 1  # 9: buggy code, not a stub
    assert "no gradient reaches logp" in p.stdout


def test_a_stub_that_another_exercise_calls_is_named_with_its_exercise(tmp_path):
    """ppo_clip_loss written, aggregate (exercise 2) still a stub: exercise 4 names aggregate and exercise 2."""
    src = SOLUTIONS.read_text().replace("    m = mask.float()\n    if mode == \"token-mean\":",
                                        "    raise NotImplementedError('exercise 2')\n    m = mask.float()\n"
                                        "    if mode == \"token-mean\":", 1)
    (tmp_path / "mine.py").write_text(src)
    (n, passed, message, hint, _), = check.grade(str(tmp_path / "mine.py"), [4])
    assert not passed and "ppo_clip_loss calls your aggregate" in message and "exercise 2" in message, message


@pytest.mark.parametrize("path", MUTANTS, ids=lambda p: p.stem)
def test_each_known_wrong_answer_fails_its_exercise_with_its_hint(path):
    exercise, hint = exercise_and_hint(path)
    others = [n for n in EXERCISES if n != exercise and n not in (5, 7)]  # 5 and 7 also run the classroom model:
    results = {r[0]: r for r in check.grade(str(path), [exercise, *others])}  # test_wrong_answers_pass_5_and_7
    n, passed, message, got_hint, _ = results[exercise]
    assert not passed and hint in got_hint, (message, got_hint)
    assert all(results[n][1] for n in others), [results[n][:3] for n in others if not results[n][1]]


@pytest.mark.slow
def test_wrong_answers_pass_5_and_7_unless_they_are_theirs():
    for path in MUTANTS:
        exercise, _ = exercise_and_hint(path)
        rest = [n for n in (5, 7) if n != exercise]
        assert all(r[1] for r in check.grade(str(path), rest)), path.name


def test_every_exercise_has_known_wrong_answers():
    covered = [exercise_and_hint(p)[0] for p in MUTANTS]
    assert all(covered.count(n) >= 2 for n in EXERCISES), covered


def test_stub_signatures_equal_the_reference_signatures(tmp_path):
    (tmp_path / "mine.py").write_text(starter())
    spec = importlib.util.spec_from_file_location("stub", tmp_path / "mine.py")
    stub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stub)
    sol = importlib.import_module("tutorial.solutions.my_losses")
    for n, (_, _, names, refs, _) in EXERCISES.items():
        for name, ref in zip(names, refs):
            assert inspect.signature(getattr(stub, name)) == inspect.signature(ref), name
        for name in names:
            assert inspect.signature(getattr(sol, name)) == inspect.signature(getattr(stub, name)), name


def test_a_crash_in_the_students_code_names_its_line(tmp_path):
    (tmp_path / "crash.py").write_text("def pass_at_k(n, c, k):\n    x = 1\n    return x / 0\n")
    p = checker("8", "--impl", str(tmp_path / "crash.py"))
    assert p.returncode == 1 and "ZeroDivisionError at line 3 of crash.py" in p.stdout and "Traceback" not in p.stdout


# --- integrity: what a student's file may try -----------------------------------------------------------------

CHEATS = {
    # makes the project's own function agree with a wrong answer, in the process that imports the file
    "patches.py": "import losses\nfrom tutorial.solutions.my_losses import *\n"
                  "def group_advantages(rewards, G, normalize_std=True, eps=1e-6):\n"
                  "    return rewards.float() * 0\nlosses.group_advantages = group_advantages\n",
    # prints a PASS line and ends the process while being imported
    "exits.py": "import sys\nprint('exercise 1 (group advantages): PASS - all good')\nsys.exit(0)\n",
    "hard_exit.py": "import os\nprint('exercise 8 (the unbiased pass@k estimator): PASS')\nos._exit(0)\n",
    # loops in one function, or while being imported
    "loops.py": "from tutorial.solutions.my_losses import *\ndef pass_at_k(n, c, k):\n    while True:\n        pass\n",
    "loops_on_import.py": "while True:\n    pass\n",
    # writes garbage to every file descriptor it can find, then answers
    "scribbles.py": "import os\nfrom tutorial.solutions.my_losses import *\nfor fd in range(3, 20):\n"
                    "    try:\n        os.write(fd, b'\\x00' * 64)\n    except OSError:\n        pass\n",
}


@pytest.fixture
def cheats(tmp_path):
    for name, text in CHEATS.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_a_file_that_patches_the_project_fails(cheats):
    (n, passed, message, _, _), = check.grade(str(cheats / "patches.py"), [1])
    assert not passed and "differs" in message


@pytest.mark.parametrize("name", ["exits.py", "hard_exit.py"])
def test_a_file_that_exits_or_prints_pass_fails_and_its_lines_are_marked(cheats, name):
    p = checker("1,8", "--impl", str(cheats / name), timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    assert not re.search(r"^exercise \d.*PASS", p.stdout, re.M), p.stdout
    assert p.stdout.count(": FAIL") == 2 and "ended the checker's process" in p.stdout


def test_a_loop_fails_within_the_time_limit(cheats):
    t0 = time.time()
    results = check.grade(str(cheats / "loops.py"), [8, 1], seconds=2)
    assert time.time() - t0 < 30
    assert not results[0][1] and "no answer within 2 s" in results[0][2]
    assert results[1][1]  # the next exercise runs in a fresh child
    t0 = time.time()
    results = check.grade(str(cheats / "loops_on_import.py"), [1, 2, 8], seconds=2)
    assert time.time() - t0 < 15 and not any(r[1] for r in results)  # one time limit, not one per exercise
    assert all("importing your file" in r[2] for r in results)


def test_a_file_that_scribbles_on_the_pipes_fails_cleanly(cheats):
    results = check.grade(str(cheats / "scribbles.py"), [1, 8], seconds=5)
    assert not any(r[1] for r in results) and all("reply" in r[2] for r in results), results


# --- class mode ------------------------------------------------------------------------------------------------

def test_class_mode_grades_every_file_and_writes_csv_and_gradescope(cheats, tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    for src in (SOLUTIONS, ROOT / "tutorial" / "mutants" / "population_std.py", cheats / "exits.py",
                cheats / "loops.py"):
        (subs / src.name).write_text(src.read_text())
    p = checker("1,8", "--impl", str(subs), "--report", str(tmp_path / "grades.csv"), "--timeout", "3")
    assert p.returncode == 1, p.stdout + p.stderr
    rows = list(csv.DictReader(open(tmp_path / "grades.csv")))
    assert len(rows) == 4 * 2
    passed = {(r["student"], int(r["exercise"])): r["passed"] == "1" for r in rows}
    assert passed == {("my_losses.py", 1): True, ("my_losses.py", 8): True, ("population_std.py", 1): False,
                      ("population_std.py", 8): True, ("exits.py", 1): False, ("exits.py", 8): False,
                      ("loops.py", 1): True, ("loops.py", 8): False}
    assert "exercise 1 (group advantages): 2/4 passed" in p.stdout
    p = checker("all", "--impl", str(SOLUTIONS), "--report", str(tmp_path / "results.json"))
    res = json.load(open(tmp_path / "results.json"))
    assert p.returncode == 0 and res["score"] == len(EXERCISES) == len(res["tests"])
    assert all(t["status"] == "passed" and t["max_score"] == 1 for t in res["tests"])


# --- the chapters ----------------------------------------------------------------------------------------------

def test_quick_commands_in_the_chapters_run_as_written():
    """Every `python -c` / `python -m tutorial.check --list` line of the chapters runs (the minute-plus RL commands
    are exercised by test_dsrl.py on the tiny preset)."""
    import shlex
    lines = [line.strip() for md in sorted((ROOT / "tutorial").glob("*.md")) for line in md.read_text().splitlines()
             if line.strip().startswith(("python -c", "python -m tutorial.check --list"))]
    assert any(line.startswith("python -c") for line in lines)
    for line in lines:
        p = subprocess.run([sys.executable, *shlex.split(line)[1:]], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0 and p.stdout.strip(), (line, p.stderr[-500:])


def test_chapters_link_to_files_that_exist():
    for md in (ROOT / "tutorial").glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)", md.read_text()):
            if not target.startswith("http"):
                assert (md.parent / target).exists(), f"{md.name} links to missing {target}"
