"""The command lines on bad input: train.py, dsrl.py, sample.py, python -m experiments.suite / mechanisms / bench /
bases and python -m tutorial.check each exit with status 2 and an `error: ...` line naming what was wrong (the one
line on stderr; bench and bases: after argparse's usage block), never a traceback; and sample.py on a problems file
of one's own."""
import json
import os
import shutil
from dataclasses import asdict
from types import SimpleNamespace

import pytest

import model as M
from conftest import ROOT, one_line_error, run

SOLUTIONS = str(ROOT / "tutorial" / "solutions" / "my_losses.py")
T = ["--preset", "tiny"]

# (command, arguments, what the error line must name). {d} is a folder of prepared files (the `files` fixture):
# tiny.pt a tiny checkpoint, bad.pt not a checkpoint, mismatch.pt weights that do not fit its config, other.pt a
# checkpoint of another model size, p-*.jsonl problem files, broken.py a syntax error, mine.py a student's file.
BAD = [
    ("train.py", ["--preset", "huge"], ["unknown preset 'huge'"]),
    ("train.py", [*T, "--ckpt-every", "10"], ["--ckpt-every 10", "multiple of 16"]),
    ("train.py", [*T, "--micro-batch", "0"], ["--micro-batch 0"]),
    ("dsrl.py", [*T, "--steps", "0"], ["--steps must be positive"]),
    ("dsrl.py", [*T, "--objective", "magic"], ["unknown objective 'magic'"]),
    ("dsrl.py", [*T, "--eval-samples", "0"], ["--eval-samples"]),
    ("dsrl.py", [*T, "--steps", "3", "--warmup-steps", "4"], ["--warmup-steps 4", "3 RL steps"]),
    ("dsrl.py", [*T, "--objective", "nsr-prerl", "--alone", "--group", "1"], ["--group 1", "nsr-prerl"]),
    ("dsrl.py", [*T, "--objective", "psr", "--group", "1"], ["--group 1", "grpo"]),  # GRPO runs beside it
    ("dsrl.py", [*T, "--objective", "w-reinforce", "--alone", "--group", "-1"], ["must be positive", "-1"]),
    ("dsrl.py", [*T, "--objective", "grpo", "--temperature", "0"], ["--temperature"]),
    ("dsrl.py", [*T, "--objective", "psr", "--alone", "--group", "0"], ["must be positive", "0"]),
    ("dsrl.py", [*T, "--objective", "grpo", "--kl-coef", "-0.1"], ["--kl-coef", "-0.1"]),
    ("dsrl.py", [*T, "--objective", "grpo", "--eps-high", "-0.2"], ["--eps-high", "-0.2"]),
    ("dsrl.py", [*T, "--objective", "grpo", "--micro-batch", "6"], ["--micro-batch 6", "group size 4"]),
    ("dsrl.py", [*T, "--other-space-every", "-1"], ["--other-space-every"]),
    ("dsrl.py", [*T, "--objective", "grpo", "--init", "{d}/missing.pt", "--out", "{d}/out"], ["missing.pt"]),
    ("dsrl.py", [*T, "--objective", "grpo", "--init", "{d}/other.pt", "--out", "{d}/out"], ["not the tiny preset"]),
    ("sample.py", [], ["--ckpt is required"]),
    ("sample.py", ["--ckpt", "{d}/nope.pt"], ["not found", "nope.pt"]),
    ("sample.py", ["--ckpt", "{d}/bad.pt"], ["bad.pt", "corrupt or not a prerl checkpoint"]),
    ("sample.py", ["--ckpt", "{d}/mismatch.pt"], ["do not fit"]),
    ("sample.py", ["--ckpt", "{d}/tiny.pt", "-n", "0"], ["-n 0"]),
    ("sample.py", ["--ckpt", "{d}/tiny.pt", "--problems", "{d}/p-no-question.jsonl"], [":2:", "question"]),
    ("sample.py", ["--ckpt", "{d}/tiny.pt", "--problems", "{d}/p-not-json.jsonl"], [":3:", "JSON"]),
    ("sample.py", ["--ckpt", "{d}/tiny.pt", "--problems", "{d}/p-parentheses.jsonl"], [":1:", "1+(2*3)"]),
    ("sample.py", ["--ckpt", "{d}/tiny.pt", "--problems", "{d}/p-answer-text.jsonl"], [":1:", "integer"]),
    ("sample.py", ["--ckpt", "{d}/tiny.pt", "--problems", "{d}/p-missing.jsonl"], ["cannot read", "p-missing"]),
    ("-m experiments.suite", [*T, "--seeds", "0"], ["--seeds"]),
    ("-m experiments.mechanisms", [*T, "--workers", "0"], ["--workers"]),
    ("-m experiments.bench", ["--preset", "huge"], ["unknown preset 'huge'"]),
    ("-m experiments.bench", ["--tokens-vs", "{d}"], ["not a checkout"]),
    ("-m experiments.bases", ["--preset", "tiny", "--seeds", "0"], ["--seeds", "must be positive"]),
    ("-m experiments.peers", ["--steps", "0"], ["--steps", "must be positive"]),
    ("-m tutorial.check", ["12", "--impl", SOLUTIONS], ["unknown exercise"]),
    ("-m tutorial.check", ["1", "--impl", "nope.py"], ["nope.py"]),
    ("-m tutorial.check", ["1"], ["--impl"]),
    ("-m tutorial.check", ["1", "--impl", "{d}/broken.py"], ["SyntaxError"]),
    ("-m tutorial.check", ["1", "--impl", SOLUTIONS, "--report", "grades.txt"], ["grades.txt", ".csv"]),
    ("-m tutorial.check", ["1", "--impl", SOLUTIONS, "--timeout", "0"], ["--timeout"]),
    ("-m tutorial.check", ["1,12", "--impl", SOLUTIONS], ["1,12"]),
    ("-m tutorial.check", ["--init", "{d}/mine.py"], ["mine.py", "not overwriting"]),  # never a student's work
]
IDS = [f"{cmd.removeprefix('-m ')} {' '.join(a.replace('{d}/', '') for a in args)}".strip() for cmd, args, _ in BAD]


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_base):
    d = tmp_path_factory.mktemp("cli")
    shutil.copy(tiny_base, d / "tiny.pt")
    (d / "bad.pt").write_bytes(b"not a checkpoint")
    small = M.GPT(M.GPTConfig(n_layer=1, n_head=2, n_embd=16))
    M.save_checkpoint(d / "other.pt", {"model": small.state_dict(), "config": asdict(small.config)})
    M.save_checkpoint(d / "mismatch.pt", {"model": small.state_dict(), "config": asdict(M.PRESETS["tiny"])})
    for name, lines in (("no-question", ['{"question": "1+2"}', '{"q": "1+2"}']),
                        ("not-json", ['{"question": "1+2"}', "", "not json"]),
                        ("parentheses", ['{"question": "1+(2*3)"}']),
                        ("answer-text", ['{"question": "1+2", "answer": "3"}'])):
        (d / f"p-{name}.jsonl").write_text("\n".join(lines))
    (d / "broken.py").write_text("def group_advantages(:\n")
    (d / "mine.py").write_text("# my answers\n")
    return {"d": str(d)}


