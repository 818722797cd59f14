"""
The exercise checker. You write your answers in a file of your own, never in the repository's files:

    python -m tutorial.check --init my_losses.py     # a starter: one stub per exercise, with its spec
    python -m tutorial.check 1 --impl my_losses.py   # check exercise 1 (or: all)
    python -m tutorial.check --list                  # the exercises and the chapter of each

A class at once (instructors; tutorial/README.md says what the checker guarantees):

    python -m tutorial.check all --impl submissions/ --report grades.csv    # a folder, or a glob: 'subs/*.py'
    python -m tutorial.check all --impl mine.py --report results.json     # the Gradescope autograder format

Each exercise is checked against the project's own function on inputs built to hit the edge cases (all-equal
groups, empty rows, ratios on both sides of the clip band, left padding); exercises 5 and 7 are also checked by
what they do to the classroom model (tutorial/lab.pt). The student's file runs in a child process with a time limit
per exercise (tutorial/sandbox.py); the references are computed here, where it cannot reach them. On a failure the
checker says what differed and, for the usual mistakes, a hint. Exit status 0 when every checked exercise passes,
1 otherwise, 2 for a bad command or a file that cannot be imported.
"""
import argparse
import collections
import csv
import glob
import inspect
import json
import os
import subprocess
import sys

import torch

from tutorial.compare import LAB, Mismatch
from tutorial.exercises import EXERCISE_OF, EXERCISES
from tutorial.sandbox import Student, StudentError

TIME_LIMIT = 20.0  # seconds of the student's code per exercise (the worked solutions need well under 1)


# Exercise 9 starts from working-looking code with one planted bug, not from a stub.
BUGGY = '''

def one_step_grpo_loss(logp, rewards, mask, G):
    """GRPO's loss for one optimizer step per batch: the policy that sampled is the one being trained, so the
    PPO ratio is 1. logp (N, T) = log P(y_t|x, y_<t) with a graph; rewards (N,); mask (N, T); G samples per prompt.
    EXERCISE 9: this function has one bug. Its loss value is right; find what is wrong and fix it."""
    adv = losses.group_advantages(rewards, G)                             # (N,)
    old_logp = logp                                                       # the policy that sampled: this one
    ratio = torch.exp(logp - old_logp)                                    # (N, T), 1 at this step
    per_token = torch.maximum(-adv[:, None] * ratio, -adv[:, None] * ratio.clamp(0.8, 1.2))
    return losses.aggregate(per_token, mask)
'''

# What a starter's spec says where the project's docstring says more than the exercise checks.
SPEC = {"ppo_clip_loss": ("Stats count", "Returns (loss, stats): the checker checks the loss and its gradient; stats "
                                         "may be {} (the project's version counts the clipped tokens).")}


def spec(name, ref):
    doc = inspect.getdoc(ref).replace('"""', "'''")
    if name in SPEC:
        cut, instead = SPEC[name]
        doc = doc[:doc.index(cut)].rstrip() + "\n" + instead
    return doc


def starter():
    """The text of a starter file: the reference signatures and specs, bodies to write."""
    out = ['"""My answers to the prerl exercises. Check them with: python -m tutorial.check all --impl THIS_FILE\n'
           'You may use the project\'s own functions (losses, model, reward) where an exercise builds on another."""',
           "import math", "", "import torch", "from torch.nn import functional as F", "", "import losses",
           "from reward import BOS_ID, PAD_ID, step_is_wrong", ""]
    for n, (title, chapter, names, refs, _) in EXERCISES.items():
        for name, ref in zip(names, refs):
            doc = "\n    ".join(spec(name, ref).splitlines())
            out += ["", f"def {name}{inspect.signature(ref)}:",
                    f'    """EXERCISE {n} ({title}; tutorial/{chapter}).\n    {doc}"""',
                    f'    raise NotImplementedError("exercise {n}")', ""]
    return "\n".join(out) + BUGGY


def explain(e):
    """(message, hint) of a StudentError."""
    if e.kind == "stub" and e.function in EXERCISE_OF and not str(e).startswith(e.function):
        k = EXERCISE_OF[e.function]
        return f"{e} (exercise {k})", f"exercise {k} comes first: this one builds on it"
    if e.kind == "timeout":
        return str(e), "look for a loop whose condition never changes, or work that grows with a huge input"
    return str(e), ""


