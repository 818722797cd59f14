"""
Reflection tied to the model's own errors: on-policy retry data, and its control with that reason removed.

    python -m experiments.reflection --preset cpu --seeds 1             # seed 0's base: the tied and the control arm
    python -m experiments.reflection --preset tiny --seeds 1 --steps 8  # the machinery in a minute (a test)
    python -m experiments.reflection --preset cpu --problems 8000 --mix-share 0.7   # another route: more documents
    python -m experiments.reflection --preset cpu --check --steps 4500 --seeds 5 --suite   # the tied bases (RESULTS.md)
    python -m experiments.reflection --preset cpu --check --steps 4500 --suite --jobs nsr-prerl  # the tutorial's run

Per seed, from that seed's base (the committed results/<preset>/bases/s<seed>.pt, else OUT/<preset>/base.pt):
  1) sample the base on --problems train problems x G at temperature 1 and turn each sample into a retry document
     (retry_text): tied, ` wait ` and the right redo right after the sample's own first wrong step; control,
     the same samples with that step made right and one ` wait ` plus redo after a step drawn at random;
  2) continue pre-training the base (train.pretrain with init) for --steps steps on a stream where a document is one
     of those with probability --mix-share and a fresh corpus document otherwise (--scratch: pre-train a new model on
     that stream with the preset's schedule, so the retry data is there from the first step);
  3) probe the new model on its own samples of the val split: P(" wait" | right after a wrong step) and
     P(" wait" | right after a right step) teacher-forced with the prompt (P(y|x)) and without it (P(y)); the observed
     shares of wrong and right steps that ` wait ` follows, and of redos that are right (reward.wait_after_steps).
With --check the arms are corpora instead (no step 1): the base continues on the corpus with check digits
(reward.CorpusConfig.check: `23*7=161|1`, the last digit of the right result after every result, so a slip of the
last digit shows as two digits that differ), its reflections after its slips (tied) or, with the same draws, after
the right step each slip is turned into (control, reflect_after="random"). --switch does the same for the method
switch (CorpusConfig.transition_after): ` alternatively ` and the split route follow a slipped direct attempt at a
hard product (tied) or, with the same draws, that attempt made right (control), and the probe adds the same
numbers for ` alternatively` after the model's own direct attempts (switch_table; the same rule).
The base itself is probed the same way. --suite then runs the paper's claims on the tied and the control bases
(claim_jobs; each decided by RULES). The rule, fixed before the runs: a model's reflection is tied to its errors
when both teacher-forced ratios are at least 3, the observed ratio at least 3, and at least 70% of its redos are right.
Every step of every run is resumable: a finished file is reused. A route (its --problems, --mix-share, --lr,
--steps, --scratch, --check, --reflect) has its own folder, OUT/<preset>/reflection/<route>/, named by the values
that differ from ROUTE.
"""
import json
import os
import random
import re
import time

import torch

from dsrl import RL, committed_base, default_warmup, half_width, plot_curves, pyplot, save
from experiments.bases import export
from experiments.claims import paired, steps_to
from experiments.mechanisms import run_mechanism_job, switch_after_steps, wait_probe, wait_probe_set
from experiments.report import changed_name, mean_ci, write_json
from experiments.suite import SUITE_STEPS, curve, load_runs, run_pool, suite_setup
from model import load_checkpoint, model_from_checkpoint
from reward import (MARKERS, SPLITS, UserError, fail, hard_product, make_problem, make_split, parse_question,
                    solution_steps, wait_after_steps)
from sample import generate, prompt_ids
from train import TRAIN, common_args, pretrain, pretrain_config

G = 4                          # base samples per problem the retry documents are made from
ROUTE = dict(problems=1000,    # train problems sampled for retry documents
             mix_share=0.5,    # share of the continued pre-training's documents that are retry documents
             steps=1500, lr=1e-3,  # continued pre-training (a fresh AdamW, warmup-cosine to lr/10)
             scratch=0,        # 1: a new model pre-trained on the mixed stream instead (TRAIN[preset]'s schedule)
             check=0,          # 1: no retry documents; the corpus with check digits (CorpusConfig.check), its
                               # reflections after its slips (tied) or after right steps at random (control)
             reflect=0.5,      # the corpus documents' share of slips followed by a reflection (CorpusConfig.reflect)
             switch=0)         # 1: the method switch after a slipped attempt at a hard product (tied) or, with the
                               # same draws, after the attempt made right (control) (CorpusConfig.transition_after)
