"""
The ten exercises: how the checker decides each (tutorial/check.py runs them, tutorial/compare.py compares).

Every check runs in the checker's own process. It builds its inputs, computes the reference with the project's
functions, and asks the student's file, running in a child process (tutorial/sandbox.py), for its answers; so the
student's code never sees or touches the reference. A check raises Mismatch (what differed, and a hint when the
answer equals one of the known mistakes listed beside it) or returns a line saying what passed.
"""
import math
import re

import torch

import dsrl
import losses
import reward as R
import sample as S
from tutorial.compare import (AGG_CASES, PASS_ON, Mismatch, at_row_token, check_loss, group_where, nsr_step_on_lab,
                              ppo_where, ragged_mask, raised_hint, reflection_samples, rewards_with_edge_cases,
                              rl_run_with_schedule, same, tensor, tiny_rollout, wire_model)

# -----------------------------------------------------------------------------
# the exercises: each check takes the student (a sandbox.Student) and raises Mismatch or returns what passed

def check_advantages(st):
    gen = torch.Generator().manual_seed(1)
    for G in (4, 8):
        r = rewards_with_edge_cases(gen, 6, G)
        g = r.view(-1, G)
        centred = g - g.mean(1, keepdim=True)
        cols = r.view(G, -1)

        def where(i, G=G, g=g):
            return f"group {i // G} (rewards {g[i // G].int().tolist()}), sample {i % G}"
        for norm in (True, False):
            want = losses.group_advantages(r, G, normalize_std=norm)
            by_cols = cols - cols.mean(1, keepdim=True)
            by_cols = (by_cols / (cols.std(1, keepdim=True) + 1e-6) if norm else by_cols).view(-1)
            across = g - g.mean(0, keepdim=True)
            across = (across / (g.std(0, keepdim=True) + 1e-6) if norm else across).view(-1)
            wrong = [((r - r.mean()) / (r.std() + 1e-6) if norm else r - r.mean(),
                      "advantages are relative to each prompt's own group: reshape to (-1, G) before the mean"),
                     (want.view(-1, G), "return one advantage per response, shape (N,): .view(-1) at the end"),
                     (by_cols, "rows b*G .. b*G+G-1 share a prompt: view(-1, G) puts each group in a row, "
                               "view(G, -1) does not"),
                     (across, "each group's mean is over its own G samples: dim 1 of the (B, G) view, not dim 0"),
                     (losses.group_advantages(r, G, normalize_std=not norm),
                      "normalize_std=True divides by the group's std + eps (GRPO); False is r - mean alone (PreRL)")]
            if norm:
                wrong += [((centred / (g.std(1, unbiased=False, keepdim=True) + 1e-6)).view(-1),
                           "torch.std is unbiased (divides by G - 1), as in the official code; you used the "
                           "population std"),
                          ((centred / g.std(1, keepdim=True)).view(-1),
                           "a group whose rewards are all equal has std 0: add eps to the std, so its advantages "
                           "are 0"),
                          ((centred / (r.std() + 1e-6)).view(-1),
                           "divide each group by its own std, not by the std of the whole batch")]
            got = st.call("group_advantages", r.clone(), G, normalize_std=norm)
            same(got, want, f"group_advantages(G={G}, normalize_std={norm})", wrong, where)
    r = rewards_with_edge_cases(gen, 6, 4)
    g = r.view(-1, 4)
    same(st.call("group_advantages", r.clone(), 4, eps=0.5), losses.group_advantages(r, 4, eps=0.5),
         "group_advantages(G=4, eps=0.5)", [(losses.group_advantages(r, 4), "use the eps argument, not a constant")],
         lambda i: f"group {i // 4} (rewards {g[i // 4].int().tolist()}), sample {i % 4}")
    got = raised_hint(lambda: st.call("group_advantages", r.long(), 4), "rewards may come as integers: .float() "
                      "them first (the mean and the std need floats)", "on integer rewards: ")
    same(got, losses.group_advantages(r, 4), "group_advantages on integer rewards",
         [(torch.zeros(24), "rewards may come as integers: .float() them first, or the mean is rounded")])
    return "advantages agree for G = 4 and 8, with and without the std, any eps, integer rewards, all-equal groups"


