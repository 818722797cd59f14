"""Exercise 4 taking the min of the two PPO terms: for A < 0 it clips on the wrong side of the band."""
import torch

from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions.my_losses import aggregate

EXERCISE, HINT = 4, "clip on the wrong side"


def ppo_clip_loss(logp, old_logp, advantages, mask, eps_low=0.2, eps_high=0.2, dual_clip=10.0, agg="token-mean",
                  norm=None):
    A = advantages[:, None]
    ratio = torch.exp(logp - old_logp)
    pg = torch.minimum(-A * ratio, -A * ratio.clamp(1 - eps_low, 1 + eps_high))
    pg = torch.where(A < 0, torch.minimum(pg, -A * dual_clip), pg)
    return aggregate(pg, mask, agg, norm), {}
