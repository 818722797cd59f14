"""Exercise 8 with the biased estimator 1 - (1 - c/n)^k (draws with replacement)."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 8, "independent"


def pass_at_k(n, c, k):
    return 1 - (1 - c / n) ** k