def check_aggregate(st):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(7, 9, generator=gen)
    mask = ragged_mask(gen, 7, 9)
    m = mask.float()
    kept = (m.sum(1) > 0).float()
    token_mean = (x * m).sum() / m.sum()
    rows = (x * m).sum(1)
    wrong = {"token-mean": [((x * m).sum() / m.numel(), "count only the kept tokens: divide by mask.sum(), not by "
                                                        "N*T"),
                            (x.mean(), "multiply by the mask (or select with it) before summing: pad tokens must "
                                       "not count")],
             "seq-mean-token-mean": [((rows / m.sum(1).clamp(min=1)).mean(),
                                      "a row with no kept token is not a sequence of the loss: leave it out of the "
                                      "mean"),
                                     (token_mean, "that is token-mean: average each row first, then the rows")],
             "seq-mean-token-sum-norm": [(((rows / 9) * kept).sum() / kept.sum(),
                                          "divide by norm, the fixed length budget, not by mask.size(1)"),
                                         ((rows / 16).sum(), "take the mean over the kept sequences, not their sum"),
                                         ((rows / 16).mean(), "leave rows with no kept token out of the mean over "
                                                              "sequences"),
                                         (((rows / m.sum(1).clamp(min=1)) * kept).sum() / kept.sum(),
                                          "divide each row's token sum by the constant norm, not by the row's own "
                                          "length (that is seq-mean-token-mean)"),
                                         (token_mean, "that is token-mean: read the mode argument")]}
    for mode in losses.AGGREGATIONS:
        got = st.call("aggregate", x, mask, mode, norm=16)
        same(got, losses.aggregate(x, mask, mode, norm=16), f"aggregate(mode={mode!r}, norm=16)", wrong[mode])
    empty = torch.zeros_like(mask)
    for mode in losses.AGGREGATIONS:
        same(st.call("aggregate", x, empty, mode, norm=16), torch.tensor(0.0),
             f"aggregate({mode!r}) with no kept token",
             [(torch.tensor(float("nan")), "nothing kept: clamp the denominator to at least 1 so the loss is 0, not "
                                           "nan")])
    return "all three modes agree, including an empty row and an all-empty mask"


def check_logprobs(st):
    model, ro = tiny_rollout()
    wm, m = wire_model(model), ro.mask
    with torch.no_grad():
        want, want_ent = losses.token_logprobs(model, ro.prompt, ro.response, ro.pad)
        idx = torch.cat([ro.prompt, ro.response], 1)
        logits = model(idx[:, :-1], pad=ro.pad)[:, ro.prompt.size(1) - 1:]
        late = torch.log_softmax(model(idx, pad=ro.pad)[:, ro.prompt.size(1):], -1)
        late = late.gather(-1, ro.response.unsqueeze(-1)).squeeze(-1)
        no_pad, no_pad_ent = losses.token_logprobs(model, ro.prompt, ro.response)
    where = at_row_token(m.size(1), lambda n: f"its prompt left-padded by {int(ro.pad[n])}",
                         lambda n, t: "the first response token" if t == 0 else "")
    shift = "off by one: the logits at position t predict token t+1, so the response's first token is scored by " \
            "the last prompt position"
    got = raised_hint(lambda: st.call("token_logprobs", wm, ro.prompt, ro.response, ro.pad), shift,
                      words=("size", "shape", "index", "dimension"))
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise Mismatch("token_logprobs should return (logp, entropy), two (N, T) tensors")
    lp, ent = tensor(got[0], "token_logprobs: logp"), tensor(got[1], "token_logprobs: entropy")
    if lp.shape != want.shape:
        raise Mismatch(f"token_logprobs: logp shape {tuple(lp.shape)}, expected {tuple(want.shape)}", shift)
    pad_hint = "pass pad= to the model: a left-padded row needs its positions shifted and its pads masked"
    same(lp * m, want * m, "token_logprobs: logp (left-padded prompts)",
         [(late * m, shift), (no_pad * m, pad_hint),
          (want.exp() * m, "log-probs, not probabilities: log_softmax, then gather")], where)
    p = torch.softmax(logits, -1)
    same(ent * m, want_ent * m, "token_logprobs: entropy",
         [(-want_ent * m, "entropy is -sum p log p, a positive number of nats: mind the sign"),
          (-(p * logits).sum(-1) * m, "the entropy takes log-probs (log_softmax), not the raw logits"),
          (no_pad_ent * m, pad_hint)], where)
    with torch.no_grad():
        want = losses.pretrain_logprobs(model, ro.response)[0]
        pad_ctx = torch.full((ro.response.size(0), 1), R.PAD_ID)
        own_first = losses.token_logprobs(model, ro.response[:, :1], ro.response[:, 1:])[0]
        wrong = [(losses.conditional_logprobs(model, ro)[0] * m, "pre-train space drops the prompt: only <|bos|> "
                                                                 "before y"),
                 (losses.token_logprobs(model, pad_ctx, ro.response)[0] * m,
                  "the context token is <|bos|> (reward.BOS_ID), the start of every pre-training document")]
    got = tensor(st.call("pretrain_logprobs", wm, ro.response), "pretrain_logprobs")
    if got.shape == own_first.shape:
        raise Mismatch(f"pretrain_logprobs: shape {tuple(got.shape)}, expected {tuple(want.shape)}",
                       "score every response token: put <|bos|> before y, as every pre-training document starts")
    same(got * m, want * m, "pretrain_logprobs", [(w, h) for w, h in wrong if w.shape == got.shape],
         at_row_token(m.size(1)))
    return "log-probs in both spaces agree on a left-padded rollout (values and entropies)"


