"""losses.py: every objective on hand-built tensors (signs, selections, masks, aggregations, the clip, the KL), the
log-probs of the two spaces on a real tiny model, the table of objectives and objective_loss, and the details that
must agree with verl (the library the official code forks): Dr. GRPO's constant divisor, which tokens count as
clipped, the dual-clip constant."""
import copy
import math

import pytest
import torch

import dsrl
import losses as L
import model as M
import reward as R
import sample as S

PRE = {"prerl", "nsr-prerl", "psr-prerl"}                      # the objectives of pre-train space, log P(y)
POST = {"grpo", "nsr-rl", "psr", "nsr", "w-reinforce"}          # the objectives of post-train space, log P(y|x)
GROUP = {"grpo", "prerl", "nsr-prerl", "psr-prerl", "nsr-rl"}   # a group baseline: they need G >= 2


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """This module's tests run on one thread (conftest.one_thread)."""


def cfg(**overrides):
    """The RL settings objective_loss reads: the tiny preset's, with a group of 2 (tiny_rollout's)."""
    return dsrl.rl_config("tiny", **{"group": 2, **overrides})


def grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


def leaf(n=4, t=3):
    logp = (-torch.rand(n, t, generator=torch.Generator().manual_seed(n * 100 + t))).requires_grad_()
    return logp, torch.ones(n, t, dtype=torch.bool)


def ended_at(ro, ends):
    """A copy of rollout `ro` whose row i writes its end token at response position ends[i] (pads after it)."""
    pos = torch.arange(ro.response.size(1))[None]
    ends = torch.tensor(ends)[:, None]
    resp = ro.response.masked_fill(pos == ends, R.EOS_ID).masked_fill(pos > ends, R.PAD_ID)
    return S.Rollout(ro.prompt.clone(), ro.pad.clone(), resp, resp != R.PAD_ID,
                     torch.ones(len(ro.texts), dtype=torch.bool), list(ro.texts))


# --- advantages and aggregation ----------------------------------------------------------------------------

def test_group_advantages_worked_example():
    r = torch.tensor([1., 0., 0., 0., 1., 1., 1., 1.])  # two groups of 4
    a = L.group_advantages(r, 4, normalize_std=False)
    torch.testing.assert_close(a, torch.tensor([.75, -.25, -.25, -.25, 0., 0., 0., 0.]))
    z = L.group_advantages(r, 4, normalize_std=True)
    std = torch.tensor([1., 0., 0., 0.]).std()  # unbiased: 0.5
    torch.testing.assert_close(z[:4], torch.tensor([.75, -.25, -.25, -.25]) / (std + 1e-6))
    assert (z[4:] == 0).all()
    assert (L.group_advantages(torch.zeros(8), 4) == 0).all()


