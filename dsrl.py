"""
Dual Space RL (DSRL, paper section 4): a short NSR-PreRL phase in pre-train space, then GRPO. This file holds the RL
runs' settings and schedules, what happens at the switch, and the command line that compares GRPO with DSRL.

    python dsrl.py                    # picks cuda > mps > cpu and the matching preset
    python dsrl.py --preset cpu       # a laptop CPU (results.md prints the minutes it took)
    python dsrl.py --preset cpu --objective nsr-rl-warmup   # GRPO against the paper's control instead
    python dsrl.py --preset cpu --objective grpo             # one GRPO run (any objective: --alone)

The schedule (`schedule` below, step 0-based, S = --warmup-steps):
  phase 1, step < S:  NSR-PreRL. Rollouts come from P(y|x) as always and the verifier scores them, but the loss
                      is taken on log P(y), the response after one <|bos|> with positions from 0, and only the
                      wrong samples are kept and pushed down (losses.nsr_prerl_loss).
  phase 2, step >= S: GRPO on log P(y|x), every sample (losses.grpo_loss).
  One AdamW instance runs both phases: its moment estimates carry over the switch (the official code does
  not reset it; the paper calls the phase-2 start from the phase-1 model "policy reincarnation").
In one gradient (paper section 4), with s the step and 1[.] the indicator:
    grad J_DSRL = E[ sum_t grad log pi(y_t | x^{1[s>=S]}, y_<t) * A(y) * 1[s >= S or A(y) < 0] ]
where x^0 means the prompt is replaced by <|bos|>.

What `python dsrl.py` does with it:
1) pre-train the base model (or reuse out/<preset>/base.pt);
2) from the same base, seed, steps and optimizer settings, run GRPO and DSRL;
3) evaluate base, GRPO and DSRL on the held-out and OOD splits (pass@k, markers, length);
4) write out/<preset>/results.json, results.md and PNG figures.
The paper suite and the mechanism study run as python -m experiments.suite / experiments.mechanisms.
"""
import json
import os
import sys
import time
from dataclasses import dataclass

from losses import AGGREGATIONS, OBJECTIVES
from model import is_rank0, load_checkpoint, model_from_checkpoint, rank_world
from reward import MARKERS, UserError, fail
from sample import final_metrics
from train import Diverged, common_args, device_and_preset, pretrain, pretrain_config, rl_train

# -----------------------------------------------------------------------------
# the settings of an RL run

RL = {  # RL settings per preset; GRPO and the GRPO phase of DSRL always share all of them
    "tiny": dict(steps=4, batch_prompts=4, group=4, lr=1e-3, warmup_lr=1e-3, max_new_tokens=48,
                 eval_every=2, eval_problems=16, eval_samples=4),
    "lab": dict(steps=30, batch_prompts=64, group=8, lr=3e-4, warmup_lr=1.5e-4, max_new_tokens=96,
                eval_every=10, eval_problems=200, eval_samples=8),
    "cpu": dict(steps=80, batch_prompts=32, group=8, lr=1e-4, warmup_lr=5e-5, max_new_tokens=96,
                eval_every=20, eval_problems=200, eval_samples=8),
    # gpu micro_batch 128: the loss and backward of 128 rows at a time (peak memory: python -m experiments.bench
    # --rl-step --preset gpu)
    "gpu": dict(steps=200, batch_prompts=64, group=8, lr=1e-4, warmup_lr=1e-5, max_new_tokens=128,
                eval_every=25, eval_problems=400, eval_samples=8, micro_batch=128),
}


