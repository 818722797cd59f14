"""Exercise 9 'fixed' by dropping the ratio: the gradient is right, the value is not."""
import losses
from tutorial.solutions.my_losses import *  # noqa: F401,F403

EXERCISE, HINT = 9, 'the value is not'


def one_step_grpo_loss(logp, rewards, mask, G):
    adv = losses.group_advantages(rewards, G)
    return losses.aggregate(-adv[:, None] * logp, mask)
