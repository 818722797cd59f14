"""Exercise 8 counting subsets whose k draws are all right."""
import math
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 8, '*at least one*'


def pass_at_k(n, c, k):
    return math.comb(c, k) / math.comb(n, k)
