"""Resume after kill -9, safe checkpoints, clear errors, guarded updates, a fuzzed verifier (issue 5)."""
import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import model as M
import reward as R
import train as T

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args, env=None, timeout=900):  # generous: a loaded 2-core machine runs 10x slower
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=e)


def one_line_error(p, needle):
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], p.stderr


def weights(path):
    return M.load_checkpoint(str(path))["model"]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def weight_diff(a, b):
    """'' when equal, else which tensors differ and by how much (so a failure explains itself)."""
    if a.keys() != b.keys():
        return f"different tensor names: {sorted(set(a) ^ set(b))}"
    bad = [f"{k} (max |diff| {float((a[k] - b[k]).abs().max()):.3g})" for k in a if not torch.equal(a[k], b[k])]
    return f"{len(bad)} of {len(a)} tensors differ: " + ", ".join(bad[:5]) if bad else ""


def strip_times(path):
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("t_")} for line in open(path)]


def log_diff(a, b):
    """'' when two logs (lists of dicts) are equal, else the first differing line and keys."""
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} log lines"
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            keys = sorted(k for k in x.keys() | y.keys() if x.get(k) != y.get(k))
            return f"log line {i + 1} differs in {keys}: " + "; ".join(f"{k}: {x.get(k)} vs {y.get(k)}" for k in keys[:4])
    return ""


def test_rl_kill_9_then_resume_gives_identical_result(tiny_base, tmp_path):
    common = ["--preset", "tiny", "--objective", "dsrl", "--steps", "6", "--warmup-steps", "2", "--ckpt-every", "2",
              "--init", str(tiny_base)]
    p = run("train.py", *common, "--out", str(tmp_path / "a"))
    assert p.returncode == 0, p.stderr[-1500:]
    p = run("train.py", *common, "--out", str(tmp_path / "b"), env={"PRERL_TEST_KILL_AT_STEP": "4"})
    assert p.returncode == -signal.SIGKILL
    assert M.load_checkpoint(str(tmp_path / "b/tiny/dsrl.pt"))["step"] == 4
    p = run("train.py", *common, "--out", str(tmp_path / "b"), "--resume")
    assert p.returncode == 0, p.stderr[-1500:]
    # on failure, say which tensor or which log line differed (and how), with both runs' stderr
    why = weight_diff(weights(tmp_path / "a/tiny/dsrl.pt"), weights(tmp_path / "b/tiny/dsrl.pt"))
    why = why or log_diff(strip_times(tmp_path / "a/tiny/dsrl.jsonl"), strip_times(tmp_path / "b/tiny/dsrl.jsonl"))
    assert not why, why
    ck = M.load_checkpoint(str(tmp_path / "b/tiny/dsrl.pt"))
    assert ck["done"] and ck["phase"] == "grpo" and set(ck["rng"]) == {"python", "torch", "sampler"}


def test_pretrain_kill_9_then_resume_gives_identical_weights(tmp_path):
    common = ["--preset", "tiny", "--steps", "64", "--ckpt-every", "32"]
    assert run("train.py", *common, "--out", str(tmp_path / "a")).returncode == 0
    p = run("train.py", *common, "--out", str(tmp_path / "b"), env={"PRERL_TEST_KILL_AT_STEP": "32"})
    assert p.returncode == -signal.SIGKILL and not M.load_checkpoint(str(tmp_path / "b/tiny/base.pt"))["done"]
    assert run("train.py", *common, "--out", str(tmp_path / "b"), "--resume").returncode == 0
    assert same_weights(weights(tmp_path / "a/tiny/base.pt"), weights(tmp_path / "b/tiny/base.pt"))


def test_resume_refuses_other_settings(tiny_base, tmp_path):
    args = ["--preset", "tiny", "--objective", "grpo", "--steps", "2", "--init", str(tiny_base), "--out", str(tmp_path)]
    assert run("train.py", *args).returncode == 0
    p = run("train.py", *args[:-2], "--out", str(tmp_path), "--lr", "0.5", "--resume")
    assert p.returncode == 2 and "cannot resume" in p.stderr


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_checkpoint",))


