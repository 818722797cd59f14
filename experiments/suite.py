"""
The paper suite: every claim of the paper (C1-C7 in RESULTS.md) over several seeds, with mean and 95% interval.

    python -m experiments.suite --preset cpu --seeds 3      # about 95 minutes on 2 CPU cores
    python -m experiments.suite --preset tiny --seeds 1 --steps 2   # the machinery in a minute (a test)

Two stages, each a pool of independent, resumable jobs (one JSON per run and seed in OUT/<preset>/suite/runs/):
  1) the NSR-PreRL learning-rate grid (val split), the base model's metrics, a no-habits base and a second
     pre-training seed, the gradient-alignment study;
  2) after `choose_nsr_lr` has fixed the NSR learning rate by a stated rule, every other run: GRPO, PreRL and its
     variants, Zhu et al.'s PSR / NSR / W-REINFORCE, DSRL at four warmup lengths S, the conditional NSR warmup.
Curves and every choice use the val split; the final numbers come from the test and ood splits only. The claim
report and the figures are in experiments/claims.py.
"""
import json
import os
import sys
import time

import torch

from experiments.claims import GRID_LRS, MECH_LRS, SWEEP, claims_report, suite_figures, suite_table, sweep_name
from experiments.report import mean_ci, write_json
from losses import conditional_logprobs, gradient_alignment, logprob_gap, pretrain_logprobs
from model import load_checkpoint, model_from_checkpoint, rank_world
from reward import UserError, fail, make_split
from sample import final_metrics, generate, prompt_ids
from dsrl import RL, committed_base, default_warmup, rl_config, schedule
from train import common_args, device_and_preset, pretrain, pretrain_config, rl_train

SUITE_HP = {  # what the suite changes in RL[preset] so that 3 seeds of every run fit about an hour on 2 cores;
    # curves and every choice use the val split, the final numbers the test and ood splits
    "tiny": dict(eval_split="val", eval_every=1),
    "lab": dict(eval_split="val", eval_every=5),
    "cpu": dict(eval_split="val", eval_problems=100, eval_samples=4, eval_every=5),
    "gpu": dict(eval_split="val", eval_every=10),
}
SUITE_STEPS = {"tiny": None, "lab": None, "cpu": 40, "gpu": None}  # RL steps per suite run (None: the preset's).
# cpu: 16 x 8 rollouts for 80 steps cost the same as 32 x 8 for 40, but GRPO did not learn with the smaller
# batch (val pass@1 0.29 -> 0.24, seed 0), while 32 x 8 reached 0.37 by step 40 (dsrl.py --preset cpu).
GRID_SHARE = 0.5                             # grid runs last half the RL steps (cpu: 20), evaluated 10 times
TOLERANCE = 0.03                             # "did not hurt": val pass@1 at most this far below the base
CORE = ("grpo", "psr-prerl", "prerl", "psr", "nsr", "w-reinforce")
PASSK = ("grpo", "dsrl-S5%", "psr", "nsr", "w-reinforce")  # pass@k up to 64 (claim C7), with the base model


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
        # the same claims without the prompt-independent bad habits in the corpus (reward.CorpusConfig guess and repeat)
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


def suite_final(model, preset, seed, passk, tag="Q"):
    """What the suite reports of a finished model: twice its curve's problems for test and ood; pass@k on as many."""
    n = dict(RL[preset], **SUITE_HP[preset])["eval_problems"]
    return final_metrics(model, 2 * n, max_new_tokens=RL[preset]["max_new_tokens"], seed=seed, passk=n if passk else 0,
                         tag=tag)


