"""The loss details that must agree with verl (the library the official code forks), on hand-built tensors:
Dr. GRPO's constant divisor, which tokens count as clipped, and the dual-clip constant."""
import math

import pytest
import torch

import losses as L


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


def test_objective_loss_passes_max_new_tokens_as_the_constant():
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.ones(2, 3, dtype=torch.bool)
    r = torch.tensor([1., 0.])
    loss, _ = L.grpo_loss(logp, logp.detach(), r, mask, G=2, agg="seq-mean-token-sum-norm", norm=48)
    loss.backward()
    a = L.group_advantages(r, 2)
    torch.testing.assert_close(logp.grad, (-a[:, None] / 48 / 2).expand(2, 3))  # d/dlogp of mean_i sum_t(-A r)/48


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