def test_aggregations_match_hand_computation():
    x = torch.tensor([[1., 2., 3., 9.], [4., 9., 9., 9.]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    assert float(L.aggregate(x, mask, "token-mean")) == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert float(L.aggregate(x, mask, "seq-mean-token-mean")) == pytest.approx((2 + 4) / 2)
    assert float(L.aggregate(x, mask, "seq-mean-token-sum-norm", norm=4)) == pytest.approx((6 / 4 + 4 / 4) / 2)
    with pytest.raises(ValueError):
        L.aggregate(x, mask, "sum")


def test_aggregations_with_a_fully_masked_row():
    x = torch.tensor([[1., 3.], [5., 5.], [2., 2.]])
    mask = torch.tensor([[1, 1], [0, 0], [1, 0]], dtype=torch.bool)
    assert float(L.aggregate(x, mask, "token-mean")) == pytest.approx(6 / 3)
    assert float(L.aggregate(x, mask, "seq-mean-token-mean")) == pytest.approx((2 + 2) / 2)  # 2 kept rows, not 3
    assert float(L.aggregate(x, mask, "seq-mean-token-sum-norm", norm=4)) == pytest.approx((4 / 4 + 2 / 4) / 2)
    none = torch.zeros(3, 2, dtype=torch.bool)
    for mode in L.AGGREGATIONS:  # nothing kept: 0, never nan
        assert float(L.aggregate(x, none, mode, norm=4)) == 0.0


def test_seq_mean_token_sum_norm_divides_by_the_fixed_budget_not_the_generated_length():
    x = torch.tensor([[1., 2., 3., 0.], [4., 0., 0., 0.], [7., 7., 0., 0.]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)  # row 3: left out
    got = float(L.aggregate(x, mask, "seq-mean-token-sum-norm", norm=96))
    assert got == pytest.approx((6 / 96 + 4 / 96) / 2)  # generated length 4 plays no part; empty row not counted
    # the same responses in a batch that happened to run longer (more pad columns): the same value
    wide = torch.cat([x, torch.zeros(3, 8)], 1)
    wide_mask = torch.cat([mask, torch.zeros(3, 8, dtype=torch.bool)], 1)
    assert float(L.aggregate(wide, wide_mask, "seq-mean-token-sum-norm", norm=96)) == pytest.approx(got)
    with pytest.raises(ValueError, match="norm"):
        L.aggregate(x, mask, "seq-mean-token-sum-norm")  # no constant given: an error, never a silent guess


def test_objective_loss_passes_max_new_tokens_as_the_constant(tiny_rollout):
    """objective_loss with agg seq-mean-token-sum-norm divides each sequence's token sum by cfg.max_new_tokens,
    not by the length the batch happened to generate."""
    m, ro = tiny_rollout
    ro = ended_at(ro, [3, 9, 1, 6, 5, 2])  # lengths 4, 10, 2, 7, 6, 3; the batch is 10 tokens wide
    lengths = ro.mask.sum(1).float()
    r = torch.tensor([1., 0., 0., 1., 1., 0.])
    c = cfg(agg="seq-mean-token-sum-norm", max_new_tokens=48)
    assert ro.response.size(1) != c.max_new_tokens
    # GRPO at ratio 1: every token of row i weighs -A_i, so row i's token sum is -A_i * length_i
    loss, _ = L.objective_loss("grpo", m, ro, r, c, other_space=False)
    want = float((-L.group_advantages(r, 2) * lengths / 48).mean())
    assert want != 0 and float(loss.detach()) == pytest.approx(want, rel=1e-5)
    # NSR (-1 on the wrong rows, only they are kept): the mean over the 3 wrong rows of length / 48
    loss, _ = L.objective_loss("nsr", m, ro, r, c, other_space=False)
    assert float(loss.detach()) == pytest.approx(float((lengths[r == 0] / 48).mean()), rel=1e-5)
    loss, _ = L.objective_loss("nsr", m, ro, r, cfg(agg="seq-mean-token-sum-norm", max_new_tokens=12),
                               other_space=False)
    assert float(loss.detach()) == pytest.approx(float((lengths[r == 0] / 12).mean()), rel=1e-5)


def test_kl_k3_nonnegative_and_zero_for_identical():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert (L.kl_k3(a, b) >= 0).all() and (L.kl_k3(a, b) > 0).any()
    assert (L.kl_k3(a, a) == 0).all()


def test_kl_k3_value_and_gradient_at_a_point():
    logp = torch.tensor([0.0, -2.0], requires_grad=True)
    ref = torch.tensor([-1.0, -1.0])
    kl = L.kl_k3(logp, ref)  # d = ref - logp = (-1, 1): exp(d) - d - 1
    torch.testing.assert_close(kl.detach(), torch.tensor([math.exp(-1), math.e - 2]))
    kl.sum().backward()  # d/dlogp = 1 - exp(d)
    torch.testing.assert_close(logp.grad, torch.tensor([1 - math.exp(-1), 1 - math.e]))


# --- the objectives on hand-built log-probs ----------------------------------------------------------------

def test_grpo_gradient_is_minus_advantage_token_mean():
    logp, mask = leaf()
    r = torch.tensor([1., 0., 0., 0.])
    loss, _ = L.grpo_loss(logp, logp.detach(), r, mask, G=4)
    loss.backward()
    adv = L.group_advantages(r, 4)
    torch.testing.assert_close(logp.grad, (-adv[:, None] / 12).expand(4, 3))


def test_grpo_adds_the_kl_term_with_its_coefficient():
    logp = torch.tensor([[0.0], [-2.0]], requires_grad=True)
    ref = torch.tensor([[-1.0], [-1.0]])
    mask = torch.ones(2, 1, dtype=torch.bool)
    r = torch.tensor([1., 1.])  # equal rewards: the policy term is 0, only the KL is left
    loss, st = L.grpo_loss(logp, logp.detach(), r, mask, G=2, ref_logp=ref, kl_coef=0.5)
    want = 0.5 * (math.exp(-1) + math.e - 2) / 2
    assert float(loss.detach()) == pytest.approx(want) and st["kl"] == pytest.approx(2 * want)


def test_nsr_prerl_ignores_correct_samples_and_equal_groups():
    logp, mask = leaf(8)
    r = torch.tensor([1., 0., 1., 0., 0., 0., 0., 0.])  # group 2 all wrong
    loss, st = L.prerl_loss(logp, r, mask, G=4, select="negative")
    loss.backward()
    g = logp.grad
    assert (g[[0, 2]] == 0).all()          # correct samples: untouched
    assert (g[4:] == 0).all()              # all-wrong group: A = 0, not selected
    assert (g[[1, 3]] > 0).all()           # negatives: descent lowers their log-prob (A = -0.5)
    torch.testing.assert_close(g[1], torch.full((3,), 0.5 / 6))  # token-mean over the 6 kept tokens
    assert st["samples"] == 2


def test_psr_prerl_and_full_prerl_selection():
    logp, mask = leaf(4)
    r = torch.tensor([1., 0., 0., 0.])
    L.prerl_loss(logp, r, mask, G=4, select="positive")[0].backward()
    assert (logp.grad[0] < 0).all() and (logp.grad[1:] == 0).all()
    logp.grad = None
    L.prerl_loss(logp, r, mask, G=4, select="all")[0].backward()
    assert (logp.grad[0] < 0).all() and (logp.grad[1:] > 0).all()


@pytest.mark.parametrize("advantage", ["r-mean", "+-1"])
@pytest.mark.parametrize("agg", list(L.AGGREGATIONS))
def test_nsr_and_psr_prerl_are_prerl_with_a_selection(advantage, agg):
    """nsr_prerl_loss is prerl_loss(select="negative") and psr_prerl_loss is prerl_loss(select="positive"): the
    same value, statistics and gradient, for every advantage form and aggregation."""
    r = torch.tensor([1., 0., 0., 0., 1., 1., 0., 0., 0., 0., 0., 0.])  # groups of 4: mixed, mixed, all wrong
    mask = torch.ones(12, 5, dtype=torch.bool)
    mask[1, 2:] = mask[4, 3:] = mask[6, 1:] = False  # rows of different lengths
    grads_by = {}
    for name, fn, select in (("nsr", L.nsr_prerl_loss, "negative"), ("psr", L.psr_prerl_loss, "positive")):
        out = []
        for f in (lambda lp: fn(lp, r, mask, 4, advantage=advantage, agg=agg, norm=7),
                  lambda lp: L.prerl_loss(lp, r, mask, 4, select, advantage, agg, norm=7)):
            logp, _ = leaf(12, 5)
            loss, st = f(logp)
            loss.backward()
            out.append((float(loss.detach()), st, logp.grad))
        (v1, s1, g1), (v2, s2, g2) = out
        assert v1 == v2 and s1 == s2
        torch.testing.assert_close(g1, g2, atol=0, rtol=0)
        assert g1.abs().sum() > 0
        grads_by[name] = g1
    # the two selections keep disjoint samples: a row trained by one is left alone by the other
    trained = {k: g.abs().sum(1) > 0 for k, g in grads_by.items()}
    assert not (trained["nsr"] & trained["psr"]).any()
    assert (r[trained["psr"]] == 1).all() and (r[trained["nsr"]] == 0).all()


def test_prerl_advantage_forms():
    logp = torch.zeros(4, 1, requires_grad=True)
    mask = torch.ones(4, 1, dtype=torch.bool)
    r = torch.tensor([1., 0., 0., 0.])
    L.prerl_loss(logp, r, mask, 4, select="all", advantage="r-mean")[0].backward()
    torch.testing.assert_close(logp.grad.squeeze(1), -torch.tensor([.75, -.25, -.25, -.25]) / 4)  # no std division
    logp.grad = None
    L.prerl_loss(logp, torch.zeros(4), mask, 4, select="negative", advantage="+-1")[0].backward()
    torch.testing.assert_close(logp.grad.squeeze(1), torch.full((4,), 0.25))  # all-wrong group still pushed down


def test_nsr_rl_control_uses_grpo_advantages_on_negatives():
    """The paper's conditional-space control: GRPO's std-normalized advantage, wrong samples only."""
    logp = torch.zeros(4, 2, requires_grad=True)
    r = torch.tensor([1., 0., 0., 0.])  # std (unbiased) 0.5: A = -0.25 / 0.5 = -0.5 for each wrong sample
    L.nsr_rl_loss(logp, r, torch.ones(4, 2, dtype=torch.bool), 4)[0].backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0., 0.]] + [[0.5 / 6, 0.5 / 6]] * 3), atol=1e-6, rtol=1e-5)


