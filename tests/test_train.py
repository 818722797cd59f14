"""train.py: pre-training (its schedule, batches, resume after a stop) and the RL loop (rl_train, rl_step,
micro_batched_backward): which rows are scored against which answer, the clipped update, the KL reference, the
held-out evaluations, the logging-only pass, micro-batches, checkpoints, resume and non-finite steps."""
import copy
import json
import math
import os
import random

import pytest
import torch

import dsrl as D
import losses as L
import model as M
import reward as R
import sample as S
import train as T
from conftest import ROOT, alternating, cfg_of, rl_run

LAB = ROOT / "tutorial" / "lab.pt"  # the committed classroom model: it answers some problems right


@pytest.fixture
def mixed_rewards(monkeypatch):
    """sample.rewards replaced by `alternating`: every group objective has a gradient."""
    monkeypatch.setattr(S, "rewards", alternating)


def weights(path):
    return M.load_checkpoint(str(path))["model"]


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def tiny_model(base):
    return M.model_from_checkpoint(M.load_checkpoint(str(base)))


# --- pre-training ------------------------------------------------------------------------------------------

def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    assert T.lr_at(0, 1000, 1.0, warmup=100) == pytest.approx(0.01)
    assert T.lr_at(99, 1000, 1.0, warmup=100) == pytest.approx(1.0)
    assert T.lr_at(100, 1000, 1.0, warmup=100) == pytest.approx(1.0)
    assert T.lr_at(550, 1000, 1.0, warmup=100) == pytest.approx(0.55)
    assert T.lr_at(1000, 1000, 1.0, warmup=100) == pytest.approx(0.1)


def test_collate_shifts_targets_and_ignores_padding():
    x, y = T.collate([[1, 2, 3], [4, 5]], "cpu")
    assert x.tolist() == [[1, 2], [4, R.PAD_ID]]
    assert y.tolist() == [[2, 3], [5, -1]]


def test_pretrain_config_takes_the_preset_and_ignores_unset_overrides():
    cfg = T.pretrain_config("tiny", steps=None, seed=3, micro_batch=None)
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.seed, cfg.micro_batch) == (150, 32, 3e-3, 3, None)
    assert T.pretrain_config("gpu").micro_batch == 64 and T.pretrain_config("gpu", micro_batch=8).micro_batch == 8


def test_pretrain_config_merges_corpus_fields_over_the_presets_own():
    """TRAIN["cpu"] pre-trains on a corpus of slip 0.25; a caller's corpus fields (the suites' no-habits base)
    change only those fields, and a preset without a corpus entry keeps CorpusConfig's defaults."""
    assert T.pretrain_config("cpu").corpus == R.CorpusConfig(slip=0.25)
    nohabits = T.pretrain_config("cpu", corpus=dict(guess=0.0, repeat=0.0)).corpus
    assert (nohabits.slip, nohabits.guess, nohabits.repeat) == (0.25, 0.0, 0.0)
    assert T.pretrain_config("lab").corpus == R.CorpusConfig()
    assert "corpus" in T.TRAIN["cpu"]  # pretrain_config copies TRAIN's entry, never pops from it


def test_pretraining_in_two_processes_with_the_same_threads_gives_identical_weights(tmp_path):
    """Two processes, same seed and thread count: bit-identical weights (what --retrain on one machine relies on;
    another thread count changes the floats of the matmuls' sums)."""
    import subprocess
    import sys
    code = ("import sys, torch; torch.set_num_threads(1); import train as T; T.pretrain(T.pretrain_config("
            "'tiny', steps=8, eval_every=1000, eval_problems=2, eval_samples=1), sys.argv[1], 'cpu', progress=False)")
    for run in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / run)], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHONHASHSEED": run == "a" and "1" or "2"})
    assert same(weights(tmp_path / "a/base.pt"), weights(tmp_path / "b/base.pt"))