def check_ppo_clip(st):
    gen = torch.Generator().manual_seed(4)
    N, Tn = 12, 5
    old = -torch.rand(N, Tn, generator=gen) * 3
    logp = old + torch.log(torch.rand(N, Tn, generator=gen) * 14.7 + 0.3)  # ratios 0.3 .. 15, both sides of the band
    adv = torch.randn(N, generator=gen)
    mask = ragged_mask(gen, N, Tn)
    A = adv[:, None]
    ratio = torch.exp(logp - old)
    cases = [(0.2, 0.2, 10.0, "token-mean", None), (0.2, 0.28, 3.0, "token-mean", None)]
    cases += [(0.2, 0.28, 3.0, agg, norm) for agg, norm in AGG_CASES[1:]]
    for lo, hi, c, agg, norm in cases:
        def ref(x, lo=lo, hi=hi, c=c, agg=agg, norm=norm):
            return losses.ppo_clip_loss(x, old, adv, mask, lo, hi, c, agg, norm)[0]

        def pg_of(x, lo=lo, hi=hi, rho=None):
            r = torch.exp(x - old) if rho is None else rho(x)
            return torch.maximum(-A * r, -A * r.clamp(1 - lo, 1 + hi))

        def agg_of(pg, agg=agg, norm=norm, m=mask):
            return losses.aggregate(pg, m, agg, norm)
        wrong = [(lambda x: agg_of(pg_of(x)), f"the dual clip is missing: for A < 0 the loss is capped at "
                                              f"-A * dual_clip ({c:g} here)"),
                 (lambda x, lo=lo, hi=hi: agg_of(torch.minimum(-A * torch.exp(x - old), -A * torch.exp(x - old).clamp(
                     1 - lo, 1 + hi))), "clip on the wrong side: the loss is the max of -A*rho and -A*clip(rho) "
                                        "(pessimistic); for A < 0 that clips only ratios below 1 - eps_low"),
                 (lambda x, lo=lo, hi=hi, c=c, agg=agg, norm=norm: losses.ppo_clip_loss(x, old, adv, mask, hi, lo, c,
                                                                                         agg, norm)[0],
                  "eps_low bounds the ratio from below (1 - eps_low), eps_high from above (1 + eps_high)"),
                 (lambda x, c=c: agg_of(torch.minimum(pg_of(x), -A * c)),
                  "the dual clip caps the loss only where A < 0: for A > 0, -A * dual_clip is below every loss "
                  "value, so an unconditional min replaces them all"),
                 (lambda x, c=c: agg_of(torch.where(A < 0, torch.minimum(pg_of(x), torch.tensor(c)), pg_of(x))),
                  "the dual-clip cap is -A * dual_clip: it scales with the advantage"),
                 (lambda x, c=c: agg_of(torch.where(A < 0, torch.minimum(pg_of(x, rho=lambda y: y / old), -A * c),
                                                    pg_of(x, rho=lambda y: y / old))),
                  "rho = exp(logp - old_logp), the ratio of the probabilities, not of the log-probs"),
                 (lambda x, lo=lo, hi=hi, c=c: losses.ppo_clip_loss(x, old, adv, torch.ones_like(mask), lo, hi, c,
                                                                    agg, norm)[0],
                  "aggregate over the mask's tokens: pads and dropped samples are not part of the loss")]
        if agg != "token-mean":
            wrong.append((lambda x, lo=lo, hi=hi, c=c: losses.ppo_clip_loss(x, old, adv, mask, lo, hi, c)[0], PASS_ON))
        raised_hint(lambda: check_loss(st, "ppo_clip_loss", (old, adv, mask, lo, hi, c, agg, norm), {}, ref, logp,
                                       f"ppo_clip_loss(eps_low={lo}, eps_high={hi}, dual_clip={c:g}, agg={agg!r})",
                                       wrong, ppo_where(adv, ratio, lo, hi, c)),
                    "advantages are one per sequence, (N,): advantages[:, None] broadcasts them over the tokens",
                    words=("size of tensor", "must match"))
    return ("loss and gradient agree for ratios from 0.3 to 15, both signs of A, symmetric and clip-higher bands, "
            "all three aggregations")


