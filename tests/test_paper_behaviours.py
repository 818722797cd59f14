"""Behaviours the paper depends on, each pinned by value on a hand-built case where the right answer is known
(which space a loss trains, a KL at a point, the optimizer kept across the DSRL switch, a truncated answer scoring
0, the clip bounds, the sampler's temperature and top-k, the problem generator's ranges, the learning-rate
switch). tests/mutants.py checks that these tests catch planted bugs."""
import copy
import math
import random
from pathlib import Path

import pytest
import torch

import dsrl
import losses as L
import model as M
import reward as R
import sample as S
import train as T

LAB = Path(__file__).resolve().parents[1] / "tutorial" / "lab.pt"  # the committed classroom model


def grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


HP = dict(agg="token-mean", eps_high=0.2, kl_coef=0.0, lam=0.1, prerl_advantage="r-mean", max_new_tokens=10)


@pytest.mark.parametrize("name,space", [("grpo", "cond"), ("nsr-rl", "cond"), ("psr", "cond"), ("nsr", "cond"),
                                        ("w-reinforce", "cond"), ("prerl", "pre"), ("nsr-prerl", "pre"),
                                        ("psr-prerl", "pre")])
def test_each_objective_trains_its_own_space(tiny_rollout, name, space):
    """The paper's whole subject: PreRL objectives differentiate log P(y), the others log P(y|x)."""
    m, ro = tiny_rollout
    m = copy.deepcopy(m)
    r = torch.tensor([1., 0., 0., 1., 1., 0.])
    loss, _ = L.objective_loss(name, m, ro, r, 2, HP)
    got = grads(m, loss)
    logp = L.pretrain_logprobs(m, ro.response)[0] if space == "pre" else L.conditional_logprobs(m, ro)[0]
    fn = {"grpo": lambda lp: L.grpo_loss(lp, lp.detach(), r, ro.mask, 2),
          "nsr-rl": lambda lp: L.nsr_rl_loss(lp, r, ro.mask, 2),
          "psr": lambda lp: L.psr_loss(lp, r, ro.mask), "nsr": lambda lp: L.nsr_loss(lp, r, ro.mask),
          "w-reinforce": lambda lp: L.w_reinforce_loss(lp, r, ro.mask, lam=0.1),
          "prerl": lambda lp: L.prerl_loss(lp, r, ro.mask, 2, select="all"),
          "nsr-prerl": lambda lp: L.prerl_loss(lp, r, ro.mask, 2, select="negative"),
          "psr-prerl": lambda lp: L.prerl_loss(lp, r, ro.mask, 2, select="positive")}[name]
    want = grads(m, fn(logp)[0])
    assert got.abs().sum() > 0
    torch.testing.assert_close(got, want)


def test_pretrain_space_sees_no_prompt_token(tiny_rollout):
    """log P(y) must not change when the prompt changes; log P(y|x) must."""
    m, ro = tiny_rollout
    other = S.Rollout(torch.flip(ro.prompt, [0]), torch.flip(ro.pad, [0]), ro.response, ro.mask, ro.finished, ro.texts)
    with torch.no_grad():
        torch.testing.assert_close(L.pretrain_logprobs(m, ro.response)[0], L.pretrain_logprobs(m, other.response)[0])
        a, b = L.conditional_logprobs(m, ro)[0], L.conditional_logprobs(m, other)[0]
    assert not torch.allclose(a[ro.mask], b[ro.mask])


def test_kl_k3_value_and_gradient_at_a_point():
    logp = torch.tensor([0.0, -2.0], requires_grad=True)
    ref = torch.tensor([-1.0, -1.0])
    kl = L.kl_k3(logp, ref)  # d = ref - logp = (-1, 1): exp(d) - d - 1
    torch.testing.assert_close(kl.detach(), torch.tensor([math.exp(-1), math.e - 2]))
    kl.sum().backward()  # d/dlogp = 1 - exp(d)
    torch.testing.assert_close(logp.grad, torch.tensor([1 - math.exp(-1), 1 - math.e]))


def test_grpo_adds_the_kl_term_with_its_coefficient():
    logp = torch.tensor([[0.0], [-2.0]], requires_grad=True)
    ref = torch.tensor([[-1.0], [-1.0]])
    mask = torch.ones(2, 1, dtype=torch.bool)
    r = torch.tensor([1., 1.])  # equal rewards: the policy term is 0, only the KL is left
    loss, st = L.grpo_loss(logp, logp.detach(), r, mask, G=2, ref_logp=ref, kl_coef=0.5)
    want = 0.5 * (math.exp(-1) + math.e - 2) / 2
    assert float(loss.detach()) == pytest.approx(want) and st["kl"] == pytest.approx(2 * want)


