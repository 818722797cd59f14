"""Exercise 1 centring per group but dividing by the whole batch's std."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 1, 'its own std'


def group_advantages(rewards, G, normalize_std=True, eps=1e-6):
    r = rewards.float().view(-1, G)
    a = r - r.mean(1, keepdim=True)
    if normalize_std:
        a = a / (rewards.float().std() + eps)
    return a.view(-1)