def test_zhu_objectives_signs_and_selection():
    logp, mask = leaf(4)
    r = torch.tensor([1., 0., 1., 0.])
    L.psr_loss(logp, r, mask)[0].backward()
    assert (logp.grad[[0, 2]] < 0).all() and (logp.grad[[1, 3]] == 0).all()
    logp.grad = None
    L.nsr_loss(logp, torch.zeros(4), mask)[0].backward()  # all wrong: still pushed down (no baseline)
    assert (logp.grad > 0).all()
    logp.grad = None
    L.w_reinforce_loss(logp, r, mask, lam=0.1)[0].backward()
    torch.testing.assert_close(logp.grad[0], torch.full((3,), -0.1 / 12))
    torch.testing.assert_close(logp.grad[1], torch.full((3,), 1.0 / 12))


def test_padding_never_enters_a_loss():
    logp, mask = leaf(4, 5)
    mask[:, 3:] = False
    r = torch.tensor([1., 0., 0., 1.])
    for fn in (lambda lp: L.grpo_loss(lp, lp.detach(), r, mask, 4), lambda lp: L.prerl_loss(lp, r, mask, 4),
               lambda lp: L.nsr_loss(lp, r, mask), lambda lp: L.w_reinforce_loss(lp, r, mask)):
        logp.grad = None
        fn(logp)[0].backward()
        assert (logp.grad[:, 3:] == 0).all() and (logp.grad[:, :3] != 0).any()


