"""Exercise 2 with a token mean over every position, padding included."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions import my_losses as right

EXERCISE, HINT = 2, "count only the kept tokens"


def aggregate(per_token, mask, mode="token-mean", norm=None):
    if mode == "token-mean":
        return (per_token * mask.float()).sum() / mask.numel()
    return right.aggregate(per_token, mask, mode, norm)
