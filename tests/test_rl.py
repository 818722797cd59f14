"""The RL loop and the dsrl.py entry point on the tiny preset (issue 3)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import model as M
import train as T

ROOT = Path(__file__).resolve().parents[1]


def test_phase_schedule():
    assert [T.phase_objective("dsrl", s, 2) for s in range(4)] == ["nsr-prerl"] * 2 + ["grpo"] * 2
    assert [T.phase_objective("nsr-rl-warmup", s, 1) for s in range(3)] == ["nsr-rl", "grpo", "grpo"]
    assert T.phase_objective("psr", 0, 5) == "psr"


def strip_times(history):
    return [{k: v for k, v in h.items() if not k.startswith("t_")} for h in history]


def test_dsrl_runs_its_phases_and_is_deterministic(tiny_base, tmp_path):
    kw = dict(preset="tiny", steps=3, warmup_steps=2, progress=False, eval_every=3, eval_problems=4)
    _, h1, e1 = T.rl_train(str(tiny_base), "dsrl", str(tmp_path / "a.pt"), "cpu", log_path=str(tmp_path / "a.jsonl"), **kw)
    assert [h["objective"] for h in h1] == ["nsr-prerl", "nsr-prerl", "grpo"]
    assert [h["lr"] for h in h1] == [T.RL["tiny"]["warmup_lr"]] * 2 + [T.RL["tiny"]["lr"]]
    logged = [json.loads(line) for line in open(tmp_path / "a.jsonl")]
    assert [r["step"] for r in logged] == [1, 2, 3]
    for key in ("reward", "reward_std", "frac_reward_zero_std", "solved_all", "solved_none", "length", "truncated",
                "entropy_cond", "entropy_pre", "grad_norm", "wait_share", "alternatively_share", "t_sample", "t_learn"):
        assert key in logged[0], key
    _, h2, e2 = T.rl_train(str(tiny_base), "dsrl", str(tmp_path / "b.pt"), "cpu", **kw)
    assert strip_times(h1) == strip_times(h2) and e1 == e2  # same seed, same metrics
    w1, w2 = M.load_checkpoint(str(tmp_path / "a.pt"))["model"], M.load_checkpoint(str(tmp_path / "b.pt"))["model"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


@pytest.mark.parametrize("objective", [o for o in T.OBJECTIVES if o != "dsrl"])
def test_every_objective_runs_a_step(tiny_base, tmp_path, objective):
    _, h, _ = T.rl_train(str(tiny_base), objective, str(tmp_path / "x.pt"), "cpu", preset="tiny", steps=1,
                         progress=False, eval_every=1, eval_problems=2, eval_samples=2)
    assert h[0]["grad_norm"] >= 0 and not h[0]["skipped"]


def test_dsrl_cli_tiny_end_to_end(tmp_path):
    p = subprocess.run([sys.executable, "dsrl.py", "--preset", "tiny", "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    d = tmp_path / "tiny"
    for f in ("base.pt", "grpo.pt", "dsrl.pt", "results.json", "results.md", "accuracy.png", "markers.png",
              "pass_at_k.png"):
        assert (d / f).exists(), f
    res = json.load(open(d / "results.json"))
    assert set(res["results"]) == {"base", "grpo", "dsrl"}
    assert {"pass@1", "pass@16", "wait_share"} <= set(res["results"]["dsrl"]["ood"])
    assert "| dsrl | test |" in (d / "results.md").read_text()


@pytest.mark.parametrize("args,needle", [
    (["--objective", "ppo"], "ppo"),
    (["--objective", "grpo", "--group", "1"], "--group 1"),
    (["--objective", "dsrl", "--warmup-steps", "99", "--steps", "4"], "--warmup-steps 99"),
    (["--objective", "grpo", "--lr", "-1"], "-1"),
    (["--steps", "0"], "--steps"),
    (["--objective", "grpo", "--init", "missing.pt"], "missing.pt"),
])
def test_train_cli_rejects_bad_flags(args, needle):
    p = subprocess.run([sys.executable, "train.py", "--preset", "tiny", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_paper_suite_machinery_on_tiny(tmp_path):
    p = subprocess.run([sys.executable, "dsrl.py", "--suite", "paper", "--preset", "tiny", "--seeds", "1", "--steps", "2",
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.load(open(tmp_path / "tiny/suite/suite.json"))
    assert {"grpo", "dsrl", "nsr-rl-warmup", "nsr-prerl", "psr-prerl", "prerl", "psr", "nsr", "w-reinforce",
            "grid-lr0.0001", "nohabits-dsrl"} <= set(s["configs"])
    assert "test/pass@16" in s["configs"]["dsrl"] and "passk" in json.load(open(tmp_path / "tiny/suite/runs/psr-s0.json"))["final"]
    align = json.load(open(tmp_path / "tiny/suite/alignment.json"))
    assert align["stats"]["n"] > 0 and -1 <= align["stats"]["cosine_mean"] <= 1
    assert not list((tmp_path / "tiny/suite/runs").glob("*.pt"))  # run checkpoints are removed once reported