# The rows run as processes of their own, each forked from one process that has imported torch and the project
# once (a fresh interpreter spends a second or two importing them, and half a second tearing them down): each
# child sets sys.argv, runs the script or module as __main__ and ends as the interpreter would end
# `python train.py ...`: the status of sys.exit, or the traceback of an exception and status 1.
FORKER = r"""
import json, os, runpy, signal, sys, time, traceback
import torch, reward, model, sample, losses, train, dsrl  # the imports every command starts with
rows, timeout, out = json.loads(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ends = []
for i, (command, args) in enumerate(rows):
    pid = os.fork()
    if pid == 0:  # the row's process: stderr to a file, stdout discarded
        os.dup2(os.open(f"{out}.{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        code = 0
        try:
            if command.startswith("-m "):
                sys.argv = [command[3:], *args]
                runpy.run_module(command[3:], run_name="__main__", alter_sys=True)
            else:
                sys.argv = [command, *args]
                runpy.run_path(command, run_name="__main__")
        except SystemExit as e:
            code = e.code if e.code is None or isinstance(e.code, int) else print(e.code, file=sys.stderr) or 1
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    deadline = time.time() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            ends.append(os.waitstatus_to_exitcode(status))
            break
        if time.time() > deadline:  # a row that ran on instead of failing: killed, status -9
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            ends.append(-9)
            break
        time.sleep(0.01)
with open(out, "w") as f:
    json.dump(ends, f)
"""


@pytest.fixture(scope="module")
def processes(files, tmp_path_factory):
    """Every row's process (returncode, stderr), forked one after the other from FORKER."""
    out = tmp_path_factory.mktemp("forker") / "ends.json"
    rows = [(command, [a.format(**files) for a in args]) for command, args, _ in BAD]
    one_thread = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # numpy's BLAS starts no thread to fork past
    p = run("-c", FORKER, json.dumps(rows), "120", str(out), env=one_thread)
    assert p.returncode == 0 and p.stderr == "", p.stderr[-2000:]  # and importing printed nothing
    ends = json.loads(out.read_text())
    return [SimpleNamespace(returncode=code, stderr=open(f"{out}.{i}").read()) for i, code in enumerate(ends)]


@pytest.mark.parametrize("i", range(len(BAD)), ids=IDS)
def test_bad_input_exits_2_with_one_error_line(processes, i):
    command, _, needles = BAD[i]
    one_line_error(processes[i], *needles)


def test_bad_input_leaves_the_students_file_alone(processes, files):
    with open(os.path.join(files["d"], "mine.py")) as f:
        assert f.read() == "# my answers\n"


def test_sample_cli_on_own_problems(tmp_path, tiny_base):
    f = tmp_path / "p.jsonl"
    f.write_text('{"question": "94+3+2-72"}\n{"question": "7+5*3", "answer": 22}\n')
    p = run("sample.py", "--ckpt", str(tiny_base), "--problems", str(f), "-n", "4", "--max-new-tokens", "8")
    assert p.returncode == 0, p.stderr
    assert "2 problems x 4 samples" in p.stdout and "pass@4" in p.stdout and "7+5*3" in p.stdout
