"""Exercise 5 always using r - mean, whatever `advantage` says."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions import my_losses as right

EXERCISE, HINT = 5, 'read the advantage argument'


def prerl_loss(logp_pre, rewards, mask, G, select="all", advantage="r-mean", agg="token-mean", norm=None):
    return right.prerl_loss(logp_pre, rewards, mask, G, select, "r-mean", agg, norm)