def run_job(job, preset, device, out_dir, threads, kinds=None, eval_extra=None):
    """One suite job in its own process; writes runs/<name>-s<seed>.json (skipped if it exists: resumable).
    Kinds: an RL run (trained with resume, then suite_final), the base model's final metrics for one seed,
    a pre-training run, the alignment study, or kinds[kind](job, preset, device) -> dict for another suite's
    own measurements. job["hp"] overrides RL settings (dsrl.RLConfig); eval_extra(job, device) may return
    a function of the model whose numbers join every evaluation of an RL run."""
    torch.set_num_threads(threads)
    path = os.path.join(out_dir, "runs", f"{job['name']}-s{job['seed']}")
    if os.path.exists(path + ".json"):  # reuse a finished job only if it ran with the same settings
        with open(path + ".json") as f:
            rec = json.load(f)
        if all(rec.get(k) == v for k, v in job.items()) and rec.get("suite_hp", SUITE_HP[preset]) == SUITE_HP[preset]:
            return path + ".json"
    kind = job.get("kind", "rl")
    job = {**job, "suite_hp": SUITE_HP[preset]}
    tag = job.get("hp", {}).get("prompt_tag", "Q")
    if kinds and kind in kinds:
        record = {**job, **kinds[kind](job, preset, device)}
    elif kind == "pretrain" and job.get("committed"):  # a committed base: the pre-training recorded in it
        record = {**job, "base_eval": base_eval(job["committed"])}
    elif kind == "pretrain":
        cfg = pretrain_config(preset, seed=job["seed"], corpus=job.get("corpus"))
        _, m, _ = pretrain(cfg, job["dir"], device, resume=True, progress=False)
        record = {**job, "base_eval": m}
    elif kind == "alignment":
        record = {**job, **alignment_study(job["base"], preset, device, seed=job["seed"])}
    elif kind == "base":
        model = model_from_checkpoint(load_checkpoint(job["base"]), device)
        record = {**job, "final": suite_final(model, preset, job["seed"], job.get("passk", True), tag)}
    else:
        over = {**SUITE_HP[preset], **job.get("hp", {}),
                **{k: job[k] for k in ("lr", "warmup_lr", "eval_every") if k in job}}
        cfg = rl_config(preset, seed=job["seed"], steps=job["steps"], **over)
        model, history, evals = rl_train(job["base"], schedule(job["objective"], cfg, job.get("warmup_steps")), cfg,
                                         path + ".pt", device, resume=True, progress=False,
                                         eval_extra=eval_extra(job, device) if eval_extra else None)
        keep = ("reward", "length", "wait_share", "alternatively_share", "entropy_cond", "entropy_pre", "grad_norm",
                "logp_negative", "skipped", "t_sample", "t_learn", "lr", "update_norm")
        record = {**job, "evals": evals, "final": suite_final(model, preset, job["seed"], job.get("passk"), tag),
                  "train": [{k: h[k] for k in ("step", "objective", *keep) if k in h} for h in history]}
    write_json(path + ".json", record)
    for done in (path + ".pt", path + ".jsonl"):  # the JSON holds what the suite reports; 60 checkpoints are large
        if os.path.exists(done):
            os.remove(done)
    return path + ".json"


def alignment_study(base_path, preset, device, n=256, seed=0):
    """Claims C1 and C2 on the base model: per-response gradient alignment of log P(y|x) and log P(y), and
    the per-position log-prob gap against token entropy."""
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


def worker_devices(device, workers, gpus):
    """The device of each pool worker and a note for the progress bar. On a machine with several GPUs (device
    "cuda", gpus visible) one worker per GPU by default, each pinned to its own (cuda:i; more workers share them
    round-robin); otherwise `workers` workers (default 2 on cpu, 8 on one GPU) on `device`."""
    if device == "cuda" and gpus > 1:
        n = workers or gpus
        note = f"{n} workers, one GPU each" if n == gpus else f"{n} workers on {gpus} GPUs"
        return [f"cuda:{i % gpus}" for i in range(n)], note
    n = workers or (2 if device == "cpu" else 8)
    return [device] * n, f"{n} workers"


_WORKER_DEVICE = None  # set in each pool worker by _claim_device


def _claim_device(devices):
    """Pool initializer: this worker process takes the next device from the queue, for all of its jobs."""
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get()
    if _WORKER_DEVICE.startswith("cuda:"):
        torch.cuda.set_device(_WORKER_DEVICE)


def _on_worker_device(fn, job, preset, out_dir, threads):
    return fn(job, preset, _WORKER_DEVICE, out_dir, threads)


