"""Exercise 3 with a one-hot sum instead of gather and the log of the softmax; exercise 2 in float64."""
from tutorial.solutions.my_losses import *  # noqa: F401,F403


def token_logprobs(model, context, response, pad=None):
    idx = torch.cat([context, response], 1)[:, :-1]
    logits = model(idx, pad=pad)[:, context.size(1) - 1:].double()
    p = torch.softmax(logits, -1)
    logp_all = torch.log(p)
    onehot = F.one_hot(response, logits.size(-1)).double()
    return (logp_all * onehot).sum(-1).float(), (-(p * logp_all).sum(-1)).float()


def aggregate(per_token, mask, mode="token-mean", norm=None):
    x, m = per_token.double(), mask.double()
    if mode == "token-mean":
        return ((x * m).sum() / m.sum().clamp(min=1)).float()
    n = m.sum(1)
    per_seq = (x * m).sum(1) / (n.clamp(min=1) if mode == "seq-mean-token-mean" else norm)
    keep = n > 0
    return (per_seq[keep].sum() / keep.sum().clamp(min=1)).float()