def test_continued_pretraining_starts_from_init_and_learns_the_mixed_documents(tiny_base, tmp_path):
    """init: the run starts from that checkpoint's weights (at lr 0 it ends on them exactly); mix at share 1: every
    document is one of the mix file's, whose loss then falls far below the starting model's."""
    doc = "Q:1+2*3=2*3=6;1+6=7;#7"
    (tmp_path / "mix.jsonl").write_text(json.dumps({"text": doc}) + "\n")
    kw = dict(steps=30, batch_size=8, init=str(tiny_base), mix=str(tmp_path / "mix.jsonl"), mix_share=1.0,
              eval_every=1000, eval_problems=2, eval_samples=1)
    T.pretrain(T.pretrain_config("tiny", lr=0.0, **kw), str(tmp_path / "still"), "cpu", progress=False)
    assert same(weights(tmp_path / "still/base.pt"), weights(tiny_base))
    T.pretrain(T.pretrain_config("tiny", lr=3e-2, **kw), str(tmp_path / "mixed"), "cpu", progress=False)
    x, y = T.collate([[R.BOS_ID] + R.encode(doc) + [R.EOS_ID]], "cpu")
    with torch.no_grad():
        before, after = (float(T.lm_loss(tiny_model(p), x, y)) for p in (tiny_base, tmp_path / "mixed/base.pt"))
    assert after < 0.25 * before
    assert M.load_checkpoint(str(tmp_path / "mixed/base.pt"))["run"]["mix_share"] == 1.0
    assert "init" not in M.load_checkpoint(str(tiny_base)).get("run", {})


def test_pretraining_micro_batches_give_the_whole_batch_step():
    """pretrain_step in chunks of rows, each chunk's loss over the whole batch's token count: the same loss and
    step as the whole batch at once (the documents differ in length, so per-chunk means would differ)."""
    x, y = next(T.corpus_batches(random.Random(0), R.CorpusConfig(), 8, "cpu", pool=1))
    assert len(set((y != -1).sum(1).tolist())) > 1
    tokens, steps = int((y != -1).sum()), {}
    for mb in (None, 3):  # one pass, or chunks of 3, 3 and 2 documents
        torch.manual_seed(0)
        m = M.GPT(M.PRESETS["tiny"])
        loss = T.pretrain_step(m, torch.optim.SGD(m.parameters(), lr=1.0), x, y, tokens, mb, 1)
        steps[mb] = float(loss), [p.detach() for p in m.parameters()]
    assert steps[3][0] == pytest.approx(steps[None][0], rel=1e-5)
    for a, b in zip(steps[None][1], steps[3][1]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


class Killed(Exception):
    """Raised by the patched kill point: the run stops right after a checkpoint, as under kill -9."""


def stop_at(step):
    def kill_point(s):
        if s == step:
            raise Killed(s)
    return kill_point


def test_pretraining_stopped_after_a_checkpoint_resumes_to_identical_weights(tmp_path, monkeypatch):
    """A pre-training run stopped right after its checkpoint at step 16 (where PRERL_TEST_KILL_AT_STEP kills it) and
    resumed ends with the uninterrupted run's weights, curve and token count; the tokens it counts are those of
    the documents it trained on. (kill -9 itself: test_dsrl.py and test_ddp.py.)"""
    cfg = T.pretrain_config("tiny", steps=32, batch_size=4, ckpt_every=16, eval_every=1000, eval_problems=2,
                            eval_samples=1)
    _, a, _ = T.pretrain(cfg, str(tmp_path / "a"), "cpu", progress=False)
    monkeypatch.setattr(T, "kill_point", stop_at(16))
    with pytest.raises(Killed):
        T.pretrain(cfg, str(tmp_path / "b"), "cpu", progress=False)
    ck = M.load_checkpoint(str(tmp_path / "b/base.pt"))
    assert ck["step"] == 16 and not ck["done"]
    _, b, _ = T.pretrain(cfg, str(tmp_path / "b"), "cpu", resume=True, progress=False)
    assert same(weights(tmp_path / "a/base.pt"), weights(tmp_path / "b/base.pt"))
    assert a["pretrain_tokens"] == b["pretrain_tokens"] and a["curve"] == b["curve"]
    assert M.load_checkpoint(str(tmp_path / "b/base.pt"))["done"]
    # every document has a few tokens at least, and at most block_size
    docs = cfg.steps * cfg.batch_size
    assert 4 * docs < a["pretrain_tokens"] < docs * M.PRESETS["tiny"].block_size


# --- one RL step -------------------------------------------------------------------------------------------

def test_rl_step_clips_the_update_to_gradient_norm_one(tiny_base, monkeypatch):
    """With SGD at lr 1 the parameter change is the clipped gradient: norm min(1, grad norm)."""
    real = T.objective_loss
    monkeypatch.setattr(T, "objective_loss", lambda *a, **k: (lambda l, st: (100 * l, st))(*real(*a, **k)))
    torch.manual_seed(0)
    m = tiny_model(tiny_base)
    before = [p.detach().clone() for p in m.parameters()]
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    _, _, _, _, gnorm, finite, _ = T.rl_step(m, opt, R.make_split("train", 2), D.Phase("nsr", 1.0), cfg_of(),
                                             torch.Generator().manual_seed(0))
    delta = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(m.parameters(), before)))
    assert finite and float(gnorm) > 10.0  # the loss x100 makes the gradient large: the clip must act
    assert float(delta) == pytest.approx(1.0, rel=1e-3)


