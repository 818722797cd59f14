"""Exercise 9 fixed, and the std normalization dropped as well."""
import torch

import losses
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 9, 'keeps its division by the std'


def one_step_grpo_loss(logp, rewards, mask, G):
    adv = losses.group_advantages(rewards, G, normalize_std=False)
    ratio = torch.exp(logp - logp.detach())
    per_token = torch.maximum(-adv[:, None] * ratio, -adv[:, None] * ratio.clamp(0.8, 1.2))
    return losses.aggregate(per_token, mask)
