"""dsrl.py: the RL settings, the schedules (DSRL's NSR-PreRL phase, then GRPO; the warmup coefficient), what
happens at the switch (the KL reference re-anchored, AdamW carried over unless reset), the flag checks, the base
model, and the command line end to end on the tiny preset: its outputs, kill -9 and --resume."""
import argparse
import json
import os
import shutil
import signal

import pytest
import torch

import dsrl as D
import losses as L
import model as M
import reward as R
import sample as S
import train as T
from conftest import alternating, rl_run, run, strip_times


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def weight_diff(a, b, what="weights"):
    """'' when equal, else which tensors differ and by how much (so a failure explains itself)."""
    if a.keys() != b.keys():
        return f"{what}: different tensor names: {sorted(set(a) ^ set(b))}"
    bad = [f"{k} (max |diff| {float((a[k] - b[k]).abs().max()):.3g})" for k in a if not torch.equal(a[k], b[k])]
    return f"{what}: {len(bad)} of {len(a)} tensors differ: " + ", ".join(bad[:5]) if bad else ""


def log_diff(a, b):
    """'' when two logs (lists of dicts) are equal, else the first differing line and keys."""
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} log lines"
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            keys = sorted(k for k in x.keys() | y.keys() if x.get(k) != y.get(k))
            return f"log line {i + 1} differs in {keys}: " + "; ".join(
                f"{k}: {x.get(k)} vs {y.get(k)}" for k in keys[:4])
    return ""


# --- the settings and the schedules ------------------------------------------------------------------------

def test_rl_config_takes_the_preset_and_ignores_unset_overrides():
    cfg = D.rl_config("tiny", lr=None, seed=2, kl_coef=0.5)
    assert (cfg.lr, cfg.group, cfg.seed, cfg.kl_coef, cfg.warmup_coef, cfg.reset_at_switch, cfg.ckpt_every) == (
        D.RL["tiny"]["lr"], D.RL["tiny"]["group"], 2, 0.5, 1.0, False, 10)
    assert D.rl_config("gpu").micro_batch == 128 and D.rl_config("cpu").micro_batch is None


def test_phase_schedule():
    cfg = D.rl_config("tiny", lr=1e-4, warmup_lr=3e-5)
    dsrl = D.schedule("dsrl", cfg, 2)
    assert [dsrl.phase(s) for s in range(4)] == [D.Phase("nsr-prerl", 3e-5)] * 2 + [D.Phase("grpo", 1e-4)] * 2
    assert (dsrl.name, dsrl.switch) == ("dsrl", 2) and dsrl.at_switch is not None
    assert [D.schedule("nsr-rl-warmup", cfg, 1).phase(s).objective for s in range(3)] == ["nsr-rl", "grpo", "grpo"]
    psr = D.schedule("psr", cfg, 5)
    assert psr.phase(0) == psr.phase(9) == D.Phase("psr", 1e-4) and psr.switch is None and psr.at_switch is None
    assert D.schedule("dsrl", cfg, 0).phase(0) == D.Phase("grpo", 1e-4)  # S = 0 is plain GRPO
    assert D.schedule("dsrl", D.rl_config("cpu")).switch == D.default_warmup(D.RL["cpu"]["steps"]) == 4
    assert D.dsrl_phase(1, 2, 1e-3, 1e-5) == ("nsr-prerl", 1e-5) and D.dsrl_phase(2, 2, 1e-3, 1e-5) == ("grpo", 1e-3)
    assert D.phases("dsrl") == ["nsr-prerl", "grpo"] and D.phases("nsr-rl-warmup") == ["nsr-rl", "grpo"]
    assert D.phases("w-reinforce") == ["w-reinforce"]
    with pytest.raises(R.UserError, match="unknown objective 'ppo'"):
        D.phases("ppo")


def test_schedule_looks_up_dsrl_phase_at_every_step(monkeypatch):
    """The tutorial's exercise 7 replaces dsrl.dsrl_phase: a schedule made before the replacement follows it."""
    sched = D.schedule("dsrl", D.rl_config("tiny"), 2)
    monkeypatch.setattr(D, "dsrl_phase", lambda step, S, lr, warmup_lr, warmup="nsr-prerl": ("psr", 7.0))
    assert sched.phase(0) == D.Phase("psr", 7.0)


def test_default_warmup_is_five_percent_rounded():
    assert [D.default_warmup(n) for n in (1, 10, 30, 40, 80, 348)] == [1, 1, 2, 2, 4, 17]