def test_optimizer_is_carried_across_the_dsrl_switch(tiny_base, tmp_path):
    """One AdamW for both phases: after 2 NSR-PreRL + 2 GRPO steps Adam has taken 4 steps, not 2."""
    T.rl_train(str(tiny_base), "dsrl", str(tmp_path / "d.pt"), "cpu", preset="tiny", steps=4, warmup_steps=2,
               progress=False, eval_every=100, eval_problems=2, eval_samples=2)
    ck = M.load_checkpoint(str(tmp_path / "d.pt"))
    steps = {float(s["step"]) for s in ck["optimizer"]["state"].values()}
    assert steps == {4.0}


def test_dsrl_switches_the_learning_rate_at_S(tiny_base, tmp_path):
    kw = dict(preset="tiny", warmup_steps=2, progress=False, eval_every=100, eval_problems=2, eval_samples=2,
              lr=1e-3, warmup_lr=1e-5)
    _, h, _ = T.rl_train(str(tiny_base), "dsrl", str(tmp_path / "a.pt"), "cpu", steps=3, **kw)
    assert [x["lr"] for x in h] == [1e-5, 1e-5, 1e-3] and [x["objective"] for x in h] == ["nsr-prerl"] * 2 + ["grpo"]
    assert [g["lr"] for g in M.load_checkpoint(str(tmp_path / "a.pt"))["optimizer"]["param_groups"]] == [1e-3] * 2
    T.rl_train(str(tiny_base), "dsrl", str(tmp_path / "b.pt"), "cpu", steps=2, **kw)  # ends inside phase 1
    assert [g["lr"] for g in M.load_checkpoint(str(tmp_path / "b.pt"))["optimizer"]["param_groups"]] == [1e-5] * 2
    assert dsrl.dsrl_phase(1, 2, 1e-3, 1e-5) == ("nsr-prerl", 1e-5) and dsrl.dsrl_phase(2, 2, 1e-3, 1e-5) == ("grpo", 1e-3)


def test_truncated_response_scores_zero_even_with_the_right_answer():
    z = torch.zeros(2, 1, dtype=torch.long)
    ro = S.Rollout(z, torch.zeros(2, dtype=torch.long), z, z.bool(), torch.tensor([True, False]), ["1+1=2;#2"] * 2)
    assert S.rewards(ro, [2, 2]) == [1.0, 0.0]


def test_aggregations_with_a_fully_masked_row():
    x = torch.tensor([[1., 3.], [5., 5.], [2., 2.]])
    mask = torch.tensor([[1, 1], [0, 0], [1, 0]], dtype=torch.bool)
    assert float(L.aggregate(x, mask, "token-mean")) == pytest.approx(6 / 3)
    assert float(L.aggregate(x, mask, "seq-mean-token-mean")) == pytest.approx((2 + 2) / 2)  # 2 kept rows, not 3
    assert float(L.aggregate(x, mask, "seq-mean-token-sum-norm", norm=4)) == pytest.approx((4 / 4 + 2 / 4) / 2)
    none = torch.zeros(3, 2, dtype=torch.bool)
    for mode in L.AGGREGATIONS:  # nothing kept: 0, never nan
        assert float(L.aggregate(x, none, mode, norm=4)) == 0.0


def test_asymmetric_clip_bounds():
    """eps_low 0.2, eps_high 0.28 (clip-higher): A > 0 clips above 1.28, A < 0 clips below 0.8."""
    ratio = torch.tensor([1.25, 1.30, 0.81, 0.79])
    A = torch.tensor([1., 1., -1., -1.])
    logp = torch.log(ratio)[:, None].clone().requires_grad_()
    loss, st = L.ppo_clip_loss(logp, torch.zeros(4, 1), A, torch.ones(4, 1, dtype=torch.bool), eps_low=0.2, eps_high=0.28)
    loss.backward()
    g = logp.grad.squeeze(1)
    assert g[0] != 0 and g[1] == 0 and g[2] != 0 and g[3] == 0
    assert st["clip_ratio/high"] == 0.25 and st["clip_ratio/low"] == 0.25
    assert float(loss.detach()) == pytest.approx((-1.25 - 1.28 + 0.81 + 0.8) / 4)


