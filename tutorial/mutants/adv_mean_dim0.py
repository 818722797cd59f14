"""Exercise 1 taking the mean over dim 0 (across groups)."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 1, 'dim 1 of the (B, G) view'


def group_advantages(rewards, G, normalize_std=True, eps=1e-6):
    r = rewards.float().view(-1, G)
    a = r - r.mean(0, keepdim=True)
    if normalize_std:
        a = a / (r.std(0, keepdim=True) + eps)
    return a.view(-1)
