"""Exercise 2's seq-mean-token-sum-norm dividing by each row's length."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions import my_losses as right

EXERCISE, HINT = 2, "not by the row's own"


def aggregate(per_token, mask, mode="token-mean", norm=None):
    if mode == "seq-mean-token-sum-norm":
        mode = "seq-mean-token-mean"
    return right.aggregate(per_token, mask, mode, norm)