# --- the PPO clip --------------------------------------------------------------------------------------------

def test_ppo_clip_acts_when_ratio_leaves_the_band():
    logp = torch.zeros(2, 1, requires_grad=True)
    old = torch.tensor([[-1.], [-1.]])  # ratio e = 2.7 > 1.2
    loss, st = L.ppo_clip_loss(logp, old, torch.tensor([1., -1.]), torch.ones(2, 1, dtype=torch.bool))
    loss.backward()
    assert logp.grad[0] == 0          # A > 0 and ratio above 1 + eps: clipped, no gradient
    assert logp.grad[1] > 0           # A < 0: unclipped side, still pushed down
    assert st["clip_ratio/high"] == 0.5 and st["clip_ratio/low"] == 0.0 and st["clip_ratio"] == 0.5


def test_asymmetric_clip_bounds():
    """eps_low 0.2, eps_high 0.28 (clip-higher): A > 0 clips above 1.28, A < 0 clips below 0.8."""
    ratio = torch.tensor([1.25, 1.30, 0.81, 0.79])
    A = torch.tensor([1., 1., -1., -1.])
    logp = torch.log(ratio)[:, None].clone().requires_grad_()
    loss, st = L.ppo_clip_loss(logp, torch.zeros(4, 1), A, torch.ones(4, 1, dtype=torch.bool), eps_low=0.2,
                               eps_high=0.28)
    loss.backward()
    g = logp.grad.squeeze(1)
    assert g[0] != 0 and g[1] == 0 and g[2] != 0 and g[3] == 0
    assert st["clip_ratio/high"] == 0.25 and st["clip_ratio/low"] == 0.25
    assert float(loss.detach()) == pytest.approx((-1.25 - 1.28 + 0.81 + 0.8) / 4)