def check_prerl(st):
    gen = torch.Generator().manual_seed(5)
    r = rewards_with_edge_cases(gen, 6, 4)
    logp = -torch.rand(24, 6, generator=gen) * 2
    mask = ragged_mask(gen, 24, 6)
    cases = [(select, adv_form, "token-mean", None) for select in ("all", "negative", "positive")
             for adv_form in ("r-mean", "+-1")]
    cases += [("negative", "r-mean", agg, norm) for agg, norm in AGG_CASES[1:]]
    for select, adv_form, agg, norm in cases:
        kw = dict(select=select, advantage=adv_form, agg=agg, norm=norm)
        a = losses.group_advantages(r, 4, normalize_std=False) if adv_form == "r-mean" else r * 2 - 1
        keep = {"all": torch.ones_like(a, dtype=torch.bool), "negative": a < 0, "positive": a > 0}[select]

        def ppo(x, adv, keep, agg=agg, norm=norm):
            return losses.ppo_clip_loss(x, x.detach(), adv, mask & keep[:, None], agg=agg, norm=norm)[0]
        other = r * 2 - 1 if adv_form == "r-mean" else losses.group_advantages(r, 4, normalize_std=False)
        other_keep = {"all": torch.ones_like(a, dtype=torch.bool), "negative": other < 0, "positive": other > 0}[select]
        wrong = [(lambda x: losses.grpo_loss(x, x.detach(), r, mask & keep[:, None], 4, agg=agg, norm=norm)[0],
                  "PreRL's advantage is r - mean of the group, with no division by the std"),
                 (lambda x, o=other, ok=other_keep: ppo(x, o, ok),
                  "read the advantage argument: 'r-mean' is r - the group's mean, '+-1' is 2r - 1 (Zhu et al.)"),
                 (lambda x, a=a, keep=keep: -ppo(x, a, keep),
                  "mind the sign: the loss is -A * rho, so descent raises log P(y) where A > 0 and lowers it where "
                  "A < 0")]
        if adv_form == "+-1":
            wrong.append((lambda x: ppo(x, r - 0.5, keep),
                          "'+-1' is 2r - 1: +1 for a right sample, -1 for a wrong one"))
        if select != "all":
            wrong.append((lambda x, a=a, keep=keep: losses.ppo_clip_loss(x, x.detach(), a * keep, mask, agg=agg,
                                                                         norm=norm)[0],
                          "select samples through the mask, not by zeroing their advantage: the token-mean "
                          "denominator must count only the kept samples' tokens"))
        if select == "negative":
            wrong += [(lambda x, a=a: ppo(x, a, r == 0),
                       "select by the advantage's sign (A < 0), not by reward == 0: an all-wrong group has A = 0 and "
                       "is not in the loss"),
                      (lambda x, a=a: ppo(x, a, a <= 0),
                       "A < 0 strictly: samples with A = 0 (groups whose rewards are all equal) are not in the loss")]
        if select == "positive":
            wrong.append((lambda x, a=a: ppo(x, a, r > 0), "select by the advantage's sign (A > 0), not by reward > 0: "
                                                           "an all-right group has A = 0 and is not in the loss"))
        if agg != "token-mean":
            wrong.append((lambda x, a=a, keep=keep: ppo(x, a, keep, "token-mean", None), PASS_ON))
        check_loss(st, "prerl_loss", (r, mask, 4), kw, lambda x, kw=kw: losses.prerl_loss(x, r, mask, 4, **kw)[0],
                   logp, f"prerl_loss(select={select!r}, advantage={adv_form!r}, agg={agg!r})",
                   wrong, group_where(r, 4, logp.size(1), a))
    return f"all selections, advantage forms and aggregations agree; {nsr_step_on_lab(st)}"


