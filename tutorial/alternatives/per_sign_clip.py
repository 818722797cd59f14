"""Exercise 4 clipping each sign of the advantage on its own side of the band, with an explicit dual-clip branch."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403


def ppo_clip_loss(logp, old_logp, advantages, mask, eps_low=0.2, eps_high=0.2, dual_clip=10.0, agg="token-mean",
                  norm=None):
    A = advantages.unsqueeze(1).expand_as(logp)
    ratio = (logp - old_logp).exp()
    pos = -A * torch.clamp(ratio, max=1 + eps_high)                  # A > 0: only large ratios are clipped
    neg = -A * torch.clamp(torch.clamp(ratio, min=1 - eps_low), max=dual_clip)  # A < 0: small ones, and the cap
    pg = torch.where(A > 0, pos, torch.where(A < 0, neg, torch.zeros_like(ratio)))
    return aggregate(pg, mask, agg, norm), {"note": "per-sign"}