def clip_case():
    """Six tokens of six one-token sequences: (A, ratio) on both sides of the band [0.8, 1.2] and beyond 10."""
    A = torch.tensor([1., 1., -1., -1., -1., 1.])
    ratio = torch.tensor([1.5, 0.5, 0.5, 1.5, 20.0, 1.1])
    logp = torch.log(ratio)[:, None].clone().requires_grad_()
    return A, ratio, logp, torch.zeros(6, 1), torch.ones(6, 1, dtype=torch.bool)


def test_clip_statistics_count_only_active_clips():
    A, ratio, logp, old, mask = clip_case()
    loss, st = L.ppo_clip_loss(logp, old, A, mask, eps_low=0.2, eps_high=0.2, dual_clip=10.0)
    # high: A > 0 and ratio > 1.2 -> token 0; low: A < 0 and ratio < 0.8 -> token 2; tokens 1 and 3 lie outside
    # the band on the side where the unclipped term wins: not clipped, not counted. Token 4: the dual clip.
    assert st["clip_ratio/high"] == pytest.approx(1 / 6)
    assert st["clip_ratio/low"] == pytest.approx(1 / 6)
    assert st["clip_ratio"] == pytest.approx(2 / 6)
    assert st["clip_ratio/dual"] == pytest.approx(1 / 6)
    # per-token values by hand: max(-A r, -A clip(r)), capped at -A c for A < 0
    want = [-1.2, -0.5, 0.8, 1.5, 10.0, -1.1]
    assert float(loss.detach()) == pytest.approx(sum(want) / 6)
    loss.backward()
    g = logp.grad.squeeze(1)
    assert g[0] == 0 and g[2] == 0 and g[4] == 0            # clipped tokens: no gradient
    torch.testing.assert_close(g[[1, 3, 5]], torch.tensor([-0.5, 1.5, -1.1]) / 6)  # d(-A r)/d log r = -A r


def test_dual_clip_constant_is_an_argument():
    r = torch.tensor([1., 0.])
    lp = torch.log(torch.tensor([[1.0], [5.0]]))  # the wrong sample's ratio is 5: above 3, below 10
    adv = L.group_advantages(r, 2)
    for c, want in ((10.0, 5.0), (3.0, 3.0)):
        loss, st = L.grpo_loss(lp, torch.zeros(2, 1), r, torch.ones(2, 1, dtype=torch.bool), G=2, dual_clip=c)
        assert float(loss.detach()) == pytest.approx((-float(adv[0]) * 1.0 + -float(adv[1]) * want) / 2, rel=1e-5)
        assert st["clip_ratio/dual"] == (0.5 if c == 3.0 else 0.0)
    assert math.isclose(float(adv[1]), -0.5 / 2 ** -0.5, rel_tol=1e-5)  # torch.std is unbiased: std{1, 0} = 0.707


# --- log-probs in the two spaces with a real (tiny) model ---------------------------------------------------

# tiny_rollout (tests/conftest.py): a random tiny model and 3 prompts x 2 samples; read-only

def test_pretrain_logprobs_equal_direct_forward_on_bos_plus_y(tiny_rollout):
    m, ro = tiny_rollout
    with torch.no_grad():
        lp, _ = L.pretrain_logprobs(m, ro.response)
        for i in range(ro.response.size(0)):
            y = ro.response[i][ro.mask[i]]
            seq = torch.cat([torch.tensor([R.BOS_ID]), y])[None]
            want = torch.log_softmax(m(seq)[0, :-1], -1).gather(1, y[:, None]).squeeze(1)
            torch.testing.assert_close(lp[i][ro.mask[i]], want, atol=1e-5, rtol=0)