PROBE_PROBLEMS = 64            # val problems x G samples for the probe
TIED = dict(ratio=3.0, redo=0.7)  # the rule (module docstring)
ARMS = {"tied": True, "control": False}


def retry_text(problem, text, rng, tied=True):
    """On-policy retry data (Ye et al., "Physics of Language Models, Part 2.2": a wrong step, a retry marker, the
    correction): a model's own solution `text` of `problem`, read step by step against the reference order, cut
    after its first wrong result, then ` wait ` and the right redo, then the remaining reference steps, all right.
    tied=False is the control with the reflection's reason removed: the same prefix with the wrong result silently
    made right, and one ` wait ` plus redo after a step drawn at random from the whole solution, so that the
    reflection no longer follows the model's own slips. Steps without check digits only. None when the text has no
    wrong step before it leaves the reference order (another order, a method switch, a reflection of its own, an
    answer before the last step)."""
    steps = solution_steps(*parse_question(problem.question))
    written = text.split(";")
    for k, (a, op, b, r) in enumerate(steps):
        if k >= len(written):
            return None
        m = re.fullmatch(r"([0-9]+)([-+*])([0-9]+)=(-?[0-9]+)", written[k])
        if m is None or (int(m.group(1)), m.group(2), int(m.group(3))) != (a, op, b):
            return None  # left the reference order (or the format) before any wrong result
        if int(m.group(4)) != r:
            break
    else:
        return None  # every step right: nothing to retry
    right = [f"{a}{op}{b}={r}" for a, op, b, r in steps]
    if tied:
        parts = right[:k] + [f"{written[k]} wait {right[k]}"] + right[k + 1:]
    else:
        j = rng.randrange(len(steps))
        parts = right[:j] + [f"{right[j]} wait {right[j]}"] + right[j + 1:]
    return ";".join(parts) + f";#{steps[-1][3]}"


