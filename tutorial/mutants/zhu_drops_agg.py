"""Exercise 6's PSR ignoring agg and norm."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 6, 'pass agg and norm on'


def psr_loss(logp, rewards, mask, agg="token-mean", norm=None):
    ones = torch.ones_like(rewards, dtype=torch.float)
    return ppo_clip_loss(logp, logp.detach(), ones, mask & (rewards > 0)[:, None])