def test_prerl_advantage_forms():
    logp = torch.zeros(4, 1, requires_grad=True)
    mask = torch.ones(4, 1, dtype=torch.bool)
    r = torch.tensor([1., 0., 0., 0.])
    L.prerl_loss(logp, r, mask, 4, select="all", advantage="r-mean")[0].backward()
    torch.testing.assert_close(logp.grad.squeeze(1), -torch.tensor([.75, -.25, -.25, -.25]) / 4)  # no std division
    logp.grad = None
    L.prerl_loss(logp, torch.zeros(4), mask, 4, select="negative", advantage="+-1")[0].backward()
    torch.testing.assert_close(logp.grad.squeeze(1), torch.full((4,), 0.25))  # all-wrong group still pushed down


@pytest.mark.parametrize("n,c,k,want", [(5, 3, 2, 1 - 1 / 10), (4, 2, 2, 1 - 1 / 6), (3, 0, 3, 0.0), (3, 1, 3, 1.0)])
def test_pass_at_k_when_the_wrong_samples_just_fill_k(n, c, k, want):
    assert S.pass_at_k(n, c, k) == pytest.approx(want)


# --- the sampler's temperature and top-k -------------------------------------------------------------------

def draw(logits, n=20000, **kw):
    g = torch.Generator().manual_seed(0)
    toks = S.sample_token(logits.expand(n, -1), generator=g, **kw)
    return torch.bincount(toks, minlength=logits.size(-1)).float() / n


def test_temperature_scales_the_logits():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert draw(logits, temperature=1.0, top_k=None)[1] == pytest.approx(0.75, abs=0.015)
    p2 = 3 ** 0.5 / (1 + 3 ** 0.5)  # T = 2: softmax(logits / 2)
    assert draw(logits, temperature=2.0, top_k=None)[1] == pytest.approx(p2, abs=0.015)
    assert draw(logits, temperature=0.25, top_k=None)[1] == pytest.approx(81 / 82, abs=0.01)
    assert (S.sample_token(logits.expand(5, -1), 0, None, None) == 1).all()  # temperature 0: greedy


def test_top_k_keeps_the_k_best_and_renormalizes():
    logits = torch.tensor([[math.log(1.0), math.log(4.0), math.log(2.0), math.log(3.0)]])
    p = draw(logits, temperature=1.0, top_k=2)
    assert p[0] == 0 and p[2] == 0
    assert p[1] == pytest.approx(4 / 7, abs=0.015) and p[3] == pytest.approx(3 / 7, abs=0.015)
    assert (draw(logits, n=500, temperature=1.0, top_k=1)[1] == 1.0)


# --- the problem generator's guarantees --------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "ood"])
def test_problem_generator_ranges(split):
    cfg = R.SPLITS[split][0]
    rng = random.Random(5)
    for _ in range(2000):
        p = R.make_problem(rng, cfg)
        nums, ops = R.parse_question(p.question)
        assert cfg.min_ops <= len(ops) <= cfg.max_ops
        steps = R.solution_steps(nums, ops)
        assert all(0 <= s[3] <= cfg.value_max for s in steps), p
        assert p.answer == steps[-1][3] == R.solve(p.question)
        for op, b in zip(ops, nums[1:]):
            assert (2 <= b <= 9) if op == "*" else (1 <= b <= cfg.operand_max)
        assert 1 <= nums[0] <= cfg.operand_max


# --- pre-training pieces -----------------------------------------------------------------------------------

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


def test_rollout_stats_by_value():
    texts = ["a wait b", "x", "alternatively", "wait wait", "#1", "#2"]
    z = torch.zeros(6, 2, dtype=torch.long)
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [0, 0], [1, 0], [1, 0]], dtype=torch.bool)
    finished = torch.tensor([True, True, False, True, True, True])
    ro = S.Rollout(z, torch.zeros(6, dtype=torch.long), z, mask, finished, texts)
    st = S.rollout_stats(ro, torch.tensor([1., 0., 1., 1., 0., 0.]), 2)  # groups: mixed, all right, all wrong
    assert st["reward"] == 0.5 and st["frac_reward_zero_std"] == pytest.approx(2 / 3)
    assert st["solved_all"] == 1 and st["solved_none"] == 1
    assert st["length"] == pytest.approx(7 / 6) and st["truncated"] == pytest.approx(1 / 6)
    assert st["wait_share"] == pytest.approx(2 / 6) and st["alternatively_share"] == pytest.approx(1 / 6)


# --- the RL loop ---------------------------------------------------------------------------------------------