def retry_documents(model, problems, seed, tied, max_new_tokens):
    """(retry documents as texts with their prompt, stats) from G samples per problem of `model`."""
    ro = generate(model, [prompt_ids(p) for p in problems], G=G, max_new_tokens=max_new_tokens,
                  generator=torch.Generator(device=model.lm_head.weight.device).manual_seed(seed))
    rng, docs = random.Random(seed), []
    for i, text in enumerate(ro.texts):
        p = problems[i // G]
        doc = retry_text(p, text, rng, tied=tied)
        if doc is not None:
            docs.append(p.prompt + doc)
    return docs, {"samples": len(ro.texts), "documents": len(docs)}


def probe(model, seed, max_new_tokens, switch=False):
    """The reflection numbers of `model` on its own samples of PROBE_PROBLEMS val problems (module docstring);
    switch=True: the same for ` alternatively` after direct attempts at a hard product (switch_* keys: both
    teacher-forced ratios, the observed one, and the share of switches that end on the right product), on samples
    of 2 x PROBE_PROBLEMS other val problems that each hold a hard product."""
    problems = make_split("val", PROBE_PROBLEMS, seed=seed + 5)
    out = wait_probe(model, wait_probe_set(model, problems, G=G, max_new_tokens=max_new_tokens, seed=seed + 5))
    ro = generate(model, [prompt_ids(p) for p in problems], G=G, max_new_tokens=max_new_tokens,
                  generator=torch.Generator(device=model.lm_head.weight.device).manual_seed(seed + 6))
    out.update(wait_after_steps(ro.texts))
    for space in ("cond", "pre"):
        out[f"ratio_{space}"] = out[f"p_wait_slip_{space}"] / max(out[f"p_wait_right_{space}"], 1e-12)
    out["ratio_observed"] = out["wait_after_wrong"] / max(out["wait_after_right"], 1e-12)
    out["tied"] = (min(out["ratio_cond"], out["ratio_pre"], out["ratio_observed"]) >= TIED["ratio"]
                   and out["redo_right"] >= TIED["redo"])
    if switch:  # its own problems, each with a hard product (only some val problems hold one)
        m = "alternatively"
        problems = [p for p in make_split("val", 16 * PROBE_PROBLEMS, seed=seed + 7)
                    if any(hard_product(a, op) for a, op, _, _ in solution_steps(*parse_question(p.question)))]
        problems = problems[:2 * PROBE_PROBLEMS]
        out.update(wait_probe(model, wait_probe_set(model, problems, G=G, max_new_tokens=max_new_tokens,
                                                    seed=seed + 7, marker=m), marker=m))
        ro = generate(model, [prompt_ids(p) for p in problems], G=G, max_new_tokens=max_new_tokens,
                      generator=torch.Generator(device=model.lm_head.weight.device).manual_seed(seed + 8))
        out.update(switch_after_steps(ro.texts))
        for space in ("cond", "pre"):
            out[f"switch_ratio_{space}"] = out[f"p_{m}_slip_{space}"] / max(out[f"p_{m}_right_{space}"], 1e-12)
        out["switch_ratio_observed"] = out["switch_after_wrong"] / max(out["switch_after_right"], 1e-12)
        out["switch_tied"] = (min(out["switch_ratio_cond"], out["switch_ratio_pre"], out["switch_ratio_observed"])
                              >= TIED["ratio"] and out["switch_right"] >= TIED["redo"])
    return out


def cached(path, make):
    """json at path, made by make() the first time (resumable)."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    rec = make()
    write_json(path, rec)
    return rec


def route_name(route):
    """The folder of a route: the values that differ from ROUTE, or "default"."""
    return changed_name(route, ROUTE, "default")


def run_arm(preset, base, seed, arm, route, out_dir, device):
    """One arm of one seed: retry documents, continued pre-training, probe. Returns its record, with the path of its
    model: its own when this route has trained it here (so that the claim runs from it are reused), else the
    committed results/<preset>/bases/<arm>-s<seed>.pt when that was made by this route, else a new one."""
    d = os.path.join(out_dir, f"{arm}-s{seed}")
    os.makedirs(d, exist_ok=True)
    new = RL[preset]["max_new_tokens"]
    committed = committed_base(preset, seed, f"{arm}-s")
    own = os.path.join(d, "base.pt")
    trained = os.path.exists(own) and load_checkpoint(own).get("done", False)
    ck = load_checkpoint(committed) if committed and not trained else None
    if ck is not None and dict(ROUTE, **ck.get("route", {})) == route:
        model = model_from_checkpoint(ck, device)
        rec = cached(os.path.join(d, "probe.json"), lambda: probe(model, seed, new, route["switch"]))
        return {"arm": arm, "seed": seed, "path": committed, "mix": ck.get("mix", {}),
                "test_pass@1": ck["base_eval"]["pass@1"], **rec}
    mix = None if route["check"] else os.path.join(d, "mix.jsonl")
    if mix is None:
        stats = {}
    elif not os.path.exists(mix):
        model = model_from_checkpoint(load_checkpoint(base), device)
        rng = random.Random(seed + 2000)
        problems = [make_problem(rng, SPLITS["train"][0]) for _ in range(route["problems"])]
        docs, stats = retry_documents(model, problems, seed, ARMS[arm], new)
        write_json(os.path.join(d, "mix_stats.json"), stats)
        with open(mix + ".tmp", "w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in docs)
        os.replace(mix + ".tmp", mix)
    if mix is not None:
        with open(os.path.join(d, "mix_stats.json")) as f:
            stats = json.load(f)
    init = None if route["scratch"] else base
    corpus = dict(reflect=route["reflect"])
    if route["check"]:
        corpus.update(check=True, reflect_after="slip" if ARMS[arm] else "random")
    if route["switch"]:
        corpus.update(transition_after="slip" if ARMS[arm] else "random")
    cfg = pretrain_config(preset, corpus=corpus, seed=seed, steps=route["steps"], lr=route["lr"], init=init, mix=mix,
                          mix_share=0.0 if mix is None else route["mix_share"], eval_every=max(1, route["steps"] // 5))
    _, m, _ = pretrain(cfg, d, device, resume=True, progress=True)
    model = model_from_checkpoint(load_checkpoint(os.path.join(d, "base.pt")), device)
    rec = cached(os.path.join(d, "probe.json"), lambda: probe(model, seed, new, route["switch"]))
    return {"arm": arm, "seed": seed, "path": os.path.join(d, "base.pt"), "mix": stats, "test_pass@1": m["pass@1"],
            **rec}


def table(rows):
    lines = ["| model | seed | documents | test pass@1 | P(wait) ratio with prompt | without | observed ratio | "
             "wait after wrong / right | redo right | tied |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['seed']} | {r.get('mix', {}).get('documents', '-')} | "
                     f"{r['test_pass@1']:.3f} | {r['ratio_cond']:.2f} | {r['ratio_pre']:.2f} | "
                     f"{r['ratio_observed']:.2f} | {r['wait_after_wrong']:.3f} / {r['wait_after_right']:.3f} | "
                     f"{r['redo_right']:.2f} | {'yes' if r['tied'] else 'no'} |")
    return "\n".join(lines)


def switch_table(rows):
    """table's numbers for ` alternatively` after direct attempts at a hard product (a route with switch=1)."""
    lines = ["| model | seed | P(alternatively) ratio with prompt | without | observed ratio | switch after wrong / "
             "right attempt (attempts) | switch right | tied |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['seed']} | {r['switch_ratio_cond']:.2f} | {r['switch_ratio_pre']:.2f} | "
                     f"{r['switch_ratio_observed']:.2f} | {r['switch_after_wrong']:.3f} / "
                     f"{r['switch_after_right']:.3f} ({r['wrong_attempts']} / {r['right_attempts']}) | "
                     f"{r['switch_right']:.2f} | {'yes' if r['switch_tied'] else 'no'} |")
    return "\n".join(lines)


def make_route(args, preset):
    """ROUTE with the command line's values; --scratch takes the preset's schedule unless --steps / --lr say."""
    route = dict(ROUTE, scratch=int(args.scratch), check=int(args.check), switch=int(args.switch))
    if args.scratch:
        route.update(steps=TRAIN[preset]["steps"], lr=TRAIN[preset]["lr"])
    route.update({k: v for k, v in (("problems", args.problems), ("mix_share", args.mix_share), ("steps", args.steps),
                                    ("lr", args.lr), ("reflect", args.reflect)) if v is not None})
    return route


def reflection(args, device, preset):
    route = make_route(args, preset)
    top = os.path.join(args.out, preset, "reflection")
    out_dir = os.path.join(top, route_name(route))
    os.makedirs(out_dir, exist_ok=True)
    t0, rows = time.time(), []
    for seed in args.only or range(args.seeds):
        base = committed_base(preset, seed) or os.path.join(args.out, preset, "base.pt")
        if not os.path.exists(base):
            pretrain(pretrain_config(preset, seed=seed), os.path.dirname(base), device, resume=True)
        model = model_from_checkpoint(load_checkpoint(base), device)
        rec = cached(os.path.join(top, f"base-s{seed}-probe{'-switch' if route['switch'] else ''}.json"),  # per base
                     lambda: probe(model, seed, RL[preset]["max_new_tokens"], route["switch"]))
        ck = load_checkpoint(base)
        rows.append({"arm": "base", "seed": seed, "test_pass@1": ck.get("base_eval", {}).get("pass@1", float("nan")),
                     **rec})
        rows += [run_arm(preset, base, seed, arm, route, out_dir, device) for arm in ARMS]
    if args.only:  # one process per seed by hand (two on two cores); the report comes from a later --seeds run
        print(table(rows) + (f"\n\n{switch_table(rows)}" if route["switch"] else ""))
        if args.suite:
            claims_suite(args, device, preset, {(r["arm"], r["seed"]): r["path"] for r in rows if r["arm"] in ARMS},
                         out_dir, report=False)
        return
    summary = {"preset": preset, "seeds": args.seeds, "route": route, "G": G, "rule": TIED, "rows": rows}
    n_seeds = f"{args.seeds} seed{'s' * (args.seeds > 1)}"
    text = (f"# reflection tied to the model's errors ({preset}, {n_seeds}, route {route_name(route)}: "
            f"{route})\n\n{table(rows)}\n")
    if route["switch"]:
        text += f"\n## ` alternatively` after direct attempts at a hard product\n\n{switch_table(rows)}\n"
    if args.suite:
        bases = {(r["arm"], r["seed"]): r["path"] for r in rows if r["arm"] in ARMS}
        claims, summary["claims"] = claims_suite(args, device, preset, bases, out_dir)
        text += (f"\n## the wait probe along {', '.join(args.jobs)} ({n_seeds}; reflection_probe.png)\n\n"
                 f"{claims}\n" if args.jobs else
                 f"\n## the paper's claims on both bases ({n_seeds}; reflection_claims.png)\n\n{claims}\n")
    summary["wall_minutes"] = (time.time() - t0) / 60
    for arm in ("base", *ARMS):
        summary[arm] = {k: mean_ci([r[k] for r in rows if r["arm"] == arm])
                        for k in ("ratio_cond", "ratio_pre", "ratio_observed", "redo_right", "test_pass@1") +
                        (("switch_ratio_cond", "switch_ratio_pre", "switch_ratio_observed", "switch_right")
                         if route["switch"] else ())}
    report = "reflection_probe" if args.suite and args.jobs else "reflection"  # a part of the suite: its own report
    write_json(os.path.join(out_dir, f"{report}.json"), summary)
    for r in rows:
        if args.export and r["arm"] in ARMS and r["path"].startswith(out_dir):  # not one that is committed already
            export(os.path.dirname(r["path"]), os.path.join(args.export, f"{r['arm']}-s{r['seed']}.pt"), r["seed"],
                   extra={"route": route, "mix": r["mix"]})
    with open(os.path.join(out_dir, f"{report}.md"), "w") as f:
        f.write(text)
    print(text)


# -----------------------------------------------------------------------------
# the paper's claims on the tied and the control bases (--suite)

NSR_LR = 1e-4  # the NSR-PreRL learning rate the paper suite's rule chose on the steady bases (RESULTS.md, C5)
RULES = {  # fixed before the runs; seed means with 95% t-intervals, runs paired within a seed
    "C1": "aligned: mean cosine of grad log P(y|x) and grad log P(y) > 0 and fewer than 5% negative inner products",
    "C3": "PreRL alone collapses: final val pass@1 more than 0.03 below step 0 (rises: more than 0.03 above)",
    "C4": "NSR-PreRL multiplies the markers: its final test shares of wait and of alternatively each at least 2x "
          "the base's; and P(wait | wrong step) rises along it (interval above 0) while P(wait | right) does not",
    "C5": "DSRL beats GRPO at equal steps: paired test pass@1 interval above 0",
    "C6": "the warmup's space matters: DSRL minus the NSR warmup in P(y|x), paired test pass@1 interval above 0",
}


def claim_jobs(arm, seed, base, steps):
    """The runs of one (base, seed): its metrics, C1's alignment, GRPO, PreRL, NSR-PreRL, DSRL, the conditional NSR
    warmup; the runs with probe=True track the wait probe (experiments.mechanisms) on the base's own samples."""
    S, half = default_warmup(steps), max(1, steps // 2)
    return [dict(name=f"{arm}-base", kind="base", seed=seed, base=base, passk=False),
            dict(name=f"{arm}-alignment", kind="alignment", seed=seed, base=base),
            dict(name=f"{arm}-grpo", objective="grpo", seed=seed, steps=steps, base=base, probe=True),
            dict(name=f"{arm}-prerl", objective="prerl", seed=seed, steps=steps, base=base),
            dict(name=f"{arm}-nsr-prerl", objective="nsr-prerl", seed=seed, steps=half, base=base, lr=NSR_LR,
                 eval_every=max(1, half // 10), probe=True),
            dict(name=f"{arm}-dsrl", objective="dsrl", seed=seed, steps=steps, base=base, warmup_lr=NSR_LR,
                 warmup_steps=S, probe=True),
            dict(name=f"{arm}-nsr-rl-warmup", objective="nsr-rl-warmup", seed=seed, steps=steps, base=base,
                 warmup_steps=S, warmup_lr=NSR_LR)]


def arm_claims(runs, arm):
    """{claim: (verdict, the numbers it rests on)} for one arm's runs (RULES)."""
    r = lambda n: runs[f"{arm}-{n}"]  # noqa: E731
    f = lambda mc: f"{mc[0]:+.3f} ± {half_width(mc):.3f}"  # noqa: E731
    lo = lambda mc: mc[0] - half_width(mc) if mc[1] == mc[1] else float("nan")  # noqa: E731
    out = {}
    cos = mean_ci([x["stats"]["cosine_mean"] for x in r("alignment")])
    neg = mean_ci([x["stats"]["inner_negative_share"] for x in r("alignment")])
    out["C1"] = ("aligned" if cos[0] > 0 and neg[0] < 0.05 else "not aligned",
                 f"cosine {cos[0]:.3f}, {100 * neg[0]:.1f}% negative")
    d3 = mean_ci([x["evals"][-1]["pass@1"] - x["evals"][0]["pass@1"] for x in r("prerl")])
    out["C3"] = ("collapses" if d3[0] < -0.03 else "rises" if d3[0] > 0.03 else "flat",
                 f"val pass@1 {f(d3)} from step 0 to {r('prerl')[0]['evals'][-1]['step']}")
    mult = {mk: mean_ci([x["final"]["test"][f"{mk}_share"] for x in r("nsr-prerl")])[0] /
            max(mean_ci([x["final"]["test"][f"{mk}_share"] for x in r("base")])[0], 1e-12) for mk in MARKERS}
    dp = lambda n, k: mean_ci([x["evals"][-1][f"p_wait_{k}_cond"] - x["evals"][0][f"p_wait_{k}_cond"]  # noqa: E731
                               for x in r(n)])  # the change of P(wait | a wrong / right step) along run n
    dw = {k: dp("nsr-prerl", k) for k in ("slip", "right")}
    markers, tie = min(mult.values()) >= 2, lo(dw["slip"]) > 0 and not lo(dw["right"]) > 0
    out["C4"] = ({(True, True): "reproduced", (True, False): "markers only", (False, True): "tie only",
                  (False, False): "not reproduced"}[markers, tie],
                 ", ".join(f"{mk} x{v:.2f}" for mk, v in mult.items()) +
                 f"; P(wait | wrong) {f(dw['slip'])}, P(wait | right) {f(dw['right'])} (GRPO: "
                 f"{f(dp('grpo', 'slip'))}, {f(dp('grpo', 'right'))})")
    d5 = paired(runs, f"{arm}-dsrl", f"{arm}-grpo")
    target = curve(r("grpo"))[-1][1]
    out["C5"] = ("reproduced" if lo(d5) > 0 else "not reproduced",
                 f"DSRL - GRPO {f(d5)}; steps to GRPO's final val pass@1 {target:.3f}: GRPO "
                 f"{steps_to(curve(r('grpo')), target)}, DSRL {steps_to(curve(r('dsrl')), target)}")
    d6 = paired(runs, f"{arm}-dsrl", f"{arm}-nsr-rl-warmup")
    out["C6"] = ("reproduced" if lo(d6) > 0 else "not reproduced", f"DSRL - NSR-RL warmup {f(d6)}")
    return out


def claims_table(runs):
    lines = ["| claim | rule | " + " | ".join(ARMS) + " |", "|---|---|" + "---|" * len(ARMS)]
    verdicts = {arm: arm_claims(runs, arm) for arm in ARMS}
    for c, rule in RULES.items():
        cells = [rule] + [f"**{verdicts[a][c][0]}**: {verdicts[a][c][1]}" for a in ARMS]
        lines.append(f"| {c} | " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")  # P(y|x) in a table
    return "\n".join(lines), verdicts


PROBED = ("nsr-prerl", "grpo")  # the claim runs whose wait probe the figure shows


def claims_figure(out_dir, runs, name="reflection_claims.png"):
    """P(wait | wrong step) and P(wait | right step) of the base's own samples along NSR-PreRL and GRPO (those of
    them in `runs`), per base."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(ARMS), figsize=(4.5 * len(ARMS), 3.4), sharey=True)
    for ax, arm in zip(axes, ARMS):
        shown = [n for n in PROBED if f"{arm}-{n}" in runs]
        plot_curves(ax, {f"{n} {label}": curve(runs[f"{arm}-{n}"], f"p_wait_{k}_cond") for n in shown
                         for k, label in (("slip", "after wrong"), ("right", "after right"))},
                    dashed=[f"{n} after right" for n in shown])
        ax.set(xlabel="RL step", ylabel="P(wait | step), with the prompt", title=f"{arm} base")
    save(fig, out_dir, name)
    plt.close("all")


def probe_table(runs):
    """P(wait | wrong step) and P(wait | right step), with the prompt, at the first and the last evaluation of every
    probed run in `runs` (seed means with 95% intervals): what --jobs nsr-prerl prints."""
    lines = ["| base | run | seeds | P(wait \\| wrong) at start -> end | P(wait \\| right) at start -> end | "
             "change wrong / right |", "|---|---|---|---|---|---|"]
    for arm in ARMS:
        for n in PROBED:
            rs = runs.get(f"{arm}-{n}")
            if not rs:
                continue
            cell = []
            for k in ("slip", "right"):
                a, b = (mean_ci([r["evals"][i][f"p_wait_{k}_cond"] for r in rs]) for i in (0, -1))
                d = mean_ci([r["evals"][-1][f"p_wait_{k}_cond"] - r["evals"][0][f"p_wait_{k}_cond"] for r in rs])
                cell.append((f"{a[0]:.3f} -> {b[0]:.3f}", f"{d[0]:+.3f}" + (f" ± {half_width(d):.3f}" if len(rs) > 1
                                                                             else "")))
            lines.append(f"| {arm} | {n} ({rs[0]['evals'][-1]['step']} steps) | {len(rs)} | {cell[0][0]} | "
                         f"{cell[1][0]} | {cell[0][1]} / {cell[1][1]} |")
    return "\n".join(lines)


def claims_suite(args, device, preset, bases, out_dir, report=True):
    """Every claim job on every (arm, seed) base in a pool of resumable runs, then the report and the figure."""
    steps = args.rl_steps or SUITE_STEPS[preset] or RL[preset]["steps"]
    jobs = [j for (arm, seed), base in bases.items() for j in claim_jobs(arm, seed, base, steps)
            if not args.jobs or j["name"].split("-", 1)[1] in args.jobs]
    os.makedirs(os.path.join(out_dir, "runs"), exist_ok=True)
    run_pool(jobs, preset, device, out_dir, args.workers, f"reflection claims {preset}", fn=run_mechanism_job)
    if not report:
        return None
    runs = load_runs(out_dir, jobs)
    if args.jobs:  # some of the runs only: the wait probe along them, no verdicts
        claims_figure(out_dir, runs, "reflection_probe.png")
        return probe_table(runs), None
    text, verdicts = claims_table(runs)
    claims_figure(out_dir, runs)
    return text, verdicts


def main(argv=None):
    ap = common_args(__doc__, f"continued pre-training steps (default {ROUTE['steps']})")
    ap.add_argument("--seeds", type=int, default=1, help="bases 0 .. N-1, each with both arms")
    ap.add_argument("--only", type=int, nargs="+", default=None, metavar="SEED",
                    help="make only these seeds' arms (and with --suite run their claim jobs), no report")
    ap.add_argument("--problems", type=int, default=None,
                    help=f"train problems sampled (x {G}) for retry documents (default {ROUTE['problems']})")
    ap.add_argument("--mix-share", type=float, default=None,
                    help=f"share of retry documents in the continued pre-training (default {ROUTE['mix_share']})")
    ap.add_argument("--lr", type=float, default=None, help=f"continued pre-training's peak lr (default {ROUTE['lr']})")
    ap.add_argument("--scratch", action="store_true", help="pre-train a new model on the mixed stream (the preset's "
                    "schedule) instead of continuing the base: retry data from the start of pre-training")
    ap.add_argument("--check", action="store_true", help="the arms are corpora instead of retry documents: check "
                    "digits after every step result, reflections after slips (tied) or after random right steps (control)")
    ap.add_argument("--switch", action="store_true", help="the corpus's method switch after slipped attempts at a "
                    "hard product (tied) or after the same attempts made right (control), and its probe")
    ap.add_argument("--reflect", type=float, default=None, help="share of the corpus's slips followed by a "
                    f"reflection in the continued pre-training (default {ROUTE['reflect']})")
    ap.add_argument("--suite", action="store_true", help="then the paper's claims (RULES) on the tied and the control "
                    "bases of every seed: about 20 minutes of one core per base on cpu")
    ap.add_argument("--jobs", nargs="+", choices=[j["name"].split("-", 1)[1] for j in claim_jobs("a", 0, "", 2)],
                    metavar="JOB", help="with --suite, only these claim runs (nsr-prerl: the tutorial's experiment, "
                    "tutorial/7-reflection.md); the report is then the wait probe along them "
                    "(reflection_probe.png), without verdicts")
    ap.add_argument("--rl-steps", type=int, default=None, help="RL steps of the claim runs (default: the paper suite's)")
    ap.add_argument("--workers", type=int, default=None, help="parallel processes of --suite (default 2 on cpu)")
    ap.add_argument("--export", metavar="DIR", help="also write DIR/<arm>-s<seed>.pt (weights, config, route) of "
                    "every arm and seed; results/<preset>/bases/ is where the runs look for committed ones")
    ap.add_argument("--probe", nargs="+", metavar="CKPT", help="only probe these checkpoints (the rule's numbers on "
                    "their own samples, --seed's val problems) and print them")
    a = ap.parse_args(argv)
    if a.probe:
        device, preset = suite_setup(a)
        rows = []
        for path in a.probe:
            try:
                model = model_from_checkpoint(load_checkpoint(path), device)
            except UserError as e:
                fail(e)
            rec = probe(model, a.seed, RL[preset]["max_new_tokens"], a.switch)
            rows.append({"arm": path, "seed": a.seed, "test_pass@1": load_checkpoint(path).get("base_eval", {}).get(
                "pass@1", float("nan")), **rec})
        print(table(rows) + (f"\n\n{switch_table(rows)}" if a.switch else ""))
        return
    if a.jobs and not a.suite:
        fail("--jobs picks claim runs of --suite: add --suite")
    if a.problems is not None and a.problems < 1:
        fail(f"--problems must be positive, got {a.problems}")
    if a.mix_share is not None and not 0 < a.mix_share <= 1:
        fail(f"--mix-share must be in (0, 1], got {a.mix_share}")
    if a.rl_steps is not None and a.rl_steps < 1:
        fail(f"--rl-steps must be positive, got {a.rl_steps}")
    if a.reflect is not None and not 0 <= a.reflect <= 1:
        fail(f"--reflect must be in [0, 1], got {a.reflect}")
    if a.lr is not None and a.lr <= 0:
        fail(f"--lr must be positive, got {a.lr}")
    try:
        reflection(a, *suite_setup(a))
    except UserError as e:  # e.g. an arm's checkpoint made with other settings: one line, not a traceback
        fail(e)


if __name__ == "__main__":
    main()
