"""
The exercise checker. You write your answers in a file of your own, never in the repository's files:

    python -m tutorial.check --init my_losses.py     # a starter: one stub per exercise, with its spec
    python -m tutorial.check 1 --impl my_losses.py   # check exercise 1 (or: all)
    python -m tutorial.check --list                  # the exercises and the chapter of each

Each exercise is checked against the project's own function on inputs built to hit the edge cases (all-equal
groups, empty rows, ratios on both sides of the clip band, left padding); exercises 5 and 7 are also checked by
what they do to the classroom model (tutorial/lab.pt). On a failure the checker prints what differed and, for the
usual mistakes, a hint. Exit status 0 when every checked exercise passes, 1 otherwise, 2 for a bad command.
"""
import argparse
import importlib.util
import inspect
import os
import sys
import tempfile
import traceback

import torch

import dsrl
import losses
import model as M
import reward as R
import sample as S
import train as T

HERE = os.path.dirname(os.path.abspath(__file__))
LAB = os.path.join(HERE, "lab.pt")


class Mismatch(Exception):
    """An exercise's answer is wrong: `args[0]` says what differed, `hint` (may be '') how to look at it."""

    def __init__(self, what, hint=""):
        super().__init__(what)
        self.hint = hint


# -----------------------------------------------------------------------------
# helpers: call the student's function without tracebacks, compare with the reference

STUDENT = {"path": None}  # the file being checked, to point at the line of an error in it


def call(fn, *args, **kw):
    """fn(*args, **kw); an exception becomes a one-line Mismatch naming the line of the student's file."""
    try:
        return fn(*args, **kw)
    except NotImplementedError:
        raise Mismatch(f"{fn.__name__} is not implemented yet") from None
    except Mismatch:
        raise
    except Exception as e:
        frames = traceback.extract_tb(e.__traceback__)
        mine = [f for f in frames if STUDENT["path"] and os.path.samefile(f.filename, STUDENT["path"])] or frames[-1:]
        where = f"line {mine[-1].lineno} of {os.path.basename(mine[-1].filename)}" if mine else "?"
        raise Mismatch(f"{fn.__name__} raised {type(e).__name__} at {where}: {e}") from None


def tensor(x, what):
    if isinstance(x, tuple):
        x = x[0]
    if not torch.is_tensor(x):
        raise Mismatch(f"{what} should be a tensor, got {type(x).__name__}")
    return x


def same(got, want, what, wrong=(), atol=1e-5):
    """Raise Mismatch unless got == want; `wrong` lists (value, hint) of known wrong answers."""
    got = tensor(got, what).detach().float()
    want = want.detach().float()
    if got.shape != want.shape:
        raise Mismatch(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}",
                       next((h for v, h in wrong if v.shape == got.shape and torch.allclose(got, v.float(), atol=atol)), ""))
    if torch.allclose(got, want, atol=atol, rtol=1e-4, equal_nan=False):
        return
    for value, hint in wrong:
        if value.shape == got.shape and torch.allclose(got, value.detach().float(), atol=atol, rtol=1e-4, equal_nan=True):
            raise Mismatch(f"{what} differs from the reference", hint)
    diff = (got - want).abs().nan_to_num(float("inf"))
    i = int(diff.reshape(-1).argmax())
    raise Mismatch(f"{what} differs: at flat index {i} you give {got.reshape(-1)[i]:.6g}, expected "
                   f"{want.reshape(-1)[i]:.6g} ({int((diff > atol).sum())} of {diff.numel()} values differ)")


def loss_and_grad(fn, logp):
    """(loss, d loss / d logp) of fn(logp) on a fresh leaf copy of logp; fn may return (loss, stats)."""
    x = logp.detach().clone().requires_grad_()
    loss = tensor(fn(x), "the loss")
    if loss.requires_grad:
        (g,) = torch.autograd.grad(loss, x, allow_unused=True)
    else:
        g = None
    return loss.detach(), torch.zeros_like(x) if g is None else g


