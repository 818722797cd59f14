"""Exercise 1 with the population std (divides by G) instead of torch.std's unbiased one (G - 1)."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403  the right answers, then one wrong one

EXERCISE, HINT = 1, "population std"


def group_advantages(rewards, G, normalize_std=True, eps=1e-6):
    r = rewards.float().view(-1, G)
    a = r - r.mean(1, keepdim=True)
    if normalize_std:
        a = a / (r.std(1, keepdim=True, unbiased=False) + eps)
    return a.view(-1)
