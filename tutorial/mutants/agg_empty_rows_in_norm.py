"""Exercise 2's seq-mean-token-sum-norm averaging over every row, empty ones included."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions import my_losses as right

EXERCISE, HINT = 2, 'leave rows with no kept token out'


def aggregate(per_token, mask, mode="token-mean", norm=None):
    if mode == "seq-mean-token-sum-norm":
        return ((per_token * mask.float()).sum(1) / norm).mean()
    return right.aggregate(per_token, mask, mode, norm)