def check_zhu(st):
    gen = torch.Generator().manual_seed(6)
    r = rewards_with_edge_cases(gen, 6, 4)
    logp = -torch.rand(24, 5, generator=gen)
    mask = ragged_mask(gen, 24, 5)
    where = group_where(r, 4, logp.size(1))
    right, wrong_ = r > 0, r <= 0

    def ppo(x, adv, keep, agg="token-mean", norm=None):
        return losses.ppo_clip_loss(x, x.detach(), adv, mask & keep[:, None], agg=agg, norm=norm)[0]
    ones = torch.ones_like(r)
    for agg, norm in AGG_CASES:
        kw = dict(agg=agg, norm=norm)
        psr_wrong = [(lambda x: ppo(x, ones, torch.ones_like(right), agg, norm),
                      "PSR keeps only the correct samples (rewards > 0): select them with the mask"),
                     (lambda x: ppo(x, -ones, right, agg, norm), "PSR pulls the correct samples up: A = +1")]
        nsr_wrong = [(lambda x: losses.nsr_rl_loss(x, r, mask, 4, agg=agg, norm=norm)[0],
                      "Zhu et al.'s NSR has no baseline: every wrong sample gets A = -1, all-wrong groups too"),
                     (lambda x: ppo(x, -ones, torch.ones_like(right), agg, norm),
                      "NSR keeps only the wrong samples (rewards <= 0): select them with the mask"),
                     (lambda x: ppo(x, ones, wrong_, agg, norm), "NSR pushes the wrong samples down: A = -1"),
                     (lambda x: ppo(x, -ones, r < 0, agg, norm),
                      "a wrong sample has reward 0, not a negative one: keep rewards <= 0")]
        if agg != "token-mean":
            psr_wrong.append((lambda x: ppo(x, ones, right), PASS_ON))
            nsr_wrong.append((lambda x: ppo(x, -ones, wrong_), PASS_ON))
        check_loss(st, "psr_loss", (r, mask), kw, lambda x: losses.psr_loss(x, r, mask, **kw)[0], logp,
                   f"psr_loss(agg={agg!r})", psr_wrong, where)
        check_loss(st, "nsr_loss", (r, mask), kw, lambda x: losses.nsr_loss(x, r, mask, **kw)[0], logp,
                   f"nsr_loss(agg={agg!r})", nsr_wrong, where)
        for lam in ((0.1, 0.5) if agg == "token-mean" else (0.5,)):
            adv = torch.where(right, lam, -1.0)
            w_wrong = [(lambda x, lam=lam: ppo(x, torch.where(right, 1.0, -lam), torch.ones_like(right), agg, norm),
                        "W-REINFORCE weights the *positive* samples by lam and the negatives by -1"),
                       (lambda x, lam=lam: lam * losses.psr_loss(x, r, mask, agg=agg, norm=norm)[0]
                        + losses.nsr_loss(x, r, mask, agg=agg, norm=norm)[0],
                        "'lam * PSR + NSR' describes the advantages (A = lam on right samples, -1 on wrong ones) of "
                        "one "
                        "loss over all samples; adding two losses gives each its own token-mean denominator"),
                       (lambda x: ppo(x, torch.where(right, 0.1, -1.0), torch.ones_like(right), agg, norm),
                        "use the lam argument, not 0.1")]
            if agg != "token-mean":
                w_wrong.append((lambda x, adv=adv: ppo(x, adv, torch.ones_like(right)), PASS_ON))
            check_loss(st, "w_reinforce_loss", (r, mask), dict(lam=lam, **kw),
                       lambda x, lam=lam: losses.w_reinforce_loss(x, r, mask, lam=lam, **kw)[0], logp,
                       f"w_reinforce_loss(lam={lam}, agg={agg!r})", w_wrong, where)
    return "PSR, NSR and W-REINFORCE agree in all three aggregations, all-wrong and all-right groups included"


