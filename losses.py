"""
Every objective of the paper, each a pure function of tensors returning (loss, stats).

Design choices, stated up front (sources: the paper, its official code, a fork of the verl library, and Zhu et
al. 2025, "The Surprising Effectiveness of Negative Reinforcement in LLM Reasoning"):
1) Rollouts always come from pi(.|x), B prompts x G samples at temperature 1; rewards r are 0 or 1.
2) One optimizer step per rollout batch, so the PPO ratio pi/pi_old is exactly 1 when the gradient is
   taken and clipping never fires: GRPO here is REINFORCE with a group baseline. We still write the ratio
   and the clip, as the official code (verl) does, so that a student can add PPO epochs and see it act.
3) Two spaces. Post-train space scores y after the prompt: log P(y|x). Pre-train space (PreRL) scores y
   after a single <|bos|> with positions from 0: log P(y). The end token is part of y in both.
4) Advantages. GRPO: (r - mean) / (std + 1e-6) per group (torch.std, unbiased). PreRL: r - mean, no std
   (the official script sets pretrain_norm_adv_by_std=False). Groups whose rewards are all equal get 0.
5) Sample selection (NSR-PreRL / PSR-PreRL) multiplies the token mask, so the token-mean denominator counts
   only the kept samples' tokens, as in the official code.
6) Aggregation is token-mean by default (the paper's setting); seq-mean-token-mean and Dr. GRPO's
   seq-mean-token-sum-norm (a fixed length budget as divisor) are one switch away.
7) No KL and no entropy bonus by default (the paper's scripts); k3 KL to a reference model is an option.
Shapes: N = B*G responses, T = response length. logp, mask: (N, T); rewards: (N,).
"""
import torch
from torch.nn import functional as F

from reward import BOS_ID, TOKEN_CLASSES
from sample import Rollout, token_classes

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


# -----------------------------------------------------------------------------
# log-probabilities in the two spaces