def check_loss(fn, args, kw, ref, logp, what, wrong=()):
    """Loss and gradient of the student's fn(logp, *args, **kw) against ref(logp); wrong: [(function of logp that
    makes a known mistake, hint)]."""
    got_l, got_g = loss_and_grad(lambda x: call(fn, x, *args, **kw), logp)
    want_l, want_g = loss_and_grad(ref, logp)
    wrong = [(loss_and_grad(w, logp), h) for w, h in wrong]  # (loss, grad) of each known mistake, once
    wl, wg = [(lg[0], h) for lg, h in wrong], [(lg[1], h) for lg, h in wrong]
    same(got_l, want_l, f"{what}: loss value", wl)
    if not got_g.abs().sum() and want_g.abs().sum():
        raise Mismatch(f"{what}: the loss value is right but no gradient reaches logp",
                       "something in the graph is constant that should not be (detach only what is fixed)")
    same(got_g, want_g, f"{what}: gradient d loss / d logp", wg)


def rewards_with_edge_cases(gen, B=6, G=4):
    """B groups of G 0/1 rewards, the first all right and the second all wrong."""
    r = (torch.rand(B, G, generator=gen) < 0.5).float()
    r[0], r[1] = 1.0, 0.0
    r[2] = torch.tensor([1.0] + [0.0] * (G - 1))
    return r.view(-1)


