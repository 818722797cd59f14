"""Exercise 2 without a clamp: an all-empty mask gives nan."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions import my_losses as right

EXERCISE, HINT = 2, 'clamp the denominator'


def aggregate(per_token, mask, mode="token-mean", norm=None):
    m = mask.float()
    if mode == "token-mean":
        return (per_token * m).sum() / m.sum()
    return right.aggregate(per_token, mask, mode, norm)
