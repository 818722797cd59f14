"""
Why the toy differs from the paper: four mechanisms, each tested by runs of what already exists.

    python dsrl.py --suite mechanisms --preset cpu --seeds 3    # about 2 hours on 2 CPU cores
    python dsrl.py --suite mechanisms --preset tiny --seeds 1   # the machinery in a minute (a test)

Stage 1 pre-trains one base per seed on the faithful corpus (its held-out loss and val pass@1 curve measure how
far the base moves with the data stream alone) and one per seed on the two-mode corpus (H4). Stage 2, per seed,
on that seed's base:
  H1  prompt tokens carry the update: the share of the NSR-PreRL (and GRPO) gradient norm per token class, and
      NSR-PreRL at the RL learning rate with the question's operands masked out of the loss;
  H2  the model cannot see its own slips: P(" wait" | a step that slipped) against P(" wait" | a right step),
      teacher-forced in both spaces on base samples, and tracked during NSR-PreRL;
  H3  our settings differ from the official ones: the warmup loss times 0.01 at the GRPO learning rate, weight
      decay 0.01, clip 0.2/0.2 in DSRL and 0.2/0.28 in GRPO (and 0.2/0.2), the optimizer reset at the switch as a
      control, the parameter update norm of every step;
  H4  a hidden mode leaks: on the two-mode corpus, RL asks in the terse mode only; does NSR-PreRL raise the
      markers there, and does DSRL then beat GRPO?
Curves use the val split, final numbers the test and ood splits. The report is experiments/why.py.
"""
import os

from experiments.suite import run_pool

WARMUP_LR = 3e-5   # the DSRL warmup learning rate the paper suite chose on the val split (RESULTS.md)
WARMUP_SHARE = 0.1  # the S the paper suite chose (10% of the RL steps)


def base_dirs(out_dir, seed):
    return os.path.join(out_dir, f"base-s{seed}"), os.path.join(out_dir, f"base-modes-s{seed}")


def stage1_jobs(out_dir, seeds):
    """One faithful and one two-mode base per seed, pre-training seed = run seed."""
    jobs = []
    for s in seeds:
        faithful, modes = base_dirs(out_dir, s)
        jobs.append(dict(name="pretrain", kind="pretrain", seed=s, dir=faithful))
        jobs.append(dict(name="pretrain-modes", kind="pretrain", seed=s, dir=modes, corpus=dict(modes=True)))
    return jobs


def mechanisms(args, device, preset):
    out_dir = os.path.join(args.out, preset, "mechanisms")
    os.makedirs(os.path.join(out_dir, "runs"), exist_ok=True)
    seeds = range(args.seeds)
    workers = args.workers  # None: suite.worker_devices' default
    run_pool(stage1_jobs(out_dir, seeds), preset, device, out_dir, workers, f"mechanisms {preset} stage 1/2")
