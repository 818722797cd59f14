"""Exercise 8 as min(1, k * c / n)."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 8, 'counts overlapping draws twice'


def pass_at_k(n, c, k):
    return min(1.0, k * c / n)
