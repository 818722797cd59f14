"""Exercise 8 with factorials, which fail when n - c < k."""
import math
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 8, 'pass@k is 1 there'


def pass_at_k(n, c, k):
    f = math.factorial
    return 1 - (f(n - c) / (f(k) * f(n - c - k))) / (f(n) / (f(k) * f(n - k)))