def test_warmup_coef_scales_phase_one_only(tiny_base, tmp_path, monkeypatch):
    """warmup_coef multiplies the loss of the steps before S and no other: the logged loss of step S is GRPO's own,
    the loss of a phase-1 step is warmup_coef times its objective's."""
    cfg = D.rl_config("tiny", warmup_coef=0.01)
    assert [D.schedule("dsrl", cfg, 2).phase(s).loss_coef for s in range(4)] == [0.01, 0.01, 1.0, 1.0]
    assert D.schedule("nsr-rl-warmup", cfg, 1).phase(0).loss_coef == 0.01
    assert D.schedule("grpo", cfg).phase(0).loss_coef == 1.0
    monkeypatch.setattr(S, "rewards", alternating)  # every group mixed: both phases have a loss
    real, unscaled = T.objective_loss, []

    def recorded(*a, **k):  # the objective's own loss, before the phase's coefficient
        loss, st = real(*a, **k)
        unscaled.append(float(loss.detach()))
        return loss, st
    monkeypatch.setattr(T, "objective_loss", recorded)
    _, h, _ = rl_run(tiny_base, "dsrl", tmp_path / "d.pt", 1, steps=2, warmup_coef=0.01)
    assert [x["objective"] for x in h] == ["nsr-prerl", "grpo"] and all(abs(u) > 1e-4 for u in unscaled)
    assert h[0]["loss"] == pytest.approx(0.01 * unscaled[0], rel=1e-5)
    assert h[1]["loss"] == pytest.approx(unscaled[1], rel=1e-5)


# --- a two-phase run: the switch -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_phase(tiny_base, tmp_path_factory):
    """DSRL, 4 steps with S = 2: NSR-PreRL at 1e-5, then GRPO at 1e-3. (folder, history, evals)."""
    d = tmp_path_factory.mktemp("dsrl")
    _, h, e = rl_run(tiny_base, "dsrl", d / "d.pt", 2, steps=4, lr=1e-3, warmup_lr=1e-5)
    return d, h, e


def test_dsrl_switches_the_learning_rate_at_S(two_phase, tiny_base, tmp_path):
    d, h, _ = two_phase
    assert [x["lr"] for x in h] == [1e-5, 1e-5, 1e-3, 1e-3]
    assert [x["objective"] for x in h] == ["nsr-prerl"] * 2 + ["grpo"] * 2
    assert {g["lr"] for g in M.load_checkpoint(str(d / "d.pt"))["optimizer"]["param_groups"]} == {1e-3}
    rl_run(tiny_base, "dsrl", tmp_path / "b.pt", 2, steps=2, lr=1e-3, warmup_lr=1e-5)  # ends inside phase 1
    assert {g["lr"] for g in M.load_checkpoint(str(tmp_path / "b.pt"))["optimizer"]["param_groups"]} == {1e-5}


def test_optimizer_is_carried_across_the_dsrl_switch(two_phase):
    """One AdamW for both phases: after 2 NSR-PreRL + 2 GRPO steps Adam has taken 4 steps, not 2."""
    d, _, _ = two_phase
    steps = {float(s["step"]) for s in M.load_checkpoint(str(d / "d.pt"))["optimizer"]["state"].values()}
    assert steps == {4.0}


def test_dsrl_is_evaluated_right_after_the_nsr_phase(two_phase):
    _, h, evals = two_phase
    assert [e["step"] for e in evals] == [0, 2, 4]  # eval_every 100: the start, the switch, the end
    assert ["eval" in x for x in h] == [False, True, False, True] and h[1]["eval"] == evals[1]


def test_dsrl_runs_its_phases_and_is_deterministic(two_phase, tiny_base, tmp_path):
    d, h1, e1 = two_phase
    logged = [json.loads(line) for line in open(d / "d.jsonl")]
    assert logged == h1 and [r["step"] for r in logged] == [1, 2, 3, 4]
    for key in ("objective", "lr", "loss", "reward", "reward_std", "frac_reward_zero_std", "solved_all", "solved_none",
                "length", "truncated", "entropy_cond", "entropy_pre", "grad_norm", "update_norm", "skipped",
                "wait_share", "alternatively_share", "tokens", "samples", "t_sample", "t_learn"):
        assert key in logged[0], key
    _, h2, e2 = rl_run(tiny_base, "dsrl", tmp_path / "b.pt", 2, steps=4, lr=1e-3, warmup_lr=1e-5)
    assert strip_times(d / "d.jsonl") == strip_times(tmp_path / "b.jsonl") and e1 == e2  # same seed, same metrics
    assert same(M.load_checkpoint(str(d / "d.pt"))["model"], M.load_checkpoint(str(tmp_path / "b.pt"))["model"])


