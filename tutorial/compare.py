"""
Comparing a student's answers with the reference, and the inputs the exercises are checked on (tutorial/exercises.py
uses both). Everything here runs in the checker's process; a student's function is reached only through a
sandbox.Student, whose answers come back as tensors and numbers.
"""
import functools
import os
import tempfile
from dataclasses import asdict

import torch

import dsrl
import losses
import model as M
import reward as R
import sample as S
import train as T
from tutorial.sandbox import StudentError

HERE = os.path.dirname(os.path.abspath(__file__))
LAB = os.path.join(HERE, "lab.pt")


class Mismatch(Exception):
    """An exercise's answer is wrong: `args[0]` says what differed, `hint` (may be '') where to look."""

    def __init__(self, what, hint=""):
        super().__init__(what)
        self.hint = hint


# -----------------------------------------------------------------------------
# comparing an answer with the reference

def tensor(x, what):
    if isinstance(x, (tuple, list)) and x:
        x = x[0]
    if not torch.is_tensor(x):
        raise Mismatch(f"{what} should be a tensor, got {type(x).__name__}")
    return x


def close(a, b, atol=1e-5):
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-4, equal_nan=True)


def same(got, want, what, wrong=(), where=None, atol=1e-5):
    """Raise Mismatch unless got == want. wrong: [(value of a known mistake, its hint)]; where(i): the flat index
    i of the first difference said in the exercise's terms (which group, row, token, side of the clip band)."""
    got, want = tensor(got, what).detach().float(), want.detach().float()
    if close(got, want, atol):
        return
    hint = next((h for v, h in wrong if close(got, v.detach(), atol)), "")
    if got.shape != want.shape:
        raise Mismatch(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}", hint)
    if hint:
        raise Mismatch(f"{what} differs from the reference", hint)
    diff = (got - want).abs().nan_to_num(float("inf"))
    i, n = int(diff.reshape(-1).argmax()), int((diff > atol).sum())
    at = f" at {where(i)}" if where and got.dim() else ""
    raise Mismatch(f"{what} differs{at}: you give {got.reshape(-1)[i]:.6g}, expected {want.reshape(-1)[i]:.6g}"
                   + (f" ({n} of {diff.numel()} values differ)" if got.dim() else ""))


def loss_and_grad(fn, logp):
    """(loss, d loss / d logp) of a reference fn(logp) on a fresh leaf copy of logp."""
    x = logp.detach().clone().requires_grad_()
    loss = tensor(fn(x), "the loss")
    g = torch.autograd.grad(loss, x, allow_unused=True)[0] if loss.requires_grad else None
    return loss.detach(), torch.zeros_like(x) if g is None else g


def check_loss(st, name, args, kw, ref, logp, what, wrong=(), where=None):
    """The student's name(logp, *args, **kw): loss value and gradient against ref(logp); wrong: [(a function of
    logp that makes a known mistake, its hint)]; where: as in same(), for the gradient."""
    got_l, got_g, _ = st.loss_and_grad(name, logp, *args, **kw)
    got_g = torch.zeros_like(logp) if got_g is None else got_g
    want_l, want_g = loss_and_grad(ref, logp)
    wrong = [(loss_and_grad(w, logp), h) for w, h in wrong]
    both = next((h for (wl, wg), h in wrong if close(got_l, wl) and close(got_g, wg)), "")
    if both and not (close(got_l, want_l) and close(got_g, want_g)):
        raise Mismatch(f"{what} differs from the reference", both)
    same(got_l, want_l, f"{what}: loss value", [(wl, h) for (wl, _), h in wrong])
    if not got_g.abs().sum() and want_g.abs().sum():
        raise Mismatch(f"{what}: the loss value is right but no gradient reaches logp",
                       "something in the graph is constant that should not be (detach only what is fixed, such as "
                       "old_logp)")
    same(got_g, want_g, f"{what}: gradient d loss / d logp", [(wg, h) for (_, wg), h in wrong], where)


def at_row_token(T_, describe_row=lambda n: "", describe_token=lambda n, t: ""):
    """where() for (N, T) tensors: 'row n (...), token t (...)'."""
    def where(i):
        n, t = divmod(i, T_)
        row, tok = describe_row(n), describe_token(n, t)
        return f"row {n}{f' ({row})' if row else ''}, token {t}{f' ({tok})' if tok else ''}"
    return where


