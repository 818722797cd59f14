"""
Dual Space RL (DSRL, paper section 4): a short NSR-PreRL phase in pre-train space, then GRPO.

    python dsrl.py                    # picks cuda > mps > cpu and the matching preset
    python dsrl.py --preset cpu       # a laptop: about 12 minutes on 2 cores (12.4 measured, README)
    python dsrl.py --suite paper --preset cpu --seeds 3   # every claim of the paper over 3 seeds (experiments/)
    python dsrl.py --suite mechanisms --preset cpu --seeds 3   # why the toy differs from the paper

The schedule (`dsrl_phase` below, step 0-based, S = --warmup-steps):
  phase 1, step < S:  NSR-PreRL. Rollouts come from P(y|x) as always and the verifier scores them, but the loss
                      is taken on log P(y), the response after one <|bos|> with positions from 0, and only the
                      wrong samples are kept and pushed down (losses.prerl_loss, select="negative").
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
"""
import json
import os
import sys
import time

from experiments.report import comparison_figures, final_metrics, markdown_table
from model import is_rank0, load_checkpoint, model_from_checkpoint, rank_world
from reward import MARKERS, UserError, fail
from sample import common_args, device_and_preset, peak_memory_mb
from train import OBJECTIVES, RL, Diverged, check_rl_args, pretrain, rl_train


# -----------------------------------------------------------------------------
# the schedule: train.rl_train asks it, every step, which loss and which learning rate to use

def dsrl_phase(step, S, lr, warmup_lr, warmup="nsr-prerl"):
    """(phase objective, learning rate) at 0-based `step` of a two-phase run with S warmup steps.
    DSRL: NSR-PreRL in pre-train space at warmup_lr for steps 0..S-1, then GRPO at lr from step S on (paper
    section 4; the official script switches after 19 of 348 steps). warmup="nsr-rl" is the paper's control,
    the same schedule with the NSR phase in post-train space, P(y|x) (objective nsr-rl-warmup)."""
    if step < S:
        return warmup, warmup_lr  # phase 1: only wrong samples, pushed down
    return "grpo", lr             # phase 2: plain GRPO, same optimizer


TWO_PHASE = {"dsrl": "nsr-prerl", "nsr-rl-warmup": "nsr-rl"}  # objective -> its phase-1 loss


def default_warmup(steps):
    """S, the NSR warmup length, when not given: 5% of the RL steps (official code: 19 of 348 steps)."""
    return max(1, round(0.05 * steps))


def phase(objective, step, S, lr, warmup_lr):
    """(loss, learning rate) of any objective at `step`: the two-phase ones follow dsrl_phase, the rest use
    one loss at lr throughout."""
    if objective in TWO_PHASE:
        return dsrl_phase(step, S, lr, warmup_lr, warmup=TWO_PHASE[objective])
    return objective, lr


# -----------------------------------------------------------------------------
# the comparison run: GRPO and DSRL from the same base, same seed, same settings

def launcher():
    """How this script was started, for the results: python, or torchrun with N processes."""
    world = rank_world()[1]
    return "python" if world == 1 else f"torchrun --standalone --nproc_per_node {world}"


