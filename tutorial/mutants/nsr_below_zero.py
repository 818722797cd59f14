"""Exercise 6's NSR selecting rewards < 0: nothing is ever selected."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 6, 'keep rewards <= 0'


def nsr_loss(logp, rewards, mask, agg="token-mean", norm=None):
    minus = -torch.ones_like(rewards, dtype=torch.float)
    return ppo_clip_loss(logp, logp.detach(), minus, mask & (rewards < 0)[:, None], agg=agg, norm=norm)