# -----------------------------------------------------------------------------
# inputs built to hit the edge cases

def rewards_with_edge_cases(gen, B=6, G=4):
    """B groups of G 0/1 rewards, the first all right, the second all wrong, the third one right."""
    r = (torch.rand(B, G, generator=gen) < 0.5).float()
    r[0], r[1] = 1.0, 0.0
    r[2] = torch.tensor([1.0] + [0.0] * (G - 1))
    return r.view(-1)


def ragged_mask(gen, N, T_):
    """(N, T) response masks: random lengths from 1 to T, and one empty row."""
    lengths = torch.randint(1, T_ + 1, (N,), generator=gen)
    lengths[N // 2] = 0
    return torch.arange(T_)[None, :] < lengths[:, None]


def tiny_rollout(seed=0):
    """A random tiny GPT and a rollout with left-padded prompts of different lengths (cheap and deterministic)."""
    torch.manual_seed(seed)
    model = M.GPT(M.PRESETS["tiny"]).eval()
    prompts = [S.prompt_ids(p) for p in R.make_split("test", 3, seed=seed)]
    prompts[1] = prompts[1][:4]  # a short prompt: the others are left-padded
    ro = S.generate(model, prompts, G=2, max_new_tokens=12, generator=torch.Generator().manual_seed(seed))
    return model, ro


def wire_model(model):
    """A model as the sandbox rebuilds it: ('__gpt__', config, weights)."""
    return ("__gpt__", asdict(model.config), {k: v.detach().clone() for k, v in model.state_dict().items()})


def lab_model():
    if not os.path.exists(LAB):
        raise Mismatch(f"the classroom model {LAB} is missing",
                       "make it with: python -m tutorial.check --make-lab-model")
    return M.model_from_checkpoint(M.load_checkpoint(LAB))


def raised_hint(ask, hint, prefix="", words=()):
    """ask(); an exception the student's code raised (containing one of `words`, if any) becomes a Mismatch with
    `hint`; timeouts, exits and stubs go on up to the checker."""
    try:
        return ask()
    except StudentError as e:
        if e.kind == "raised" and (not words or any(w in str(e).lower() for w in words)):
            raise Mismatch(prefix + str(e), hint) from None
        raise


AGG_CASES = (("token-mean", None), ("seq-mean-token-mean", None), ("seq-mean-token-sum-norm", 7))
PASS_ON = "pass agg and norm on to aggregate: the spec names both, and a run may ask for any of the three modes"


def ppo_where(adv, ratio, lo, hi, c):
    def token(n, t):
        r, a = float(ratio[n, t]), float(adv[n])
        side = "below the band" if r < 1 - lo else "above the band" if r > 1 + hi else "inside the band"
        return f"ratio {r:.3g}, {side}{' and past the dual clip' if a < 0 and r > c else ''}"
    return at_row_token(ratio.size(1), lambda n: f"A = {float(adv[n]):.3g}", token)


def group_where(r, G, T_, adv=None):
    """where() for (N, T) per-sample tensors: the row's group, reward and advantage."""
    def row(n):
        a = "" if adv is None else f", A = {float(adv[n]):.3g}"
        return f"group {n // G}, reward {float(r[n]):g}{a}"
    return at_row_token(T_, row)


# -----------------------------------------------------------------------------
# behaviours on the classroom model (tutorial/lab.pt), taken in the checker's process

@functools.lru_cache(maxsize=1)
def lab_batch():
    """8 val prompts x 8 samples of the classroom model, their rewards, and which rows are in mixed groups (the same
    for every student: computed once per process)."""
    model = lab_model()
    problems = R.make_split("val", 8)
    ro = S.generate(model, [S.prompt_ids(p) for p in problems], G=8, max_new_tokens=64,
                    generator=torch.Generator().manual_seed(0))
    rr = torch.tensor(S.rewards(ro, [p.answer for p in problems for _ in range(8)]))
    g = rr.view(-1, 8)
    return ro, rr, ((g.max(1).values > g.min(1).values)[:, None].expand(-1, 8)).reshape(-1)


def nsr_step_on_lab(st):
    """One NSR-PreRL step with the student's prerl_loss must lower log P(y) of the wrong samples of mixed groups and
    leave the right ones out. The sandbox gives d loss / d log P(y); the step through the model is taken here."""
    model = lab_model()
    ro, rr, mixed = lab_batch()
    if not mixed.any():
        raise Mismatch("the classroom model gave no mixed group on this batch (is tutorial/lab.pt the right model?)")
    lp = losses.pretrain_logprobs(model, ro.response)[0]
    _, d_lp, _ = st.loss_and_grad("prerl_loss", lp.detach(), rr, ro.mask, 8, select="negative")
    if d_lp is None or not d_lp.abs().sum():
        raise Mismatch("NSR-PreRL on the classroom model: the loss does not depend on log P(y)")
    if d_lp[rr > 0].abs().sum() > 0:
        raise Mismatch("NSR-PreRL on the classroom model: right answers are in the loss (their gradient is not 0)",
                       "select='negative' keeps only samples with A < 0")
    wrong_rows = (rr == 0) & mixed
    before = float((lp.detach() * ro.mask)[wrong_rows].sum())
    model.zero_grad()
    (d_lp * lp).sum().backward()  # the student's loss's gradient, carried through the model (chain rule)
    with torch.no_grad():
        norm = float(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None)))
        for p in model.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad / max(1e-12, norm)
        after = float((losses.pretrain_logprobs(model, ro.response)[0] * ro.mask)[wrong_rows].sum())
    if not after < before:
        raise Mismatch(f"one NSR-PreRL step did not lower log P(y) of the wrong samples ({before:.2f} -> {after:.2f})",
                       "the loss must push the negatives down: descent on -A * log P(y) with A < 0")
    return (f"on the classroom model one step lowered log P(y) of the {int(wrong_rows.sum())} wrong samples in "
            f"mixed groups ({before:.1f} -> {after:.1f}) and left the {int((rr > 0).sum())} right ones out of the loss")