def main(argv=None):
    ap = common_args(__doc__, "RL steps per run (default: the preset's)")
    ap.add_argument("--objective", default="dsrl", help=f"what to compare with GRPO: {', '.join(OBJECTIVES)}")
    ap.add_argument("--eval-samples", type=int, default=16, help="samples per problem in the final evaluation")
    ap.add_argument("--retrain", action="store_true", help="pre-train again even if base.pt exists")
    ap.add_argument("--init", default=None, help="start from this base checkpoint instead of OUT/<preset>/base.pt "
                    "(e.g. tutorial/lab.pt with --preset lab: no pre-training)")
    ap.add_argument("--suite", choices=("paper", "mechanisms"),
                    help="paper: every claim of the paper over --seeds seeds; mechanisms: why the toy differs")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per suite configuration (at least 3 for the paper)")
    ap.add_argument("--workers", type=int, default=None,
                    help="parallel suite processes (default 2 on cpu, 8 on one GPU, one per GPU on several)")
    args = ap.parse_args(argv)
    t_start = time.time()
    try:
        device, preset = device_and_preset(args)
        if args.eval_samples < 1:
            raise UserError(f"--eval-samples must be positive, got {args.eval_samples}")
        if args.seeds < 1 or (args.workers is not None and args.workers < 1):
            raise UserError(f"--seeds and --workers must be positive, got {args.seeds} and {args.workers}")
        args.lr = args.batch_prompts = args.group = args.temperature = None
        check_rl_args(args, preset)
        if args.suite and rank_world()[1] > 1:
            raise UserError("the suites start their own processes (one per GPU): run them with python, not torchrun")
        if args.suite == "paper":
            from experiments.suite import suite  # the suites' machinery lives in experiments/
            return suite(args, device, preset)
        if args.suite == "mechanisms":
            from experiments.mechanisms import mechanisms
            return mechanisms(args, device, preset)
    except UserError as e:
        fail(e)
    out_dir = os.path.join(args.out, preset)
    os.makedirs(out_dir, exist_ok=True)
    steps = args.steps or RL[preset]["steps"]
    S = args.warmup_steps if args.warmup_steps is not None else default_warmup(steps)
    print(f"dsrl: preset {preset}, device {device}, {steps} RL steps, S = {S}, seed {args.seed}")

    base_path = args.init or os.path.join(out_dir, "base.pt")
    try:
        base = load_checkpoint(base_path) if os.path.exists(base_path) or args.init else None
        pre = None  # pre-training's metrics, when this run pre-trains
        if args.init:
            print(f"starting from {base_path}")
        elif args.retrain or base is None or base.get("preset") != preset or not (base.get("done", True) or args.resume):
            pre = pretrain(preset, out_dir, device, seed=args.seed)[1]
        elif not base.get("done", True):
            pre = pretrain(preset, out_dir, device, seed=args.seed, resume=True)[1]
        else:
            print(f"reusing {base_path} (--retrain to pre-train again)")
        t_base = time.time()
        names = ["grpo", args.objective] if args.objective != "grpo" else ["grpo"]
        curves, models, history = {}, {}, {}
        for name in names:
            models[name], history[name], curves[name] = rl_train(
                base_path, name, os.path.join(out_dir, f"{name}.pt"), device, seed=args.seed, preset=preset,
                steps=steps, warmup_steps=S, warmup_lr=args.warmup_lr, resume=args.resume,
                log_path=os.path.join(out_dir, f"{name}.jsonl"))
    except (UserError, Diverged) as e:
        fail(e, 2 if isinstance(e, UserError) else 1)
    t_rl = time.time()
    if not is_rank0():
        return  # under torchrun rank 0 alone evaluates and writes the results

    ev = dict(preset=preset, seed=args.seed, problems=RL[preset]["eval_problems"], n=(args.eval_samples,) * 2,
              progress=True)
    results = {"base": final_metrics(model_from_checkpoint(load_checkpoint(base_path), device), **ev)}
    for name in names:
        results[name] = final_metrics(models[name], **ev)
    wall = time.time() - t_start
    ks = [k for k in (1, 4, 16) if k <= args.eval_samples]
    table = markdown_table({f"{name} | {split}": m for name, by_split in results.items() for split, m in by_split.items()},
                           [(f"pass@{k}", f"pass@{k}", 1) for k in ks] + [(f"{mk}_share", f"{mk} %", 100) for mk in MARKERS]
                           + [("length", "length", 1)], label="model | split")
    hw = f"{device}, {os.cpu_count()} CPU cores" if device == "cpu" else device
    rows = RL[preset]["batch_prompts"] * RL[preset]["group"]
    summary = {"preset": preset, "device": device, "seed": args.seed, "steps": steps, "warmup_steps": S,
               "warmup_lr": args.warmup_lr or RL[preset]["warmup_lr"], "lr": RL[preset]["lr"],
               "wall_seconds": {"total": wall, "pretrain_or_load": t_base - t_start, "rl": t_rl - t_base,
                                **{f"{name}_{part}": sum(rec[f"t_{key}"] for rec in history[name])  # rl_step's own
                                   for name in names for part, key in (("sampling", "sample"), ("learning", "learn"))}},
               # the work behind those seconds: FLOPs ~ 6 x params x tokens trained on, 2 x params x tokens sampled
               "tokens": {"pretrain": pre and pre["pretrain_tokens"], "rl_rows_per_step": rows,
                          **{f"{name}_sampled": round(rows * sum(rec["length"] for rec in history[name]))
                             for name in names}},
               "peak_memory_mb": peak_memory_mb(device),  # torch.cuda.max_memory_allocated on a GPU, else peak RSS
               "results": results, "curves": curves, "command": " ".join([launcher(), "dsrl.py", *sys.argv[1:]])}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    md = (f"# {' vs '.join(names)} ({preset} preset, seed {args.seed})\n\n"
          f"`{summary['command']}` on {hw}: {wall / 60:.1f} min, peak memory {summary['peak_memory_mb']:.0f} MB "
          f"({'GPU, allocated' if device.startswith('cuda') else 'resident'}); {steps} RL steps, S = {S}; "
          f"{RL[preset]['eval_problems']} problems x {args.eval_samples} samples per split.\n\n{table}\n")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    comparison_figures(out_dir, curves, results, S, names)
    print(md)
    print(f"wrote {out_dir}/results.json, results.md, accuracy.png, markers.png, pass_at_k.png")


if __name__ == "__main__":
    main()
