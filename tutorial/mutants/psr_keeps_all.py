"""Exercise 6's PSR giving +1 to every sample."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 6, 'PSR keeps only the correct samples'


def psr_loss(logp, rewards, mask, agg="token-mean", norm=None):
    ones = torch.ones_like(rewards, dtype=torch.float)
    return ppo_clip_loss(logp, logp.detach(), ones, mask, agg=agg, norm=norm)
