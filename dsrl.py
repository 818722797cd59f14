"""
Dual Space RL on your machine, end to end:

    python dsrl.py                    # picks cuda > mps > cpu and the matching preset
    python dsrl.py --preset cpu       # a laptop: about 15 minutes on 2 cores

1) pre-train the base model (or reuse out/<preset>/base.pt);
2) from the same base, seed, steps and optimizer settings, run GRPO and DSRL (NSR-PreRL for the first
   S steps, then GRPO with the same optimizer; paper section 4);
3) evaluate base, GRPO and DSRL on the held-out and OOD splits (pass@k, markers, length);
4) write out/<preset>/results.json, results.md and PNG figures.
"""
import json
import os
import sys
import time

from model import load_checkpoint, model_from_checkpoint
from reward import MARKERS, UserError, fail, make_split
from sample import evaluate
from train import OBJECTIVES, RL, Diverged, check_rl_args, common_args, device_and_preset, pretrain, rl_train


def final_eval(model, preset, n, seed):
    """Held-out and OOD metrics of one model (k up to n)."""
    hp = RL[preset]
    return {split: evaluate(model, make_split(split, hp["eval_problems"]), n=n, max_new_tokens=hp["max_new_tokens"],
                            seed=seed + 7, progress=True)[0] for split in ("test", "ood")}


def results_table(results, n):
    """Markdown table: one row per model and split."""
    ks = [k for k in (1, 4, 16) if k <= n]
    head = ["model", "split"] + [f"pass@{k}" for k in ks] + [f"{m} %" for m in MARKERS] + ["length"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, by_split in results.items():
        for split, m in by_split.items():
            cells = [name, split] + [f"{m[f'pass@{k}']:.3f}" for k in ks]
            cells += [f"{100 * m[f'{mk}_share']:.1f}" for mk in MARKERS] + [f"{m['length']:.1f}"]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def figures(out_dir, curves, results, warmup_steps, names):
    """accuracy.png: held-out pass@1 vs RL step per run; markers.png: marker shares per model;
    pass_at_k.png: held-out pass@k per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, evals in curves.items():
        ax.plot([e["step"] for e in evals], [e["pass@1"] for e in evals], marker="o", label=name)
    ax.axvline(warmup_steps, color="gray", ls=":", label=f"S = {warmup_steps}")
    ax.set(xlabel="RL step", ylabel="held-out pass@1", title="GRPO vs " + names[-1])
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "accuracy.png"), dpi=120)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    w = 0.8 / len(results)
    for i, (name, by_split) in enumerate(results.items()):
        ax.bar([j + i * w for j in range(len(MARKERS))], [100 * by_split["test"][f"{m}_share"] for m in MARKERS],
               w, label=name)
    ax.set_xticks([j + w * (len(results) - 1) / 2 for j in range(len(MARKERS))], MARKERS)
    ax.set(ylabel="% of held-out responses", title="reflection and transition markers")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "markers.png"), dpi=120)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, by_split in results.items():
        ks = sorted(int(k[5:]) for k in by_split["test"] if k.startswith("pass@"))
        ax.plot(ks, [by_split["test"][f"pass@{k}"] for k in ks], marker="o", label=name)
    ax.set(xscale="log", xlabel="k", ylabel="held-out pass@k")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "pass_at_k.png"), dpi=120)
    plt.close("all")


def main(argv=None):
    ap = common_args(__doc__, "RL steps per run (default: the preset's)")
    ap.add_argument("--objective", default="dsrl", help=f"what to compare with GRPO: {', '.join(OBJECTIVES)}")
    ap.add_argument("--eval-samples", type=int, default=16, help="samples per problem in the final evaluation")
    ap.add_argument("--retrain", action="store_true", help="pre-train again even if base.pt exists")
    args = ap.parse_args(argv)
    t_start = time.time()
    try:
        device, preset = device_and_preset(args)
        if args.eval_samples < 1:
            raise UserError(f"--eval-samples must be positive, got {args.eval_samples}")
        args.lr = args.batch_prompts = args.group = args.temperature = None
        check_rl_args(args, preset)
    except UserError as e:
        fail(e)
    out_dir = os.path.join(args.out, preset)
    os.makedirs(out_dir, exist_ok=True)
    steps = args.steps or RL[preset]["steps"]
    S = args.warmup_steps if args.warmup_steps is not None else max(1, round(0.05 * steps))
    print(f"dsrl: preset {preset}, device {device}, {steps} RL steps, S = {S}, seed {args.seed}")

    base_path = os.path.join(out_dir, "base.pt")
    try:
        base = load_checkpoint(base_path) if os.path.exists(base_path) else None
        if args.retrain or base is None or base.get("preset") != preset or not (base.get("done", True) or args.resume):
            pretrain(preset, out_dir, device, seed=args.seed)
        elif not base.get("done", True):
            pretrain(preset, out_dir, device, seed=args.seed, resume=True)
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

    results = {"base": final_eval(model_from_checkpoint(load_checkpoint(base_path), device), preset,
                                  args.eval_samples, args.seed)}
    for name in names:
        results[name] = final_eval(models[name], preset, args.eval_samples, args.seed)
    wall = time.time() - t_start
    table = results_table(results, args.eval_samples)
    hw = f"{device}, {os.cpu_count()} CPU cores" if device == "cpu" else device
    summary = {"preset": preset, "device": device, "seed": args.seed, "steps": steps, "warmup_steps": S,
               "warmup_lr": args.warmup_lr or RL[preset]["warmup_lr"], "lr": RL[preset]["lr"],
               "wall_seconds": {"total": wall, "pretrain_or_load": t_base - t_start, "rl": t_rl - t_base},
               "results": results, "curves": curves, "command": " ".join(["python", "dsrl.py", *sys.argv[1:]])}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    md = (f"# {' vs '.join(names)} ({preset} preset, seed {args.seed})\n\n"
          f"`{summary['command']}` on {hw}: {wall / 60:.1f} min; {steps} RL steps, S = {S}; "
          f"{RL[preset]['eval_problems']} problems x {args.eval_samples} samples per split.\n\n{table}\n")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    figures(out_dir, curves, results, S, names)
    print(md)
    print(f"wrote {out_dir}/results.json, results.md, accuracy.png, markers.png, pass_at_k.png")


if __name__ == "__main__":
    main()
