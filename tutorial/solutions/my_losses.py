"""Worked solutions to the prerl exercises (python -m tutorial.check all --impl tutorial/solutions/my_losses.py).
Try the exercises before reading these: the checker's hints are written for the usual wrong turns."""
import math

import torch
from torch.nn import functional as F

import losses
from reward import BOS_ID, step_is_wrong


# --- exercise 1: group advantages ------------------------------------------------------------------------------

def group_advantages(rewards, G, normalize_std=True, eps=1e-6):
    r = rewards.float().view(-1, G)             # (B, G): one row per prompt
    a = r - r.mean(1, keepdim=True)             # better or worse than the group's average
    if normalize_std:
        a = a / (r.std(1, keepdim=True) + eps)  # torch.std is unbiased (G - 1); eps: all-equal groups give 0, not nan
    return a.view(-1)


# --- exercise 2: masked aggregation ----------------------------------------------------------------------------

def aggregate(per_token, mask, mode="token-mean", norm=None):
    m = mask.float()
    if mode == "token-mean":
        return (per_token * m).sum() / m.sum().clamp(min=1)
    row_sum, row_len = (per_token * m).sum(1), m.sum(1)
    kept = (row_len > 0).float()                # a row with no kept token is not a sequence of this loss
    if mode == "seq-mean-token-mean":
        per_seq = row_sum / row_len.clamp(min=1)
    elif mode == "seq-mean-token-sum-norm":
        per_seq = row_sum / norm                # a constant: the length budget, whatever was generated
    else:
        raise ValueError(f"unknown aggregation {mode!r}")
    return (per_seq * kept).sum() / kept.sum().clamp(min=1)


# --- exercise 3: log-probs in both spaces ----------------------------------------------------------------------

def token_logprobs(model, context, response, pad=None):
    Tc = context.size(1)
    idx = torch.cat([context, response], 1)[:, :-1]        # the last token predicts nothing we score
    logits = model(idx, pad=pad)[:, Tc - 1:].float()       # position Tc-1 (last context token) predicts y_0
    logp_all = F.log_softmax(logits, -1)                   # (N, T, V)
    logp = logp_all.gather(-1, response.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def pretrain_logprobs(model, response):
    bos = torch.full((response.size(0), 1), BOS_ID, dtype=response.dtype, device=response.device)
    return token_logprobs(model, bos, response)             # no prompt, no pad: positions start at 0


# --- exercise 4: the PPO-clip loss -----------------------------------------------------------------------------

def ppo_clip_loss(logp, old_logp, advantages, mask, eps_low=0.2, eps_high=0.2, dual_clip=10.0, agg="token-mean",
                  norm=None):
    A = advantages[:, None]
    ratio = torch.exp(logp - old_logp)
    unclipped, clipped = -A * ratio, -A * ratio.clamp(1 - eps_low, 1 + eps_high)
    pg = torch.maximum(unclipped, clipped)                  # pessimistic: the larger loss of the two
    pg = torch.where(A < 0, torch.minimum(pg, -A * dual_clip), pg)  # dual clip: a cap for negative advantages
    return aggregate(pg, mask, agg, norm), {}


# --- exercise 5: the PreRL loss with sample selection ----------------------------------------------------------

def prerl_loss(logp_pre, rewards, mask, G, select="all", advantage="r-mean", agg="token-mean", norm=None):
    if advantage == "r-mean":
        adv = group_advantages(rewards, G, normalize_std=False)   # no std in pre-train space
    else:
        adv = rewards.float() * 2 - 1
    keep = {"all": torch.ones_like(adv, dtype=torch.bool), "negative": adv < 0, "positive": adv > 0}[select]
    # selection in the mask: the token-mean denominator counts only the kept samples' tokens
    return ppo_clip_loss(logp_pre, logp_pre.detach(), adv, mask & keep[:, None], agg=agg, norm=norm)


# --- exercise 6: Zhu et al.'s PSR, NSR and W-REINFORCE (no baseline) -------------------------------------------

def psr_loss(logp, rewards, mask, agg="token-mean", norm=None):
    ones = torch.ones_like(rewards, dtype=torch.float)
    return ppo_clip_loss(logp, logp.detach(), ones, mask & (rewards > 0)[:, None], agg=agg, norm=norm)


def nsr_loss(logp, rewards, mask, agg="token-mean", norm=None):
    minus = -torch.ones_like(rewards, dtype=torch.float)
    return ppo_clip_loss(logp, logp.detach(), minus, mask & (rewards <= 0)[:, None], agg=agg, norm=norm)


def w_reinforce_loss(logp, rewards, mask, lam=0.1, agg="token-mean", norm=None):
    adv = torch.where(rewards > 0, lam, -1.0).float()
    return ppo_clip_loss(logp, logp.detach(), adv, mask, agg=agg, norm=norm)


# --- exercise 7: the DSRL schedule -----------------------------------------------------------------------------

def dsrl_phase(step, S, lr, warmup_lr, warmup="nsr-prerl"):
    return (warmup, warmup_lr) if step < S else ("grpo", lr)   # steps 0 .. S-1 are phase 1


# --- exercise 8: the unbiased pass@k estimator -----------------------------------------------------------------

def pass_at_k(n, c, k):
    if n - c < k:
        return 1.0                                  # every k-subset holds a right answer
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# --- exercise 9: the planted bug -------------------------------------------------------------------------------

def one_step_grpo_loss(logp, rewards, mask, G):
    adv = losses.group_advantages(rewards, G)
    old_logp = logp.detach()   # the bug: without detach the ratio exp(logp - logp) is the constant 1, no gradient
    ratio = torch.exp(logp - old_logp)
    per_token = torch.maximum(-adv[:, None] * ratio, -adv[:, None] * ratio.clamp(0.8, 1.2))
    return losses.aggregate(per_token, mask)


# --- exercise 10: is the reflection tied to the errors? --------------------------------------------------------

def wait_after_steps(texts):
    n = {True: 0, False: 0}                           # wrong / right steps
    waits = {True: 0, False: 0}                       # ... that ` wait ` follows
    redo_right = 0
    for text in texts:
        for part in text.split(";"):                  # one step per part, its reflections with it
            first, *redos = part.split("alternatively")[-1].split(" wait ")
            wrong = step_is_wrong(first)              # by the result; None: not a step (a guess, a cut-off step)
            if wrong is None:
                continue
            n[wrong] += 1
            if redos:
                waits[wrong] += 1
                redo_right += step_is_wrong(redos[0]) is False
    return {"wrong_steps": n[True], "right_steps": n[False],
            "wait_after_wrong": waits[True] / max(n[True], 1), "wait_after_right": waits[False] / max(n[False], 1),
            "redo_right": redo_right / max(waits[True] + waits[False], 1)}