def check_schedule(st):
    for S_ in (0, 1, 3):
        for step in range(S_ + 3):
            got = st.call("dsrl_phase", step, S_, 1e-4, 3e-5)
            want = dsrl.dsrl_phase(step, S_, 1e-4, 3e-5)
            if not isinstance(got, (tuple, list)) or tuple(got) != want:
                got_t = tuple(got) if isinstance(got, (tuple, list)) else got
                hint = ""
                if isinstance(got_t, tuple) and len(got_t) == 2:
                    if step == S_ and got_t == ("nsr-prerl", 3e-5):
                        hint = "steps are 0-based: phase 1 is steps 0 .. S-1, GRPO starts at step S (you switch at S+1)"
                    elif step == S_ - 1 and got_t == ("grpo", 1e-4):
                        hint = "phase 1 is steps 0 .. S-1: step S-1 is still NSR-PreRL (you switch at S-1)"
                    elif got_t[0] == want[0]:
                        hint = "phase 1 uses warmup_lr, phase 2 lr"
                    elif str(got_t[0]).lower() in ("grpo", "dsrl") or got_t[0] == "GRPO":
                        hint = "phase 2's objective is 'grpo', the name in losses.OBJECTIVES"
                raise Mismatch(f"dsrl_phase(step={step}, S={S_}) = {got_t}, expected {want}", hint)
    if tuple(st.call("dsrl_phase", 0, 2, 1.0, 2.0, warmup="nsr-rl"))[:1] != ("nsr-rl",):
        raise Mismatch("dsrl_phase ignores its `warmup` argument", "phase 1's objective is `warmup` (the nsr-rl-warmup "
                       "control passes 'nsr-rl'), not a fixed 'nsr-prerl'")
    # behaviour: the training loop, run with the student's schedule (asked for here, looked up in this process),
    # switches loss and learning rate at step S
    table = {step: tuple(st.call("dsrl_phase", step, 2, 3e-4, 1e-5, warmup="nsr-prerl")) for step in range(3)}
    got, opt_lr = rl_run_with_schedule(table, lr=3e-4, warmup_lr=1e-5)
    if got != [("nsr-prerl", 1e-5), ("nsr-prerl", 1e-5), ("grpo", 3e-4)] or opt_lr != [3e-4, 3e-4]:
        raise Mismatch(f"3 training steps with S = 2 ran {got} (optimizer lr at the end {opt_lr})")
    return "the schedule agrees for S = 0, 1, 3, and the training loop switched loss and learning rate at step S"


def check_pass_at_k(st):
    cases = [(n, c, k) for n in (1, 4, 8, 16) for c in range(n + 1) for k in (1, 2, 4, 8, 16) if k <= n]
    for n, c, k in cases:
        got = raised_hint(lambda: st.call("pass_at_k", n, c, k), "when n - c < k every k-subset holds a right answer: "
                          "pass@k is 1 there (C(n-c, k) is 0)", words=("negative", "domain", "zero"))
        want = S.pass_at_k(n, c, k)
        if not isinstance(got, (int, float)) and not (torch.is_tensor(got) and got.numel() == 1):
            raise Mismatch(f"pass_at_k(n={n}, c={c}, k={k}) returned {type(got).__name__}, expected a number")
        got = float(got)
        if abs(got - want) > 1e-9:
            known = [(1 - (1 - c / n) ** k, "1 - (1 - c/n)^k treats the k draws as independent (with replacement): "
                                            "biased; count subsets of k among n without replacement, "
                                            "1 - C(n-c, k) / C(n, k)"),
                     (c / n, "that is pass@1 for every k"),
                     (math.comb(c, k) / math.comb(n, k), "pass@k is the chance that *at least one* of k draws is "
                                                         "right: 1 - the chance that all k are wrong"),
                     (math.comb(n - c, k) / math.comb(n, k), "that is the chance that all k draws are wrong: pass@k "
                                                             "is 1 minus it"),
                     (min(1.0, k * c / n), "k * c / n counts overlapping draws twice: count subsets, "
                                           "1 - C(n-c, k) / C(n, k)"),
                     (float(round(want)), "use float division: the estimate is a fraction, not 0 or 1")]
            hint = next((h for v, h in known if abs(got - v) < 1e-9 and abs(v - want) > 1e-9), "")
            raise Mismatch(f"pass_at_k(n={n}, c={c}, k={k}) = {got}, expected {want:.6g}", hint)
    return f"{len(cases)} (n, c, k) cases agree, the edges c = 0, c = n and n - c < k included"