def test_conditional_logprobs_equal_unpadded_forward(tiny_rollout):
    m, ro = tiny_rollout
    assert ro.pad.max() > 0  # some prompt rows are left-padded
    with torch.no_grad():
        lp, _ = L.conditional_logprobs(m, ro)
        for i in range(ro.response.size(0)):
            x = ro.prompt[i][int(ro.pad[i]):]
            y = ro.response[i][ro.mask[i]]
            logits = m(torch.cat([x, y])[None])[0, len(x) - 1:-1]
            want = torch.log_softmax(logits, -1).gather(1, y[:, None]).squeeze(1)
            torch.testing.assert_close(lp[i][ro.mask[i]], want, atol=1e-5, rtol=0)


def test_pretrain_space_sees_no_prompt_token(tiny_rollout):
    """The pre-train-space pass of objective_loss does not change when the prompts change; the post-train one does."""
    m, ro = tiny_rollout
    m = copy.deepcopy(m)
    # the same responses after other prompts: row i follows prompt row 5 - i
    other = S.Rollout(torch.flip(ro.prompt, [0]), torch.flip(ro.pad, [0]), ro.response, ro.mask, ro.finished,
                      ro.texts)
    assert not torch.equal(other.prompt, ro.prompt)
    r = torch.tensor([1., 0., 0., 1., 1., 0.])
    c = cfg()
    pre = [grads(m, L.objective_loss("prerl", m, x, r, c, other_space=False)[0]) for x in (ro, other)]
    torch.testing.assert_close(pre[0], pre[1])
    with torch.no_grad():
        torch.testing.assert_close(L.by_length(lambda sub: L.pretrain_logprobs(m, sub.response), ro)[0],
                                   L.by_length(lambda sub: L.pretrain_logprobs(m, sub.response), other)[0])
        a, b = L.conditional_logprobs(m, ro)[0], L.conditional_logprobs(m, other)[0]
    assert not torch.allclose(a[ro.mask], b[ro.mask])
    post = [grads(m, L.objective_loss("grpo", m, x, r, c, other_space=False)[0]) for x in (ro, other)]
    assert not torch.allclose(post[0], post[1])


def test_length_buckets_give_the_one_pass_logprobs_and_gradient():
    torch.manual_seed(0)
    m = M.GPT(M.PRESETS["tiny"])
    ps = [S.prompt_ids(p) for p in R.make_split("test", 6)]
    ro = S.generate(m, ps, G=3, max_new_tokens=20, generator=torch.Generator().manual_seed(0))
    ends = torch.randint(0, 20, (18,), generator=torch.Generator().manual_seed(1))  # end tokens at 0..19
    ro = ended_at(ro, ends.tolist())
    assert len(set(ro.pad.tolist())) > 1  # prompts of different lengths: the buckets also cut left padding
    widths = []
    for space in (lambda sub: L.conditional_logprobs(m, sub), lambda sub: L.pretrain_logprobs(m, sub.response)):
        def spy(sub, space=space):
            widths.append(sub.prompt.size(1) + sub.response.size(1))
            return space(sub)
        out = []
        for fn in (space, lambda x: L.by_length(spy, x)):
            m.zero_grad()
            lp, ent = fn(ro)
            (lp * ro.mask).sum().backward()
            out.append(([lp * ro.mask, ent * ro.mask], [p.grad.clone() for p in m.parameters()]))
        (want, gw), (got, gg) = out
        for a, b in zip(want + gw, got + gg):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert min(widths) < ro.prompt.size(1) + ro.response.size(1)  # the short rows ran on a shorter batch


