"""Exercise 6's W-REINFORCE with lam hard-coded to 0.1."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 6, 'use the lam argument'


def w_reinforce_loss(logp, rewards, mask, lam=0.1, agg="token-mean", norm=None):
    adv = torch.where(rewards > 0, 0.1, -1.0).float()
    return ppo_clip_loss(logp, logp.detach(), adv, mask, agg=agg, norm=norm)