@dataclass
class RLConfig:
    """Every setting of one RL run: RL[preset] over these defaults, then the caller's overrides (rl_config). The
    checkpoint keeps them, and a run resumes only with the same."""
    preset: str
    steps: int
    batch_prompts: int              # B: prompts per step
    group: int                      # G: samples per prompt
    lr: float                       # constant: GRPO's, and the rate of a two-phase run's phase 2
    warmup_lr: float                # the rate of a two-phase run's phase 1
    max_new_tokens: int             # the sampling budget, also seq-mean-token-sum-norm's constant
    eval_every: int
    eval_problems: int
    eval_samples: int
    seed: int = 0
    eval_split: str = "test"
    agg: str = "token-mean"         # losses.AGGREGATIONS
    eps_high: float = 0.2           # PPO clip upper epsilon (0.28: clip-higher)
    kl_coef: float = 0.0            # k3 KL to the initial model (0: off, as in the paper)
    lam: float = 0.1                # W-REINFORCE's weight on the right samples
    prerl_advantage: str = "r-mean"  # or "+-1" (losses.prerl_loss)
    temperature: float = 1.0        # rollout temperature (the paper: 1.0)
    micro_batch: int = None         # rows per loss/backward chunk, whole groups (None: all rows at once)
    other_space_every: int = 4      # the logging-only log-prob pass of the untrained space every k-th step (0: never)
    weight_decay: float = 0.0       # AdamW's (the official script's 0.01: experiments/mechanisms.py, H3)
    warmup_coef: float = 1.0        # multiplies phase 1's loss (the official pretrain_loss_coef 0.01: H3)
    reset_at_switch: bool = False   # clear AdamW's moments at the switch (policy_reincarnation; H3)
    prompt_tag: str = "Q"           # "T": ask in the two-mode corpus's terse mode (H4)
    prerl_tokens: str = "all"       # "no-question-operands": PreRL's loss leaves the copied operands out (H1)
    ckpt_every: int = 10


