"""Exercise 4 aggregating over every token, the mask ignored."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions import my_losses as right

EXERCISE, HINT = 4, 'aggregate over the mask'


def ppo_clip_loss(logp, old_logp, advantages, mask, eps_low=0.2, eps_high=0.2, dual_clip=10.0, agg="token-mean",
                  norm=None):
    return right.ppo_clip_loss(logp, old_logp, advantages, torch.ones_like(mask), eps_low, eps_high, dual_clip, agg,
                               norm)
