"""Every objective on hand-built tensors (issue 3): signs, selections, masks, aggregations."""
import pytest
import torch

import losses as L
import reward as R
import sample as S


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


def test_kl_k3_nonnegative_and_zero_for_identical():
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    assert (L.kl_k3(a, b) >= 0).all()
    assert (L.kl_k3(a, a) == 0).all()


def leaf(n=4, t=3):
    logp = (-torch.rand(n, t)).requires_grad_()
    return logp, torch.ones(n, t, dtype=torch.bool)


def test_grpo_gradient_is_minus_advantage_token_mean():
    logp, mask = leaf()
    r = torch.tensor([1., 0., 0., 0.])
    loss, _ = L.grpo_loss(logp, logp.detach(), r, mask, G=4)
    loss.backward()
    adv = L.group_advantages(r, 4)
    torch.testing.assert_close(logp.grad, (-adv[:, None] / 12).expand(4, 3))


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
    for fn in (lambda l: L.grpo_loss(l, l.detach(), r, mask, 4), lambda l: L.prerl_loss(l, r, mask, 4),
               lambda l: L.nsr_loss(l, r, mask), lambda l: L.w_reinforce_loss(l, r, mask)):
        logp.grad = None
        fn(logp)[0].backward()
        assert (logp.grad[:, 3:] == 0).all() and (logp.grad[:, :3] != 0).any()


def test_ppo_clip_acts_when_ratio_leaves_the_band():
    logp = torch.zeros(2, 1, requires_grad=True)
    old = torch.tensor([[-1.], [-1.]])  # ratio e = 2.7 > 1.2
    loss, st = L.ppo_clip_loss(logp, old, torch.tensor([1., -1.]), torch.ones(2, 1, dtype=torch.bool))
    loss.backward()
    assert logp.grad[0] == 0          # A > 0 and ratio above 1 + eps: clipped, no gradient
    assert logp.grad[1] > 0           # A < 0: unclipped side, still pushed down
    assert st["clip_ratio/high"] == 0.5 and st["clip_ratio/low"] == 0.0 and st["clip_ratio"] == 0.5


# --- log-probs in the two spaces with a real (tiny) model ---------------------------------------------------

# tiny_rollout (tests/conftest.py): a random tiny model and 3 prompts x 2 samples

def test_pretrain_logprobs_equal_direct_forward_on_bos_plus_y(tiny_rollout):
    m, ro = tiny_rollout
    lp, _ = L.pretrain_logprobs(m, ro.response)
    for i in range(ro.response.size(0)):
        y = ro.response[i][ro.mask[i]]
        seq = torch.cat([torch.tensor([R.BOS_ID]), y])[None]
        want = torch.log_softmax(m(seq)[0, :-1], -1).gather(1, y[:, None]).squeeze(1)
        torch.testing.assert_close(lp[i][ro.mask[i]], want, atol=1e-5, rtol=0)


def test_conditional_logprobs_equal_unpadded_forward(tiny_rollout):
    m, ro = tiny_rollout
    lp, _ = L.conditional_logprobs(m, ro)
    for i in range(ro.response.size(0)):
        x = ro.prompt[i][int(ro.pad[i]):]
        y = ro.response[i][ro.mask[i]]
        logits = m(torch.cat([x, y])[None])[0, len(x) - 1:-1]
        want = torch.log_softmax(logits, -1).gather(1, y[:, None]).squeeze(1)
        torch.testing.assert_close(lp[i][ro.mask[i]], want, atol=1e-5, rtol=0)