def test_checkpoint_cannot_run_code_on_load(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "x": Boom()}, path, pickle_protocol=2)
    p = run("sample.py", "--ckpt", str(path))
    assert p.returncode == 2 and "corrupt or not a prerl checkpoint" in p.stderr
    assert not (ROOT / "pwned_by_checkpoint").exists()


def test_checkpoint_holds_everything_needed(tiny_base, tmp_path):
    T.rl_train(str(tiny_base), "dsrl", str(tmp_path / "d.pt"), "cpu", preset="tiny", steps=2, warmup_steps=1,
               progress=False, eval_problems=2, eval_samples=2)
    ck = M.load_checkpoint(str(tmp_path / "d.pt"))
    for key in ("model", "optimizer", "config", "step", "phase", "rng", "run", "history", "evals"):
        assert key in ck, key


@pytest.mark.parametrize("args,needle", [
    (["--preset", "nope"], "nope"),
    (["--preset", "tiny", "--steps", "-3"], "-3"),
    (["--preset", "tiny", "--objective", "grpo", "--temperature", "0"], "--temperature"),
    (["--preset", "tiny", "--objective", "grpo", "--temperature", "-1"], "--temperature"),
    (["--preset", "tiny", "--objective", "dsrl", "--steps", "3", "--warmup-steps", "4"], "--warmup-steps 4"),
    (["--preset", "tiny", "--objective", "nsr-prerl", "--group", "1"], "--group 1"),
    (["--preset", "tiny", "--objective", "grpo", "--batch-prompts", "0"], "--batch-prompts"),
    (["--preset", "tiny", "--objective", "grpo", "--warmup-lr", "0"], "--warmup-lr"),
    (["--preset", "tiny", "--objective", "reinforce"], "reinforce"),
    (["--preset", "tiny", "--ckpt-every", "10"], "--ckpt-every 10"),
    (["--preset", "tiny", "--objective", "grpo", "--micro-batch", "6"], "--micro-batch 6"),
    (["--preset", "tiny", "--objective", "grpo", "--other-space-every", "-1"], "--other-space-every"),
])
def test_bad_train_flags_exit_2_with_one_line(args, needle):
    one_line_error(run("train.py", *args), needle)


@pytest.mark.parametrize("args,needle", [
    (["--preset", "xl"], "xl"),
    (["--preset", "tiny", "--steps", "0"], "--steps"),
    (["--preset", "tiny", "--steps", "4", "--warmup-steps", "9"], "--warmup-steps 9"),
    (["--preset", "tiny", "--objective", "magic"], "magic"),
    (["--preset", "tiny", "--eval-samples", "0"], "--eval-samples"),
])
def test_bad_dsrl_flags_exit_2_with_one_line(args, needle):
    one_line_error(run("dsrl.py", *args), needle)


def test_checkpoint_of_another_model_config_is_refused(tmp_path):
    m = M.GPT(M.GPTConfig(n_layer=1, n_head=2, n_embd=16))
    M.save_checkpoint(tmp_path / "other.pt", {"model": m.state_dict(), "config": asdict(m.config)})
    p = run("train.py", "--preset", "tiny", "--objective", "grpo", "--init", str(tmp_path / "other.pt"),
            "--out", str(tmp_path))
    assert p.returncode == 2 and "not the tiny preset" in p.stderr, p.stderr
    bad = {"model": m.state_dict(), "config": asdict(M.PRESETS["tiny"])}  # weights that do not fit the config
    M.save_checkpoint(tmp_path / "mismatch.pt", bad)
    p = run("sample.py", "--ckpt", str(tmp_path / "mismatch.pt"))
    assert p.returncode == 2 and "do not fit" in p.stderr