def check_bug(st):
    gen = torch.Generator().manual_seed(9)
    r = rewards_with_edge_cases(gen, 4, 4)
    logp = -torch.rand(16, 5, generator=gen)
    mask = ragged_mask(gen, 16, 5)
    adv = losses.group_advantages(r, 4)
    wrong = [(lambda x: losses.aggregate(-adv[:, None] * x, mask),
              "the gradient is right but the value is not: keep the ratio exp(logp - old_logp) with old_logp = "
              "logp.detach(), whose value is 1 (the loss is -A) and whose gradient is grad logp"),
             (lambda x: losses.ppo_clip_loss(x, x.detach(), losses.group_advantages(r, 4, normalize_std=False),
                                             mask)[0],
              "the bug is in one line; GRPO's advantage keeps its division by the std")]
    check_loss(st, "one_step_grpo_loss", (r, mask, 4), {}, lambda x: losses.grpo_loss(x, x.detach(), r, mask, 4)[0],
               logp, "one_step_grpo_loss", wrong, group_where(r, 4, logp.size(1), adv))
    return "the fixed loss gives GRPO's value and gradient"


WAIT_CASES = [  # (texts, what the case is about)
    (["23*7=151 wait 23*7=161;5+161=166;166-4=162;#162"], "a wrong step, reflected on, redo right"),
    (["23*7=161 wait 23*7=161;5+161=165;165-4=161;#161"], "a right step reflected on, a slip left alone"),
    (["23*7 alternatively 20*7=140;3*7=21 wait 3*7=20;140+20=160;#160"], "a method switch, then a wrong redo"),
    (["23*7=162|1 wait 23*7=161|1;5+161=166|6;#166", "9*6=54|5;54-60=-6|6;#-6"],
     "check digits `|d`, a wrong check digit after a right result, a negative result"),
    (["5+3=8 wait 5+3=9 wait 5+3=8;#8"], "two reflections in one step"),
    (["#42", "", "12+5=", "12+5=17;#17"], "a guess, an empty response, a step cut off, no wrong step at all"),
]


def check_wait_after_steps(st):
    keys = ("wrong_steps", "right_steps", "wait_after_wrong", "wait_after_right", "redo_right")

    def compare(texts, what):
        want = R.wait_after_steps(texts)
        got = raised_hint(lambda: st.call("wait_after_steps", list(texts)), "a response may have no wrong step: "
                          "a share of nothing is 0 (divide by max(n, 1))", words=("division", "zero"))
        if not isinstance(got, dict) or set(got) != set(keys):
            raise Mismatch(f"wait_after_steps({what}) returned {got!r:.200}, expected a dict with keys {keys}")
        for k in keys:
            if not isinstance(got[k], (int, float)) or abs(got[k] - want[k]) > 1e-9:
                hint = wait_hint(texts, k, got[k])
                raise Mismatch(f"wait_after_steps on {what}: {k} = {got[k]!r}, expected {want[k]:.6g}", hint)
    for texts, what in WAIT_CASES:
        compare(texts, f"{texts!r} ({what})")
    rates = {}
    for arm, texts in reflection_samples().items():
        compare(texts, f"the {arm} base's own samples (results/cpu/bases/{arm}-s0.pt, 32 val problems x 4)")
        w = R.wait_after_steps(texts)
        rates[arm] = (w["wait_after_wrong"], w["wait_after_right"])
    return ("counts agree on the edge cases and on both bases' samples: ` wait ` after wrong / right steps "
            + ", ".join(f"{a} base {x:.3f} / {y:.3f} (x{x / max(y, 1e-12):.1f})" for a, (x, y) in rates.items()))


