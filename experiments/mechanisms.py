"""
Why the toy differs from the paper: four mechanisms, each tested by runs of what already exists.

    python -m experiments.mechanisms --preset cpu --seeds 3    # 68 min on 2 AMD EPYC cores (RESULTS.md)
    python -m experiments.mechanisms --preset tiny --seeds 1   # the machinery in a minute (a test)

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
import random
import re
import sys
import time

import torch

from experiments.report import write_json
from experiments.suite import SUITE_HP, SUITE_STEPS, load_runs, run_job, run_pool, suite_args, suite_setup
from experiments.why import why_figures, why_report
from losses import flat_grad, objective_loss, pretrain_logprobs, token_logprobs
from model import load_checkpoint, model_from_checkpoint
from reward import (PAD_ID, TERSE, TOKEN_CLASSES, encode, hard_product, make_problem, make_split, SPLITS, STEP,
                    step_is_wrong)
from sample import Rollout, generate, prompt_ids, rewards, token_classes
from dsrl import RL, committed_base, rl_config

WARMUP_LR = 3e-5   # the DSRL warmup learning rate the paper suite chose on the val split (RESULTS.md)
WARMUP_SHARE = 0.1  # the S the paper suite chose (10% of the RL steps)


def base_paths(out_dir, seed, preset):
    """(faithful base, two-mode base) of a seed: the faithful one is the committed base where there is one."""
    return (committed_base(preset, seed) or os.path.join(out_dir, f"base-s{seed}", "base.pt"),
            os.path.join(out_dir, f"base-modes-s{seed}", "base.pt"))


def stage1_jobs(out_dir, seeds, preset):
    """One faithful and one two-mode base per seed, pre-training seed = run seed (a committed faithful base is
    not pre-trained again: its job records the pre-training stored in it)."""
    jobs = []
    for s in seeds:
        faithful, modes = base_paths(out_dir, s, preset)
        committed = dict(committed=faithful) if faithful == committed_base(preset, s) else {}
        jobs.append(dict(name="pretrain", kind="pretrain", seed=s, dir=os.path.dirname(faithful), **committed))
        jobs.append(dict(name="pretrain-modes", kind="pretrain", seed=s, dir=os.path.dirname(modes),
                         corpus=dict(modes=True)))
    return jobs


OFFICIAL = dict(weight_decay=0.01)  # verl's AdamW default, in every official-settings run
OFFICIAL_WARMUP = dict(OFFICIAL, warmup_coef=0.01)  # pretrain_loss_coef, at the GRPO learning rate


def stage2_jobs(out_dir, seeds, steps, lr, preset):
    """Per seed, on that seed's bases; the H2 probe runs inside the faithful-corpus NSR-PreRL runs (probe=True).
    Ordered by group over all seeds, so that every seed has a group before the next group starts: the bases and
    H1 / H2, then the H3 comparison, then H4, then H3's controls.
    Trimmed to fit 2 hours on 2 cores: no pass@k up to 64 (C7 is not re-run under the official settings: it is
    about Zhu et al.'s PSR / NSR, which have no warmup, and the two official settings they would see, weight decay
    and clip 0.2/0.28, are tested on GRPO here)."""
    S, short = max(1, round(WARMUP_SHARE * steps)), max(1, steps // 2)
    groups = [[], [], [], []]
    for s in seeds:
        faithful, modes = base_paths(out_dir, s, preset)
        nsr = dict(objective="nsr-prerl", seed=s, steps=short, base=faithful, probe=True, eval_every=max(1, short // 5))
        # 40-step runs evaluate every 10 steps instead of the suite's 5: the same curves at half the evaluation cost
        run = dict(seed=s, steps=steps, base=faithful, eval_every=max(1, steps // 4))
        terse = dict(run, base=modes)
        groups[0] += [dict(name="base", kind="base", seed=s, base=faithful, passk=False),
                      dict(name="shares", kind="shares", seed=s, base=faithful),
                      # H1: NSR-PreRL at the RL learning rate, all tokens vs the question's operands left out
                      dict(name="h1-nsr-prerl", lr=lr, **nsr),
                      dict(name="h1-nsr-prerl-masked", lr=lr, hp=dict(prerl_tokens="no-question-operands"), **nsr),
                      # H2: NSR-PreRL at the DSRL warmup rate (the H1 runs and the official one carry the probe too)
                      dict(name="h2-nsr-prerl", lr=WARMUP_LR, **nsr),
                      # C4 under the official warmup: NSR-PreRL alone, loss x 0.01 at the RL learning rate
                      dict(nsr, name="nsr-prerl-official", objective="dsrl", warmup_steps=short, warmup_lr=lr,
                           hp=OFFICIAL_WARMUP)]
        # H3: ours against the official settings
        groups[1] += [dict(name="grpo", objective="grpo", **run),
                      dict(name="dsrl", objective="dsrl", warmup_steps=S, warmup_lr=WARMUP_LR, **run),
                      dict(name="grpo-official", objective="grpo", hp=dict(OFFICIAL, eps_high=0.28), **run),
                      dict(name="dsrl-official", objective="dsrl", warmup_steps=S, warmup_lr=lr, hp=OFFICIAL_WARMUP,
                           **run)]
        # H4: the two-mode corpus, RL asks in the terse mode
        groups[2] += [dict(name="modes-base", kind="base", seed=s, base=modes, passk=False, hp=dict(prompt_tag=TERSE)),
                      dict(nsr, name="modes-nsr-prerl", lr=WARMUP_LR, base=modes, probe=False,
                           hp=dict(prompt_tag=TERSE)),
                      dict(name="modes-grpo", objective="grpo", hp=dict(prompt_tag=TERSE), **terse),
                      dict(name="modes-dsrl", objective="dsrl", warmup_steps=S, warmup_lr=WARMUP_LR,
                           hp=dict(prompt_tag=TERSE), **terse)]
        # H3's controls: the clip alone, the optimizer reset at the switch, the conditional-space warmup (C6)
        groups[3] += [dict(name="grpo-official-clip0.2", objective="grpo", hp=OFFICIAL, **run),
                      dict(name="dsrl-official-reset", objective="dsrl", warmup_steps=S, warmup_lr=lr,
                           hp=dict(OFFICIAL_WARMUP, reset_at_switch=True), **run),
                      dict(name="nsr-rl-warmup-official", objective="nsr-rl-warmup", warmup_steps=S, warmup_lr=lr,
                           hp=OFFICIAL_WARMUP, **run)]
    return [j for g in groups for j in g]


# -----------------------------------------------------------------------------
# H1: which tokens carry the gradient?

def gradient_shares(job, preset, device):
    """On one batch of base rollouts (training problems, the preset's B x G): the norm of the NSR-PreRL and of the
    GRPO gradient carried by each token class (reward.TOKEN_CLASSES). Each class's loss keeps the whole batch's
    token denominator, so the class gradients sum to the full gradient; share = |g_c| / sum over classes."""
    cfg = rl_config(preset, **SUITE_HP[preset])
    model = model_from_checkpoint(load_checkpoint(job["base"]), device)
    rng, G = random.Random(job["seed"] + 100), cfg.group
    problems = [make_problem(rng, SPLITS["train"][0]) for _ in range(cfg.batch_prompts)]
    ro = generate(model, [prompt_ids(p) for p in problems], G=G, max_new_tokens=cfg.max_new_tokens,
                  generator=torch.Generator(device=device).manual_seed(job["seed"] + 100))
    r = torch.tensor(rewards(ro, [p.answer for p in problems for _ in range(G)]), device=device)
    cls = token_classes(ro)
    out = {"reward": float(r.mean()), "token_share": {}}
    for name in ("nsr-prerl", "grpo"):
        full, st = objective_loss(name, model, ro, r, cfg, other_space=False)
        total, norms = st["tokens"], {}
        g_full = flat_grad(model, full).norm()
        for c, cname in enumerate(TOKEN_CLASSES):
            sub = Rollout(ro.prompt, ro.pad, ro.response, ro.mask & (cls == c), ro.finished, ro.texts)
            out["token_share"][cname] = float(sub.mask.sum() / ro.mask.sum())
            if not sub.mask.any():
                norms[cname] = 0.0
                continue
            loss, stc = objective_loss(name, model, sub, r, cfg, other_space=False)
            norms[cname] = float(flat_grad(model, loss * stc["tokens"] / max(1, total)).norm()) if stc["tokens"] else 0.0
        denom = sum(norms.values()) or 1.0
        out[name] = {"grad_norm": float(g_full), "norm": norms, "share": {k: v / denom for k, v in norms.items()},
                     "tokens": total}
    return out


# -----------------------------------------------------------------------------
# H2: can the model see its own slips?

def wait_probe_set(model, problems, G, max_new_tokens, seed, cap=300, marker="wait"):
    """Teacher-forcing items from base samples: for each complete step `a op b=r` of a response (the sample went
    on with ';' or ' '), the prefix up to r (and its check digit, if any) followed by ' ' + marker, and whether r
    slipped. marker "alternatively": direct attempts at a hard product only (reward.hard_product), the steps a
    method switch may follow. At most `cap` of each."""
    ro = generate(model, [prompt_ids(p) for p in problems], G=G, max_new_tokens=max_new_tokens,
                  generator=torch.Generator(device=model.lm_head.weight.device).manual_seed(seed))
    items = {True: [], False: []}
    for i, text in enumerate(ro.texts):
        for m in re.finditer(rf"(?:^|(?<=[;a-z ]))({STEP})(?=[; ])", text):
            if marker != "wait" and not hard_product(int(m.group(2)), m.group(3)):
                continue
            slipped = step_is_wrong(m.group(1))
            if slipped is not None and len(items[slipped]) < cap:
                items[slipped].append((prompt_ids(problems[i // G]), encode(text[:m.end()] + " " + marker)))
    return items


def switch_after_steps(texts):
    """Does a model switch method when an attempt fails? Over every direct attempt `a*b=r` at a hard product
    (reward.hard_product; the first step of a ';'-separated part) in `texts`: the share of wrong and of right attempts
    that ` alternatively ` follows, and the share of those switches whose route ends on the right product (the
    last step of the part two further on, after any reflection there)."""
    n = {True: 0, False: 0}
    switches = {True: 0, False: 0}
    switch_right = 0
    for t in texts:
        parts = t.split(";")
        for k, part in enumerate(parts):
            first, *rest = part.split(" alternatively ")
            m = re.fullmatch(rf"\s*{STEP}\s*", first)
            wrong = step_is_wrong(first)
            if m is None or wrong is None or not hard_product(int(m.group(1)), m.group(2)):
                continue
            n[wrong] += 1
            if rest:
                switches[wrong] += 1
                end = re.fullmatch(rf"\s*{STEP}\s*", parts[k + 2].split(" wait ")[-1]) if k + 2 < len(parts) else None
                switch_right += end is not None and int(end.group(4)) == int(m.group(1)) * int(m.group(3))
    return {"wrong_attempts": n[True], "right_attempts": n[False],
            "switch_after_wrong": switches[True] / max(n[True], 1),
            "switch_after_right": switches[False] / max(n[False], 1),
            "switch_right": switch_right / max(switches[True] + switches[False], 1)}


def wait_probe(model, items, marker="wait"):
    """Mean P(' ' + marker | prefix) over slipped and over right steps, with the prompt (P(y|x)) and without (P(y)):
    p_<marker>_{slip,right}_{cond,pre}."""
    device, out = model.lm_head.weight.device, {}
    n_wait = len(encode(" " + marker))
    was = model.training
    model.eval()
    for slipped, rows in items.items():
        key = f"p_{marker}_{'slip' if slipped else 'right'}"
        if not rows:
            out[f"{key}_cond"] = out[f"{key}_pre"] = float("nan")
            continue
        Tp, Tr = max(len(p) for p, _ in rows), max(len(y) for _, y in rows)
        prompt = torch.tensor([[PAD_ID] * (Tp - len(p)) + p for p, _ in rows], device=device)
        pad = torch.tensor([Tp - len(p) for p, _ in rows], device=device)
        resp = torch.tensor([y + [PAD_ID] * (Tr - len(y)) for _, y in rows], device=device)
        ends = torch.tensor([len(y) for _, y in rows], device=device)
        pos = torch.arange(Tr, device=device)[None]
        last = (pos >= ends[:, None] - n_wait) & (pos < ends[:, None])  # the marker's tokens
        with torch.no_grad():
            lc, _ = token_logprobs(model, prompt, resp, pad)
            lm, _ = pretrain_logprobs(model, resp)
        out[f"{key}_cond"] = float(((lc * last).sum(1)).exp().mean())
        out[f"{key}_pre"] = float(((lm * last).sum(1)).exp().mean())
        out[f"n_{'slip' if slipped else 'right'}" + ("" if marker == "wait" else f"_{marker}")] = len(rows)
    model.train(was)
    return out


def probe_for(job, device):
    """eval_extra for run_job: the H2 probe on a fixed set built from this job's base model (val split)."""
    if not job.get("probe"):
        return None
    base = model_from_checkpoint(load_checkpoint(job["base"]), device)
    items = wait_probe_set(base, make_split("val", 64, seed=job["seed"] + 5), G=4,
                           max_new_tokens=RL[job["preset"]]["max_new_tokens"], seed=job["seed"] + 5)
    return lambda model: wait_probe(model, items)


def run_mechanism_job(job, preset, device, out_dir, threads):
    return run_job(job, preset, device, out_dir, threads, kinds={"shares": gradient_shares},
                   eval_extra=lambda j, d: probe_for(dict(j, preset=preset), d))


def mechanisms(args, device, preset):
    """Stage 1 (the bases), stage 2 (every mechanism run); then mechanisms.json, mechanisms.md and a figure per
    hypothesis (experiments/why.py)."""
    out_dir = os.path.join(args.out, preset, "mechanisms")
    os.makedirs(os.path.join(out_dir, "runs"), exist_ok=True)
    t0 = time.time()
    seeds = range(args.seeds)
    steps = args.steps or SUITE_STEPS[preset] or RL[preset]["steps"]
    workers = args.workers  # None: suite.worker_devices' default
    stage1 = stage1_jobs(out_dir, seeds, preset)
    run_pool(stage1, preset, device, out_dir, workers, f"mechanisms {preset} stage 1/2")
    stage2 = stage2_jobs(out_dir, seeds, steps, RL[preset]["lr"], preset)
    run_pool(stage2, preset, device, out_dir, workers, f"mechanisms {preset} stage 2/2", fn=run_mechanism_job)
    runs = load_runs(out_dir, stage1 + stage2)
    meta = {"preset": preset, "device": device, "cpu_cores": os.cpu_count(), "steps": steps, "seeds": args.seeds,
            "S": max(1, round(WARMUP_SHARE * steps)), "warmup_lr": WARMUP_LR, "lr": RL[preset]["lr"],
            "command": " ".join(["python -m experiments.mechanisms", *sys.argv[1:]]), "wall_minutes": (time.time() - t0) / 60}
    summary, text = why_report(meta, runs)
    write_json(os.path.join(out_dir, "mechanisms.json"), summary)
    with open(os.path.join(out_dir, "mechanisms.md"), "w") as f:
        f.write(text)
    why_figures(out_dir, summary, runs)
    print(f"wrote {out_dir}/mechanisms.json, mechanisms.md and figures: {len(stage1) + len(stage2)} jobs, "
          f"{meta['wall_minutes']:.1f} min")


if __name__ == "__main__":
    a = suite_args(__doc__).parse_args()
    mechanisms(a, *suite_setup(a))
