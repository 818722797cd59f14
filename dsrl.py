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


def final_metrics(model, preset, seed, problems, n=(8, 4), passk=0, progress=False):
    """Held-out metrics of a finished model: `problems` test and ood problems with n[0] and n[1] samples each,
    and pass@k up to 64 on `passk` test problems (0: none)."""
    tokens = RL[preset]["max_new_tokens"]
    final = {split: evaluate(model, make_split(split, problems), n=k, max_new_tokens=tokens, seed=seed + offset,
                             progress=progress)[0] for split, k, offset in (("test", n[0], 7), ("ood", n[1], 8))}
    if passk:
        final["passk"] = evaluate(model, make_split("test", passk), n=64, max_new_tokens=tokens, seed=seed + 11)[0]
    return final


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


# -----------------------------------------------------------------------------
# figures of dsrl.py and of the suite. A value is a (mean, 95% half-width) pair; the half-width is nan for one seed

def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, out_dir, name):
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=100)


def _ci(mc):
    """The interval half-width of a (mean, ci) pair; 0 when undefined (one seed)."""
    return 0.0 if mc[1] != mc[1] else mc[1]


def plot_curves(ax, curves, dashed=()):
    """curves: {label: [(step, mean, ci), ...]}: a line per label with its 95% band."""
    for label, c in curves.items():
        x, m, ci = zip(*c)
        ci = [_ci(p) for p in zip(m, ci)]
        line, = ax.plot(x, m, marker=".", label=label, ls="--" if label in dashed else "-")
        ax.fill_between(x, [a - b for a, b in zip(m, ci)], [a + b for a, b in zip(m, ci)], alpha=0.15,
                        color=line.get_color())
    ax.legend(fontsize=7)


def plot_markers(ax, shares):
    """shares: {model: {marker: (mean, ci)}} as fractions of responses: one group of bars per model."""
    names = list(shares)
    for i, mk in enumerate(MARKERS):
        ax.bar([j + 0.4 * i for j in range(len(names))], [100 * shares[n][mk][0] for n in names], 0.4,
               yerr=[100 * _ci(shares[n][mk]) for n in names], label=mk)
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


def figures(out_dir, curves, results, warmup_steps, names):
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


# -----------------------------------------------------------------------------
# the paper suite: every claim, every seed (python dsrl.py --suite paper)

SUITE_HP = {  # what the suite changes in RL[preset] so that 3 seeds of every run fit the time budget;
    # curves and every choice use the val split, the final numbers the test and ood splits
    "tiny": dict(eval_split="val", eval_every=1),
    "cpu": dict(eval_split="val", eval_problems=100, eval_samples=4, eval_every=5),
    "gpu": dict(eval_split="val", eval_every=10),
}
SUITE_STEPS = {"tiny": None, "cpu": 40, "gpu": None}  # RL steps per suite run (None: the preset's).
# cpu: 16 x 8 rollouts for 80 steps cost the same as 32 x 8 for 40, but GRPO did not learn with the smaller
# batch (val pass@1 0.29 -> 0.24, seed 0), while 32 x 8 reached 0.37 by step 40 (dsrl.py --preset cpu).
SWEEP = (0.025, 0.05, 0.10, 0.20)            # DSRL warmup S as a share of the RL steps (S = 0 is GRPO)
GRID_LRS = (1e-6, 1e-5, 3e-5, 1e-4)          # NSR-PreRL alone: where is it stable? (design.md section 2.1)
GRID_SHARE = 0.5                             # grid runs last half the RL steps (cpu: 20), evaluated 10 times
TOLERANCE = 0.03                             # "did not hurt": val pass@1 at most this far below the base
MECH_LRS = (1e-5, 3e-5, 1e-4)                # NSR-PreRL phases of 10% of the steps: which errors go first?
CORE = ("grpo", "psr-prerl", "prerl", "psr", "nsr", "w-reinforce")
PASSK = ("grpo", "dsrl-S5%", "psr", "nsr", "w-reinforce")  # pass@k up to 64 (claim C7), with the base model


def sweep_name(share):
    return f"dsrl-S{100 * share:g}%"