@pytest.mark.parametrize("fn,sign", [(L.nsr_loss, -1), (L.psr_loss, +1)])
def test_one_sgd_step_moves_the_sample_log_prob(tiny_rollout, fn, sign):
    m, ro = tiny_rollout
    m = copy.deepcopy(m)
    r = torch.full((ro.response.size(0),), 0.0 if sign < 0 else 1.0)
    before, _ = L.conditional_logprobs(m, ro)
    loss, _ = fn(before, r, ro.mask)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    loss.backward()
    opt.step()
    with torch.no_grad():
        after, _ = L.conditional_logprobs(m, ro)
    seq = lambda lp: (lp * ro.mask).sum(1)  # noqa: E731
    assert (torch.sign(seq(after) - seq(before.detach())) == sign).all()


def test_alignment_cosine_is_one_when_prompt_is_empty(tiny_rollout):
    m, ro = tiny_rollout
    m = copy.deepcopy(m)
    # a 'prompt' that is just <|bos|>: P(y|x) and P(y) are the same function
    n = ro.response.size(0)
    empty = S.Rollout(torch.full((n, 1), R.BOS_ID), torch.zeros(n, dtype=torch.long), ro.response, ro.mask,
                      ro.finished, ro.texts)
    st, per = L.gradient_alignment(m, empty, max_samples=3)
    assert all(c == pytest.approx(1.0, abs=1e-5) for c in per["cosine"])
    assert st["inner_negative_share"] == 0.0
    st, per = L.gradient_alignment(m, ro, max_samples=3)  # with a real prompt they differ
    assert all(c < 0.9999 for c in per["cosine"])


def test_logprob_gap_is_masked_absolute_difference():
    a, b = torch.tensor([[-1., -2., -3.]]), torch.tensor([[-1.5, -1., -9.]])
    gap = L.logprob_gap(a, b, torch.tensor([[True, True, False]]))
    torch.testing.assert_close(gap, torch.tensor([[0.5, 1.0, 0.0]]))


# --- the table of objectives and objective_loss ------------------------------------------------------------

def test_objectives_table_names_each_loss_its_space_and_group_need(tiny_rollout, monkeypatch):
    """Every entry of OBJECTIVES: its space is the pass objective_loss differentiates (pre: only the <|bos|>-context
    pass of log P(y) carries a gradient; post: only the prompt pass of log P(y|x)), and needs-group is True exactly
    for the group-baseline objectives."""
    assert set(L.OBJECTIVES) == PRE | POST
    assert {n for n, (space, _, _) in L.OBJECTIVES.items() if space == "pre"} == PRE
    assert {n for n, (space, _, _) in L.OBJECTIVES.items() if space == "post"} == POST
    assert {n for n, (_, group, _) in L.OBJECTIVES.items() if group} == GROUP
    m, ro = tiny_rollout
    m = copy.deepcopy(m)
    passes = []  # (space, the pass's log-probs carry a graph, gradient that reached them)
    for fn_name, space in (("pretrain_logprobs", "pre"), ("conditional_logprobs", "post")):
        def spy(*a, _real=getattr(L, fn_name), _space=space):
            logp, ent = _real(*a)
            rec = [_space, logp.requires_grad, 0.0]
            if logp.requires_grad:
                logp.register_hook(lambda g: rec.__setitem__(2, rec[2] + float(g.abs().sum())))
            passes.append(rec)
            return logp, ent
        monkeypatch.setattr(L, fn_name, spy)
    r = torch.tensor([1., 0., 0., 1., 1., 0.])  # every group mixed: every objective has a gradient
    for name, (space, _, _) in L.OBJECTIVES.items():
        passes.clear()
        loss, st = L.objective_loss(name, m, ro, r, cfg(), other_space=True)
        assert "entropy_pre" in st and "entropy_cond" in st  # both passes ran
        g = grads(m, loss)
        assert g.abs().sum() > 0, name
        graph = {s for s, has_graph, _ in passes if has_graph}
        reached = {s for s, _, got in passes if got > 0}
        assert graph == reached == {space}, (name, graph, reached)


