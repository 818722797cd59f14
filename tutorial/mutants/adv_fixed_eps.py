"""Exercise 1 with eps hard-coded instead of the argument."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 1, 'use the eps argument'


def group_advantages(rewards, G, normalize_std=True, eps=1e-6):
    r = rewards.float().view(-1, G)
    a = r - r.mean(1, keepdim=True)
    if normalize_std:
        a = a / (r.std(1, keepdim=True) + 1e-6)
    return a.view(-1)
