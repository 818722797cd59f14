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
from train import (OBJECTIVES, RL, Diverged, check_rl_args, common_args, default_warmup, device_and_preset,
                   pretrain, rl_train)


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


# -----------------------------------------------------------------------------
# the paper suite: every claim, every seed (python dsrl.py --suite paper)

SWEEP = (0.025, 0.05, 0.10, 0.20)            # DSRL warmup S as a share of the RL steps (S = 0 is GRPO)
GRID_LRS = (1e-6, 1e-5, 3e-5, 1e-4)          # NSR-PreRL alone: where is it stable? (design.md section 2.1)
GRID_STEPS = 50
CORE = ("grpo", "dsrl", "nsr-rl-warmup", "nsr-prerl", "psr-prerl", "prerl", "psr", "nsr", "w-reinforce")
PASSK = ("grpo", "dsrl", "psr", "nsr", "w-reinforce")  # pass@k up to 64 (claim C7), with the base model


def suite_jobs(preset, steps, seeds, base, base_nohabits):
    """Every RL run of the suite as a dict; `name` identifies the configuration, `seed` the repetition."""
    S5 = default_warmup(steps)
    jobs = []
    for seed in seeds:
        for obj in CORE:
            jobs.append(dict(name=obj, objective=obj, seed=seed, steps=steps, warmup_steps=S5, base=base,
                             passk=obj in PASSK))
        for share in SWEEP:
            if round(share * steps) != S5:
                jobs.append(dict(name=f"dsrl-S{share:g}", objective="dsrl", seed=seed, steps=steps,
                                 warmup_steps=max(1, round(share * steps)), base=base))
        for lr in GRID_LRS:
            jobs.append(dict(name=f"grid-lr{lr:g}", objective="nsr-prerl", seed=seed, steps=min(GRID_STEPS, steps),
                             lr=lr, eval_every=max(1, min(GRID_STEPS, steps) // 10), base=base))
        for obj in ("grpo", "dsrl", "nsr-prerl"):  # the same claims without the prompt-independent bad habits
            jobs.append(dict(name=f"nohabits-{obj}", objective=obj, seed=seed, steps=steps, warmup_steps=S5,
                             base=base_nohabits))
    return jobs


def run_job(job, preset, device, out_dir, threads):
    """One suite run in its own process: train (resumable), evaluate, write runs/<name>-s<seed>.json."""
    import torch
    torch.set_num_threads(threads)
    path = os.path.join(out_dir, "runs", f"{job['name']}-s{job['seed']}")
    if os.path.exists(path + ".json"):
        return path + ".json"
    model, history, evals = rl_train(job["base"], job["objective"], path + ".pt", device, seed=job["seed"],
                                     preset=preset, steps=job["steps"], warmup_steps=job.get("warmup_steps"),
                                     progress=False, resume=True, lr=job.get("lr"), eval_every=job.get("eval_every"))
    hp = RL[preset]
    final = {split: evaluate(model, make_split(split, hp["eval_problems"]), n=16, max_new_tokens=hp["max_new_tokens"],
                             seed=job["seed"] + 7)[0] for split in ("test", "ood")}
    if job.get("passk"):
        final["passk"] = evaluate(model, make_split("test", hp["eval_problems"] // 2), n=64,
                                  max_new_tokens=hp["max_new_tokens"], seed=job["seed"] + 11)[0]
    keep = ("reward", "length", "wait_share", "alternatively_share", "entropy_cond", "entropy_pre", "grad_norm",
            "logp_negative", "skipped")
    record = {**job, "evals": evals, "final": final,
              "train": [{k: h[k] for k in ("step", "objective", *keep) if k in h} for h in history]}
    with open(path + ".json.tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".json.tmp", path + ".json")
    os.remove(path + ".pt")  # the JSON holds what the suite reports; checkpoints of 40+ runs would be large
    return path + ".json"


def mean_ci(values):
    """Mean and half-width of the 95% t-interval (n - 1 degrees of freedom)."""
    import statistics
    t95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
    n = len(values)
    m = statistics.fmean(values)
    return m, (t95.get(n - 1, 1.96) * statistics.stdev(values) / n ** 0.5 if n > 1 else float("nan"))


def alignment_study(base_path, preset, device, n=256, seed=0):
    """Claims C1 and C2 on the base model: per-response gradient alignment of log P(y|x) and log P(y), and
    the per-position log-prob gap against token entropy."""
    import torch
    from losses import conditional_logprobs, gradient_alignment, logprob_gap, pretrain_logprobs
    from sample import generate, prompt_ids
    model = model_from_checkpoint(load_checkpoint(base_path), device)
    G = 4
    problems = make_split("test", n // G, seed=seed + 3)
    ro = generate(model, [prompt_ids(p) for p in problems], G=G, max_new_tokens=RL[preset]["max_new_tokens"],
                  generator=torch.Generator(device=device).manual_seed(seed))
    stats, per_sample = gradient_alignment(model, ro, max_samples=n)
    with torch.no_grad():
        lc, ent = conditional_logprobs(model, ro)
        lm, _ = pretrain_logprobs(model, ro.response)
    gap = logprob_gap(lc, lm, ro.mask)
    T = ro.mask.size(1)
    by_pos = [(float(gap[:, t][ro.mask[:, t]].mean()), float(ent[:, t][ro.mask[:, t]].mean()))
              for t in range(T) if ro.mask[:, t].any()]
    return {"stats": stats, "per_sample": per_sample, "gap_by_position": by_pos,
            "gap_mean": float(gap.sum() / ro.mask.sum())}


def suite(args, device, preset):
    """Run every suite job (in parallel processes), then aggregate over seeds into suite.json."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context
    from tqdm import tqdm
    from reward import CorpusConfig
    out_dir = os.path.join(args.out, preset, "suite")
    os.makedirs(os.path.join(out_dir, "runs"), exist_ok=True)
    steps = args.steps or RL[preset]["steps"]
    base = os.path.join(args.out, preset, "base.pt")
    if not os.path.exists(base) or not load_checkpoint(base).get("done", True):
        pretrain(preset, os.path.join(args.out, preset), device, seed=0, resume=True)
    nohabits_dir = os.path.join(out_dir, "base-nohabits")
    nohabits = os.path.join(nohabits_dir, "base.pt")
    if not os.path.exists(nohabits) or not load_checkpoint(nohabits).get("done", True):
        pretrain(preset, nohabits_dir, device, seed=0, resume=True, corpus=CorpusConfig(guess=0.0, repeat=0.0))
    align_path = os.path.join(out_dir, "alignment.json")
    if not os.path.exists(align_path):
        with open(align_path, "w") as f:
            json.dump(alignment_study(base, preset, device), f)
    jobs = suite_jobs(preset, steps, range(args.seeds), base, nohabits)
    workers = args.workers or (2 if device == "cpu" else 8)
    threads = max(1, (os.cpu_count() or 2) // workers) if device == "cpu" else 1
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_job, j, preset, device, out_dir, threads) for j in jobs]
        for fut in tqdm(as_completed(futures), total=len(futures), desc=f"suite {preset}"):
            fut.result()
    runs = {}
    for j in jobs:
        with open(os.path.join(out_dir, "runs", f"{j['name']}-s{j['seed']}.json")) as f:
            runs.setdefault(j["name"], []).append(json.load(f))
    summary = {"preset": preset, "device": device, "steps": steps, "seeds": args.seeds,
               "command": " ".join(["python", "dsrl.py", *sys.argv[1:]]), "configs": {}}
    for name, rs in runs.items():
        agg = {}
        for split in ("test", "ood"):
            for key in rs[0]["final"][split]:
                agg[f"{split}/{key}"] = mean_ci([r["final"][split][key] for r in rs])
        agg["curve"] = [(e["step"], *mean_ci([r["evals"][i]["pass@1"] for r in rs])) for i, e in enumerate(rs[0]["evals"])]
        summary["configs"][name] = agg
    with open(os.path.join(out_dir, "suite.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {out_dir}/suite.json: {len(jobs)} runs, {len(runs)} configurations x {args.seeds} seeds")


def main(argv=None):
    ap = common_args(__doc__, "RL steps per run (default: the preset's)")
    ap.add_argument("--objective", default="dsrl", help=f"what to compare with GRPO: {', '.join(OBJECTIVES)}")
    ap.add_argument("--eval-samples", type=int, default=16, help="samples per problem in the final evaluation")
    ap.add_argument("--retrain", action="store_true", help="pre-train again even if base.pt exists")
    ap.add_argument("--suite", choices=("paper",), help="run every claim of the paper over --seeds seeds instead")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per suite configuration (at least 3 for the paper)")
    ap.add_argument("--workers", type=int, default=None, help="parallel suite processes (default 2 on cpu, 8 on gpu)")
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
        if args.suite:
            return suite(args, device, preset)
    except UserError as e:
        fail(e)
    out_dir = os.path.join(args.out, preset)
    os.makedirs(out_dir, exist_ok=True)
    steps = args.steps or RL[preset]["steps"]
    S = args.warmup_steps if args.warmup_steps is not None else default_warmup(steps)
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