def grade(path, numbers, seconds=TIME_LIMIT):
    """Check exercises `numbers` of the student's file at `path`: [(number, passed, message, hint, printed)]. An
    import that fails gives every exercise the same FAIL ('import' in the message)."""
    st, results = Student(path), []
    try:
        for n in numbers:
            title, chapter, names, _, check = EXERCISES[n]
            printed = len(st.printed())
            try:
                st.start_exercise(seconds)
                missing = [f for f in names if f not in st.has(names)]
                if missing:
                    raise Mismatch(f"your file has no function {', '.join(missing)}",
                                   "python -m tutorial.check --init NEWFILE writes every stub")
                torch.manual_seed(0)
                results.append((n, True, check(st), "", st.printed()[printed:]))
            except Mismatch as e:
                results.append((n, False, str(e), e.hint, st.printed()[printed:]))
            except StudentError as e:
                results.append((n, False, *explain(e), st.printed()[printed:]))
    finally:
        st.close()
    return results


def print_results(results, out=sys.stdout):
    for n, passed, message, hint, printed in results:
        title, chapter = EXERCISES[n][:2]
        print(f"exercise {n} ({title}): {'PASS' if passed else 'FAIL'} - {message}", file=out)
        if hint:
            print(f"  hint: {hint}", file=out)
        if not passed:
            print(f"  (read tutorial/{chapter})", file=out)
        if printed.strip():
            lines = printed.strip().splitlines()
            print(f"  your code printed {len(lines)} line(s) (the checker ignores them):", file=out)
            for line in lines[-5:]:
                print(f"  | {line}", file=out)


def gradescope(results):
    """One submission's results in the Gradescope autograder format (results.json)."""
    tests = [{"name": f"exercise {n}: {EXERCISES[n][0]}", "score": float(passed), "max_score": 1.0,
              "status": "passed" if passed else "failed", "output": message + (f"\nhint: {hint}" if hint else "")}
             for n, passed, message, hint, _ in results]
    return {"score": sum(t["score"] for t in tests), "tests": tests}


# -----------------------------------------------------------------------------
# class mode: many files, one process each

def submissions(spec):
    """The .py files of a folder, or the files a glob matches, sorted."""
    if os.path.isdir(spec):
        files = glob.glob(os.path.join(spec, "*.py"))
    else:
        files = glob.glob(spec)
    return sorted(f for f in files if os.path.isfile(f))


def grade_in_processes(files, numbers, seconds, workers):
    """grade() of every file, the files split over `workers` fresh interpreters that each grade their share one
    file after another (each file's code in its own child, as always): one file breaks only its own rows, and the
    project is imported once per worker. Yields (file, results) as files finish."""
    import queue
    import threading
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = queue.Queue()

    def worker(share):
        cmd = [sys.executable, "-m", "tutorial.check", ",".join(map(str, numbers)), "--impl", *share,
               "--timeout", str(seconds), "--json-lines"]
        got = set()
        try:
            p = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for line in p.stdout:
                if line.startswith("{"):
                    row = json.loads(line)
                    got.add(row["file"])
                    done.put((row["file"], [tuple(r) for r in row["results"]]))
            why = (p.stderr.read().strip().splitlines() or [f"the checker's process ended ({p.wait()})"])[-1]
        except Exception as e:
            why = f"the checker's process failed: {e}"
        for f in share:
            if f not in got:
                done.put((f, [(n, False, why, "", "") for n in numbers]))

    shares = [files[i::workers] for i in range(workers) if files[i::workers]]
    for share in shares:
        threading.Thread(target=worker, args=(share,), daemon=True).start()
    for _ in files:
        yield done.get()


def grade_class(files, numbers, seconds, report, workers):
    from tqdm import tqdm
    graded = dict(tqdm(grade_in_processes(files, numbers, seconds, workers), total=len(files), desc="grading",
                       unit="file"))
    rows = {f: graded[f] for f in files}
    if report.endswith(".json"):
        with open(report, "w") as f:
            json.dump({os.path.basename(k): gradescope(r) for k, r in rows.items()}, f, indent=1)
    else:
        with open(report, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["student", "exercise", "title", "passed", "message", "hint"])
            for path, results in rows.items():
                for n, passed, message, hint, _ in results:
                    w.writerow([os.path.basename(path), n, EXERCISES[n][0], int(passed), message, hint])
    print(f"{len(files)} files graded -> {report}")
    for n in numbers:
        res = [r for results in rows.values() for r in results if r[0] == n]
        hints = collections.Counter(r[3] or r[2] for r in res if not r[1])
        common = f"; most common: {hints.most_common(1)[0][0][:100]!r} ({hints.most_common(1)[0][1]})" if hints else ""
        print(f"exercise {n} ({EXERCISES[n][0]}): {sum(r[1] for r in res)}/{len(res)} passed{common}")
    return all(r[1] for results in rows.values() for r in results)