def wait_hint(texts, key, got):
    """The hint for a known mistake of wait_after_steps whose `key` came out as `got`."""
    def counted(judge_redo=False, check_digit=False, switch=True, every=False):
        n, waits, right = {True: 0, False: 0}, {True: 0, False: 0}, 0
        for t in texts:
            for part in t.split(";"):
                part = part.split("alternatively")[-1] if switch else part
                pieces = part.split(" wait ")
                for i, first in enumerate(pieces if judge_redo else pieces[:1]):
                    wrong = R.step_is_wrong(first.split("|")[0]) if not check_digit else digit_wrong(first)
                    if wrong is None:
                        continue
                    n[wrong] += 1
                    if i + 1 < len(pieces):
                        waits[wrong] += 1
                        right += R.step_is_wrong(pieces[i + 1]) is False
        total = n[True] + n[False]
        out = {"wrong_steps": n[True], "right_steps": n[False],
               "wait_after_wrong": waits[True] / max(total if every else n[True], 1),
               "wait_after_right": waits[False] / max(total if every else n[False], 1),
               "redo_right": right / max(waits[True] if every else waits[True] + waits[False], 1)}
        return out[key]

    def digit_wrong(step):
        m = re.fullmatch(rf"\s*{R.STEP}\s*", step)
        if m is None or "|" not in step:
            return R.step_is_wrong(step)
        return int(m.group(4)) % 10 != int(step.rsplit("|", 1)[1])
    known = [(counted(judge_redo=True), "a redo after ` wait ` is not a step of its own: judge the first step of "
                                        "each ';' part, and only look at the redo for redo_right"),
             (counted(every=True), "wait_after_wrong is a share of the wrong steps (divide by their number, not by "
                                   "all steps); redo_right is a share of every ` wait `"),
             (counted(check_digit=True), "a step is wrong by its result: the check digit `|d` is not judged "
                                         "(reward.step_is_wrong)"),
             (counted(switch=False), "after ` alternatively ` the part's first step is the split route's: "
                                     "judge what follows the marker")]
    return next((h for v, h in known if isinstance(got, (int, float)) and abs(got - v) < 1e-9), "")


# number: (title, chapter, functions the student writes, reference functions for the signatures, check)
EXERCISES = {
    1: ("group advantages", "3-grpo.md", ["group_advantages"], [losses.group_advantages], check_advantages),
    2: ("masked aggregation, all three modes", "3-grpo.md", ["aggregate"], [losses.aggregate], check_aggregate),
    3: ("log-probs in both spaces", "4-pretrain-space.md", ["token_logprobs", "pretrain_logprobs"],
        [losses.token_logprobs, losses.pretrain_logprobs], check_logprobs),
    4: ("the PPO-clip loss", "3-grpo.md", ["ppo_clip_loss"], [losses.ppo_clip_loss], check_ppo_clip),
    5: ("the PreRL loss with sample selection", "5-positive-negative.md", ["prerl_loss"], [losses.prerl_loss],
        check_prerl),
    6: ("PSR, NSR and W-REINFORCE", "5-positive-negative.md", ["psr_loss", "nsr_loss", "w_reinforce_loss"],
        [losses.psr_loss, losses.nsr_loss, losses.w_reinforce_loss], check_zhu),
    7: ("the DSRL schedule", "6-dsrl.md", ["dsrl_phase"], [dsrl.dsrl_phase], check_schedule),
    8: ("the unbiased pass@k estimator", "2-model-and-sampler.md", ["pass_at_k"], [S.pass_at_k], check_pass_at_k),
    9: ("find the planted bug", "3-grpo.md", ["one_step_grpo_loss"], [], check_bug),
    10: ("is the reflection tied to the errors?", "7-reflection.md", ["wait_after_steps"], [R.wait_after_steps],
         check_wait_after_steps),
}
EXERCISE_OF = {name: n for n, (_, _, names, _, _) in EXERCISES.items() for name in names}
