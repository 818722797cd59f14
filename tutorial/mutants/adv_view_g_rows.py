"""Exercise 1 reshaping to (G, -1): groups laid out as columns."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 1, 'view(G, -1) does not'


def group_advantages(rewards, G, normalize_std=True, eps=1e-6):
    r = rewards.float().view(G, -1)
    a = r - r.mean(1, keepdim=True)
    if normalize_std:
        a = a / (r.std(1, keepdim=True) + eps)
    return a.view(-1)