def test_rl_step_clips_the_update_to_gradient_norm_one(tiny_base, monkeypatch):
    """With SGD at lr 1 the parameter change is the clipped gradient: norm min(1, grad norm)."""
    real = T.objective_loss
    monkeypatch.setattr(T, "objective_loss", lambda *a, **k: (lambda l, st: (100 * l, st))(*real(*a, **k)))
    torch.manual_seed(0)
    m = M.model_from_checkpoint(M.load_checkpoint(str(tiny_base)))
    before = [p.detach().clone() for p in m.parameters()]
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    hp = dict(T.RL_DEFAULTS, **T.RL["tiny"])
    problems = R.make_split("train", 2)
    _, _, _, _, gnorm, finite, _ = T.rl_step(m, opt, problems, "nsr", hp, torch.Generator().manual_seed(0))
    delta = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(m.parameters(), before)))
    assert finite and float(gnorm) > 10.0  # the loss x100 makes the gradient large: the clip must act
    assert float(delta) == pytest.approx(1.0, rel=1e-3)


def test_rl_optimizer_settings_are_the_official_ones(tiny_base, tmp_path):
    T.rl_train(str(tiny_base), "grpo", str(tmp_path / "g.pt"), "cpu", preset="tiny", steps=1, progress=False,
               eval_every=100, eval_problems=2, eval_samples=2)
    for g in M.load_checkpoint(str(tmp_path / "g.pt"))["optimizer"]["param_groups"]:
        assert tuple(g["betas"]) == (0.9, 0.999) and g["weight_decay"] == 0.0


def test_kl_reference_is_reanchored_at_the_switch(tiny_base, tmp_path):
    """Policy reincarnation: with KL on, the reference becomes the policy as it stands after the NSR phase."""
    kw = dict(preset="tiny", warmup_steps=1, progress=False, eval_every=100, eval_problems=2, eval_samples=2,
              kl_coef=0.1, prerl_advantage="+-1")  # +-1: the random model's all-wrong groups still move it
    T.rl_train(str(tiny_base), "dsrl", str(tmp_path / "a.pt"), "cpu", steps=1, **kw)   # stops at the switch
    T.rl_train(str(tiny_base), "dsrl", str(tmp_path / "b.pt"), "cpu", steps=2, **kw)
    at_switch = M.load_checkpoint(str(tmp_path / "a.pt"))["model"]
    ref = M.load_checkpoint(str(tmp_path / "b.pt"))["ref"]
    base = M.load_checkpoint(str(tiny_base))["model"]
    assert all(torch.equal(ref[k], at_switch[k]) for k in ref)
    assert any(not torch.equal(at_switch[k], base[k]) for k in base)  # the NSR step did move the policy


def test_default_warmup_is_five_percent_rounded():
    assert [dsrl.default_warmup(n) for n in (1, 10, 30, 40, 80, 348)] == [1, 1, 2, 2, 4, 17]


def test_dsrl_is_evaluated_right_after_the_nsr_phase(tiny_base, tmp_path):
    _, _, evals = T.rl_train(str(tiny_base), "dsrl", str(tmp_path / "d.pt"), "cpu", preset="tiny", steps=4,
                             warmup_steps=1, progress=False, eval_every=100, eval_problems=2, eval_samples=2)
    assert [e["step"] for e in evals] == [0, 1, 4]


def test_nsr_rl_control_uses_grpo_advantages_on_negatives():
    """The paper's conditional-space control: GRPO's std-normalized advantage, wrong samples only."""
    logp = torch.zeros(4, 2, requires_grad=True)
    r = torch.tensor([1., 0., 0., 0.])  # std (unbiased) 0.5: A = -0.25 / 0.5 = -0.5 for each wrong sample
    L.nsr_rl_loss(logp, r, torch.ones(4, 2, dtype=torch.bool), 4)[0].backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0., 0.]] + [[0.5 / 6, 0.5 / 6]] * 3), atol=1e-6, rtol=1e-5)


class EchoesLastToken:
    """A fake model whose next token is always the last token it saw: the greedy first response token of a
    prompt is that prompt's last token, so every sample of prompt b must start with it."""

    def __init__(self):
        self.config = M.GPTConfig(block_size=64)
        self.lm_head = torch.nn.Linear(1, 1)

    def __call__(self, idx, pad=None, cache=None):
        logits = torch.full((*idx.shape, M.GPTConfig().vocab_size), -1e9)
        logits[torch.arange(idx.size(0)), -1, idx[:, -1]] = 0
        return logits