def run_pool(jobs, preset, device, out_dir, workers, desc, fn=None):
    """Run jobs in spawned worker processes (worker_devices: one per GPU on a machine with several, else
    `workers`; torch threads split between them on a CPU) with a progress bar; fn(job, preset, device, out_dir,
    threads) runs one job (default run_job) on its worker's device."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context
    from tqdm import tqdm
    devices, note = worker_devices(device, workers, torch.cuda.device_count() if device == "cuda" else 0)
    threads = max(1, (os.cpu_count() or 2) // len(devices)) if device == "cpu" else 1
    ctx = get_context("spawn")
    queue = ctx.Queue()
    for d in devices:
        queue.put(d)
    with ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_claim_device, initargs=(queue,)) as pool:
        futures = {pool.submit(_on_worker_device, fn or run_job, j, preset, out_dir, threads): j for j in jobs}
        for fut in tqdm(as_completed(futures), total=len(futures), desc=f"{desc} ({note})"):
            if fut.exception() is not None:  # stop now, not after every other job has run
                pool.shutdown(wait=False, cancel_futures=True)
                j = futures[fut]
                raise RuntimeError(f"suite job {j['name']} (seed {j['seed']}) failed") from fut.exception()


def base_eval(path):
    """Pre-training's metrics of the base at path: kept in a committed base's checkpoint, else the base_eval.json
    that train.pretrain wrote beside it."""
    ck = load_checkpoint(path)
    if "base_eval" in ck:
        return ck["base_eval"]
    with open(os.path.join(os.path.dirname(path), "base_eval.json")) as f:
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
    workers = args.workers  # None: worker_devices' default (one per GPU on a machine with several)
    base = committed_base(preset, 0) or os.path.join(args.out, preset, "base.pt")  # the committed base if there is one
    if not os.path.exists(base) or not load_checkpoint(base).get("done", True):
        pretrain(pretrain_config(preset), os.path.join(args.out, preset), device, resume=True)
    nohabits_dir = os.path.join(out_dir, "base-nohabits")
    nohabits = os.path.join(nohabits_dir, "base.pt")
    # a second habits base (pre-training seed 1) measures how much the base moves with the corpus stream alone
    seed1_dir = os.path.join(out_dir, "base-seed1")
    seed1 = committed_base(preset, 1) or os.path.join(seed1_dir, "base.pt")
    stage1 = [dict(name="pretrain-nohabits", kind="pretrain", seed=0, dir=nohabits_dir,
                   corpus=dict(guess=0.0, repeat=0.0)),
              dict(name="alignment", kind="alignment", seed=0, base=base)]
    if not committed_base(preset, 1):
        stage1.append(dict(name="pretrain-habits", kind="pretrain", seed=1, dir=seed1_dir))
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
               "command": " ".join(["python -m experiments.suite", *sys.argv[1:]]), "wall_minutes": (time.time() - t0) / 60,
               "base": os.path.relpath(base), "pretrain": {"habits, pre-training seed 0 (the base)": base_eval(base),
                                                           "habits, pre-training seed 1": base_eval(seed1),
                                                           "no habits, pre-training seed 0": base_eval(nohabits)},
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


def suite_args(doc):
    """The command line of the suites (this one and experiments/mechanisms.py); finished runs are always reused."""
    ap = common_args(doc, "RL steps per run (default: the suite's, SUITE_STEPS)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per configuration (at least 3 for the paper)")
    ap.add_argument("--workers", type=int, default=None,
                    help="parallel processes (default 2 on cpu, 8 on one GPU, one per GPU on several)")
    return ap


def suite_setup(args):
    """(device, preset) of a suite's command line; exits with one line on a bad flag."""
    try:
        device, preset = device_and_preset(args)
        if args.seeds < 1 or (args.workers is not None and args.workers < 1):
            raise UserError(f"--seeds and --workers must be positive, got {args.seeds} and {args.workers}")
        if rank_world()[1] > 1:
            raise UserError("the suites start their own processes (one per GPU): run them with python, not torchrun")
    except UserError as e:
        fail(e)
    return device, preset


if __name__ == "__main__":
    a = suite_args(__doc__).parse_args()
    suite(a, *suite_setup(a))