def ragged_mask(gen, N, T):
    """(N, T) response masks: random lengths from 1 to T, and one empty row."""
    lengths = torch.randint(1, T + 1, (N,), generator=gen)
    lengths[N // 2] = 0
    return torch.arange(T)[None, :] < lengths[:, None]


def tiny_rollout(seed=0):
    """A random tiny GPT and a rollout with left-padded prompts of different lengths (cheap and deterministic)."""
    torch.manual_seed(seed)
    model = M.GPT(M.PRESETS["tiny"])
    prompts = [S.prompt_ids(p) for p in R.make_split("test", 3, seed=seed)]
    prompts[1] = prompts[1][:4]  # a short prompt: the others are left-padded
    ro = S.generate(model, prompts, G=2, max_new_tokens=12, generator=torch.Generator().manual_seed(seed))
    return model, ro


def lab_model():
    if not os.path.exists(LAB):
        raise Mismatch(f"the classroom model {LAB} is missing", "make it with: python -m tutorial.check --make-lab-model")
    return M.model_from_checkpoint(M.load_checkpoint(LAB))


# -----------------------------------------------------------------------------
# the exercises: each check raises Mismatch or returns a line saying what passed

def check_advantages(mod):
    gen = torch.Generator().manual_seed(1)
    for G in (4, 8):
        r = rewards_with_edge_cases(gen, 6, G)
        for norm in (True, False):
            got = call(mod.group_advantages, r.clone(), G, normalize_std=norm)
            g = r.view(-1, G)
            centred = g - g.mean(1, keepdim=True)
            wrong = [((centred / (g.std(1, unbiased=False, keepdim=True) + 1e-6)).view(-1),
                      "torch.std is unbiased (divides by G - 1), as in the official code; you used the population std"),
                     ((r - r.mean()) / (r.std() + 1e-6) if norm else r - r.mean(),
                      "advantages are relative to each prompt's own group: reshape to (-1, G) before the mean"),
                     ((centred / g.std(1, keepdim=True)).view(-1),
                      "a group whose rewards are all equal has std 0: add eps to the std, so its advantages are 0")]
            same(got, losses.group_advantages(r, G, normalize_std=norm), f"group_advantages(G={G}, normalize_std={norm})",
                 wrong if norm else wrong[1:2])
    return "advantages agree for G = 4 and 8, with and without the std, including all-equal groups"


def check_aggregate(mod):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(7, 9, generator=gen)
    mask = ragged_mask(gen, 7, 9)
    m = mask.float()
    kept = (m.sum(1) > 0).float()
    wrong = {"token-mean": [((x * m).sum() / m.numel(), "count only the kept tokens: divide by mask.sum(), not by N*T")],
             "seq-mean-token-mean": [(((x * m).sum(1) / m.sum(1).clamp(min=1)).mean(),
                                      "a row with no kept token is not a sequence of the loss: leave it out of the mean"),
                                     ((x * m).sum() / m.sum(), "that is token-mean: average each row first")],
             "seq-mean-token-sum-norm": [((((x * m).sum(1) / 9) * kept).sum() / kept.sum(),
                                          "divide by norm, the fixed length budget, not by mask.size(1)")]}
    for mode in losses.AGGREGATIONS:
        got = call(mod.aggregate, x, mask, mode, norm=16)
        same(got, losses.aggregate(x, mask, mode, norm=16), f"aggregate(mode={mode!r})", wrong[mode])
    empty = torch.zeros_like(mask)
    for mode in losses.AGGREGATIONS:
        same(call(mod.aggregate, x, empty, mode, norm=16), torch.tensor(0.0), f"aggregate({mode!r}) with no kept token",
             [(torch.tensor(float("nan")), "nothing kept: clamp the denominator to at least 1 so the loss is 0, not nan")])
    return "all three modes agree, including an empty row and an all-empty mask"


def check_logprobs(mod):
    model, ro = tiny_rollout()
    with torch.no_grad():
        want, want_ent = losses.token_logprobs(model, ro.prompt, ro.response, ro.pad)
        got = call(mod.token_logprobs, model, ro.prompt, ro.response, ro.pad)
        if not isinstance(got, tuple) or len(got) != 2:
            raise Mismatch("token_logprobs should return (logp, entropy)")
        idx = torch.cat([ro.prompt, ro.response], 1)
        logits = model(idx, pad=ro.pad)[:, ro.prompt.size(1):]
        shifted = torch.log_softmax(logits, -1).gather(-1, ro.response.unsqueeze(-1)).squeeze(-1)
        m = ro.mask
        hint = "off by one: the logits at position t predict token t+1, so the response's first token is scored " \
               "by the last prompt position"
        if got[0].shape == want.shape:
            same(got[0] * m, want * m, "token_logprobs: logp (left-padded prompts)", [(shifted * m, hint)])
        else:
            raise Mismatch(f"token_logprobs: logp shape {tuple(got[0].shape)}, expected {tuple(want.shape)}", hint)
        same(got[1] * m, want_ent * m, "token_logprobs: entropy")
        want = losses.pretrain_logprobs(model, ro.response)[0]
        got = tensor(call(mod.pretrain_logprobs, model, ro.response), "pretrain_logprobs")
        pad_ctx = torch.full((ro.response.size(0), 1), R.PAD_ID)
        wrong = [(losses.conditional_logprobs(model, ro)[0] * m, "pre-train space drops the prompt: only <|bos|> before y"),
                 (losses.token_logprobs(model, pad_ctx, ro.response)[0] * m,
                  "the context token is <|bos|> (reward.BOS_ID), the start of every pre-training document")]
        same(tensor(got, "pretrain_logprobs") * m, want * m, "pretrain_logprobs", wrong)
    return "log-probs in both spaces agree on a left-padded rollout (values and entropies)"


def check_ppo_clip(mod):
    gen = torch.Generator().manual_seed(4)
    N, Tn = 12, 5
    old = -torch.rand(N, Tn, generator=gen) * 3
    logp = old + torch.log(torch.rand(N, Tn, generator=gen) * 14.7 + 0.3)  # ratios 0.3 .. 15, both sides of the band
    adv = torch.randn(N, generator=gen)
    mask = ragged_mask(gen, N, Tn)
    for lo, hi, c in ((0.2, 0.2, 10.0), (0.2, 0.28, 3.0)):
        def ref(x, lo=lo, hi=hi, c=c):
            return losses.ppo_clip_loss(x, old, adv, mask, lo, hi, c)[0]

        A = adv[:, None]

        def plain_pg(x, lo=lo, hi=hi):  # PPO-clip without the dual clip
            r = torch.exp(x - old)
            return losses.aggregate(torch.maximum(-A * r, -A * r.clamp(1 - lo, 1 + hi)), mask)

        def minimum(x, lo=lo, hi=hi):
            r = torch.exp(x - old)
            return losses.aggregate(torch.minimum(-A * r, -A * r.clamp(1 - lo, 1 + hi)), mask)

        def swapped(x, lo=lo, hi=hi, c=c):
            return losses.ppo_clip_loss(x, old, adv, mask, hi, lo, c)[0]

        wrong = [(plain_pg, f"the dual clip is missing: for A < 0 the loss is capped at -A * dual_clip ({c:g} here)"),
                 (minimum, "clip on the wrong side: the loss is the max of -A*rho and -A*clip(rho) (pessimistic); for "
                           "A < 0 that clips only ratios below 1 - eps_low"),
                 (swapped, "eps_low bounds the ratio from below (1 - eps_low), eps_high from above (1 + eps_high)")]
        check_loss(mod.ppo_clip_loss, (old, adv, mask, lo, hi, c), {}, ref, logp,
                   f"ppo_clip_loss(eps_low={lo}, eps_high={hi}, dual_clip={c:g})", wrong)
    return "loss and gradient agree for ratios from 0.3 to 15, both signs of A, symmetric and clip-higher bands"


def check_prerl(mod):
    gen = torch.Generator().manual_seed(5)
    r = rewards_with_edge_cases(gen, 6, 4)
    logp = -torch.rand(24, 6, generator=gen) * 2
    mask = ragged_mask(gen, 24, 6)
    for select in ("all", "negative", "positive"):
        for adv_form in ("r-mean", "+-1"):
            kw = dict(select=select, advantage=adv_form)
            a = losses.group_advantages(r, 4, normalize_std=False) if adv_form == "r-mean" else r * 2 - 1
            keep = {"all": torch.ones_like(a, dtype=torch.bool), "negative": a < 0, "positive": a > 0}[select]

            def by_advantage(x, a=a, keep=keep):
                return losses.ppo_clip_loss(x, x.detach(), a * keep, mask)[0]

            def with_std(x, kw=kw):
                return losses.grpo_loss(x, x.detach(), r, mask & keep[:, None], 4)[0]

            wrong = [(by_advantage, "select samples through the mask, not by zeroing their advantage: the token-mean "
                                    "denominator must count only the kept samples' tokens"),
                     (with_std, "PreRL's advantage is r - mean of the group, with no division by the std")]
            check_loss(mod.prerl_loss, (r, mask, 4), kw, lambda x, kw=kw: losses.prerl_loss(x, r, mask, 4, **kw)[0],
                       logp, f"prerl_loss(select={select!r}, advantage={adv_form!r})",
                       wrong if select != "all" else wrong[1:])
    # behaviour on the classroom model: one step of NSR-PreRL pushes down the wrong samples' log P(y) only
    model = lab_model()
    problems = R.make_split("val", 8)
    ro = S.generate(model, [S.prompt_ids(p) for p in problems], G=8, max_new_tokens=64,
                    generator=torch.Generator().manual_seed(0))
    rr = torch.tensor(S.rewards(ro, [p.answer for p in problems for _ in range(8)]))
    g = rr.view(-1, 8)
    mixed = ((g.max(1).values > g.min(1).values)[:, None].expand(-1, 8)).reshape(-1)
    if not mixed.any():
        raise Mismatch("the classroom model gave no mixed group on this batch (is tutorial/lab.pt the right model?)")
    lp = losses.pretrain_logprobs(model, ro.response)[0]
    loss = tensor(call(mod.prerl_loss, lp, rr, ro.mask, 8, select="negative"), "prerl_loss")
    d_lp = torch.autograd.grad(loss, lp, retain_graph=True, allow_unused=True)[0]
    if d_lp is None or not d_lp.abs().sum():
        raise Mismatch("NSR-PreRL on the classroom model: the loss does not depend on log P(y)")
    if d_lp[rr > 0].abs().sum() > 0:
        raise Mismatch("NSR-PreRL on the classroom model: right answers are in the loss (their gradient is not 0)",
                       "select='negative' keeps only samples with A < 0")
    wrong_rows = (rr == 0) & mixed
    before = float((lp.detach() * ro.mask)[wrong_rows].sum())
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad / max(1e-12, float(torch.sqrt(sum((q.grad ** 2).sum() for q in model.parameters()
                                                                     if q.grad is not None))))
        after = float((losses.pretrain_logprobs(model, ro.response)[0] * ro.mask)[wrong_rows].sum())
    if not after < before:
        raise Mismatch(f"one NSR-PreRL step did not lower log P(y) of the wrong samples ({before:.2f} -> {after:.2f})",
                       "the loss must push the negatives down: descent on -A * log P(y) with A < 0")
    return (f"all selections and advantage forms agree; on the classroom model one step lowered log P(y) of the "
            f"{int(wrong_rows.sum())} wrong samples in mixed groups ({before:.1f} -> {after:.1f}) and left the "
            f"{int((rr > 0).sum())} right ones out of the loss")


def check_zhu(mod):
    gen = torch.Generator().manual_seed(6)
    r = rewards_with_edge_cases(gen, 6, 4)
    logp = -torch.rand(24, 5, generator=gen)
    mask = ragged_mask(gen, 24, 5)
    baseline = lambda x: losses.nsr_rl_loss(x, r, mask, 4)[0]
    check_loss(mod.psr_loss, (r, mask), {}, lambda x: losses.psr_loss(x, r, mask)[0], logp, "psr_loss")
    check_loss(mod.nsr_loss, (r, mask), {}, lambda x: losses.nsr_loss(x, r, mask)[0], logp, "nsr_loss",
               [(baseline, "Zhu et al.'s NSR has no baseline: every wrong sample gets A = -1, all-wrong groups too")])
    for lam in (0.1, 0.5):
        swapped = lambda x, lam=lam: losses.ppo_clip_loss(x, x.detach(), torch.where(r > 0, 1.0, -lam), mask)[0]
        check_loss(mod.w_reinforce_loss, (r, mask), dict(lam=lam),
                   lambda x, lam=lam: losses.w_reinforce_loss(x, r, mask, lam=lam)[0], logp, f"w_reinforce_loss(lam={lam})",
                   [(swapped, "W-REINFORCE weights the *positive* samples by lam and the negatives by -1")])
    return "PSR, NSR and W-REINFORCE agree, all-wrong and all-right groups included"


def check_schedule(mod):
    for S_ in (0, 1, 3):
        for step in range(S_ + 3):
            got = call(mod.dsrl_phase, step, S_, 1e-4, 3e-5)
            want = dsrl.dsrl_phase(step, S_, 1e-4, 3e-5)
            if tuple(got) != want:
                late = step == S_ and tuple(got) == ("nsr-prerl", 3e-5)
                raise Mismatch(f"dsrl_phase(step={step}, S={S_}) = {got}, expected {want}",
                               "steps are 0-based: phase 1 is steps 0 .. S-1, GRPO starts at step S (you switch at S+1)"
                               if late else "phase 1 uses warmup_lr, phase 2 lr" if got[0] == want[0] else "")
    if call(mod.dsrl_phase, 0, 2, 1.0, 2.0, warmup="nsr-rl")[0] != "nsr-rl":
        raise Mismatch("dsrl_phase ignores its `warmup` argument (the nsr-rl-warmup control needs it)")
    # behaviour: the training loop, run with your schedule, switches loss and learning rate at step S
    lab_model()  # says how to make it when it is missing
    real = dsrl.dsrl_phase
    dsrl.dsrl_phase = mod.dsrl_phase
    try:
        with tempfile.TemporaryDirectory() as d:
            cfg = dsrl.rl_config("lab", steps=3, batch_prompts=2, group=4, eval_every=100, eval_problems=1,
                                 eval_samples=1, lr=3e-4, warmup_lr=1e-5)
            _, hist, _ = T.rl_train(LAB, dsrl.schedule("dsrl", cfg, S=2), cfg, os.path.join(d, "s.pt"), "cpu",
                                    progress=False)
            opt_lr = [g["lr"] for g in M.load_checkpoint(os.path.join(d, "s.pt"))["optimizer"]["param_groups"]]
    except Mismatch:
        raise
    except Exception as e:
        raise Mismatch(f"the training loop failed with your dsrl_phase: {type(e).__name__}: {e}") from None
    finally:
        dsrl.dsrl_phase = real
    got = [(h["objective"], h["lr"]) for h in hist]
    if got != [("nsr-prerl", 1e-5), ("nsr-prerl", 1e-5), ("grpo", 3e-4)] or opt_lr != [3e-4, 3e-4]:
        raise Mismatch(f"3 training steps with S = 2 ran {got} (optimizer lr at the end {opt_lr})")
    return "the schedule agrees for S = 0, 1, 3, and the training loop switched loss and learning rate at step S"


def check_pass_at_k(mod):
    cases = [(n, c, k) for n in (1, 4, 8, 16) for c in range(n + 1) for k in (1, 2, 4, 8, 16) if k <= n]
    for n, c, k in cases:
        got = call(mod.pass_at_k, n, c, k)
        want = S.pass_at_k(n, c, k)
        if abs(float(got) - want) > 1e-9:
            hint = ""
            if c < n and abs(float(got) - (1 - (1 - c / n) ** k)) < 1e-9:
                hint = "1 - (1 - c/n)^k treats the k draws as independent (with replacement): biased; count subsets " \
                       "of k among n without replacement, 1 - C(n-c, k) / C(n, k)"
            elif abs(float(got) - c / n) < 1e-9:
                hint = "that is pass@1 for every k"
            raise Mismatch(f"pass_at_k(n={n}, c={c}, k={k}) = {got}, expected {want:.6g}", hint)
    return f"{len(cases)} (n, c, k) cases agree, the edges c = 0, c = n and n - c < k included"


def check_bug(mod):
    gen = torch.Generator().manual_seed(9)
    r = rewards_with_edge_cases(gen, 4, 4)
    logp = -torch.rand(16, 5, generator=gen)
    mask = ragged_mask(gen, 16, 5)
    check_loss(mod.one_step_grpo_loss, (r, mask, 4), {}, lambda x: losses.grpo_loss(x, x.detach(), r, mask, 4)[0],
               logp, "one_step_grpo_loss")
    return "the fixed loss gives GRPO's value and gradient"


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
}