def test_kl_reference_is_reanchored_at_the_switch(tiny_base, tmp_path):
    """Policy reincarnation: with KL on, the reference becomes the policy as it stands after the NSR phase."""
    kw = dict(kl_coef=0.1, prerl_advantage="+-1")  # +-1: the random model's all-wrong groups still move it
    rl_run(tiny_base, "dsrl", tmp_path / "a.pt", 1, steps=1, **kw)  # stops at the switch
    rl_run(tiny_base, "dsrl", tmp_path / "b.pt", 1, steps=2, **kw)
    at_switch = M.load_checkpoint(str(tmp_path / "a.pt"))["model"]
    ref = M.load_checkpoint(str(tmp_path / "b.pt"))["ref"]
    base = M.load_checkpoint(str(tiny_base))["model"]
    assert same(ref, at_switch)
    assert not same(at_switch, base)  # the NSR step did move the policy


def test_policy_reincarnation_reanchors_the_reference_and_resets_adam_only_when_asked():
    torch.manual_seed(0)
    model, ref = M.GPT(M.PRESETS["tiny"]), M.GPT(M.PRESETS["tiny"])
    assert not same(model.state_dict(), ref.state_dict())

    def adam_after_a_step():
        opt = model.configure_optimizers(1e-3, weight_decay=0.0, betas=(0.9, 0.999))
        x = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
        model(x).float().pow(2).mean().backward()
        opt.step()
        return opt

    opt = adam_after_a_step()
    n = len(opt.state)
    assert n == len(list(model.parameters()))
    D.policy_reincarnation(model, opt, ref)
    assert same(ref.state_dict(), model.state_dict()) and len(opt.state) == n  # re-anchored; Adam kept
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert not same(ref.state_dict(), model.state_dict())  # a copy of the weights, not the policy itself
    D.policy_reincarnation(model, opt, None)  # no KL reference: nothing to re-anchor
    assert len(opt.state) == n
    D.policy_reincarnation(model, opt, None, reset_optimizer=True)
    assert len(opt.state) == 0
    # the two-phase schedules switch by it, with cfg.reset_at_switch
    for reset, left in ((False, n), (True, 0)):
        opt = adam_after_a_step()
        D.schedule("dsrl", D.rl_config("tiny", reset_at_switch=reset), 1).at_switch(model, opt, None)
        assert len(opt.state) == left


def test_reset_at_switch_gives_adams_first_step_again(tiny_base, tmp_path, monkeypatch):
    """After the reset, the first GRPO step moves every parameter with a gradient by about lr (Adam's first
    step is lr * sign(g)); without it the carried moments make it different."""
    monkeypatch.setattr(S, "rewards", alternating)  # every group mixed, so both phases have a gradient
    norms = {}
    for reset in (False, True):
        _, h, _ = rl_run(tiny_base, "dsrl", tmp_path / f"r{reset}.pt", 2, steps=3, lr=1e-3, warmup_lr=1e-3,
                         reset_at_switch=reset, weight_decay=0.01)
        norms[reset] = [x["update_norm"] for x in h]
    assert norms[True][:2] == norms[False][:2]  # the warmup is the same
    n_params = sum(p.numel() for p in M.GPT(M.PRESETS["tiny"]).parameters())
    # the bound: every one of the n parameters moves by at most lr (plus weight decay's lr * wd * |w|)
    assert 0.5 * 1e-3 * n_params ** 0.5 < norms[True][2] < 1.05e-3 * n_params ** 0.5
    assert abs(norms[True][2] - norms[False][2]) > 1e-3 * norms[True][2]


# --- the flag checks and the base model --------------------------------------------------------------------

def test_check_rl_args_asks_for_a_group_only_where_an_objective_has_a_group_baseline():
    """--group 1 is refused for every objective whose table entry says it needs G >= 2 (a group baseline), and
    accepted for Zhu et al.'s PSR / NSR / W-REINFORCE run alone."""
    one = argparse.Namespace(steps=None, group=1)
    alone = {name for name, (_, needs_group, _) in L.OBJECTIVES.items() if not needs_group}
    assert alone == {"psr", "nsr", "w-reinforce"}
    for name in L.OBJECTIVES:
        if name in alone:
            D.check_rl_args(one, "tiny", D.phases(name))
        else:
            with pytest.raises(R.UserError, match=f"--group 1: {name} has a group baseline"):
                D.check_rl_args(one, "tiny", D.phases(name))
    with pytest.raises(R.UserError, match="--group 1: nsr-prerl"):
        D.check_rl_args(one, "tiny", D.phases("dsrl"))
    with pytest.raises(R.UserError, match="--group 1: grpo"):  # dsrl.py without --alone runs GRPO beside it
        D.check_rl_args(one, "tiny", ["grpo", "psr"])
    D.check_rl_args(argparse.Namespace(steps=None, group=2), "tiny", list(L.OBJECTIVES))


