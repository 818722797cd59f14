"""Exercise 1 ignoring normalize_std: always r - mean."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 1, 'normalize_std=True divides'


def group_advantages(rewards, G, normalize_std=True, eps=1e-6):
    r = rewards.float().view(-1, G)
    return (r - r.mean(1, keepdim=True)).view(-1)