@pytest.mark.filterwarnings("ignore:std\\(\\)")  # a group of one: torch.std of one value is nan
def test_group_objectives_have_no_signal_in_a_group_of_one():
    """What needs-group means: with one sample per prompt the group-baseline objectives get no finite, non-zero
    gradient, while the others give the same loss as with groups of 2."""
    r = torch.tensor([1., 0., 0., 1., 1., 0.])
    mask = torch.ones(6, 4, dtype=torch.bool)
    for name, (_, needs_group, loss_fn) in L.OBJECTIVES.items():
        out = {}
        for G in (1, 2):
            logp, _ = leaf(6, 4)
            loss, _ = loss_fn(logp, r, mask, cfg(group=G), None)
            loss.backward()
            out[G] = (float(loss.detach()), logp.grad)
        g1 = out[1][1]
        if needs_group:
            assert not (torch.isfinite(g1).all() and g1.abs().sum() > 0), name
            assert torch.isfinite(out[2][1]).all() and out[2][1].abs().sum() > 0, name
        else:
            assert out[1][0] == out[2][0] and torch.equal(g1, out[2][1]) and g1.abs().sum() > 0, name


@pytest.mark.parametrize("name,space", [("grpo", "cond"), ("nsr-rl", "cond"), ("psr", "cond"), ("nsr", "cond"),
                                        ("w-reinforce", "cond"), ("prerl", "pre"), ("nsr-prerl", "pre"),
                                        ("psr-prerl", "pre")])
def test_each_objective_trains_its_own_space(tiny_rollout, name, space):
    """The paper's whole subject: PreRL objectives differentiate log P(y), the others log P(y|x)."""
    m, ro = tiny_rollout
    m = copy.deepcopy(m)
    r = torch.tensor([1., 0., 0., 1., 1., 0.])
    loss, _ = L.objective_loss(name, m, ro, r, cfg(max_new_tokens=10))
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


def test_masked_prerl_drops_exactly_the_question_operand_tokens(tiny_rollout):
    """prerl_tokens="no-question-operands": the PreRL loss leaves out the response tokens that restate a question
    operand, and only those."""
    m, ro = tiny_rollout
    response, mask = ro.response.clone(), ro.mask.clone()  # the fixture is read-only: edit copies
    # make the samples restate the question: each prompt's first operand at the start of its response
    for i in range(response.size(0)):
        q = R.decode(t for t in ro.prompt[i].tolist() if t < 256).split(":", 1)[1].rstrip("=")
        first = R.encode(f"{R.parse_question(q)[0][0]}+1=")
        response[i, :len(first)] = torch.tensor(first)
        mask[i, :len(first)] = True
    ro = S.Rollout(ro.prompt, ro.pad, response, mask, ro.finished, ro.texts)
    cls = S.token_classes(ro)
    r = torch.tensor([0.0, 1.0] * 3)  # every group mixed: one negative per group
    _, full = L.objective_loss("nsr-prerl", m, ro, r, cfg(), other_space=False)
    _, masked = L.objective_loss("nsr-prerl", m, ro, r, cfg(prerl_tokens="no-question-operands"), other_space=False)
    q_tokens = int(((cls == R.TOKEN_CLASSES.index("question operand")) & ro.mask)[r == 0].sum())
    assert q_tokens > 0 and full["tokens"] - masked["tokens"] == q_tokens


def test_bf16_autocast_keeps_log_probs_and_loss_in_fp32(tiny_rollout):
    """Under bf16 autocast (what a GPU run's training passes use, simulated with the CPU's) the log-probs, the
    entropies and the loss stay fp32, and the loss is close to the fp32 one."""
    m, ro = tiny_rollout
    r = torch.tensor([1., 0., 0., 1., 1., 1.])
    c = cfg()
    with torch.no_grad():
        want, _ = L.objective_loss("grpo", m, ro, r, c)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, _ = L.objective_loss("grpo", m, ro, r, c)
            lp, ent = L.conditional_logprobs(m, ro)
            assert m.transformer.h[0].mlp.c_fc(torch.ones(1, 32)).dtype == torch.bfloat16  # autocast is on
    assert lp.dtype == ent.dtype == got.dtype == torch.float32
    got, want = float(got), float(want)
    assert want != 0 and abs(got - want) < 0.05 * abs(want)
