"""The RL loop and the dsrl.py entry point on the tiny preset (issue 3)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dsrl
import experiments.report as report
import experiments.suite as suite
import model as M
import train as T

ROOT = Path(__file__).resolve().parents[1]


def test_phase_schedule():
    assert [dsrl.phase("dsrl", s, 2, 1e-4, 3e-5) for s in range(4)] == [("nsr-prerl", 3e-5)] * 2 + [("grpo", 1e-4)] * 2
    assert [dsrl.phase("nsr-rl-warmup", s, 1, 1.0, 2.0)[0] for s in range(3)] == ["nsr-rl", "grpo", "grpo"]
    assert dsrl.phase("psr", 0, 5, 1.0, 2.0) == ("psr", 1.0)
    assert dsrl.phase("dsrl", 0, 0, 1.0, 2.0) == ("grpo", 1.0)  # S = 0 is plain GRPO


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
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    d = tmp_path / "tiny"
    for f in ("base.pt", "grpo.pt", "dsrl.pt", "results.json", "results.md", "accuracy.png", "markers.png",
              "pass_at_k.png"):
        assert (d / f).exists(), f
    res = json.load(open(d / "results.json"))
    assert set(res["results"]) == {"base", "grpo", "dsrl"}
    assert {"pass@1", "pass@16", "wait_share"} <= set(res["results"]["dsrl"]["ood"])
    assert "| dsrl | test |" in (d / "results.md").read_text()
    assert 100 < res["peak_memory_mb"] < 8000  # the process's peak resident set on CPU: torch alone is ~300 MB
    assert f"peak memory {res['peak_memory_mb']:.0f} MB" in (d / "results.md").read_text()
    w = res["wall_seconds"]  # the phases: pre-training, RL (rl_step's sampling and learning inside it), the rest
    assert 0 < w["pretrain_or_load"] < w["total"] and 0 < w["rl"] < w["total"]
    assert 0 < w["grpo_sampling"] + w["grpo_learning"] + w["dsrl_sampling"] + w["dsrl_learning"] < w["rl"]
    tok, rl = res["tokens"], M.RL["tiny"]  # and the work behind them
    assert tok["rl_rows_per_step"] == rl["batch_prompts"] * rl["group"]
    assert 0 < tok["grpo_sampled"] <= rl["steps"] * tok["rl_rows_per_step"] * rl["max_new_tokens"]
    pre = M.TRAIN["tiny"]  # every pre-training document has a few tokens at least, and at most block_size
    assert 4 * pre["pretrain_steps"] * pre["batch_size"] < tok["pretrain"] < (
        pre["pretrain_steps"] * pre["batch_size"] * M.PRESETS["tiny"].block_size)


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
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    d = tmp_path / "tiny/suite"
    s = json.load(open(d / "suite.json"))
    assert {"base", "grpo", "dsrl-S5%", "dsrl-S20%", "nsr-rl-warmup", "psr-prerl", "prerl", "psr", "nsr",
            "w-reinforce", "grid-lr0.0001", "grid-lr1e-06", "nohabits-dsrl", "nohabits-nsr-prerl", "prerl-long",
            "mech-lr0.0001"} <= set(s["configs"])
    assert json.load(open(d / "runs/prerl-long-s0.json"))["steps"] == 6  # 3x the suite's 2 steps
    assert s["nsr_lr"] in suite.GRID_LRS and s["dsrl"] in s["configs"]
    assert "passk/pass@64" in s["configs"]["psr"] and "passk/pass@64" in s["configs"]["base"]
    # the NSR phases of stage 2 really use the chosen learning rate
    assert json.load(open(d / "runs/nsr-rl-warmup-s0.json"))["warmup_lr"] == s["nsr_lr"]
    align = json.load(open(d / "runs/alignment-s0.json"))
    assert align["stats"]["n"] > 0 and -1 <= align["stats"]["cosine_mean"] <= 1
    assert not list((d / "runs").glob("*.pt"))  # run checkpoints are removed once reported
    for png in ("c1_alignment", "c2_gap", "c3_prerl_alone", "c4_markers", "c5_dsrl", "c6_warmup", "c7_passk", "grid"):
        assert (d / f"{png}.png").stat().st_size > 1000
    assert "| grpo |" in (d / "suite.md").read_text()


def test_choose_nsr_lr_takes_the_largest_rate_that_does_not_hurt():
    def runs(drop_at):  # val pass@1 0.30 at step 0, falling by 0.2 from step drop_at on (3 seeds)
        evals = [{"step": t, "pass@1": 0.30 - (0.2 if t >= drop_at else 0.0)} for t in (0, 2, 4, 8, 16)]
        return [{"evals": evals}] * 3
    grid = {f"grid-lr{lr:g}": runs(99) for lr in suite.GRID_LRS}
    grid["grid-lr0.0001"] = runs(8)
    assert suite.choose_nsr_lr(grid, max_phase=16) == 3e-5
    assert suite.choose_nsr_lr(grid, max_phase=4) == 1e-4  # the drop comes after the longest phase
    grid = {k: runs(2) for k in grid}
    assert suite.choose_nsr_lr(grid, max_phase=16) == min(suite.GRID_LRS)  # nothing is safe: the gentlest


def test_mean_ci_is_the_t_interval():
    m, h = report.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and abs(h - 4.30 * 1.0 / 3 ** 0.5) < 1e-9


def test_suite_reuses_a_finished_job_only_with_the_same_settings(tiny_base, tmp_path):
    (tmp_path / "runs").mkdir()
    job = dict(name="grid-lr0.001", objective="nsr-prerl", seed=0, steps=1, base=str(tiny_base), lr=1e-3, eval_every=1)
    path = suite.run_job(job, "tiny", "cpu", str(tmp_path), threads=1)
    first = json.load(open(path))
    assert first["lr"] == 1e-3 and first["suite_hp"] == suite.SUITE_HP["tiny"]
    stamp = open(path).read()
    suite.run_job(job, "tiny", "cpu", str(tmp_path), threads=1)
    assert open(path).read() == stamp  # same settings: reused, not rerun
    suite.run_job({**job, "lr": 1e-2}, "tiny", "cpu", str(tmp_path), threads=1)
    assert json.load(open(path))["lr"] == 1e-2  # another learning rate under the same name: run again