# Exercise 9 starts from working-looking code with one planted bug, not from a stub.
BUGGY = '''

def one_step_grpo_loss(logp, rewards, mask, G):
    """GRPO's loss for one optimizer step per batch: the policy that sampled is the one being trained, so the
    PPO ratio is 1. logp (N, T) = log P(y_t|x, y_<t) with a graph; rewards (N,); mask (N, T); G samples per prompt.
    EXERCISE 9: this function has one bug. Its loss value is right; find what is wrong and fix it."""
    adv = losses.group_advantages(rewards, G)                             # (N,)
    old_logp = logp                                                       # the policy that sampled: this one
    ratio = torch.exp(logp - old_logp)                                    # (N, T), 1 at this step
    per_token = torch.maximum(-adv[:, None] * ratio, -adv[:, None] * ratio.clamp(0.8, 1.2))
    return losses.aggregate(per_token, mask)
'''


def starter():
    """The text of a starter file: the reference signatures and docstrings, bodies to write."""
    out = ['"""My answers to the prerl exercises. Check them with: python -m tutorial.check all --impl THIS_FILE\n'
           'You may use the project\'s own functions (losses, model, reward) where an exercise builds on another."""',
           "import math", "", "import torch", "from torch.nn import functional as F", "", "import losses",
           "from reward import BOS_ID, PAD_ID", ""]
    for n, (title, chapter, names, refs, _) in EXERCISES.items():
        for name, ref in zip(names, refs):
            doc = inspect.getdoc(ref).replace('"""', "'''")
            doc = "\n    ".join(doc.splitlines())
            out += ["", f"def {name}{inspect.signature(ref)}:",
                    f'    """EXERCISE {n} ({title}; tutorial/{chapter}).\n    {doc}"""',
                    f'    raise NotImplementedError("exercise {n}")', ""]
    return "\n".join(out) + BUGGY


