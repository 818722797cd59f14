"""Exercise 2's token-mean over every position, pads and all, unmasked."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions import my_losses as right

EXERCISE, HINT = 2, 'multiply by the mask'


def aggregate(per_token, mask, mode="token-mean", norm=None):
    if mode == "token-mean":
        return per_token.mean()
    return right.aggregate(per_token, mask, mode, norm)