def grid_jobs(steps, seeds, base):
    """Stage 1: NSR-PreRL alone at each grid learning rate; an evaluation every tenth of the run gives the
    phase-length axis of the grid (a constant learning rate: the run at step k is a k-step phase)."""
    n = max(1, round(GRID_SHARE * steps))
    return [dict(name=f"grid-lr{lr:g}", objective="nsr-prerl", seed=seed, steps=n, base=base, lr=lr,
                 eval_every=max(1, n // 10)) for seed in seeds for lr in GRID_LRS]


def suite_jobs(steps, seeds, base, base_nohabits, nsr_lr):
    """Stage 2: every other RL run; the NSR phases use nsr_lr, chosen from the grid (choose_nsr_lr)."""
    S5 = default_warmup(steps)
    grid_steps = max(1, round(GRID_SHARE * steps))
    jobs = []
    for seed in seeds:
        jobs += [dict(name=obj, objective=obj, seed=seed, steps=steps, base=base) for obj in CORE]
        # C3's collapse came after ~150 of 348 steps in the paper: PSR-PreRL and full PreRL also run 3x longer
        jobs += [dict(name=f"{obj}-long", objective=obj, seed=seed, steps=3 * steps, base=base,
                      eval_every=max(1, 3 * steps // 12)) for obj in ("psr-prerl", "prerl")]
        jobs += [dict(name=sweep_name(share), objective="dsrl", seed=seed, steps=steps, base=base, warmup_lr=nsr_lr,
                      warmup_steps=max(1, round(share * steps))) for share in SWEEP]
        jobs.append(dict(name="nsr-rl-warmup", objective="nsr-rl-warmup", seed=seed, steps=steps, base=base,
                         warmup_steps=S5, warmup_lr=nsr_lr))
        # the same claims without the prompt-independent bad habits in the corpus (design.md section 2, property 8)
        jobs.append(dict(name="nohabits-base", kind="base", seed=seed, base=base_nohabits))
        jobs.append(dict(name="nohabits-grpo", objective="grpo", seed=seed, steps=steps, base=base_nohabits))
        jobs.append(dict(name="nohabits-dsrl", objective="dsrl", seed=seed, steps=steps, base=base_nohabits,
                         warmup_steps=S5, warmup_lr=nsr_lr))
        jobs.append(dict(name="nohabits-nsr-prerl", objective="nsr-prerl", seed=seed, steps=grid_steps,
                         base=base_nohabits, lr=nsr_lr, eval_every=max(1, grid_steps // 10)))
        # the mechanism (abstract: NSR-PreRL "prunes incorrect reasoning spaces"): do short NSR-PreRL
        # phases remove the prompt-independent habits (guess, repeat) faster than the prompt-dependent slips?
        n = max(1, round(max(SWEEP) / 2 * steps))
        jobs.append(dict(name="mech-base", kind="base", seed=seed, base=base))
        jobs += [dict(name=f"mech-lr{lr:g}", objective="nsr-prerl", seed=seed, steps=n, base=base, lr=lr,
                      eval_every=n) for lr in MECH_LRS]
    for j in jobs:
        j["passk"] = j["name"] in PASSK
    return jobs


def suite_final(model, preset, seed, passk):
    """What the suite reports of a finished model: twice its curve's problems for test and ood; pass@k on as many."""
    n = dict(RL[preset], **SUITE_HP[preset])["eval_problems"]
    return final_metrics(model, preset, seed, 2 * n, passk=n if passk else 0)


def write_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.replace(path + ".tmp", path)


def run_job(job, preset, device, out_dir, threads):
    """One suite job in its own process; writes runs/<name>-s<seed>.json (skipped if it exists: resumable).
    Kinds: an RL run (trained with resume, then suite_final), the base model's final metrics for one seed,
    a pre-training run, the alignment study."""
    import torch
    torch.set_num_threads(threads)
    path = os.path.join(out_dir, "runs", f"{job['name']}-s{job['seed']}")
    if os.path.exists(path + ".json"):  # reuse a finished job only if it ran with the same settings
        with open(path + ".json") as f:
            rec = json.load(f)
        if all(rec.get(k) == v for k, v in job.items()) and rec.get("suite_hp", SUITE_HP[preset]) == SUITE_HP[preset]:
            return path + ".json"
    kind = job.get("kind", "rl")
    job = {**job, "suite_hp": SUITE_HP[preset]}
    if kind == "pretrain":
        from reward import CorpusConfig
        _, m, _ = pretrain(preset, job["dir"], device, seed=job["seed"], resume=True, progress=False,
                           corpus=CorpusConfig(**job.get("corpus", {})))
        record = {**job, "base_eval": m}
    elif kind == "alignment":
        record = {**job, **alignment_study(job["base"], preset, device, seed=job["seed"])}
    elif kind == "base":
        model = model_from_checkpoint(load_checkpoint(job["base"]), device)
        record = {**job, "final": suite_final(model, preset, job["seed"], passk=job.get("passk", True))}
    else:
        over = {**SUITE_HP[preset], **{k: job[k] for k in ("lr", "warmup_lr", "eval_every") if k in job}}
        model, history, evals = rl_train(job["base"], job["objective"], path + ".pt", device, seed=job["seed"],
                                         preset=preset, steps=job["steps"], warmup_steps=job.get("warmup_steps"),
                                         progress=False, resume=True, **over)
        keep = ("reward", "length", "wait_share", "alternatively_share", "entropy_cond", "entropy_pre", "grad_norm",
                "logp_negative", "skipped", "t_sample", "t_learn")
        record = {**job, "evals": evals, "final": suite_final(model, preset, job["seed"], job.get("passk")),
                  "train": [{k: h[k] for k in ("step", "objective", *keep) if k in h} for h in history]}
    write_json(path + ".json", record)
    if os.path.exists(path + ".pt"):
        os.remove(path + ".pt")  # the JSON holds what the suite reports; checkpoints of 60 runs would be large
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
        lm, ent_m = pretrain_logprobs(model, ro.response)
    gap = logprob_gap(lc, lm, ro.mask)
    T, M = ro.mask.size(1), ro.mask
    # per position and per token: the gap with the entropy of P(y_t|x, y<t) and of P(y_t|y<t)
    # (are the big gaps the uncertain tokens, and uncertain in which space?)
    by_pos = [(float(gap[:, t][M[:, t]].mean()), float(ent[:, t][M[:, t]].mean()), float(ent_m[:, t][M[:, t]].mean()))
              for t in range(T) if M[:, t].any()]
    tok = [(round(float(g), 4), round(float(e), 4), round(float(em), 4)) for g, e, em in zip(gap[M], ent[M], ent_m[M])]
    return {"stats": stats, "per_sample": per_sample, "gap_by_position": by_pos,
            "gap_mean": float(gap.sum() / ro.mask.sum()), "gap_entropy_tokens": tok}


def run_pool(jobs, preset, device, out_dir, workers, desc):
    """Run jobs in `workers` spawned processes (torch threads split between them) with a progress bar."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context
    from tqdm import tqdm
    threads = max(1, (os.cpu_count() or 2) // workers) if device == "cpu" else 1
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_job, j, preset, device, out_dir, threads): j for j in jobs}
        for fut in tqdm(as_completed(futures), total=len(futures), desc=desc):
            if fut.exception() is not None:  # stop now, not after every other job has run
                pool.shutdown(wait=False, cancel_futures=True)
                j = futures[fut]
                raise RuntimeError(f"suite job {j['name']} (seed {j['seed']}) failed") from fut.exception()


def base_eval(d):
    with open(os.path.join(d, "base_eval.json")) as f:
        return json.load(f)


def load_runs(out_dir, jobs):
    runs = {}
    for j in jobs:
        with open(os.path.join(out_dir, "runs", f"{j['name']}-s{j['seed']}.json")) as f:
            runs.setdefault(j["name"], []).append(json.load(f))
    return runs


def curve(rs, key="pass@1"):
    """[(step, mean, ci)] of an eval metric over seeds."""
    return [(e["step"], *mean_ci([r["evals"][i][key] for r in rs])) for i, e in enumerate(rs[0]["evals"])]


def choose_nsr_lr(grid_runs, max_phase):
    """The largest grid learning rate whose NSR-PreRL phase keeps the seed-mean val pass@1 within TOLERANCE
    of the base at every evaluation up to max_phase steps: the strongest update that does not hurt (the
    smallest rate would always "win" a plain argmax by doing nothing). Uses the val split only."""
    ok = []
    for lr in GRID_LRS:
        c = curve(grid_runs[f"grid-lr{lr:g}"])
        base = c[0][1]
        if all(m >= base - TOLERANCE for step, m, _ in c if 0 < step <= max_phase):
            ok.append(lr)
    return max(ok) if ok else min(GRID_LRS)


def suite(args, device, preset):
    """Stage 1 (grid, base metrics, no-habits pre-training, alignment), the NSR learning-rate choice, stage 2
    (every other run); then aggregate over seeds into suite.json and draw the figures."""
    out_dir = os.path.join(args.out, preset, "suite")
    os.makedirs(os.path.join(out_dir, "runs"), exist_ok=True)
    t0 = time.time()
    steps = args.steps or SUITE_STEPS[preset] or RL[preset]["steps"]
    seeds = range(args.seeds)
    workers = args.workers or (2 if device == "cpu" else 8)
    base = os.path.join(args.out, preset, "base.pt")
    if not os.path.exists(base) or not load_checkpoint(base).get("done", True):
        pretrain(preset, os.path.join(args.out, preset), device, seed=0, resume=True)
    nohabits_dir = os.path.join(out_dir, "base-nohabits")
    nohabits = os.path.join(nohabits_dir, "base.pt")
    # a second habits base (pre-training seed 1) measures how much the base moves with the corpus stream alone
    seed1_dir = os.path.join(out_dir, "base-seed1")
    stage1 = [dict(name="pretrain-nohabits", kind="pretrain", seed=0, dir=nohabits_dir,
                   corpus=dict(guess=0.0, repeat=0.0)),
              dict(name="pretrain-habits", kind="pretrain", seed=1, dir=seed1_dir),
              dict(name="alignment", kind="alignment", seed=0, base=base)]
    stage1 += [dict(name="base", kind="base", seed=s, base=base) for s in seeds]
    stage1 += grid_jobs(steps, seeds, base)
    run_pool(stage1, preset, device, out_dir, workers, f"suite {preset} stage 1/2")
    grid = load_runs(out_dir, [j for j in stage1 if j["name"].startswith("grid")])
    max_phase = max(1, round(max(SWEEP) * steps))
    nsr_lr = choose_nsr_lr(grid, max_phase)
    print(f"NSR-PreRL learning rate for the NSR phases (val split, phases up to {max_phase} steps): {nsr_lr:g}")
    stage2 = suite_jobs(steps, seeds, base, nohabits, nsr_lr)
    run_pool(stage2, preset, device, out_dir, workers, f"suite {preset} stage 2/2")
    runs = load_runs(out_dir, [j for j in stage1 if j.get("kind") != "alignment"] + stage2)
    # DSRL's S: the sweep run with the best seed-mean final val pass@1 (never test, never ood)
    s_best = max(SWEEP, key=lambda sh: mean_ci([r["evals"][-1]["pass@1"] for r in runs[sweep_name(sh)]])[0])
    summary = {"preset": preset, "device": device, "cpu_cores": os.cpu_count(), "steps": steps, "seeds": args.seeds,
               "hp": dict(RL[preset], **SUITE_HP[preset]), "nsr_lr": nsr_lr, "nsr_lr_rule":
               f"largest of {GRID_LRS} keeping val pass@1 >= base - {TOLERANCE} up to {max_phase} steps",
               "dsrl_S_share": s_best, "dsrl": sweep_name(s_best),
               "command": " ".join(["python", "dsrl.py", *sys.argv[1:]]), "wall_minutes": (time.time() - t0) / 60,
               "pretrain": {"habits, pre-training seed 0 (the base)": base_eval(os.path.dirname(base)),
                            "habits, pre-training seed 1": base_eval(seed1_dir),
                            "no habits, pre-training seed 0": base_eval(nohabits_dir)},
               "configs": {}}
    for name, rs in runs.items():
        if "final" not in rs[0]:
            continue
        agg = {f"{split}/{key}": mean_ci([r["final"][split][key] for r in rs])
               for split in rs[0]["final"] for key in rs[0]["final"][split]}
        if "evals" in rs[0]:
            agg["curve"] = curve(rs)
            agg["wait_curve"] = curve(rs, "wait_share")
        summary["configs"][name] = agg
    write_json(os.path.join(out_dir, "suite.json"), summary)
    with open(os.path.join(out_dir, "runs", "alignment-s0.json")) as f:
        align = json.load(f)
    with open(os.path.join(out_dir, "suite.md"), "w") as f:
        f.write(f"# paper suite ({preset}, {args.seeds} seeds)\n\n`{summary['command']}`: this invocation "
                f"{summary['wall_minutes']:.1f} min (runs whose JSON was already on disk were reused)"
                f"\n\n{suite_table(summary)}\n\n{claims_report(summary, runs, align)}\n")
    suite_figures(out_dir, summary, runs, align)
    print(f"wrote {out_dir}/suite.json and figures: {len(stage1) + len(stage2)} jobs, "
          f"{summary['wall_minutes']:.1f} min; DSRL = {summary['dsrl']} at NSR lr {nsr_lr:g}")


def suite_figures(out_dir, summary, runs, align):
    """One PNG per claim (C1-C7) plus the NSR-PreRL grid, in out_dir."""
    plt = pyplot()
    cfg, dsrl_name = summary["configs"], summary["dsrl"]
    grid = {f"nsr-prerl lr {lr:g}": f"grid-lr{lr:g}" for lr in GRID_LRS}  # label -> configuration
    # C1: per-response cosine of grad log P(y|x) and grad log P(y)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    st = align["stats"]
    ax.hist(align["per_sample"]["cosine"], bins=30)
    ax.set(xlabel="cosine(grad log P(y|x), grad log P(y))", ylabel="responses",
           title=f"C1: mean {st['cosine_mean']:.2f}, {100 * st['inner_negative_share']:.1f}% negative (n={st['n']})")
    save(fig, out_dir, "c1_alignment.png")
    # C2: the per-position gap, coloured by the entropy of P(y_t|x, y<t); and the gap against entropy per token
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    gap, ent = [g[0] for g in align["gap_by_position"]], [g[1] for g in align["gap_by_position"]]
    sc = a1.scatter(range(len(gap)), gap, c=ent, cmap="viridis", s=12)
    fig.colorbar(sc, ax=a1, label="mean entropy of P(y_t|x,y<t) (nats)")
    a1.set(xlabel="response position t", ylabel="mean |log P(y_t|x,y<t) - log P(y_t|y<t)|", yscale="log",
           title="C2: where the two spaces differ")
    tokens = align["gap_entropy_tokens"]
    for col, label in ((1, "P(y_t|x,y<t)"), (2, "P(y_t|y<t)")):
        order = sorted(tokens, key=lambda x: x[col])
        bins = [order[i * len(order) // 10:(i + 1) * len(order) // 10] for i in range(10)]
        a2.plot([sum(x[col] for x in b) / len(b) for b in bins], [sum(x[0] for x in b) / len(b) for b in bins],
                marker="o", label=f"entropy of {label}")
    a2.set(xlabel="token entropy, decile mean (nats)", ylabel="mean gap (nats)", title="gap by entropy decile")
    a2.legend(fontsize=7)
    save(fig, out_dir, "c2_gap.png")
    # C3: PSR-PreRL and full PreRL over the whole run; NSR-PreRL (the grid) over its shorter runs
    fig, ax = plt.subplots(figsize=(6, 3.6))
    plot_curves(ax, {**{n: cfg[n]["curve"] for n in ("grpo", "psr-prerl-long", "prerl-long")},
                     **{label: cfg[n]["curve"] for label, n in grid.items()}}, dashed=grid)
    ax.set(xlabel="RL step", ylabel="val pass@1", title="C3: PreRL alone (mean, 95% CI over seeds)")
    save(fig, out_dir, "c3_prerl_alone.png")
    # C4: marker shares of final test responses, and the wait share along the NSR-PreRL runs
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    named = {n: n for n in ("base", "grpo", dsrl_name, "nsr-rl-warmup")} | grid
    plot_markers(a1, {label: {mk: cfg[n][f"test/{mk}_share"] for mk in MARKERS} for label, n in named.items()})
    a1.set(title="C4: markers after each run")
    plot_curves(a2, {label: cfg[n]["wait_curve"] for label, n in grid.items()})
    a2.set(xlabel="RL step", ylabel="val share with 'wait'", title="wait along NSR-PreRL")
    save(fig, out_dir, "c4_markers.png")
    # C5: GRPO vs DSRL along the run, and the S sweep (S = 0 is GRPO)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    plot_curves(a1, {n: cfg[n]["curve"] for n in ("grpo", dsrl_name)})
    a1.set(xlabel="RL step", ylabel="val pass@1", title="C5: DSRL vs GRPO")
    xs = [0] + [100 * sh for sh in SWEEP]
    for split, key in (("test", "test/pass@1"), ("ood", "ood/pass@1")):
        ys = [cfg["grpo"][key]] + [cfg[sweep_name(sh)][key] for sh in SWEEP]
        a2.errorbar(xs, [y[0] for y in ys], yerr=[_ci(y) for y in ys], marker="o", capsize=3, label=split)
    a2.set(xlabel="S: NSR-PreRL warmup, % of RL steps", ylabel="final pass@1", title="S sweep")
    a2.legend()
    save(fig, out_dir, "c5_dsrl.png")
    # C6: warmup in the conditional space vs the pre-train space, both followed by the same GRPO
    fig, ax = plt.subplots(figsize=(5, 3.2))
    names = ["grpo", "nsr-rl-warmup", sweep_name(0.05)] + ([dsrl_name] if dsrl_name != sweep_name(0.05) else [])
    ax.bar(names, [cfg[n]["test/pass@1"][0] for n in names], yerr=[_ci(cfg[n]["test/pass@1"]) for n in names],
           capsize=4)
    ax.set(ylabel="test pass@1", ylim=(min(cfg[n]["test/pass@1"][0] for n in names) - 0.05, None),
           title="C6: NSR warmup in P(y|x) vs P(y)")
    save(fig, out_dir, "c6_warmup.png")
    # C7: pass@k for k = 1..64
    fig, ax = plt.subplots(figsize=(5, 3.4))
    plot_passk(ax, {n: {int(k.split("@")[1]): v[0] for k, v in cfg[n].items() if k.startswith("passk/pass@")}
                    for n in ("base", "grpo", "psr", "nsr", "w-reinforce", sweep_name(0.05))})
    ax.set(ylabel="test pass@k", title="C7: pass@k (mean over seeds)")
    save(fig, out_dir, "c7_passk.png")
    # the NSR-PreRL grid: val pass@1 minus the base's, learning rate x phase length
    fig, ax = plt.subplots(figsize=(6, 2.8))
    rows = [[m - c[0][1] for _, m, _ in c] for c in (cfg[f"grid-lr{lr:g}"]["curve"] for lr in GRID_LRS)]
    im = ax.imshow(rows, cmap="RdBu", vmin=-0.3, vmax=0.3, aspect="auto")
    steps = [s for s, _, _ in cfg[f"grid-lr{GRID_LRS[0]:g}"]["curve"]]
    ax.set_xticks(range(len(steps)), steps)
    ax.set_yticks(range(len(GRID_LRS)), [f"{lr:g}" for lr in GRID_LRS])
    ax.set(xlabel="NSR-PreRL phase length (steps)", ylabel="learning rate",
           title=f"val pass@1 - base (chosen: {summary['nsr_lr']:g})")
    fig.colorbar(im, ax=ax)
    save(fig, out_dir, "grid.png")
    plt.close("all")


def paired(runs, a, b, key=("test", "pass@1")):
    """Mean and 95% CI over seeds of run a minus run b (same seed: same training problems, same sampler seed)."""
    by_seed = {r["seed"]: r["final"][key[0]][key[1]] for r in runs[b]}
    return mean_ci([r["final"][key[0]][key[1]] - by_seed[r["seed"]] for r in runs[a]])


def ratio(a, b):
    return f"{a / b:.2f}" if b else "inf" if a else "-"


def steps_to(c, target):
    """First evaluated step where a seed-mean curve reaches target (None: never)."""
    return next((step for step, m, _ in c if m >= target), None)


def claims_report(summary, runs, align):
    """The numbers RESULTS.md quotes, claim by claim, computed from the run JSONs (markdown)."""
    cfg, D = summary["configs"], summary["dsrl"]
    f = lambda mc, s=1: f"{mc[0] * s:.3f} ± {_ci(mc) * s:.3f}"
    st, L = align["stats"], []
    L += ["## C1 gradient alignment (base model)",
          f"{st['n']} responses: mean cosine {st['cosine_mean']:.3f}, negative inner products "
          f"{100 * st['inner_negative_share']:.1f}%, inner product mean {st['inner_mean']:.3g} "
          f"(min {st['inner_min']:.3g}, max {st['inner_max']:.3g})"]
    import statistics
    gp = [g[0] for g in align["gap_by_position"]]
    tg, te, tem = zip(*align["gap_entropy_tokens"])
    top = sorted(range(len(tg)), key=tg.__getitem__)[-len(tg) // 10:]  # the 10% of tokens with the largest gap
    L += ["## C2 per-token gap", "mean gap by position: " + ", ".join(f"t={t} {gp[t]:.2f}" for t in range(6)) +
          f", t>=6 {statistics.fmean(gp[6:]):.2f} nats (token-weighted mean {align['gap_mean']:.2f}); "
          f"Pearson r(gap, entropy of P(y|x)) {statistics.correlation(tg, te):.2f}, r(gap, entropy of P(y)) "
          f"{statistics.correlation(tg, tem):.2f} over {len(tg)} tokens; the 10% largest-gap tokens: mean entropy "
          f"{statistics.fmean(te[i] for i in top):.2f} under P(y|x) (all tokens {statistics.fmean(te):.2f}), "
          f"{statistics.fmean(tem[i] for i in top):.2f} under P(y) (all {statistics.fmean(tem):.2f})"]
    L += ["## C3 PreRL alone (val pass@1, seed mean)"]
    for name in ("grpo", "psr-prerl", "prerl", "psr-prerl-long", "prerl-long",
                 *[f"grid-lr{lr:g}" for lr in GRID_LRS]):
        c = cfg[name]["curve"]
        peak = max(c, key=lambda x: x[1])
        L.append(f"- {name}: step 0 {c[0][1]:.3f}, peak {peak[1]:.3f} at step {peak[0]}, final {c[-1][1]:.3f} "
                 f"(step {c[-1][0]}), min {min(m for _, m, _ in c):.3f}; test pass@1 {f(cfg[name]['test/pass@1'])}")
        if "logp_negative" in runs[name][0]["train"][0]:  # the prompt-free log P(y) of wrong samples, summed
            lp = [mean_ci([r["train"][i]["logp_negative"] for r in runs[name]])[0] for i in (0, -1)]
            w = cfg[name]["wait_curve"]
            L[-1] += f"; log P(y) of wrong samples {lp[0]:.1f} -> {lp[1]:.1f}; val wait {w[0][1]:.3f} -> {w[-1][1]:.3f}"
    L += ["## C4 markers (share of test responses; multipliers vs base and vs GRPO)"]
    for name in ("base", "grpo", D, sweep_name(0.05), "nsr-rl-warmup", "nsr", *[f"grid-lr{lr:g}" for lr in GRID_LRS]):
        cells = []
        for mk in MARKERS:
            v, b, g = (cfg[n][f"test/{mk}_share"][0] for n in (name, "base", "grpo"))
            cells.append(f"{mk} {100 * v:.1f}% (x{ratio(v, b)} base, x{ratio(v, g)} grpo; "
                         f"{cfg[name][f'test/{mk}_per_response'][0]:.3f} per response)")
        L.append(f"- {name}: " + "; ".join(cells) + f"; length {cfg[name]['test/length'][0]:.1f}")
    L += ["## C5 DSRL vs GRPO (paired by seed)"]
    for name in dict.fromkeys((D, sweep_name(0.05))):
        L.append(f"- {name} - grpo: test pass@1 {f(paired(runs, name, 'grpo'))}, ood pass@1 "
                 f"{f(paired(runs, name, 'grpo', ('ood', 'pass@1')))}")
    target = cfg["grpo"]["curve"][-1][1]
    L.append(f"- steps to GRPO's final val pass@1 ({target:.3f}): grpo {steps_to(cfg['grpo']['curve'], target)}, "
             f"{D} {steps_to(cfg[D]['curve'], target)}")
    L.append("- S sweep, test pass@1: S=0 (grpo) " + f(cfg["grpo"]["test/pass@1"]) + "; " +
             "; ".join(f"S={100 * sh:g}% {f(cfg[sweep_name(sh)]['test/pass@1'])}" for sh in SWEEP))
    L += ["## C6 conditional NSR warmup vs DSRL (test pass@1)",
          "; ".join(f"{n} {f(cfg[n]['test/pass@1'])}" for n in ("grpo", "nsr-rl-warmup", sweep_name(0.05))),
          f"paired: nsr-rl-warmup - grpo {f(paired(runs, 'nsr-rl-warmup', 'grpo'))}; {sweep_name(0.05)} - "
          f"nsr-rl-warmup {f(paired(runs, sweep_name(0.05), 'nsr-rl-warmup'))}"]
    L += ["## C7 pass@k (test, 64 samples per problem; mean ± 95% CI)"]
    ks = sorted(int(k.split("@")[1]) for k in cfg["base"] if k.startswith("passk/pass@"))
    L.append(markdown_table({n: cfg[n] for n in ("base", "grpo", "psr", "nsr", "w-reinforce", sweep_name(0.05))},
                            [(f"passk/pass@{k}", f"k={k}", 1) for k in ks], label="model"))
    L += ["## mechanism: which errors do short NSR-PreRL phases remove? (test, habits base)"]
    for name in ("mech-base", *[f"mech-lr{lr:g}" for lr in MECH_LRS]):
        a = {k: cfg[name][f"test/{k}"][0] for k in ("pass@1", "habit_guess", "habit_repeat")}
        slips = 1 - a["pass@1"] - a["habit_guess"] - a["habit_repeat"]
        L.append(f"- {name}: pass@1 {f(cfg[name]['test/pass@1'])}; guess {100 * a['habit_guess']:.2f}%, "
                 f"repeat {100 * a['habit_repeat']:.2f}%, other wrong {100 * slips:.1f}% of responses; "
                 f"habits {100 * (a['habit_guess'] + a['habit_repeat']) / max(1e-9, 1 - a['pass@1']):.1f}% of errors")
    L += ["## with and without the prompt-independent habits"]
    for name in ("base", "grpo", sweep_name(0.05), "nohabits-base", "nohabits-grpo", "nohabits-dsrl",
                 "grid-lr" + f"{summary['nsr_lr']:g}", "nohabits-nsr-prerl"):
        L.append(f"- {name}: test pass@1 {f(cfg[name]['test/pass@1'])}, wait "
                 f"{100 * cfg[name]['test/wait_share'][0]:.1f}%, length {cfg[name]['test/length'][0]:.1f}")
    for name, m in summary["pretrain"].items():
        L.append(f"- {name} (pre-training only, 200 test problems x 8): pass@1 {m['pass@1']:.3f}, "
                 f"wait {100 * m['wait_share']:.1f}%")
    return "\n".join(L)


def suite_table(summary):
    """Markdown: every configuration's final numbers, mean +- 95% CI over seeds."""
    return markdown_table(summary["configs"], label="config", cols=[
        ("test/pass@1", "test pass@1", 1), ("test/pass@8", "test pass@8", 1), ("ood/pass@1", "ood pass@1", 1),
        ("test/wait_share", "wait %", 100), ("test/alternatively_share", "alternatively %", 100),
        ("test/length", "length", 1)])


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
