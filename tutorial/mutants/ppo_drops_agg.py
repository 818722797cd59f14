"""Exercise 4 dropping agg and norm: always token-mean."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions import my_losses as right

EXERCISE, HINT = 4, 'pass agg and norm on'


def ppo_clip_loss(logp, old_logp, advantages, mask, eps_low=0.2, eps_high=0.2, dual_clip=10.0, agg="token-mean",
                  norm=None):
    return right.ppo_clip_loss(logp, old_logp, advantages, mask, eps_low, eps_high, dual_clip)