def rl_run_with_schedule(table, lr, warmup_lr):
    """3 steps of dsrl.rl_train (S = 2) with dsrl_phase answered from `table` {step: (objective, lr)}: the history's
    (objective, lr) per step and the optimizer's learning rates at the end (once per table and process)."""
    return _rl_run(tuple(sorted(table.items())), lr, warmup_lr)


@functools.lru_cache(maxsize=8)
def _rl_run(items, lr, warmup_lr):
    table = dict(items)
    lab_model()  # says how to make it when it is missing
    cfg = dsrl.rl_config("lab", steps=3, batch_prompts=2, group=4, eval_every=100, eval_problems=1, eval_samples=1,
                         lr=lr, warmup_lr=warmup_lr)
    real = dsrl.dsrl_phase
    dsrl.dsrl_phase = lambda step, S, lr, warmup_lr, warmup="nsr-prerl": table[step]
    try:
        with tempfile.TemporaryDirectory() as d:
            _, hist, _ = T.rl_train(LAB, dsrl.schedule("dsrl", cfg, S=2), cfg, os.path.join(d, "s.pt"), "cpu",
                                    progress=False)
            opt_lr = [g["lr"] for g in M.load_checkpoint(os.path.join(d, "s.pt"))["optimizer"]["param_groups"]]
    except Exception as e:
        raise Mismatch(f"the training loop failed with your dsrl_phase: {type(e).__name__}: {e}") from None
    finally:
        dsrl.dsrl_phase = real
    return [(h["objective"], h["lr"]) for h in hist], opt_lr


# -----------------------------------------------------------------------------
# the reflection study's committed bases (results/cpu/bases/tied-s0.pt, control-s0.pt), sampled in the checker's
# process

@functools.lru_cache(maxsize=1)
def reflection_samples():
    """{"tied": texts, "control": texts}: 32 val problems x 4 samples of each committed seed-0 base (temperature 1,
    sampler seed 5; the same for every student: computed once per process)."""
    out = {}
    for arm in ("tied", "control"):
        path = dsrl.committed_base("cpu", 0, f"{arm}-s")
        if path is None:
            raise Mismatch(f"the reflection study's {arm} base results/cpu/bases/{arm}-s0.pt is missing",
                           "it is committed with the repository: git checkout results/cpu/bases")
        model = M.model_from_checkpoint(M.load_checkpoint(path))
        problems = R.make_split("val", 32, seed=5)
        ro = S.generate(model, [S.prompt_ids(p) for p in problems], G=4, max_new_tokens=96,
                        generator=torch.Generator().manual_seed(5))
        out[arm] = ro.texts
    return out