def load(path):
    STUDENT["path"] = os.path.abspath(path)
    if not os.path.isfile(path):
        raise SystemExit(f"error: no such file: {path} (make one with: python -m tutorial.check --init {path})")
    spec = importlib.util.spec_from_file_location("student_impl", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:
        line = getattr(e, "lineno", None) or (e.__traceback__.tb_next.tb_lineno if e.__traceback__.tb_next else "?")
        raise SystemExit(f"error: cannot import {path}: {type(e).__name__} at line {line}: {e}") from None
    return mod


def run(numbers, mod, out=sys.stdout):
    """Check exercises `numbers` of module `mod`; print one block per exercise; True if all pass."""
    ok = True
    for n in numbers:
        title, chapter, names, _, check = EXERCISES[n]
        missing = [f for f in names if not callable(getattr(mod, f, None))]
        try:
            if missing:
                raise Mismatch(f"your file has no function {', '.join(missing)}",
                               "python -m tutorial.check --init NEWFILE writes every stub")
            torch.manual_seed(0)
            print(f"exercise {n} ({title}): PASS - {check(mod)}", file=out)
        except Mismatch as e:
            ok = False
            print(f"exercise {n} ({title}): FAIL - {e}", file=out)
            if e.hint:
                print(f"  hint: {e.hint}", file=out)
            print(f"  (read tutorial/{chapter})", file=out)
    return ok


def make_lab_model():
    """Pre-train the classroom model (lab preset, pre-training seed 1) and keep its weights in tutorial/lab.pt."""
    out = os.path.join("out", "lab-seed1")
    path, m, _ = T.pretrain(T.pretrain_config("lab", seed=1), out, "cpu", resume=True)
    ck = M.load_checkpoint(path)
    M.save_checkpoint(LAB, {"model": ck["model"], "config": ck["config"], "preset": "lab", "seed": 1,
                            "pretrain_minutes": m["pretrain_minutes"], "base_eval": m})
    print(f"wrote {LAB}: held-out pass@1 {m['pass@1']:.3f}, pass@8 {m['pass@8']:.3f}, "
          f"pre-training {m['pretrain_minutes']:.1f} min")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exercise", nargs="?", help="an exercise number (1-9) or 'all'")
    ap.add_argument("--impl", help="your file with the functions to check")
    ap.add_argument("--init", metavar="PATH", help="write a starter file with every stub to PATH and exit")
    ap.add_argument("--list", action="store_true", help="list the exercises and exit")
    ap.add_argument("--make-lab-model", action="store_true", help="pre-train the classroom model -> tutorial/lab.pt")
    a = ap.parse_args(argv)
    if a.list:
        for n, (title, chapter, names, _, _) in EXERCISES.items():
            print(f"{n}. {title:40s} {', '.join(names):45s} tutorial/{chapter}")
        return 0
    if a.make_lab_model:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        make_lab_model()
        return 0
    if a.init:
        if os.path.exists(a.init):
            print(f"error: {a.init} exists; not overwriting your work", file=sys.stderr)
            return 2
        with open(a.init, "w") as f:
            f.write(starter())
        print(f"wrote {a.init}: fill in the stubs, then: python -m tutorial.check 1 --impl {a.init}")
        return 0
    if a.exercise is None or a.impl is None:
        print("error: give an exercise number (or 'all') and --impl YOUR_FILE (see --help)", file=sys.stderr)
        return 2
    if a.exercise == "all":
        numbers = list(EXERCISES)
    elif a.exercise.isdigit() and int(a.exercise) in EXERCISES:
        numbers = [int(a.exercise)]
    else:
        print(f"error: unknown exercise {a.exercise!r}: choose 1-{len(EXERCISES)} or 'all'", file=sys.stderr)
        return 2
    try:
        mod = load(a.impl)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    return 0 if run(numbers, mod) else 1


if __name__ == "__main__":
    sys.exit(main())
