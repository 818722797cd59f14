"""Exercise 4 with the dual clip on both signs of the advantage."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 4, 'only where A < 0'


def ppo_clip_loss(logp, old_logp, advantages, mask, eps_low=0.2, eps_high=0.2, dual_clip=10.0, agg="token-mean",
                  norm=None):
    A = advantages[:, None]
    ratio = torch.exp(logp - old_logp)
    pg = torch.maximum(-A * ratio, -A * ratio.clamp(1 - eps_low, 1 + eps_high))
    return aggregate(torch.minimum(pg, -A * dual_clip), mask, agg, norm), {}