def test_rl_step_scores_each_row_against_its_own_problem(tiny_base, monkeypatch):
    """Rows b*G .. b*G+G-1 are the samples of problem b: the reward function gets problem b's answer for each of
    them (repeated G times in a row, not the answers tiled)."""
    seen = []
    monkeypatch.setattr(S, "rewards", lambda ro, answers: seen.append(list(answers)) or alternating(ro, answers))
    problems = []
    for p in R.make_split("train", 50):  # three problems with three different answers
        if p.answer not in {q.answer for q in problems}:
            problems.append(p)
    problems = problems[:3]
    m = tiny_model(tiny_base)
    cfg = cfg_of(max_new_tokens=8)
    T.rl_step(m, torch.optim.SGD(m.parameters(), lr=0.0), problems, D.Phase("grpo", 0.0), cfg,
              torch.Generator().manual_seed(0))
    G = cfg.group
    assert seen == [[p.answer for p in problems for _ in range(G)]]
    assert seen[0] != [p.answer for _ in range(G) for p in problems]


def test_a_replaced_reward_function_takes_effect(tiny_base, monkeypatch):
    """Students swap pieces at run time: the loop must look sample.rewards up when it calls it."""
    monkeypatch.setattr(S, "rewards", lambda ro, answers: [1.0] * len(answers))
    m = tiny_model(tiny_base)
    cfg = cfg_of()
    _, r, *_ = T.rl_step(m, torch.optim.SGD(m.parameters(), lr=0.0), R.make_split("train", 2), D.Phase("grpo", 0.0),
                         cfg, torch.Generator().manual_seed(0))
    assert r.tolist() == [1.0] * 2 * cfg.group  # an untrained model never answers right: these are ours


@pytest.mark.parametrize("name,agg", [("grpo", "token-mean"), ("nsr-prerl", "token-mean"),
                                      ("grpo", "seq-mean-token-mean"), ("w-reinforce", "seq-mean-token-sum-norm")])
def test_micro_batches_give_the_one_chunk_gradient(name, agg):
    """Chunks of rows with the batch's denominators: the same step as one pass over all rows (the objective's
    kept tokens or sequences are counted over the whole batch, not per chunk)."""
    steps = {}
    for mb in (None, 8):  # 32 rows: one pass, or 4 chunks of 2 groups
        cfg = D.rl_config("lab", agg=agg, group=4, max_new_tokens=40, micro_batch=mb)
        m = M.model_from_checkpoint(M.load_checkpoint(str(LAB)))
        before = [p.detach().clone() for p in m.parameters()]
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        _, r, loss, st, gnorm, finite, _ = T.rl_step(m, opt, R.make_split("train", 8), D.Phase(name, 1.0), cfg,
                                                     torch.Generator().manual_seed(3))
        steps[mb] = (float(loss.detach()), float(gnorm), [p.detach() - b for p, b in zip(m.parameters(), before)], st)
    (l1, g1, d1, s1), (l4, g4, d4, s4) = steps[None], steps[8]
    assert 0 < r.mean() < 1 and g1 > 0  # mixed rewards: a real gradient
    assert l4 == pytest.approx(l1, abs=1e-6) and g4 == pytest.approx(g1, rel=1e-4)
    for a, b in zip(d1, d4):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert s4["tokens"] == s1["tokens"] and s4["samples"] == s1["samples"]


