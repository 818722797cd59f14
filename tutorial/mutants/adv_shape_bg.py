"""Exercise 1 returning the (B, G) view instead of one advantage per response."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 1, 'shape (N,)'


def group_advantages(rewards, G, normalize_std=True, eps=1e-6):
    r = rewards.float().view(-1, G)
    a = r - r.mean(1, keepdim=True)
    return a / (r.std(1, keepdim=True) + eps) if normalize_std else a
