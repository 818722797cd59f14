"""Exercise 5 passing logp_pre itself as old_logp: the ratio is the constant 1."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 5, 'detach only what is fixed'


def prerl_loss(logp_pre, rewards, mask, G, select="all", advantage="r-mean", agg="token-mean", norm=None):
    adv = group_advantages(rewards, G, normalize_std=False) if advantage == "r-mean" else rewards.float() * 2 - 1
    keep = {"all": torch.ones_like(adv, dtype=torch.bool), "negative": adv < 0, "positive": adv > 0}[select]
    return ppo_clip_loss(logp_pre, logp_pre, adv, mask & keep[:, None], agg=agg, norm=norm)
