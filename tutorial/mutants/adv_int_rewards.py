"""Exercise 1 without .float(): integer rewards break the mean."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 1, '.float() them first'


def group_advantages(rewards, G, normalize_std=True, eps=1e-6):
    r = rewards.view(-1, G)
    a = r - r.mean(1, keepdim=True)
    if normalize_std:
        a = a / (r.std(1, keepdim=True) + eps)
    return a.view(-1)