def test_length_buckets_give_the_one_pass_logprobs_and_gradient():
    import model as M
    torch.manual_seed(0)
    m = M.GPT(M.PRESETS["tiny"])
    ps = [S.prompt_ids(p) for p in R.make_split("test", 6)]
    ro = S.generate(m, ps, G=3, max_new_tokens=20, generator=torch.Generator().manual_seed(0))
    ends = torch.randint(0, 20, (18,), generator=torch.Generator().manual_seed(1))  # end tokens at 0..19
    pos = torch.arange(ro.response.size(1))[None]
    resp = ro.response.masked_fill(pos == ends[:, None], R.EOS_ID).masked_fill(pos > ends[:, None], R.PAD_ID)
    ro = S.Rollout(ro.prompt, ro.pad, resp, resp != R.PAD_ID, torch.ones(18, dtype=torch.bool), ro.texts)
    assert len(set(ro.pad.tolist())) > 1  # prompts of different lengths: the buckets also cut left padding
    widths = []
    for space in (lambda sub: L.conditional_logprobs(m, sub), lambda sub: L.pretrain_logprobs(m, sub.response)):
        def spy(sub):
            widths.append(sub.prompt.size(1) + sub.response.size(1))
            return space(sub)
        grads = []
        for fn in (space, lambda r: L.by_length(spy, r)):
            m.zero_grad()
            lp, ent = fn(ro)
            (lp * ro.mask).sum().backward()
            grads.append(([lp * ro.mask, ent * ro.mask], [p.grad.clone() for p in m.parameters()]))
        (want, gw), (got, gg) = grads
        for a, b in zip(want + gw, got + gg):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert min(widths) < ro.prompt.size(1) + ro.response.size(1)  # the short rows ran on a shorter batch


@pytest.mark.parametrize("fn,sign", [(L.nsr_loss, -1), (L.psr_loss, +1)])
def test_one_sgd_step_moves_the_sample_log_prob(tiny_rollout, fn, sign):
    import copy
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
    seq = lambda lp: (lp * ro.mask).sum(1)
    assert (torch.sign(seq(after) - seq(before.detach())) == sign).all()


def test_alignment_cosine_is_one_when_prompt_is_empty(tiny_rollout):
    m, ro = tiny_rollout
    # a 'prompt' that is just <|bos|>: P(y|x) and P(y) are the same function
    empty = S.Rollout(torch.full((ro.response.size(0), 1), R.BOS_ID), torch.zeros(ro.response.size(0), dtype=torch.long),
                      ro.response, ro.mask, ro.finished, ro.texts)
    st, per = L.gradient_alignment(m, empty, max_samples=3)
    assert all(c == pytest.approx(1.0, abs=1e-5) for c in per["cosine"])
    assert st["inner_negative_share"] == 0.0
    st, per = L.gradient_alignment(m, ro, max_samples=3)  # with a real prompt they differ
    assert all(c < 0.9999 for c in per["cosine"])


def test_logprob_gap_is_masked_absolute_difference():
    a, b = torch.tensor([[-1., -2., -3.]]), torch.tensor([[-1.5, -1., -9.]])
    gap = L.logprob_gap(a, b, torch.tensor([[True, True, False]]))
    torch.testing.assert_close(gap, torch.tensor([[0.5, 1.0, 0.0]]))


def test_bf16_autocast_keeps_log_probs_and_loss_in_fp32(tiny_rollout):
    # what a GPU run does in its training passes (model.autocast), simulated with the CPU's bf16 autocast
    import contextlib
    import model as M
    m, ro = tiny_rollout
    hp = dict(M.RL_DEFAULTS, **M.RL["tiny"])
    r = torch.tensor([1., 0., 0., 1., 1., 1.])
    want, _ = L.objective_loss("grpo", m, ro, r, 2, hp)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = L.objective_loss("grpo", m, ro, r, 2, hp)
        lp, ent = L.conditional_logprobs(m, ro)
        assert m.transformer.h[0].mlp.c_fc(torch.ones(1, 32)).dtype == torch.bfloat16  # autocast is on
    assert lp.dtype == ent.dtype == got.dtype == torch.float32
    got, want = float(got.detach()), float(want.detach())
    assert abs(got - want) < 0.05 * abs(want)
    assert isinstance(M.autocast("cpu"), contextlib.nullcontext)  # CPU runs stay fp32
