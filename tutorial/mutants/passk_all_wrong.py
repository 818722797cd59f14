"""Exercise 8 returning the chance that all k draws are wrong."""
import math
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 8, '1 minus it'


def pass_at_k(n, c, k):
    return math.comb(n - c, k) / math.comb(n, k)