def test_base_model_pretrains_only_when_needed(tmp_path, monkeypatch, tiny_base):
    """--init is used as it is; OUT/<preset>/base.pt is reused when it is a finished base of the preset, resumed
    when unfinished and --resume is given, and pre-trained otherwise or with --retrain."""
    calls = []
    monkeypatch.setattr(D, "pretrain", lambda cfg, out_dir, device, resume=False: (
        calls.append((cfg.preset, out_dir, resume)), (None, {"pretrained": True}, None))[1])
    path, d = str(tmp_path / "base.pt"), str(tmp_path)

    def base_model(**kw):
        calls.clear()
        args = argparse.Namespace(**{**dict(init=None, seed=0, retrain=False, resume=False), **kw})
        return D.base_model(args, "tiny", d, "cpu"), list(calls)

    def write_base(**meta):
        ck = M.load_checkpoint(str(tiny_base))
        M.save_checkpoint(path, {"model": ck["model"], "config": ck["config"], **meta})

    assert base_model() == ((path, {"pretrained": True}), [("tiny", d, False)])  # none there yet
    assert base_model(init=str(tiny_base)) == ((str(tiny_base), None), [])
    write_base(preset="tiny", done=True)
    assert base_model() == ((path, None), [])
    assert base_model(retrain=True) == ((path, {"pretrained": True}), [("tiny", d, False)])
    write_base(preset="cpu", done=True)
    assert base_model()[1] == [("tiny", d, False)]
    write_base(preset="tiny", done=False)
    assert base_model(resume=True)[1] == [("tiny", d, True)]
    assert base_model()[1] == [("tiny", d, False)]


def test_base_model_starts_from_the_committed_base_of_its_seed(tmp_path, monkeypatch, tiny_base, capsys):
    """A preset with committed bases starts from bases/s<seed>.pt (and says so); --retrain, --init and a seed with
    no committed file do not."""
    calls, bases = [], tmp_path / "bases"
    bases.mkdir()
    (bases / "s1.pt").write_bytes(tiny_base.read_bytes())
    monkeypatch.setattr(D, "COMMITTED_BASES", {"tiny": str(bases)})
    monkeypatch.setattr(D, "pretrain", lambda cfg, out_dir, device, resume=False: (
        calls.append(cfg.seed), (None, {"pretrained": True}, None))[1])
    out = str(tmp_path / "out")

    def base_model(**kw):
        args = argparse.Namespace(**{**dict(init=None, seed=1, retrain=False, resume=False), **kw})
        return D.base_model(args, "tiny", out, "cpu")

    assert base_model() == (str(bases / "s1.pt"), None) and calls == []
    assert "committed base" in capsys.readouterr().out
    assert base_model(retrain=True) == (os.path.join(out, "base.pt"), {"pretrained": True}) and calls == [1]
    assert base_model(init=str(tiny_base)) == (str(tiny_base), None) and calls == [1]
    assert base_model(seed=0)[1] == {"pretrained": True} and calls == [1, 0]  # no s0.pt there


# --- the command line, end to end --------------------------------------------------------------------------

# GRPO and DSRL for 6 steps (S = 2, a checkpoint every 2), k3 KL to the reference and PreRL's +-1 advantage (so
# that the random base moves in the NSR phase and the reference re-anchored at the switch is not the base)
FLAGS = ["--preset", "tiny", "--steps", "6", "--warmup-steps", "2", "--ckpt-every", "2", "--kl-coef", "0.1",
         "--prerl-advantage", "+-1", "--eval-samples", "4"]


def with_base(out, tiny_base):
    """OUT/tiny/base.pt: a finished base that dsrl.py reuses instead of pre-training."""
    (out / "tiny").mkdir(parents=True)
    shutil.copy(tiny_base, out / "tiny/base.pt")
    return out