def test_loss_coef_scales_the_loss_and_adam_then_ignores_it(tiny_rollout):
    """Phase.loss_coef multiplies the loss and its gradient; Adam's first step is m / sqrt(v) = sign(g), so the 0.01
    of the official warmup changes that step only where |g| is near Adam's eps."""
    m, ro = tiny_rollout
    r = torch.tensor([0.0, 1.0] * 3)  # every group mixed: one negative per group
    cfg = D.rl_config("tiny", group=2, max_new_tokens=10)
    out = {}
    for coef in (1.0, 0.01):
        net = copy.deepcopy(m)
        loss, _, _ = T.micro_batched_backward(net, ro, r, D.Phase("nsr-prerl", 1e-3, coef), cfg, None, False,
                                              lambda: None)
        grads = [p.grad.clone() for p in net.parameters()]
        torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0).step()
        step = torch.cat([(p - q).flatten() for p, q in zip(net.parameters(), m.parameters())])
        out[coef] = (float(loss), grads, step)
    (l1, g1, s1), (l2, g2, s2) = out[1.0], out[0.01]
    assert l1 != 0 and l2 == pytest.approx(0.01 * l1, rel=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(b, 0.01 * a, rtol=1e-4, atol=1e-9)
    differ = ((s1 - s2).abs() > 1e-4).float().mean()  # of lr 1e-3: where |g| is near Adam's eps
    assert differ < 0.05, differ


# --- the RL loop -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", list(L.OBJECTIVES))
def test_every_objective_runs_a_step(tiny_base, tmp_path, mixed_rewards, objective):
    """With right and wrong samples in every group, every objective's step has a gradient and moves the weights."""
    _, h, _ = rl_run(tiny_base, objective, tmp_path / "x.pt", steps=1)
    assert h[0]["objective"] == objective and not h[0]["skipped"]
    assert h[0]["grad_norm"] > 0 and h[0]["update_norm"] > 0
    assert not same(weights(tmp_path / "x.pt"), weights(tiny_base))


@pytest.fixture(scope="module")
def kl_runs(tiny_base, tmp_path_factory):
    """Two GRPO runs on mixed rewards: 3 steps with k3 KL (kl_coef 0.1) and 1 step without; (folder, histories)."""
    d = tmp_path_factory.mktemp("kl")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S, "rewards", alternating)
        on = rl_run(tiny_base, "grpo", d / "on.pt", steps=3, kl_coef=0.1)[1]
        off = rl_run(tiny_base, "grpo", d / "off.pt", steps=1)[1]
    return d, on, off


def test_kl_reference_is_a_model_apart_from_the_policy(kl_runs, tiny_base):
    """The KL reference is the initial model, kept apart: the KL is 0 on the first step and grows once the policy
    has moved; the checkpoint's reference is still the base. Without kl_coef there is no KL at all."""
    d, on, off = kl_runs
    assert on[0]["kl"] < 1e-7 and on[1]["kl"] > 1e-6 and on[2]["kl"] > on[1]["kl"]
    ck = M.load_checkpoint(str(d / "on.pt"))
    assert same(ck["ref"], weights(tiny_base)) and not same(ck["model"], weights(tiny_base))
    assert "kl" not in off[0] and "ref" not in M.load_checkpoint(str(d / "off.pt"))


def test_checkpoint_holds_everything_needed(kl_runs):
    d, on, _ = kl_runs
    ck = M.load_checkpoint(str(d / "on.pt"))
    for key in ("model", "optimizer", "config", "step", "done", "phase", "rng", "run", "history", "evals",
                "bad_in_a_row", "preset", "ref"):
        assert key in ck, key
    assert ck["step"] == 3 and ck["done"] and ck["phase"] == "grpo" and set(ck["rng"]) == {"python", "torch", "sampler"}
    assert ck["history"] == on and [e["step"] for e in ck["evals"]] == [0, 3]


def test_rl_optimizer_settings_are_the_official_ones(kl_runs):
    d, _, _ = kl_runs
    for g in M.load_checkpoint(str(d / "off.pt"))["optimizer"]["param_groups"]:
        assert tuple(g["betas"]) == (0.9, 0.999) and g["weight_decay"] == 0.0 and g["lr"] == D.RL["tiny"]["lr"]


