"""Exercise 2 returning token-mean whatever the mode."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions import my_losses as right

EXERCISE, HINT = 2, 'that is token-mean'


def aggregate(per_token, mask, mode="token-mean", norm=None):
    return right.aggregate(per_token, mask, "token-mean", norm)