def test_non_finite_steps_are_skipped_counted_then_stop(tiny_base, tmp_path, monkeypatch):
    real = T.objective_loss
    calls = {"n": 0}

    def flaky(*a, **k):
        loss, st = real(*a, **k)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] in (2, 4, 5, 6) else loss), st

    monkeypatch.setattr(T, "objective_loss", flaky)
    with pytest.raises(T.Diverged, match="3 non-finite steps in a row"):
        T.rl_train(str(tiny_base), "grpo", str(tmp_path / "g.pt"), "cpu", preset="tiny", steps=8, progress=False,
                   log_path=str(tmp_path / "g.jsonl"), eval_every=100, eval_problems=2, eval_samples=2)
    log = [json.loads(line) for line in open(tmp_path / "g.jsonl")]
    assert [r["skipped"] for r in log] == [False, True, False, True, True]
    assert log[-1]["skipped_total"] == 3
    assert calls["n"] == 6


# --- the verifier under fuzz ---------------------------------------------------------------------------------

def adversarial(answer, rng):
    """Near-misses of the right answer text: each must score 0."""
    a = str(answer)
    uni = "".join("٠١٢٣٤٥٦٧٨٩"[int(c)] if c.isdigit() else c for c in a)
    full = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in a)
    yield from [f"#{uni}", f"#{full}", f"#+{a}", f"# {a}", f"#{a} ", f"#{a}\n", f"#\t{a}", f"#{a}#{a}",
                f"#{a};#{a}", f"#0{a}", f"#{a}.0", f"#{a}e0", f"#{a}<|eos|>", f"<|eos|>#{int(a) + 1}",
                f"#{int(a) + 1}", f"#{int(a) - 1}", f"#{a}" + "0" * rng.randint(1, 30), "#" + "9" * rng.randint(10, 400),
                f"#{a[:1]}_{a[1:]}" if len(a) > 1 else f"#_{a}", f"#{a[:1]},{a[1:]}" if len(a) > 1 else f"#,{a}",
                f"#{a}\u200b", f"\u200b#{a}x", f"#-{a}" if answer > 0 else f"#{a[1:]}", f"#{a}\x00", f"{a}"]


def test_verifier_fuzz_no_crash_no_false_positive():
    rng = random.Random(0)
    alphabet = "0123456789#-+_ ;=*\n\t٣７¹\u200b<|>eosxwait"
    checked = 0
    for i in range(10_000):
        answer = rng.randint(-999, 999)
        for s in adversarial(answer, rng) if i < 500 else ():
            assert R.score(s, answer) == 0.0, s
            checked += 1
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        got = R.score(s, answer)
        # a 1 is only ever right for exactly one '#' followed by the canonical integer at the very end
        assert got == (1.0 if s.count("#") == 1 and s.endswith(f"#{answer}") else 0.0), s
        checked += 1
    assert checked >= 10_000


def test_dsrl_kill_9_then_resume_gives_identical_results(tmp_path):
    args = ["--preset", "tiny", "--steps", "4", "--warmup-steps", "2"]
    assert run("dsrl.py", *args, "--out", str(tmp_path / "a")).returncode == 0
    # killed right after the GRPO run's last checkpoint, before DSRL starts
    p = run("dsrl.py", *args, "--out", str(tmp_path / "b"), env={"PRERL_TEST_KILL_AT_STEP": "4"})
    assert p.returncode == -signal.SIGKILL and not (tmp_path / "b/tiny/dsrl.pt").exists()
    p = run("dsrl.py", *args, "--out", str(tmp_path / "b"), "--resume")
    assert p.returncode == 0, p.stderr[-1500:]
    a, b = (json.load(open(tmp_path / d / "tiny/results.json")) for d in ("a", "b"))
    assert a["results"] == b["results"] and a["curves"] == b["curves"]
    assert same_weights(weights(tmp_path / "a/tiny/dsrl.pt"), weights(tmp_path / "b/tiny/dsrl.pt"))