def rl_config(preset, **overrides):
    """RLConfig of `preset` with every override that is not None (a flag left at its default)."""
    return RLConfig(preset=preset, **{**RL[preset], **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class Phase:
    """What one RL step trains: a losses.OBJECTIVES name, its learning rate and a factor on its loss."""
    objective: str
    lr: float
    loss_coef: float = 1.0


@dataclass
class Schedule:
    """What train.rl_train asks every step: phase(step) -> the Phase of 0-based `step`. A two-phase schedule switches
    at step `switch`: at_switch(model, opt, ref) runs once right before it, and the held-out split is evaluated
    right before it too."""
    name: str                       # the run's objective as named on the command line: grpo, dsrl, ...
    phase: object
    switch: int = None
    at_switch: object = None


# -----------------------------------------------------------------------------
# the two-phase schedules: DSRL and the paper's control

TWO_PHASE = {"dsrl": "nsr-prerl", "nsr-rl-warmup": "nsr-rl"}  # objective -> its phase-1 loss


def default_warmup(steps):
    """S, the NSR warmup length, when not given: 5% of the RL steps (official code: 19 of 348 steps)."""
    return max(1, round(0.05 * steps))


def policy_reincarnation(model, opt, ref, reset_optimizer=False):
    """Everything that happens at the switch S (paper section 4: phase 2 starts from the phase-1 model): the KL
    reference, when there is one, is re-anchored to the policy as it stands; reset_optimizer=True also clears
    AdamW's moments (a control: the official code keeps them)."""
    if ref is not None:
        ref.load_state_dict(model.state_dict())
    if reset_optimizer:
        opt.state.clear()


def dsrl_phase(step, S, lr, warmup_lr, warmup="nsr-prerl"):
    """(phase objective, learning rate) at 0-based `step` of a two-phase run with S warmup steps.
    DSRL: NSR-PreRL in pre-train space at warmup_lr for steps 0..S-1, then GRPO at lr from step S on (paper
    section 4; the official script switches after 19 of 348 steps). warmup="nsr-rl" is the paper's control,
    the same schedule with the NSR phase in post-train space, P(y|x) (objective nsr-rl-warmup)."""
    if step < S:
        return warmup, warmup_lr  # phase 1: only wrong samples, pushed down
    return "grpo", lr             # phase 2: plain GRPO, same optimizer


def schedule(objective, cfg, S=None):
    """The Schedule of `objective` with settings cfg (an RLConfig). dsrl and nsr-rl-warmup follow dsrl_phase (looked
    up at every step, so that a replacement takes effect), phase 1's loss times cfg.warmup_coef, and switch at S
    (default: default_warmup(cfg.steps)) by policy_reincarnation. Any other objective: itself at cfg.lr throughout."""
    if objective not in TWO_PHASE:
        return Schedule(objective, lambda step: Phase(objective, cfg.lr))
    S = default_warmup(cfg.steps) if S is None else S

    def phase(step):
        name, lr = dsrl_phase(step, S, cfg.lr, cfg.warmup_lr, warmup=TWO_PHASE[objective])
        return Phase(name, lr, cfg.warmup_coef if step < S else 1.0)
    return Schedule(objective, phase, S, lambda model, opt, ref: policy_reincarnation(model, opt, ref,
                                                                                       cfg.reset_at_switch))


def phases(objective):
    """The losses.OBJECTIVES names a run of `objective` trains; UserError if it is not an objective."""
    if objective in TWO_PHASE:
        return [TWO_PHASE[objective], "grpo"]
    if objective in OBJECTIVES:
        return [objective]
    raise UserError(f"unknown objective {objective!r}: choose from {', '.join([*OBJECTIVES, *TWO_PHASE])}")


def check_rl_args(a, preset, objectives):
    """Validate the RL flags up front for a run that trains `objectives` (losses.OBJECTIVES names); UserError
    names the bad value."""
    G = RL[preset]["group"] if getattr(a, "group", None) is None else a.group
    steps = a.steps or RL[preset]["steps"]
    needs_group = [o for o in objectives if OBJECTIVES[o][1]]
    if G < 2 and needs_group:
        raise UserError(f"--group {G}: {needs_group[0]} has a group baseline and needs at least 2 samples per prompt")
    batch = getattr(a, "batch_prompts", None)
    if G < 1 or (batch is not None and batch < 1):
        raise UserError(f"--group and --batch-prompts must be positive, got {G} and {batch}")
    if getattr(a, "warmup_steps", None) is not None and not 0 <= a.warmup_steps <= steps:
        raise UserError(f"--warmup-steps {a.warmup_steps} must be between 0 and the {steps} RL steps")
    for name in ("lr", "warmup_lr", "temperature", "eps_high"):
        v = getattr(a, name, None)
        if v is not None and not v > 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {v}")
    if (getattr(a, "kl_coef", None) or 0) < 0:
        raise UserError(f"--kl-coef must be 0 (off) or positive, got {a.kl_coef}")
    mb = getattr(a, "micro_batch", None)
    if mb is not None and (mb <= 0 or mb % G):
        raise UserError(f"--micro-batch {mb}: must be a positive multiple of the group size {G} (whole groups)")
    if (getattr(a, "other_space_every", None) or 0) < 0:
        raise UserError(f"--other-space-every must be 0 or more, got {a.other_space_every}")
    if getattr(a, "ckpt_every", None) is not None and a.ckpt_every <= 0:
        raise UserError(f"--ckpt-every must be positive, got {a.ckpt_every}")


# -----------------------------------------------------------------------------
# the command line: GRPO and DSRL (or another objective) from the same base, same seed, same settings

def rl_args(ap):
    """The RL flags (default: the preset's, RL, over RLConfig's defaults)."""
    rl = ap.add_argument_group("RL settings")
    rl.add_argument("--warmup-steps", type=int, default=None, help="S: NSR steps before GRPO (default 5%% of steps)")
    rl.add_argument("--warmup-lr", type=float, default=None, help="learning rate of the NSR warmup phase")
    rl.add_argument("--lr", type=float, default=None, help="learning rate of GRPO and of every one-phase objective")
    rl.add_argument("--batch-prompts", type=int, default=None, help="B: prompts per step")
    rl.add_argument("--group", type=int, default=None, help="G: samples per prompt")
    rl.add_argument("--agg", default=None, choices=AGGREGATIONS, help="loss aggregation (default token-mean)")
    rl.add_argument("--eps-high", type=float, default=None, help="PPO clip upper epsilon (0.28: clip-higher)")
    rl.add_argument("--kl-coef", type=float, default=None, help="k3 KL to the initial model (default 0: off)")
    rl.add_argument("--prerl-advantage", default=None, choices=("r-mean", "+-1"))
    rl.add_argument("--temperature", type=float, default=None, help="rollout temperature (default 1.0, the paper)")
    rl.add_argument("--micro-batch", type=int, default=None, help="rows per loss/backward chunk, a multiple of "
                    "--group (the same gradient; default: the preset's)")
    rl.add_argument("--other-space-every", type=int, default=None,
                    help="the logging-only log-prob pass of the untrained space every k-th step (0: never; default 4)")
    rl.add_argument("--ckpt-every", type=int, default=None, help="checkpoint interval in RL steps (default 10)")


def launcher():
    """How this script was started, for the results: python, or torchrun with N processes."""
    world = rank_world()[1]
    return "python" if world == 1 else f"torchrun --standalone --nproc_per_node {world}"


def peak_memory_mb(device):
    """torch.cuda.max_memory_allocated on a GPU, else the process's peak resident set size."""
    if device.startswith("cuda"):
        import torch
        return torch.cuda.max_memory_allocated() / 2 ** 20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# Committed base models (python -m experiments.bases --export): a run of these presets starts from the seed's file
# instead of pre-training, so that every machine's run starts from the same weights (thread counts and CPUs give
# slightly different floats, and the RL comparisons should not inherit them).
COMMITTED_BASES = {"cpu": os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cpu", "bases")}


def committed_base(preset, seed, prefix="s"):
    """Path of the committed base of (preset, seed), or None when there is none; prefix "tied-s" / "control-s": the
    reflection study's bases (experiments/reflection.py)."""
    path = os.path.join(COMMITTED_BASES.get(preset, ""), f"{prefix}{seed}.pt")
    return path if preset in COMMITTED_BASES and os.path.exists(path) else None


def base_model(args, preset, out_dir, device):
    """The base checkpoint's path: --init; else the committed base of (preset, seed) unless --retrain; else
    out_dir/base.pt, pre-trained (or its pre-training resumed) unless a finished one of this preset is there.
    Returns (path, pre-training's metrics or None)."""
    committed = None if args.init or args.retrain else committed_base(preset, args.seed)
    path = args.init or committed or os.path.join(out_dir, "base.pt")
    base = load_checkpoint(path) if os.path.exists(path) or args.init else None
    cfg = pretrain_config(preset, seed=args.seed)
    if args.init:
        print(f"starting from {path}")
    elif committed:
        print(f"starting from the committed base {os.path.relpath(path)} (--retrain to pre-train one here)")
    elif args.retrain or base is None or base.get("preset") != preset or not (base.get("done", True) or args.resume):
        return path, pretrain(cfg, out_dir, device)[1]
    elif not base.get("done", True):
        return path, pretrain(cfg, out_dir, device, resume=True)[1]
    else:
        print(f"reusing {path} (--retrain to pre-train again)")
    return path, None


def main(argv=None):
    ap = common_args(__doc__, "RL steps per run (default: the preset's)")
    ap.add_argument("--objective", default="dsrl", help=f"what to compare with GRPO: "
                    f"{', '.join([*TWO_PHASE, *OBJECTIVES])}")
    ap.add_argument("--alone", action="store_true", help="run --objective alone, without GRPO beside it")
    ap.add_argument("--eval-samples", type=int, default=16, help="samples per problem in the final evaluation")
    ap.add_argument("--retrain", action="store_true", help="pre-train a base here even if a committed base "
                    "(results/<preset>/bases/s<seed>.pt) or OUT/<preset>/base.pt exists")
    ap.add_argument("--init", default=None, help="start from this base checkpoint instead of OUT/<preset>/base.pt "
                    "(e.g. tutorial/lab.pt with --preset lab: no pre-training)")
    rl_args(ap)
    args = ap.parse_args(argv)
    t_start = time.time()
    try:
        device, preset = device_and_preset(args)
        if args.eval_samples < 1:
            raise UserError(f"--eval-samples must be positive, got {args.eval_samples}")
        names = [args.objective] if args.alone or args.objective == "grpo" else ["grpo", args.objective]
        check_rl_args(args, preset, [p for name in names for p in phases(name)])
        cfg = rl_config(preset, **{k: getattr(args, k) for k in (
            "seed", "steps", "warmup_lr", "lr", "batch_prompts", "group", "agg", "eps_high", "kl_coef",
            "prerl_advantage", "temperature", "micro_batch", "other_space_every", "ckpt_every")})
    except UserError as e:
        fail(e)
    out_dir = os.path.join(args.out, preset)
    os.makedirs(out_dir, exist_ok=True)
    S = args.warmup_steps if args.warmup_steps is not None else default_warmup(cfg.steps)
    print(f"dsrl: preset {preset}, device {device}, {cfg.steps} RL steps, S = {S}, seed {args.seed}")
    try:
        base_path, pre = base_model(args, preset, out_dir, device)
        t_base = time.time()
        curves, models, history = {}, {}, {}
        for name in names:
            models[name], history[name], curves[name] = rl_train(
                base_path, schedule(name, cfg, S), cfg, os.path.join(out_dir, f"{name}.pt"), device, resume=args.resume)
    except (UserError, Diverged) as e:
        fail(e, 2 if isinstance(e, UserError) else 1)
    t_rl = time.time()
    if not is_rank0():
        return  # under torchrun rank 0 alone evaluates and writes the results
    ev = dict(problems=cfg.eval_problems, n=(args.eval_samples,) * 2, max_new_tokens=cfg.max_new_tokens,
              seed=args.seed, progress=True)
    results = {"base": final_metrics(model_from_checkpoint(load_checkpoint(base_path), device), **ev)}
    for name in names:
        results[name] = final_metrics(models[name], **ev)
    write_results(out_dir, args, cfg, device, S, names, results, curves, history, pre,
                  {"total": time.time() - t_start, "pretrain_or_load": t_base - t_start, "rl": t_rl - t_base})


def write_results(out_dir, args, cfg, device, S, names, results, curves, history, pre, wall):
    """results.json (every number of the run), results.md (its table) and the three figures. Ten arguments: the
    pieces of one finished comparison, each computed once in main."""
    ks = [k for k in (1, 4, 16) if k <= args.eval_samples]
    table = markdown_table({f"{name} | {split}": m for name, by_split in results.items() for split, m in by_split.items()},
                           [(f"pass@{k}", f"pass@{k}", 1) for k in ks] + [(f"{mk}_share", f"{mk} %", 100) for mk in MARKERS]
                           + [("length", "length", 1)], label="model | split")
    hw = f"{device}, {os.cpu_count()} CPU cores" if device == "cpu" else device
    rows = cfg.batch_prompts * cfg.group
    summary = {"preset": cfg.preset, "device": device, "seed": args.seed, "steps": cfg.steps, "warmup_steps": S,
               "warmup_lr": cfg.warmup_lr, "lr": cfg.lr,
               "wall_seconds": {**wall, **{f"{name}_{part}": sum(rec[f"t_{key}"] for rec in history[name])  # rl_step's
                                           for name in names for part, key in (("sampling", "sample"), ("learning", "learn"))}},
               # the work behind those seconds: FLOPs ~ 6 x params x tokens trained on, 2 x params x tokens sampled
               "tokens": {"pretrain": pre and pre["pretrain_tokens"], "rl_rows_per_step": rows,
                          **{f"{name}_sampled": round(rows * sum(rec["length"] for rec in history[name]))
                             for name in names}},
               "peak_memory_mb": peak_memory_mb(device),
               "results": results, "curves": curves, "command": " ".join([launcher(), "dsrl.py", *sys.argv[1:]])}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    md = (f"# {' vs '.join(names)} ({cfg.preset} preset, seed {args.seed})\n\n"
          f"`{summary['command']}` on {hw}: {wall['total'] / 60:.1f} min, peak memory {summary['peak_memory_mb']:.0f} MB "
          f"({'GPU, allocated' if device.startswith('cuda') else 'resident'}); {cfg.steps} RL steps, S = {S}; "
          f"{cfg.eval_problems} problems x {args.eval_samples} samples per split.\n\n{table}\n")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    comparison_figures(out_dir, curves, results, S, names)
    print(md)
    print(f"wrote {out_dir}/results.json, results.md, accuracy.png, markers.png, pass_at_k.png")


# -----------------------------------------------------------------------------
# tables and figures (the suites in experiments/ draw theirs with these too)

def markdown_table(rows, cols, label=""):
    """rows: {label: {key: value or (mean, 95% half-width)}}; cols: [(key, header, scale)]. Values scaled by 100
    (shares in %) get one decimal, the others three. A label may span columns ("model | split")."""
    out = [f"| {label} | " + " | ".join(h for _, h, _ in cols) + " |", "|---" * (len(cols) + label.count("|") + 1) + "|"]
    for label, m in rows.items():
        cells = []
        for key, _, f in cols:
            v, ci = m[key] if isinstance(m[key], (tuple, list)) else (m[key], float("nan"))
            d = 1 if f == 100 else 3
            cells.append(f"{v * f:.{d}f}" + (f" ± {ci * f:.{d}f}" if ci == ci else ""))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, out_dir, name):
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=100)


def half_width(mc):
    """The interval half-width of a (mean, ci) pair; 0 when undefined (one seed)."""
    return 0.0 if mc[1] != mc[1] else mc[1]


def plot_curves(ax, curves, dashed=()):
    """curves: {label: [(step, mean, ci), ...]}: a line per label with its 95% band."""
    for label, c in curves.items():
        x, m, ci = zip(*c)
        ci = [half_width(p) for p in zip(m, ci)]
        line, = ax.plot(x, m, marker=".", label=label, ls="--" if label in dashed else "-")
        ax.fill_between(x, [a - b for a, b in zip(m, ci)], [a + b for a, b in zip(m, ci)], alpha=0.15,
                        color=line.get_color())
    ax.legend(fontsize=7)


def plot_markers(ax, shares):
    """shares: {model: {marker: (mean, ci)}} as fractions of responses: one group of bars per model."""
    names = list(shares)
    for i, mk in enumerate(MARKERS):
        ax.bar([j + 0.4 * i for j in range(len(names))], [100 * shares[n][mk][0] for n in names], 0.4,
               yerr=[100 * half_width(shares[n][mk]) for n in names], label=mk)
    ax.set_xticks([j + 0.2 for j in range(len(names))], names, rotation=45, ha="right", fontsize=7)
    ax.set(ylabel="% of test responses")
    ax.legend()


def plot_passk(ax, passk):
    """passk: {model: {k: pass@k}}: one line per model over log-spaced k."""
    for name, by_k in passk.items():
        ks = sorted(by_k)
        ax.plot(ks, [by_k[k] for k in ks], marker="o", label=name)
    ax.set(xscale="log", xlabel="k")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.legend(fontsize=7)


def comparison_figures(out_dir, curves, results, warmup_steps, names):
    """accuracy.png: held-out pass@1 vs RL step per run; markers.png: marker shares per model;
    pass_at_k.png: held-out pass@k per model."""
    plt, one = pyplot(), (lambda v: (v, float("nan")))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.axvline(warmup_steps, color="gray", ls=":", label=f"S = {warmup_steps}")
    plot_curves(ax, {n: [(e["step"], *one(e["pass@1"])) for e in evals] for n, evals in curves.items()})
    ax.set(xlabel="RL step", ylabel="held-out pass@1", title="GRPO vs " + names[-1])
    save(fig, out_dir, "accuracy.png")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    plot_markers(ax, {n: {mk: one(r["test"][f"{mk}_share"]) for mk in MARKERS} for n, r in results.items()})
    ax.set(title="reflection and transition markers")
    save(fig, out_dir, "markers.png")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    plot_passk(ax, {n: {int(k[5:]): v for k, v in r["test"].items() if k.startswith("pass@")} for n, r in results.items()})
    ax.set(ylabel="held-out pass@k")
    save(fig, out_dir, "pass_at_k.png")
    plt.close("all")


if __name__ == "__main__":
    main()