def test_group_rows_follow_their_own_prompt():
    prompts = [[R.BOS_ID, 65], [R.BOS_ID, 66, 67], [R.BOS_ID, 68]]  # last tokens A, C, D; left-padded
    ro = S.generate(EchoesLastToken(), prompts, G=3, max_new_tokens=2, temperature=0, use_cache=False)
    assert ro.response[:, 0].tolist() == [65] * 3 + [67] * 3 + [68] * 3  # row b*G + g is a sample of prompt b


def test_a_replaced_reward_function_takes_effect(tiny_base, monkeypatch):
    """Students swap pieces at run time: the loop must look sample.rewards up when it calls it."""
    monkeypatch.setattr(S, "rewards", lambda ro, answers: [1.0] * len(answers))
    m = M.model_from_checkpoint(M.load_checkpoint(str(tiny_base)))
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    hp = dict(T.RL_DEFAULTS, **T.RL["tiny"])
    _, r, *_ = T.rl_step(m, opt, R.make_split("train", 2), "grpo", hp, torch.Generator().manual_seed(0))
    assert r.tolist() == [1.0] * 2 * hp["group"]  # an untrained model never answers right: these are ours


def test_cached_group_sampling_keeps_each_prompts_cache():
    """After the prefill, row b*G + g must decode from prompt b's keys and values: greedy decoding with the cache
    equals decoding without it, for prompts whose continuations differ."""
    m = M.model_from_checkpoint(M.load_checkpoint(str(LAB)))  # a trained model reads its prompt
    prompts = [S.prompt_ids(p) for p in R.make_split("test", 3)]
    prompts[1] = prompts[1][:5]  # left padding too
    kw = dict(G=2, max_new_tokens=6, temperature=0)
    naive = S.generate(m, prompts, use_cache=False, **kw).response
    assert len({tuple(r) for r in naive.tolist()}) >= 2  # the precondition: prompts with different continuations
    torch.testing.assert_close(S.generate(m, prompts, use_cache=True, **kw).response, naive)


@pytest.mark.parametrize("name,agg", [("grpo", "token-mean"), ("nsr-prerl", "token-mean"),
                                      ("grpo", "seq-mean-token-mean"), ("w-reinforce", "seq-mean-token-sum-norm")])
def test_micro_batches_give_the_one_chunk_gradient(name, agg):
    """Chunks of rows with the batch's denominators: the same step as one pass over all rows (the objective's
    kept tokens or sequences are counted over the whole batch, not per chunk)."""
    hp = dict(T.RL_DEFAULTS, **T.RL["lab"])
    hp.update(agg=agg, group=4, max_new_tokens=40)
    steps = {}
    for mb in (None, 8):  # 32 rows: one pass, or 4 chunks of 2 groups
        m = M.model_from_checkpoint(M.load_checkpoint(str(LAB)))
        before = [p.detach().clone() for p in m.parameters()]
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        _, r, loss, st, gnorm, finite, _ = T.rl_step(m, opt, R.make_split("train", 8), name, dict(hp, micro_batch=mb),
                                                     torch.Generator().manual_seed(3))
        steps[mb] = (float(loss.detach()), float(gnorm), [p.detach() - b for p, b in zip(m.parameters(), before)], st)
    (l1, g1, d1, s1), (l4, g4, d4, s4) = steps[None], steps[8]
    assert 0 < r.mean() < 1 and g1 > 0  # mixed rewards: a real gradient
    assert l4 == pytest.approx(l1, abs=1e-6) and g4 == pytest.approx(g1, rel=1e-4)
    for a, b in zip(d1, d4):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert s4["tokens"] == s1["tokens"] and s4["samples"] == s1["samples"]


def test_logging_pass_can_be_skipped(tiny_base, tmp_path):
    kw = dict(preset="tiny", steps=3, progress=False, eval_every=100, eval_problems=2, eval_samples=2)
    _, h, _ = T.rl_train(str(tiny_base), "grpo", str(tmp_path / "a.pt"), "cpu", other_space_every=2, **kw)
    assert ["entropy_pre" in x for x in h] == [True, False, True] and all("entropy_cond" in x for x in h)
    _, h0, _ = T.rl_train(str(tiny_base), "grpo", str(tmp_path / "b.pt"), "cpu", **kw)
    assert all("entropy_pre" in x for x in h0)  # the default keeps every log
    strip = lambda hs: [{k: v for k, v in x.items() if not k.startswith(("t_", "entropy_pre"))} for x in hs]
    assert strip(h) == strip(h0)  # logging only: the training is the same
