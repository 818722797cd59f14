"""experiments/: the paper suite and the mechanism study end to end on the tiny preset, the suite's pieces (a job
reused only with its settings, the NSR learning-rate rule, the t-interval), the H2 wait probe, and the benchmarks
that compare the samplers and another checkout's sampled tokens."""
import argparse
import json
import random
import re
from types import SimpleNamespace

import pytest
import torch

import model as M
import reward as R
import sample as S
from conftest import ROOT, run
from experiments import mechanisms as MECH
from experiments import report, suite
from experiments.bench import bench_sampler, compare_tokens
from experiments.claims import GRID_LRS
from losses import pretrain_logprobs


# --- the suites end to end ---------------------------------------------------------------------------------

def test_paper_suite_machinery_on_tiny(tmp_path):
    p = run("-m experiments.suite", "--preset", "tiny", "--seeds", "1", "--steps", "2", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    d = tmp_path / "tiny/suite"
    s = json.load(open(d / "suite.json"))
    assert {"base", "grpo", "dsrl-S5%", "dsrl-S20%", "nsr-rl-warmup", "psr-prerl", "prerl", "psr", "nsr",
            "w-reinforce", "grid-lr0.0001", "grid-lr1e-06", "nohabits-dsrl", "nohabits-nsr-prerl", "prerl-long",
            "mech-lr0.0001"} <= set(s["configs"])
    assert json.load(open(d / "runs/prerl-long-s0.json"))["steps"] == 6  # 3x the suite's 2 steps
    assert s["nsr_lr"] in GRID_LRS and s["dsrl"] in s["configs"]
    assert "passk/pass@64" in s["configs"]["psr"] and "passk/pass@64" in s["configs"]["base"]
    # the NSR phases of stage 2 really use the chosen learning rate
    assert json.load(open(d / "runs/nsr-rl-warmup-s0.json"))["warmup_lr"] == s["nsr_lr"]
    align = json.load(open(d / "runs/alignment-s0.json"))
    assert align["stats"]["n"] > 0 and -1 <= align["stats"]["cosine_mean"] <= 1
    assert not list((d / "runs").glob("*.pt"))  # run checkpoints are removed once reported
    for png in ("c1_alignment", "c2_gap", "c3_prerl_alone", "c4_markers", "c5_dsrl", "c6_warmup", "c7_passk", "grid"):
        assert (d / f"{png}.png").stat().st_size > 1000
    assert "| grpo |" in (d / "suite.md").read_text()


def test_mechanism_suite_on_tiny(tmp_path):
    p = run("-m experiments.mechanisms", "--preset", "tiny", "--seeds", "1", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    d = tmp_path / "tiny/mechanisms"
    s = json.load(open(d / "mechanisms.json"))
    for h in ("H1", "H2", "H3", "H4"):
        assert s[h]["verdict"].split()[0] in ("supported", "refuted", "inconclusive")
    assert set(s["H3"]["verdicts"]) == {"C4", "C5", "C6"}
    runs = json.load(open(d / "runs/dsrl-official-reset-s0.json"))
    assert runs["hp"]["reset_at_switch"] and all("update_norm" in h for h in runs["train"])
    assert "p_wait_slip_cond" in json.load(open(d / "runs/h2-nsr-prerl-s0.json"))["evals"][0]
    assert json.load(open(d / "runs/pretrain-modes-s0.json"))["base_eval"]["curve"]
    for fig in ("pretrain", "h1_tokens", "h2_wait", "h3_official", "h4_modes"):
        assert (d / f"{fig}.png").stat().st_size > 1000


# --- the suite's pieces ------------------------------------------------------------------------------------

def test_choose_nsr_lr_takes_the_largest_rate_that_does_not_hurt():
    def runs(drop_at):  # val pass@1 0.30 at step 0, falling by 0.2 from step drop_at on (3 seeds)
        evals = [{"step": t, "pass@1": 0.30 - (0.2 if t >= drop_at else 0.0)} for t in (0, 2, 4, 8, 16)]
        return [{"evals": evals}] * 3
    grid = {f"grid-lr{lr:g}": runs(99) for lr in GRID_LRS}
    grid["grid-lr0.0001"] = runs(8)
    assert suite.choose_nsr_lr(grid, max_phase=16) == 3e-5
    assert suite.choose_nsr_lr(grid, max_phase=4) == 1e-4  # the drop comes after the longest phase
    grid = {k: runs(2) for k in grid}
    assert suite.choose_nsr_lr(grid, max_phase=16) == min(GRID_LRS)  # nothing is safe: the gentlest


def test_mean_ci_is_the_t_interval():
    m, h = report.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and abs(h - 4.30 * 1.0 / 3 ** 0.5) < 1e-9
    m, h = report.mean_ci([0.5])
    assert m == 0.5 and h != h  # one seed: no interval


def test_suite_reuses_a_finished_job_only_with_the_same_settings(tiny_base, tmp_path):
    (tmp_path / "runs").mkdir()
    job = dict(name="grid-lr0.001", objective="nsr-prerl", seed=0, steps=1, base=str(tiny_base), lr=1e-3, eval_every=1)
    threads = torch.get_num_threads()  # run_job sets the process's torch threads: keep this one's
    path = suite.run_job(job, "tiny", "cpu", str(tmp_path), threads=threads)
    first = json.load(open(path))
    assert first["lr"] == 1e-3 and first["suite_hp"] == suite.SUITE_HP["tiny"]
    assert [e["step"] for e in first["evals"]] == [0, 1] and first["train"][0]["lr"] == 1e-3
    stamp = open(path).read()
    suite.run_job(job, "tiny", "cpu", str(tmp_path), threads=threads)
    assert open(path).read() == stamp  # same settings: reused, not rerun
    suite.run_job({**job, "lr": 1e-2}, "tiny", "cpu", str(tmp_path), threads=threads)
    assert json.load(open(path))["lr"] == 1e-2  # another learning rate under the same name: run again


def test_the_suites_start_from_the_committed_base_of_a_seed(tiny_base, tmp_path, monkeypatch):
    """With a committed base for seed 0 only, the mechanism study pre-trains seed 1 but not seed 0, runs seed 0's
    RL from the committed file, and its pre-training record is the one stored in that file."""
    import dsrl
    committed = tmp_path / "bases"
    committed.mkdir()
    ck = M.load_checkpoint(str(tiny_base))
    M.save_checkpoint(committed / "s0.pt", {**ck, "done": True, "base_eval": {"pass@1": 0.25, "curve": []}})
    monkeypatch.setattr(dsrl, "COMMITTED_BASES", {"tiny": str(committed)})
    jobs = {j["seed"]: j for j in MECH.stage1_jobs(str(tmp_path / "m"), [0, 1], "tiny") if j["name"] == "pretrain"}
    assert jobs[0]["committed"] == str(committed / "s0.pt") and "committed" not in jobs[1]
    bases = {j["seed"]: j["base"] for j in MECH.stage2_jobs(str(tmp_path / "m"), [0, 1], 2, 1e-4, "tiny")
             if j["name"] == "base"}
    assert bases[0] == str(committed / "s0.pt") and bases[1] == str(tmp_path / "m/base-s1/base.pt")
    (tmp_path / "m/runs").mkdir(parents=True)
    rec = json.load(open(suite.run_job(jobs[0], "tiny", "cpu", str(tmp_path / "m"), threads=torch.get_num_threads())))
    assert rec["base_eval"] == {"pass@1": 0.25, "curve": []} and not (tmp_path / "m/base-s0").exists()


# --- the mechanism study's probe ---------------------------------------------------------------------------

def test_wait_probe_set_reads_steps_with_and_without_check_digits(monkeypatch):
    """Every complete step of a sample is an item, the prefix through its result (and check digit) plus ' wait'."""
    texts = ["23*7=162|1 wait 23*7=161|1;5+161=166|6;#166", "23*7=160;5+160=165;#165"]
    monkeypatch.setattr(MECH, "generate", lambda *a, **k: SimpleNamespace(texts=texts))
    items = MECH.wait_probe_set(M.GPT(M.PRESETS["tiny"]), R.make_split("val", 2), G=1, max_new_tokens=8, seed=0)
    decoded = {k: [R.decode(y) for _, y in v] for k, v in items.items()}
    assert decoded[True] == ["23*7=162|1 wait", "23*7=160 wait"]
    assert decoded[False] == ["23*7=162|1 wait 23*7=161|1 wait", "23*7=162|1 wait 23*7=161|1;5+161=166|6 wait",
                              "23*7=160;5+160=165 wait"]


def test_switch_after_steps_counts_switches_after_wrong_and_after_right_attempts():
    texts = ["23*7=162|1 alternatively 20*7=140|0;3*7=21|1;140+21=161|1;5+161=166|6;#166",  # wrong, switch right
             "23*7=161|1 alternatively 20*7=140|0;3*7=20|1;140+20=160|0;#160",    # right attempt, switch ends wrong
             "23*7=161;9*6=55;161+55=216;#216",                                    # hard right, easy 9*6 not counted
             "23*7 alternatively 20*7=140;3*7=21;140+21=161;#161"]                 # upfront: no attempt
    s = MECH.switch_after_steps(texts)
    assert (s["wrong_attempts"], s["right_attempts"]) == (1, 2)
    assert s["switch_after_wrong"] == 1.0 and s["switch_after_right"] == 0.5 and s["switch_right"] == 0.5


def test_alternatively_probe_reads_direct_attempts_at_hard_products_only(monkeypatch):
    texts = ["23*7=162|1 alternatively 20*7=140|0;3*7=21|1;140+21=161|1;#161", "9*6=54;23*7=161;54+161=215;#215"]
    monkeypatch.setattr(MECH, "generate", lambda *a, **k: SimpleNamespace(texts=texts))
    items = MECH.wait_probe_set(M.GPT(M.PRESETS["tiny"]), R.make_split("val", 2), G=1, max_new_tokens=8, seed=0,
                                marker="alternatively")
    decoded = {k: [R.decode(y) for _, y in v] for k, v in items.items()}
    assert decoded == {True: ["23*7=162|1 alternatively"], False: ["9*6=54;23*7=161 alternatively"]}
    p = MECH.wait_probe(M.GPT(M.PRESETS["tiny"]), items, marker="alternatively")
    assert set(p) == {"p_alternatively_slip_cond", "p_alternatively_slip_pre", "p_alternatively_right_cond",
                      "p_alternatively_right_pre", "n_slip_alternatively", "n_right_alternatively"}


def test_wait_probe_is_the_probability_of_the_wait_tokens():
    torch.manual_seed(0)
    m = M.GPT(M.PRESETS["tiny"])
    problems = R.make_split("val", 4)
    # hand-made items: a slipped step and a right one, each followed by ' wait'
    items = {True: [], False: []}
    for slipped, text in ((True, "23*7=160"), (False, "23*7=161")):
        items[slipped].append((S.prompt_ids(problems[0]), R.encode(text + " wait")))
    p = MECH.wait_probe(m, items)
    assert 0 < p["p_wait_slip_cond"] < 1 and 0 < p["p_wait_right_pre"] < 1
    # P(" wait" | prefix) is the product of its 5 token probabilities: check against a direct forward
    resp = torch.tensor([R.encode("23*7=160 wait")])
    with torch.no_grad():
        lm, _ = pretrain_logprobs(m, resp)
    assert abs(p["p_wait_slip_pre"] - float(lm[0, -5:].sum().exp())) < 1e-6
    assert p["n_slip"] == p["n_right"] == 1


# --- the benchmarks ----------------------------------------------------------------------------------------

def test_sampler_bench_times_every_sampler_on_the_same_tokens(capsys):
    """python -m experiments.bench --sampler, in this process on the tiny preset."""
    bench_sampler(argparse.Namespace(device="cpu", preset="tiny", rows=[16], new_tokens=6, compile=False, profile=True))
    out = capsys.readouterr().out
    for name in ("naive recompute", "kv cache", "static cache"):
        assert re.search(rf"16 rows  {name} +\d+ tokens/s", out), name
    assert re.search(r"static cache vs kv cache: [\d.]+x; rows sampled otherwise: 0 of 16", out)
    assert "rows sampled otherwise than by naive recompute: 0 of 16" in out and "ops' self time" in out
    assert re.search(r"threads, torch \S+, fp32 matmul \d+ GFLOP/s", out)  # the machine beside the figures
    assert re.search(r"16 rows  the step's 9 weight matmuls alone, at their shapes: [\d.]+ ms", out)  # tiny: 2 layers


def test_token_comparison_with_another_checkout(tmp_path, capsys):
    """--tokens-vs: against a copy of this sampler (no row differs), then against a copy that always draws
    greedily (every row differs)."""
    other = tmp_path / "other"
    other.mkdir()
    for f in ("model.py", "sample.py", "reward.py"):
        (other / f).write_text((ROOT / f).read_text())
    compare_tokens(other, preset="tiny", rows=(6,), new_tokens=8, out=str(tmp_path / "tok"))
    assert "0 of 6 rows sampled otherwise" in capsys.readouterr().out
    (other / "sample.py").write_text((ROOT / "sample.py").read_text().replace("if temperature == 0:", "if True:"))
    compare_tokens(other, preset="tiny", rows=(6,), new_tokens=8, out=str(tmp_path / "tok"))
    assert "6 of 6 rows sampled otherwise" in capsys.readouterr().out


def test_bases_recipe_keys_are_flat_and_name_the_run():
    """experiments.bases: the preset's corpus fields are flat corpus_* keys; a run of the preset's own recipe is
    "recipe", any other is named by what differs."""
    from experiments.bases import flat_recipe, run_dir
    assert flat_recipe("cpu")["corpus_slip"] == 0.25 and "corpus" not in flat_recipe("cpu")
    assert run_dir("o", "cpu", flat_recipe("cpu"), 2, 4) == "o/cpu/bases/recipe/s2-t4"
    assert run_dir("o", "cpu", {**flat_recipe("cpu"), "corpus_slip": 0.1}, 0, 1) == "o/cpu/bases/corpus_slip0.1/s0-t1"


@pytest.mark.slow  # 20 curve points of val pass@1 (400 samples each) in a subprocess: about 30 s on 2 cores
def test_bases_slip_flag_reaches_the_corpus_report_and_export(tmp_path):
    """experiments.bases end to end: --slip reaches the pre-training corpus, the report and the export carry it,
    and a rerun reuses the finished run."""
    args = ["--preset", "tiny", "--seeds", "1", "--threads", "1", "--steps", "20",
            "--slip", "0.3", "--out", str(tmp_path), "--report", str(tmp_path / "r"), "--export", str(tmp_path / "e")]
    p = run("-m experiments.bases", *args)
    assert p.returncode == 0, p.stderr[-800:]
    rep = json.load(open(tmp_path / "r/bases.json"))
    assert rep["recipe"]["corpus_slip"] == 0.3 and len(rep["runs"]["seed 0, 1 threads"]["curve"]) >= 1
    ck = M.load_checkpoint(str(tmp_path / "e/s0.pt"))
    assert ck["run"]["corpus"]["slip"] == 0.3 and ck["run"]["steps"] == 20 and "optimizer" not in ck
    assert ck["base_eval"]["machine"]["threads"] == 1 and ck["base_eval"]["curve"]
    base = tmp_path / "tiny/bases/corpus_slip0.3-steps20/s0-t1/base.pt"
    stamp = base.stat().st_mtime_ns
    assert run("-m experiments.bases", *args).returncode == 0 and base.stat().st_mtime_ns == stamp  # finished: reused, not trained again


def test_peers_bans_our_end_token_and_says_when_the_peers_are_missing(monkeypatch, capsys):
    """experiments.peers: with its hook our model never writes the end token, so every row runs to the budget (equal
    work with the peer); without transformers / trl it exits 1 naming what is missing, before any timing."""
    import importlib.util
    from experiments import peers
    torch.manual_seed(0)
    m = M.GPT(M.PRESETS["tiny"]).eval()
    with torch.no_grad():
        m.lm_head.weight[R.EOS_ID] = 50 * m.lm_head.weight.abs().max()  # without the ban, the end token is likely
        m.transformer.ln_f.weight.fill_(1.0)
    prompts = [S.prompt_ids(p) for p in R.make_split("test", 6)]
    free = S.generate(m, prompts, max_new_tokens=12, generator=torch.Generator().manual_seed(0))
    peers.ban_end_token(m)
    banned = S.generate(m, prompts, max_new_tokens=12, generator=torch.Generator().manual_seed(0), check_every=10 ** 9)
    assert not free.mask.all() and banned.mask.all() and not (banned.response == R.EOS_ID).any()
    # only trl missing, whatever this machine has installed
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "trl" else object())
    with pytest.raises(SystemExit) as e:
        peers.main(["--what", "sampler"])
    assert e.value.code == 1 and "peers: trl not installed" in capsys.readouterr().err


def test_reflection_makes_retry_documents_from_samples_and_judges_by_its_rule(monkeypatch):
    """experiments.reflection: each readable sample becomes its prompt plus retry_text (tied or control); the
    probe calls a model tied only when both teacher-forced ratios, the observed ratio and the redo accuracy pass."""
    from experiments import reflection as RF
    p = R.Problem("5+23*7-4", 162)
    texts = ["23*7=161;5+161=165;165-4=161;#161", "23*7=161;5+161=166;166-4=162;#162", "#7"] * 2
    fake = type("Ro", (), {"texts": texts})()
    monkeypatch.setattr(RF, "generate", lambda *a, **k: fake)
    m = M.GPT(M.PRESETS["tiny"])
    docs, stats = RF.retry_documents(m, [p, p, p, p], seed=0, tied=True, max_new_tokens=8)  # G = 4 samples each
    assert stats == {"samples": 6, "documents": 2}
    assert docs == [p.prompt + "23*7=161;5+161=165 wait 5+161=166;166-4=162;#162"] * 2
    tf = {"p_wait_slip_cond": 0.4, "p_wait_right_cond": 0.1, "p_wait_slip_pre": 0.4, "p_wait_right_pre": 0.1}
    monkeypatch.setattr(RF, "wait_probe_set", lambda *a, **k: None)
    monkeypatch.setattr(RF, "wait_probe", lambda model, items: dict(tf))
    fake.texts = ["23*7=151 wait 23*7=161;5+161=166;166-4=162;#162"] * 3 + ["23*7=161;5+161=166;166-4=162;#162"]
    out = RF.probe(m, 0, 8)
    assert out["ratio_cond"] == pytest.approx(4.0) and out["ratio_observed"] > 3 and out["tied"]
    tf["p_wait_right_pre"] = 0.2  # P(y)'s ratio 2: not tied, whatever the rest says
    assert not RF.probe(m, 0, 8)["tied"]


def test_plateau_is_the_spread_over_the_last_fifth_of_the_curve():
    """experiments.bases judges a base by its curve's last 20% of points: a run still climbing is not flat."""
    from experiments.bases import plateau
    climbing = [{"step": s, "val_pass@1": s / 100, "heldout_loss": 1 - s / 1000} for s in range(1, 21)]
    dp, dl = plateau(climbing)  # the last 4 of 20 points: steps 17..20
    assert abs(dp - 0.03) < 1e-12 and abs(dl - 0.003) < 1e-12
    flat = climbing[:16] + [{"step": s, "val_pass@1": 0.5, "heldout_loss": 0.6} for s in range(17, 21)]
    assert plateau(flat) == (0.0, 0.0)
    assert plateau(climbing[:3])[0] == climbing[2]["val_pass@1"] - climbing[1]["val_pass@1"]  # at least 2 points


def test_measurement_spread_separates_the_sampler_from_the_checkpoint():
    """experiments.bases --measure: a row holds the checkpoint's pass@1 at each sampler seed (seed 0 = what
    sample.evaluate gives), their mean and range; the same checkpoint twice has no spread between checkpoints,
    whatever the sampler seeds make of it."""
    from experiments.bases import measurement_spread
    lab = str(ROOT / "tutorial/lab.pt")
    table = measurement_spread([lab, lab], seeds=3, problems=20, samples=4, big=(30, 2))
    rows = [line for line in table.splitlines() if line.startswith(f"| `{lab}`")]
    assert len(rows) == 2 and rows[0] == rows[1]
    per_seed, mean, rng, big = (c.strip() for c in rows[0].split("|")[2:6])
    values = [float(v) for v in per_seed.split(" / ")]
    model = M.model_from_checkpoint(M.load_checkpoint(lab))
    direct = S.evaluate(model, R.make_split("test", 20), n=4, seed=0, progress=False)[0]["pass@1"]
    assert len(values) == 3 and values[0] == float(f"{direct:.3f}") and len(set(values)) > 1  # the sampler moves it
    assert float(mean) == pytest.approx(sum(values) / 3, abs=1e-3) and float(rng) == pytest.approx(
        max(values) - min(values), abs=1e-3)
    assert "spread over the checkpoints: 0.000 at sampler seed 0, 0.000 of the means, 0.000 at 30 x 2" in table


def test_reflection_routes_have_their_own_folders_and_bad_flags_get_one_line(capsys):
    """experiments.reflection: a route is named by what differs from ROUTE (so sweeps never share a folder); a bad
    flag stops with one line naming it, before any model is loaded."""
    from experiments import reflection as RF
    assert RF.route_name(dict(RF.ROUTE)) == "default"
    assert RF.route_name({**RF.ROUTE, "problems": 8000, "mix_share": 0.7}) == "mix_share0.7-problems8000"
    for flag, value, msg in (("--mix-share", "1.5", "--mix-share must be in (0, 1], got 1.5"),
                             ("--problems", "0", "--problems must be positive, got 0"),
                             ("--lr", "-1", "--lr must be positive, got -1.0"),
                             ("--reflect", "2", "--reflect must be in [0, 1], got 2.0"),
                             ("--jobs", "nsr-prerl", "--jobs picks claim runs of --suite: add --suite")):
        with pytest.raises(SystemExit) as e:
            RF.main([flag, value])
        assert e.value.code == 2 and msg in capsys.readouterr().err


def test_reflection_stops_with_one_line_when_an_arm_cannot_resume(tmp_path, monkeypatch, capsys):
    """An arm's checkpoint made with other settings (another base, say) stops the command with train.pretrain's
    one-line reason and exit status 2, not a traceback."""
    RF, base, m, seen = fake_reflection_arms(tmp_path, monkeypatch)

    def refuse(cfg, d, device, resume, progress):
        raise R.UserError(f"cannot resume {d}/base.pt: it was made with other settings or another base model")
    monkeypatch.setattr(RF, "pretrain", refuse)
    monkeypatch.setattr(RF, "committed_base", lambda preset, seed, prefix="s": base if prefix == "s" else None)
    monkeypatch.setattr(RF, "probe", lambda *a: {"ratio_cond": 1.0})
    with pytest.raises(SystemExit) as e:
        RF.main(["--preset", "tiny", "--check", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: cannot resume") and "Traceback" not in err


def test_retry_text_ties_the_reflection_to_the_models_own_first_wrong_step():
    """On-policy retry data: ` wait ` comes right after the sample's first wrong result and redoes it right; the rest
    is the reference steps, so the document answers right. The control has as many waits, each after a right step
    and at every position over draws; neither is made from a sample it cannot read against the reference order."""
    from experiments import reflection as RF
    p = R.Problem("5+23*7-4", 162)
    slipped = "23*7=161;5+161=165;165-4=161;#161"  # the second step is the sample's own slip
    tied = RF.retry_text(p, slipped, random.Random(0))
    assert tied == "23*7=161;5+161=165 wait 5+161=166;166-4=162;#162" and R.score(tied, p.answer) == 1.0
    assert R.reflection_stats([tied]) == {"waits": 1, "follows_error": 1.0, "redo_right": 1.0}
    controls = [RF.retry_text(p, slipped, random.Random(s), tied=False) for s in range(40)]
    assert all(R.reflection_stats([c]) == {"waits": 1, "follows_error": 0.0, "redo_right": 1.0} for c in controls)
    assert all(R.score(c, p.answer) == 1.0 for c in controls)
    assert {c.split(" wait ")[0].count(";") for c in controls} == {0, 1, 2}  # after each of the three steps
    for unusable in ("23*7=161;5+161=166;166-4=162;#162",     # nothing wrong
                     "5+23=28;28*7=196;196-4=192;#192",       # another order
                     "23*7 alternatively 20*7=140;3*7=21;140+21=161;5+161=165;#165",  # a method switch first
                     "23*7=161 wait 23*7=161;5+161=165;#165",  # a reflection of its own
                     "23*7=161;#161"):                         # stops early
        assert RF.retry_text(p, unusable, random.Random(0)) is None


def fake_reflection_arms(tmp_path, monkeypatch):
    """experiments.reflection with pre-training replaced by a stub that records its config and saves a tiny model:
    (the module, the base's path, the tiny model, the list of configs pre-training was called with)."""
    from dataclasses import asdict
    from experiments import reflection as RF
    base = str(tmp_path / "base.pt")
    m = M.GPT(M.PRESETS["tiny"])
    M.save_checkpoint(base, {"model": m.state_dict(), "config": asdict(m.config)})
    seen = []

    def fake_pretrain(cfg, d, device, resume, progress):
        seen.append(cfg)
        M.save_checkpoint(f"{d}/base.pt", {"model": m.state_dict(), "config": asdict(m.config)})
        return None, {"pass@1": 0.5}, None
    monkeypatch.setattr(RF, "pretrain", fake_pretrain)
    return RF, base, m, seen


def test_reflection_arm_continues_the_base_or_with_scratch_pretrains_a_new_model(tmp_path, monkeypatch):
    """experiments.reflection.run_arm: the default route continues the base's weights (init = the base) for its own
    steps and lr; --scratch pre-trains a new model (no init) on the same mixed stream with the preset's schedule."""
    RF, base, m, seen = fake_reflection_arms(tmp_path, monkeypatch)
    monkeypatch.setattr(RF, "retry_documents", lambda *a: (["1+1=3 wait 1+1=2;#2"], {"samples": 4, "documents": 1}))
    monkeypatch.setattr(RF, "probe", lambda *a: {"ratio_cond": 1.0})
    args = argparse.Namespace(problems=None, mix_share=None, steps=None, lr=None, scratch=False, check=False,
                              reflect=None, switch=False)
    for scratch in (False, True):
        args.scratch = scratch
        route = RF.make_route(args, "tiny")
        rec = RF.run_arm("tiny", base, 0, "tied", route, str(tmp_path / RF.route_name(route)), "cpu")
        assert rec["test_pass@1"] == 0.5 and rec["mix"]["documents"] == 1
    cont, new = seen
    assert cont.init == base and (cont.steps, cont.lr, cont.mix_share) == (1500, 1e-3, 0.5)
    assert new.init is None and (new.steps, new.lr) == (RF.TRAIN["tiny"]["steps"], RF.TRAIN["tiny"]["lr"])
    assert new.mix.startswith(str(tmp_path / "lr")) and "scratch1" in new.mix and new.mix_share == 0.5


def test_reflection_check_route_trains_the_arms_on_corpora_whose_reflections_follow_slips_or_not(tmp_path, monkeypatch):
    """--check: no retry documents; the tied arm continues the base on the corpus with check digits and reflections
    after slips, the control on the same corpus with each reflection after a right step (reflect_after="random")."""
    RF, base, m, seen = fake_reflection_arms(tmp_path, monkeypatch)
    monkeypatch.setattr(RF, "retry_documents", lambda *a: pytest.fail("the check route makes no retry documents"))
    monkeypatch.setattr(RF, "probe", lambda *a: {"ratio_cond": 1.0})
    args = argparse.Namespace(problems=None, mix_share=None, steps=None, lr=None, scratch=False, check=True,
                              reflect=1.0, switch=False)
    route = RF.make_route(args, "tiny")
    assert RF.route_name(route) == "check1-reflect1"
    for arm in RF.ARMS:
        RF.run_arm("tiny", base, 0, arm, route, str(tmp_path / RF.route_name(route)), "cpu")
    tied, control = seen
    assert tied.mix is None and tied.mix_share == 0.0 and tied.init == base
    assert tied.corpus.check and control.corpus.check and tied.corpus.reflect == control.corpus.reflect == 1.0
    assert (tied.corpus.reflect_after, control.corpus.reflect_after) == ("slip", "random")
    assert tied.corpus.transition_after == control.corpus.transition_after == "upfront"
    args.switch = True  # --switch: the method switch after slipped attempts (tied) or the same attempts made right
    switch = RF.make_route(args, "tiny")
    for arm in RF.ARMS:
        RF.run_arm("tiny", base, 0, arm, switch, str(tmp_path / RF.route_name(switch)), "cpu")
    assert RF.route_name(switch) == "check1-reflect1-switch1"
    assert [c.corpus.transition_after for c in seen[2:]] == ["slip", "random"]
    del seen[2:]
    # an exported base is reused by the route that made it, and only by that route (a route stored before a
    # ROUTE key existed counts as that key's default)
    from dataclasses import asdict
    from experiments.bases import export
    import dsrl
    d = tmp_path / RF.route_name(route) / "tied-s0"
    (d / "base_eval.json").write_text(json.dumps({"pass@1": 0.25}))
    M.save_checkpoint(str(d / "base.pt"), {"model": m.state_dict(), "config": asdict(m.config), "preset": "tiny",
                                           "run": {}})
    export(str(d), str(tmp_path / "committed" / "tied-s0.pt"), 0,
           extra={"route": {k: v for k, v in route.items() if k != "switch"}, "mix": {}})
    monkeypatch.setitem(dsrl.COMMITTED_BASES, "tiny", str(tmp_path / "committed"))
    rec = RF.run_arm("tiny", base, 0, "tied", route, str(tmp_path / "again"), "cpu")
    assert rec["path"] == str(tmp_path / "committed" / "tied-s0.pt") and rec["test_pass@1"] == 0.25 and len(seen) == 2
    other = dict(route, steps=7)
    rec = RF.run_arm("tiny", base, 0, "tied", other, str(tmp_path / RF.route_name(other)), "cpu")
    assert rec["path"] == str(tmp_path / RF.route_name(other) / "tied-s0" / "base.pt") and len(seen) == 3
    # where the route trained the arm itself, its own model stays the one the claim runs start from
    M.save_checkpoint(str(d / "base.pt"), {"model": m.state_dict(), "config": asdict(m.config), "done": True})
    rec = RF.run_arm("tiny", base, 0, "tied", route, str(tmp_path / RF.route_name(route)), "cpu")
    assert rec["path"] == str(d / "base.pt")


def test_reflection_claims_follow_their_rules():
    """experiments.reflection.arm_claims on hand-made runs: each verdict flips with the number its rule reads."""
    from experiments import reflection as RF

    def run(seed, evals=(), final=None, **kw):
        return {"seed": seed, "evals": list(evals), "final": final or {}, **kw}

    def ev(step, p, slip=0.1, right=0.1):
        return {"step": step, "pass@1": p, "p_wait_slip_cond": slip, "p_wait_right_cond": right}

    def test_split(p, wait=0.1, alt=0.05):
        return {"test": {"pass@1": p, "wait_share": wait, "alternatively_share": alt}}

    def runs_for(dsrl_gain, wait_gain):
        seeds, out = range(3), {}
        out["tied-alignment"] = [run(s, stats={"cosine_mean": 0.4, "inner_negative_share": 0.01}) for s in seeds]
        out["tied-base"] = [run(s, final=test_split(0.4)) for s in seeds]
        out["tied-prerl"] = [run(s, [ev(0, 0.4), ev(40, 0.2 + 0.01 * s)]) for s in seeds]
        out["tied-nsr-prerl"] = [run(s, [ev(0, 0.4, 0.1, 0.05), ev(20, 0.4, 0.1 + wait_gain + 0.01 * s, 0.05)],
                                     test_split(0.4, 0.1 + wait_gain, 0.05 + wait_gain)) for s in seeds]
        out["tied-grpo"] = [run(s, [ev(0, 0.4), ev(40, 0.5)], test_split(0.5 + 0.01 * s)) for s in seeds]
        out["tied-dsrl"] = [run(s, [ev(0, 0.4), ev(40, 0.5 + dsrl_gain)], test_split(0.5 + 0.01 * s + dsrl_gain))
                            for s in seeds]
        out["tied-nsr-rl-warmup"] = [run(s, [ev(0, 0.4), ev(40, 0.5)], test_split(0.5 + 0.012 * s)) for s in seeds]
        return out
    yes, no = RF.arm_claims(runs_for(0.05, 0.3), "tied"), RF.arm_claims(runs_for(0.0, 0.0), "tied")
    assert yes["C1"][0] == no["C1"][0] == "aligned" and yes["C3"][0] == "collapses"
    assert (yes["C4"][0], no["C4"][0]) == ("reproduced", "not reproduced")
    assert (yes["C5"][0], no["C5"][0]) == ("reproduced", "not reproduced") and "DSRL 40" in yes["C5"][1]
    assert (yes["C6"][0], no["C6"][0]) == ("reproduced", "not reproduced")
    # --jobs nsr-prerl (the tutorial's run): the probe's start and end along the runs there are, no verdicts
    some = {k: v for k, v in runs_for(0.0, 0.3).items() if k == "tied-nsr-prerl"}
    row, = [line for line in RF.probe_table(some).splitlines() if line.startswith("| tied")]
    assert "0.100 -> 0.410" in row and "+0.310 ± " in row and "0.050 -> 0.050" in row and "control" not in row