def test_held_out_evaluation_samples_at_the_run_temperature(tiny_base, tmp_path):
    """Every held-out evaluation of a run samples at the run's temperature: near 0 the draws are the greedy ones
    whatever the seed, unlike at temperature 1."""
    cfg = cfg_of(steps=1, temperature=1e-4, eval_problems=4)
    model, _, evals = T.rl_train(str(tiny_base), D.schedule("grpo", cfg), cfg, str(tmp_path / "t.pt"), "cpu",
                                 progress=False)
    test = R.make_split(cfg.eval_split, cfg.eval_problems, tag=cfg.prompt_tag)
    kw = dict(n=cfg.eval_samples, max_new_tokens=cfg.max_new_tokens, seed=123)
    base = tiny_model(tiny_base)
    assert evals[0] == {"step": 0, **S.evaluate(base, test, temperature=1e-4, **kw)[0]}
    assert evals[-1] == {"step": 1, **S.evaluate(model, test, temperature=1e-4, **kw)[0]}
    assert S.evaluate(base, test, temperature=1.0, **kw)[0] != S.evaluate(base, test, temperature=1e-4, **kw)[0]


def test_logging_pass_can_be_skipped(tiny_base, tmp_path):
    _, h, _ = rl_run(tiny_base, "grpo", tmp_path / "a.pt", steps=3, other_space_every=2)
    assert ["entropy_pre" in x for x in h] == [True, False, True] and all("entropy_cond" in x for x in h)
    _, h0, _ = rl_run(tiny_base, "grpo", tmp_path / "b.pt", steps=3, other_space_every=1)
    assert all("entropy_pre" in x for x in h0)  # every step's log
    strip = lambda hs: [{k: v for k, v in x.items() if not k.startswith(("t_", "entropy_pre"))} for x in hs]
    assert strip(h) == strip(h0)  # logging only: the training is the same


def test_resume_refuses_other_settings_and_keeps_a_finished_run(tiny_base, tmp_path):
    path = tmp_path / "g.pt"
    _, h, e = rl_run(tiny_base, "grpo", path, steps=1)
    with pytest.raises(R.UserError, match="cannot resume"):
        cfg = cfg_of(steps=1, lr=0.5)
        T.rl_train(str(tiny_base), D.schedule("grpo", cfg), cfg, str(path), "cpu", resume=True, progress=False)
    cfg = cfg_of(steps=1)
    _, h2, e2 = T.rl_train(str(tiny_base), D.schedule("grpo", cfg), cfg, str(path), "cpu", resume=True, progress=False)
    assert h2 == h and e2 == e  # the same settings: the finished run, not a new one
    assert [json.loads(line) for line in open(tmp_path / "g.jsonl")] == h  # and its log rewritten as it was


def test_non_finite_steps_are_skipped_counted_then_stop(tiny_base, tmp_path, monkeypatch, mixed_rewards):
    """A step whose loss is not finite moves nothing and is counted; the third such step in a row stops the run."""
    real = T.objective_loss
    calls = {"n": 0}

    def flaky(*a, **k):  # one call per step (no micro-batches): steps 2, 4, 5, 6 give a nan loss
        loss, st = real(*a, **k)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] in (2, 4, 5, 6) else loss), st

    monkeypatch.setattr(T, "objective_loss", flaky)
    with pytest.raises(T.Diverged, match="3 non-finite steps in a row at step 6"):
        rl_run(tiny_base, "grpo", tmp_path / "g.pt", steps=8, ckpt_every=2)
    log = [json.loads(line) for line in open(tmp_path / "g.jsonl")]
    assert [r["skipped"] for r in log] == [False, True, False, True, True]
    assert [r["skipped_total"] for r in log] == [0, 1, 1, 2, 3]
    assert [r["update_norm"] > 0 for r in log] == [True, False, True, False, False]
    assert all(r["update_norm"] == 0.0 and math.isnan(r["loss"]) for r in log if r["skipped"])
    ck = M.load_checkpoint(str(tmp_path / "g.pt"))
    assert ck["step"] == 4 and ck["bad_in_a_row"] == 1 and all(torch.isfinite(v).all() for v in ck["model"].values())