def token_logprobs(model, context, response, pad=None):
    """log pi(y_t | context, y_<t) for every response token, and the entropy (nats) of that distribution.
    context (N, Tc) token ids, left-padded by `pad` (N,) when rows differ in length; response (N, T).
    Returns (logp (N, T), entropy (N, T)); values after the end token are junk and must be masked."""
    idx = torch.cat([context, response], 1)[:, :-1]               # (N, Tc + T - 1)
    logits = model(idx, pad=pad)[:, context.size(1) - 1:].float()  # (N, T, V): the positions that predict y
    logp_all = F.log_softmax(logits, -1)
    logp = logp_all.gather(-1, response.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def conditional_logprobs(model, rollout):
    """Post-train space: log P(y_t | x, y_<t), the prompt in context (standard RLVR)."""
    return token_logprobs(model, rollout.prompt, rollout.response, rollout.pad)


def pretrain_logprobs(model, response):
    """Pre-train space (paper section 2; official code: prompt and chat template replaced by one special
    token, positions restarting at 0): log P(y_t | <|bos|>, y_<t)."""
    bos = torch.full((response.size(0), 1), BOS_ID, dtype=response.dtype, device=response.device)
    return token_logprobs(model, bos, response)


def by_length(logprobs, ro, buckets=4):
    """Speed only: logprobs(rollout) -> (logp, entropy), run on `buckets` groups of rows of similar response
    length, each cut to its own longest response and shortest left padding, then put back in row order. The
    padding after the end tokens (most of a batch whose longest row is several times the mean) is never computed.
    Same values as one pass over `ro` up to float rounding; 0 after each row's end token (masked everywhere)."""
    N, T = ro.mask.shape
    lengths = ro.mask.sum(1)                                                     # (N,)
    order = torch.argsort(lengths, stable=True)
    logp, ent = [], []
    for rows in order.chunk(buckets):
        w, lo = max(1, int(lengths[rows].max())), int(ro.pad[rows].min())  # this bucket's width and common pad
        sub = Rollout(ro.prompt[rows, lo:], ro.pad[rows] - lo, ro.response[rows, :w], ro.mask[rows, :w],
                      ro.finished[rows], None)
        lp, en = logprobs(sub)                                                  # (n, w) each
        logp.append(F.pad(lp, (0, T - w)))
        ent.append(F.pad(en, (0, T - w)))
    back = torch.argsort(order)  # row i of the result is row i of ro
    return torch.cat(logp)[back], torch.cat(ent)[back]


# -----------------------------------------------------------------------------
# advantages and aggregation

def group_advantages(rewards, G, normalize_std=True, eps=1e-6):
    """Group-relative advantages, one per response (rows b*G .. b*G+G-1 share a prompt).
    normalize_std=True: GRPO, (r - mean) / (std + eps).  False: PreRL / Dr. GRPO, r - mean."""
    r = rewards.float().view(-1, G)
    a = r - r.mean(1, keepdim=True)
    if normalize_std:
        a = a / (r.std(1, keepdim=True) + eps)
    return a.view(-1)


def aggregate(per_token, mask, mode="token-mean", norm=None):
    """Reduce a (N, T) per-token loss over the tokens where mask is true; sequences with no kept token
    (a sample the objective leaves out) are left out of every denominator.
    token-mean:              sum over all kept tokens / number of kept tokens (long answers weigh more)
    seq-mean-token-mean:     mean over kept sequences of each sequence's token mean
    seq-mean-token-sum-norm: mean over kept sequences of (token sum / norm), norm a fixed constant: the run's
                             length budget max_new_tokens, never the length this batch happened to generate.
                             Dr. GRPO's point: no denominator that depends on the sample. verl divides by its
                             loss_scale_factor (default: the response-length budget) and *sums* over sequences;
                             the mean here differs from that by the number of kept sequences, a scale only."""
    m = mask.float()
    if mode == "token-mean":
        return (per_token * m).sum() / m.sum().clamp(min=1)
    kept = (m.sum(1) > 0).float()  # sequences with at least one kept token
    if mode == "seq-mean-token-mean":
        per_seq = (per_token * m).sum(1) / m.sum(1).clamp(min=1)
    elif mode == "seq-mean-token-sum-norm":
        if norm is None or not norm > 0:
            raise ValueError(f"seq-mean-token-sum-norm needs a positive constant norm (max_new_tokens), got {norm!r}")
        per_seq = (per_token * m).sum(1) / norm
    else:
        raise ValueError(f"unknown aggregation {mode!r}: choose from {AGGREGATIONS}")
    return (per_seq * kept).sum() / kept.sum().clamp(min=1)


def kl_k3(logp, ref_logp):
    """Per-token k3 estimator of KL(pi || pi_ref) (Schulman): exp(d) - d - 1 with d = ref - logp; >= 0."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


# -----------------------------------------------------------------------------
# the policy-gradient core shared by every objective

def ppo_clip_loss(logp, old_logp, advantages, mask, eps_low=0.2, eps_high=0.2, dual_clip=10.0, agg="token-mean",
                  norm=None):
    """The PPO-clip ('vanilla' in verl) policy loss on per-sequence advantages:
        max(-A * rho, -A * clip(rho, 1 - eps_low, 1 + eps_high)), capped at -A * dual_clip when A < 0,
    with rho = exp(logp - old_logp). With old_logp = logp.detach() the value is -A and the gradient
    is -A * grad log pi: REINFORCE.
    Stats count the tokens where a clip is active, as verl and TRL do: clip_ratio/low (A < 0, rho < 1 - eps_low),
    clip_ratio/high (A > 0, rho > 1 + eps_high), clip_ratio (their sum), clip_ratio/dual (A < 0 and the
    dual-clip cap binds); each a share of the kept tokens. A ratio outside the band on the side where the
    max() already takes the unclipped term is not clipped and not counted. (Nine arguments: verl's names for the
    clip's knobs, one each.)"""
    A = advantages[:, None]                                   # (N, 1)
    ratio = torch.exp(logp - old_logp)                        # (N, T)
    pg = torch.maximum(-A * ratio, -A * ratio.clamp(1 - eps_low, 1 + eps_high))
    dual = (A < 0) & (pg > -A * dual_clip)                    # the cap binds: rho > dual_clip
    pg = torch.where(dual, -A * dual_clip, pg)
    loss = aggregate(pg, mask, agg, norm)
    with torch.no_grad():
        m = mask.float()
        share = lambda hit: float((hit.float() * m).sum() / m.sum().clamp(min=1))
        low, high = share((A < 0) & (ratio < 1 - eps_low)), share((A > 0) & (ratio > 1 + eps_high))
        stats = {"clip_ratio/low": low, "clip_ratio/high": high, "clip_ratio": low + high,
                 "clip_ratio/dual": share(dual), "samples": int((m.sum(1) > 0).sum()), "tokens": int(m.sum())}
    return loss, stats


# -----------------------------------------------------------------------------
# the objectives

def grpo_loss(logp, old_logp, rewards, mask, G, eps_low=0.2, eps_high=0.2, agg="token-mean",
              ref_logp=None, kl_coef=0.0, dual_clip=10.0, norm=None):
    """GRPO in post-train space (paper section 3, standard RLVR). logp = log P(y_t|x, y_<t).
    A_i = (r_i - mean_g r) / (std_g r + 1e-6); PPO-clip on the ratio; optional k3 KL to ref_logp.
    eps_high=0.28 is the 'clip-higher' setting of the paper's GRPO baseline script. dual_clip=10 is the official
    DSRL script's clip_ratio_c (verl's default is 3). norm: the constant of seq-mean-token-sum-norm. (Twelve
    arguments: one per knob of verl's policy loss, so that a student's PPO epochs or the tutorial can set each.)"""
    adv = group_advantages(rewards, G, normalize_std=True)
    loss, stats = ppo_clip_loss(logp, old_logp, adv, mask, eps_low, eps_high, dual_clip, agg=agg, norm=norm)
    if ref_logp is not None and kl_coef > 0:
        kl = aggregate(kl_k3(logp, ref_logp), mask, agg, norm)
        loss = loss + kl_coef * kl
        stats["kl"] = float(kl.detach())
    return loss, stats


def prerl_loss(logp_pre, rewards, mask, G, select="all", advantage="r-mean", agg="token-mean", norm=None):
    """PreRL: the same reward-driven update on log P(y) (paper section 2, eq. for grad J_PreRL).
    logp_pre = log P(y_t | <|bos|>, y_<t) from pretrain_logprobs.
    advantage: 'r-mean' is the official A = r - mean_g r (all-right and all-wrong groups give 0, and a wrong
      sample gets -p_g, the group's success rate); '+-1' is Zhu et al.'s +1 / -1 (the unused
      nsr_pretrain_first path of the official code), which also pushes down all-wrong groups.
    select: 'all' (PreRL), 'negative' (NSR-PreRL: A < 0 only), 'positive' (PSR-PreRL: A > 0 only)."""
    if advantage == "r-mean":
        adv = group_advantages(rewards, G, normalize_std=False)
    elif advantage == "+-1":
        adv = rewards.float() * 2 - 1
    else:
        raise ValueError(f"unknown PreRL advantage {advantage!r}: 'r-mean' or '+-1'")
    keep = {"all": torch.ones_like(adv, dtype=torch.bool), "negative": adv < 0, "positive": adv > 0}[select]
    return ppo_clip_loss(logp_pre, logp_pre.detach(), adv, mask & keep[:, None], agg=agg, norm=norm)


def nsr_rl_loss(logp, rewards, mask, G, agg="token-mean", norm=None):
    """NSR-RL, the paper's conditional-space control: GRPO's std-normalized advantage on P(y|x), negative
    samples only (official flags positive_rl=False, negative_rl=True). Used by the nsr-rl-warmup ablation."""
    adv = group_advantages(rewards, G, normalize_std=True)
    return ppo_clip_loss(logp, logp.detach(), adv, mask & (adv < 0)[:, None], agg=agg, norm=norm)


def psr_loss(logp, rewards, mask, agg="token-mean", norm=None):
    """Zhu et al. 2025 PSR: +1 on every correct sample, nothing else (no baseline): raises log P(y|x)."""
    adv = torch.ones_like(rewards, dtype=torch.float)
    return ppo_clip_loss(logp, logp.detach(), adv, mask & (rewards > 0)[:, None], agg=agg, norm=norm)


def nsr_loss(logp, rewards, mask, agg="token-mean", norm=None):
    """Zhu et al. 2025 NSR: -1 on every incorrect sample, all-wrong groups included: lowers log P(y|x)."""
    adv = -torch.ones_like(rewards, dtype=torch.float)
    return ppo_clip_loss(logp, logp.detach(), adv, mask & (rewards <= 0)[:, None], agg=agg, norm=norm)


def w_reinforce_loss(logp, rewards, mask, lam=0.1, agg="token-mean", norm=None):
    """Zhu et al. 2025 W-REINFORCE: lam * PSR + NSR, i.e. A = lam on correct samples, -1 on incorrect."""
    adv = torch.where(rewards > 0, lam, -1.0).float()
    return ppo_clip_loss(logp, logp.detach(), adv, mask, agg=agg, norm=norm)


def nsr_prerl_loss(logp_pre, rewards, mask, G, advantage="r-mean", agg="token-mean", norm=None):
    """NSR-PreRL (paper section 3.3, the phase 1 of DSRL): PreRL on the wrong samples only, pushed down in
    log P(y). With advantage 'r-mean' a wrong sample of a group that solved a share p_g weighs -p_g."""
    return prerl_loss(logp_pre, rewards, mask, G, "negative", advantage, agg, norm)


def psr_prerl_loss(logp_pre, rewards, mask, G, advantage="r-mean", agg="token-mean", norm=None):
    """PSR-PreRL (paper section 3.3): PreRL on the right samples only, pulled up in log P(y)."""
    return prerl_loss(logp_pre, rewards, mask, G, "positive", advantage, agg, norm)


# -----------------------------------------------------------------------------
# the table of objectives: what the training loop and the flag checks read

# name -> (the space it trains, whether it needs G >= 2 samples per prompt, its loss). "pre": log P(y), scored after
# <|bos|> (pretrain_logprobs); "post": log P(y|x) (conditional_logprobs). Each loss is called as
# loss(logp, rewards, mask, cfg, ref_logp) with cfg the run's settings (dsrl.RLConfig) and ref_logp the KL
# reference's log P(y|x) or None. A new objective is one function above and one line here.
OBJECTIVES = {
    "grpo": ("post", True, lambda lp, r, m, c, ref: grpo_loss(lp, lp.detach(), r, m, c.group, eps_high=c.eps_high,
                                                              agg=c.agg, ref_logp=ref, kl_coef=c.kl_coef,
                                                              norm=c.max_new_tokens)),
    "prerl": ("pre", True, lambda lp, r, m, c, ref: prerl_loss(lp, r, m, c.group, "all", c.prerl_advantage, c.agg,
                                                               c.max_new_tokens)),
    "nsr-prerl": ("pre", True, lambda lp, r, m, c, ref: nsr_prerl_loss(lp, r, m, c.group, c.prerl_advantage, c.agg,
                                                                       c.max_new_tokens)),
    "psr-prerl": ("pre", True, lambda lp, r, m, c, ref: psr_prerl_loss(lp, r, m, c.group, c.prerl_advantage, c.agg,
                                                                       c.max_new_tokens)),
    "nsr-rl": ("post", True, lambda lp, r, m, c, ref: nsr_rl_loss(lp, r, m, c.group, c.agg, c.max_new_tokens)),
    "psr": ("post", False, lambda lp, r, m, c, ref: psr_loss(lp, r, m, c.agg, c.max_new_tokens)),
    "nsr": ("post", False, lambda lp, r, m, c, ref: nsr_loss(lp, r, m, c.agg, c.max_new_tokens)),
    "w-reinforce": ("post", False, lambda lp, r, m, c, ref: w_reinforce_loss(lp, r, m, c.lam, c.agg, c.max_new_tokens)),
}


def objective_loss(name, model, ro, r, cfg, ref=None, other_space=True):
    """The loss of objective `name` (a key of OBJECTIVES) on a rollout `ro` with rewards r (N,), plus the token
    entropies under P(y|x) and P(y) for the log. cfg: the run's settings (dsrl.RLConfig: group, agg, eps_high,
    kl_coef, lam, prerl_advantage, max_new_tokens, prerl_tokens); ref: the KL reference model or None. Only the
    log-probs of the space the objective trains carry a graph; the pass of the other space is for logging (its
    entropy) and other_space=False skips it. (Not a pure function: it runs the model.)"""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}: choose from {', '.join(OBJECTIVES)}")
    space, _, loss_fn = OBJECTIVES[name]
    pre = space == "pre"
    logp_m = ent_m = logp_c = ent_c = ref_logp = None
    if pre or other_space:
        with torch.set_grad_enabled(pre):
            logp_m, ent_m = by_length(lambda sub: pretrain_logprobs(model, sub.response), ro)
    if not pre or other_space:
        with torch.set_grad_enabled(not pre):
            logp_c, ent_c = by_length(lambda sub: conditional_logprobs(model, sub), ro)
    if ref is not None and not pre:  # the KL term (only grpo_loss uses it)
        with torch.no_grad():
            ref_logp = by_length(lambda sub: conditional_logprobs(ref, sub), ro)[0]
    mask = ro.mask
    if pre and cfg.prerl_tokens == "no-question-operands":  # H1's restricted run (experiments/mechanisms.py)
        mask = mask & (token_classes(ro) != TOKEN_CLASSES.index("question operand"))
    loss, st = loss_fn(logp_m if pre else logp_c, r, mask, cfg, ref_logp)
    if pre:
        st["logp_negative"] = float((logp_m.detach() * mask).sum(1)[r == 0].mean()) if (r == 0).any() else 0.0
    m = ro.mask.float()
    for key, ent in (("entropy_cond", ent_c), ("entropy_pre", ent_m)):
        if ent is not None:
            st[key] = float((ent.detach() * m).sum() / m.sum())
    return loss, st


# -----------------------------------------------------------------------------
# gradient alignment between the two spaces (paper section 3.1: shared parameter influence)

def flat_grad(model, scalar):
    """d scalar / d parameters, flattened into one vector (zeros for parameters it does not touch)."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(scalar, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def gradient_alignment(model, rollout, max_samples=256):
    """Per sampled response i: g_c = grad log P(y_i|x), g_m = grad log P(y_i), over all parameters.
    First-order Taylor: a PreRL step eta * R * g_m changes log P(y|x) by eta * R * <g_m, g_c>, so a positive
    inner product means the pre-train-space update moves the post-train-space likelihood the same way.
    Returns (stats, per_sample) with inner product mean/min/max, share negative, mean cosine."""
    n = min(max_samples, rollout.response.size(0))
    inner, cos = [], []
    for i in range(n):
        m = rollout.mask[i:i + 1]
        lc, _ = token_logprobs(model, rollout.prompt[i:i + 1], rollout.response[i:i + 1], rollout.pad[i:i + 1])
        lm, _ = pretrain_logprobs(model, rollout.response[i:i + 1])
        gc = flat_grad(model, (lc * m).sum())
        gm = flat_grad(model, (lm * m).sum())
        inner.append(float(gc @ gm))
        cos.append(float(F.cosine_similarity(gc, gm, dim=0)))
    t, c = torch.tensor(inner), torch.tensor(cos)
    stats = {"n": n, "inner_mean": float(t.mean()), "inner_min": float(t.min()), "inner_max": float(t.max()),
             "inner_negative_share": float((t < 0).float().mean()), "cosine_mean": float(c.mean())}
    return stats, {"inner": inner, "cosine": cos}


def logprob_gap(logp_cond, logp_pre, mask):
    """Per token |log P(y_t|x, y_<t) - log P(y_t|y_<t)| (N, T), zero where masked: where the spaces differ."""
    return (logp_cond - logp_pre).abs() * mask.float()