@pytest.fixture(scope="module")
def cli(tiny_base, tmp_path_factory):
    """`python dsrl.py FLAGS` with a base in OUT/tiny: (OUT, the finished process)."""
    out = with_base(tmp_path_factory.mktemp("cli"), tiny_base)
    p = run("dsrl.py", *FLAGS, "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    return out, p


def test_dsrl_cli_tiny_end_to_end(cli):
    out, p = cli
    d = out / "tiny"
    for f in ("grpo.pt", "dsrl.pt", "grpo.jsonl", "dsrl.jsonl", "results.json", "results.md", "accuracy.png",
              "markers.png", "pass_at_k.png"):
        assert (d / f).exists(), f
    assert "reusing" in p.stdout and "S = 2" in p.stdout
    res = json.load(open(d / "results.json"))
    assert set(res["results"]) == {"base", "grpo", "dsrl"} and (res["steps"], res["warmup_steps"]) == (6, 2)
    assert {"pass@1", "pass@4", "wait_share"} <= set(res["results"]["dsrl"]["ood"])
    assert [e["step"] for e in res["curves"]["dsrl"]] == [0, 2, 4, 6]
    assert [json.loads(line)["objective"] for line in open(d / "dsrl.jsonl")] == ["nsr-prerl"] * 2 + ["grpo"] * 4
    md = (d / "results.md").read_text()
    assert "| dsrl | test |" in md and "pass@4" in md
    assert 100 < res["peak_memory_mb"] < 8000  # the process's peak resident set on CPU: torch alone is ~300 MB
    assert f"peak memory {res['peak_memory_mb']:.0f} MB" in md
    w = res["wall_seconds"]  # the phases: loading the base, RL (rl_step's sampling and learning inside it), the rest
    assert 0 < w["pretrain_or_load"] < w["total"] and 0 < w["rl"] < w["total"]
    assert 0 < w["grpo_sampling"] + w["grpo_learning"] + w["dsrl_sampling"] + w["dsrl_learning"] < w["rl"]
    tok, rl = res["tokens"], D.RL["tiny"]  # and the work behind them
    assert tok["pretrain"] is None  # the base was reused
    assert tok["rl_rows_per_step"] == rl["batch_prompts"] * rl["group"]
    assert 0 < tok["grpo_sampled"] <= 6 * tok["rl_rows_per_step"] * rl["max_new_tokens"]


def test_dsrl_cli_kill_9_then_resume_gives_identical_results(cli, tiny_base, tmp_path):
    """Killed right after the GRPO run's last checkpoint, before DSRL starts: --resume keeps the finished GRPO run
    and runs DSRL, and the results are the uninterrupted run's."""
    a = cli[0]
    b = with_base(tmp_path / "b", tiny_base)
    p = run("dsrl.py", *FLAGS, "--out", str(b), env={"PRERL_TEST_KILL_AT_STEP": "6"})
    assert p.returncode == -signal.SIGKILL and not (b / "tiny/dsrl.pt").exists()
    p = run("dsrl.py", *FLAGS, "--out", str(b), "--resume")
    assert p.returncode == 0, p.stderr[-1500:]
    ra, rb = (json.load(open(d / "tiny/results.json")) for d in (a, b))
    assert ra["results"] == rb["results"] and ra["curves"] == rb["curves"]
    for name in ("grpo", "dsrl"):
        why = weight_diff(*(M.load_checkpoint(str(d / f"tiny/{name}.pt"))["model"] for d in (a, b)), name)
        assert not why, why


def test_a_killed_two_phase_run_resumes_with_its_reanchored_reference(cli, tiny_base, tmp_path):
    """DSRL alone with KL, killed (kill -9) at its checkpoint of step 4, after the switch, then --resume: the same
    weights, reference (the policy at the switch, not the base) and log as the uninterrupted run."""
    args = [*FLAGS, "--objective", "dsrl", "--alone", "--init", str(tiny_base), "--out", str(tmp_path)]
    p = run("dsrl.py", *args, env={"PRERL_TEST_KILL_AT_STEP": "4"})
    assert p.returncode == -signal.SIGKILL, p.stderr[-1500:]
    ck = M.load_checkpoint(str(tmp_path / "tiny/dsrl.pt"))
    assert ck["step"] == 4 and not ck["done"] and ck["phase"] == "grpo"
    p = run("dsrl.py", *args, "--resume")
    assert p.returncode == 0, p.stderr[-1500:]
    want, got = (M.load_checkpoint(str(d / "tiny/dsrl.pt")) for d in (cli[0], tmp_path))
    assert not same(want["ref"], M.load_checkpoint(str(tiny_base))["model"])  # the reference was re-anchored
    # on failure, say which tensor or which log line differed (and how)
    why = weight_diff(want["model"], got["model"]) or weight_diff(want["ref"], got["ref"], "reference")
    why = why or log_diff(strip_times(cli[0] / "tiny/dsrl.jsonl"), strip_times(tmp_path / "tiny/dsrl.jsonl"))
    assert not why, why
    assert got["done"] and got["phase"] == "grpo" and set(got["rng"]) == {"python", "torch", "sampler"}