def make_lab_model():
    """Pre-train the classroom model (lab preset, pre-training seed 1) and keep its weights in tutorial/lab.pt."""
    import model as M
    import train as T
    out = os.path.join("out", "lab-seed1")
    path, m, _ = T.pretrain(T.pretrain_config("lab", seed=1), out, "cpu", resume=True)
    ck = M.load_checkpoint(path)
    M.save_checkpoint(LAB, {"model": ck["model"], "config": ck["config"], "preset": "lab", "seed": 1,
                            "pretrain_minutes": m["pretrain_minutes"], "base_eval": m})
    print(f"wrote {LAB}: held-out pass@1 {m['pass@1']:.3f}, pass@8 {m['pass@8']:.3f}, "
          f"pre-training {m['pretrain_minutes']:.1f} min")


def exercise_numbers(text):
    """'all', '3' or '1,4,5' -> [numbers]; None if not one of those."""
    if text == "all":
        return list(EXERCISES)
    parts = text.split(",")
    if all(p.isdigit() and int(p) in EXERCISES for p in parts):
        return [int(p) for p in parts]
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exercise", nargs="?", help="an exercise number (1-10), several (1,4,5) or 'all'")
    ap.add_argument("--impl", nargs="+", help="your file with the functions to check; a folder, a glob or several "
                    "files grade each file (class mode)")
    ap.add_argument("--report", help="class mode: write grades.csv (one row per file and exercise) or results.json "
                    "(Gradescope)")
    ap.add_argument("--timeout", type=float, default=TIME_LIMIT, help="seconds per exercise for the student's code")
    ap.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                    help="files graded at once in class mode")
    ap.add_argument("--json-lines", action="store_true", help=argparse.SUPPRESS)  # class mode's worker output
    ap.add_argument("--init", metavar="PATH", help="write a starter file with every stub to PATH and exit")
    ap.add_argument("--list", action="store_true", help="list the exercises and exit")
    ap.add_argument("--make-lab-model", action="store_true", help="pre-train the classroom model -> tutorial/lab.pt")
    a = ap.parse_args(argv)
    if a.list:
        for n, (title, chapter, names, _, _) in EXERCISES.items():
            print(f"{n}. {title:40s} {', '.join(names):45s} tutorial/{chapter}")
        return 0
    if a.make_lab_model:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        make_lab_model()
        return 0
    if a.init:
        if os.path.exists(a.init):
            print(f"error: {a.init} exists; not overwriting your work", file=sys.stderr)
            return 2
        with open(a.init, "w") as f:
            f.write(starter())
        print(f"wrote {a.init}: fill in the stubs, then: python -m tutorial.check 1 --impl {a.init}")
        return 0
    if a.exercise is None or a.impl is None:
        print("error: give an exercise number (or 'all') and --impl YOUR_FILE (see --help)", file=sys.stderr)
        return 2
    numbers = exercise_numbers(a.exercise)
    if numbers is None:
        print(f"error: unknown exercise {a.exercise!r}: choose 1-{len(EXERCISES)}, a list like 1,4,5 or 'all'",
              file=sys.stderr)
        return 2
    if not a.timeout > 0 or a.workers < 1:
        print(f"error: --timeout and --workers must be positive, got {a.timeout} and {a.workers}", file=sys.stderr)
        return 2
    if a.report and not a.report.endswith((".csv", ".json")):
        print(f"error: --report {a.report!r}: name a .csv or a .json file", file=sys.stderr)
        return 2
    if a.json_lines:  # class mode's worker: one line per file
        for path in a.impl:
            print(json.dumps({"file": path, "results": [(n, ok, m, h, p[-2000:])
                                                         for n, ok, m, h, p in grade(path, numbers, a.timeout)]}),
                  flush=True)
        return 0
    impl = a.impl[0]
    many = len(a.impl) > 1 or os.path.isdir(impl) or any(ch in impl for ch in "*?[")
    if many or (a.report and a.report.endswith(".csv")):
        files = sorted({f for spec in a.impl for f in (submissions(spec) if os.path.isdir(spec) or any(
            ch in spec for ch in "*?[") else [spec] * os.path.isfile(spec))})
        if not files:
            print(f"error: no .py files in {' '.join(a.impl)}", file=sys.stderr)
            return 2
        return 0 if grade_class(files, numbers, a.timeout, a.report or "grades.csv", a.workers) else 1
    if not os.path.isfile(impl):
        print(f"error: no such file: {impl} (make one with: python -m tutorial.check --init {impl})",
              file=sys.stderr)
        return 2
    results = grade(impl, numbers, a.timeout)
    if a.report:
        with open(a.report, "w") as f:
            json.dump(gradescope(results), f, indent=1)
    if results and all("cannot import" in r[2] for r in results):
        print(f"error: {results[0][2]}", file=sys.stderr)
        return 2
    print_results(results)
    return 0 if all(r[1] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
