"""Exercise 3 calling the model without pad=: left-padded rows are shifted."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from tutorial.solutions import my_losses as right

EXERCISE, HINT = 3, 'pass pad= to the model'


def token_logprobs(model, context, response, pad=None):
    return right.token_logprobs(model, context, response, None)
