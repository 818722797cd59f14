"""Exercise 3's pretrain_logprobs scoring with a pad token as the context."""
import torch
from tutorial.solutions.my_losses import *  # noqa: F401,F403
from reward import PAD_ID

EXERCISE, HINT = 3, 'the context token is <|bos|>'


def pretrain_logprobs(model, response):
    ctx = torch.full((response.size(0), 1), PAD_ID, dtype=response.dtype)
    return token_logprobs(model, ctx, response)[0]
