"""
Reflection tied to the model's own errors: on-policy retry data, and its control with that reason removed.

    python -m experiments.reflection --preset cpu --seeds 1             # seed 0's base: the tied and the control arm
    python -m experiments.reflection --preset tiny --seeds 1 --steps 8  # the machinery in a minute (a test)
    python -m experiments.reflection --preset cpu --problems 8000 --mix-share 0.7   # another route: more documents
    python -m experiments.reflection --preset cpu --check                 # the corpus with check digits instead

Per seed, from that seed's base (the committed results/<preset>/bases/s<seed>.pt, else OUT/<preset>/base.pt):
  1) sample the base on --problems train problems x G at temperature 1 and turn each sample into a retry document
     (reward.retry_text): tied, ` wait ` and the right redo right after the sample's own first wrong step; control,
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
the right step each slip is turned into (control, reflect_after="random").
The base itself is probed the same way. The rule, fixed before the runs: a model's reflection is tied to its errors
when both teacher-forced ratios are at least 3, the observed ratio at least 3, and at least 70% of its redos are right.
Every step of every run is resumable: a finished file is reused. A route (its --problems, --mix-share, --lr,
--steps, --scratch, --check, --reflect) has its own folder, OUT/<preset>/reflection/<route>/, named by the values
that differ from ROUTE.
"""
import argparse
import json
import os
import random
import time

import torch

from dsrl import RL, committed_base
from experiments.mechanisms import wait_probe, wait_probe_set
from experiments.report import changed_name, mean_ci, write_json
from experiments.suite import suite_setup
from model import load_checkpoint, model_from_checkpoint
from reward import SPLITS, fail, make_problem, make_split, retry_text, wait_after_steps
from sample import generate, prompt_ids
from train import TRAIN, common_args, pretrain, pretrain_config

G = 4                          # base samples per problem the retry documents are made from
ROUTE = dict(problems=1000,    # train problems sampled for retry documents
             mix_share=0.5,    # share of the continued pre-training's documents that are retry documents
             steps=1500, lr=1e-3,  # continued pre-training (a fresh AdamW, warmup-cosine to lr/10)
             scratch=0,        # 1: a new model pre-trained on the mixed stream instead (TRAIN[preset]'s schedule)
             check=0,          # 1: no retry documents; the corpus with check digits (CorpusConfig.check), its
                               # reflections after its slips (tied) or after right steps at random (control)
             reflect=0.5)      # the corpus documents' share of slips followed by a reflection (CorpusConfig.reflect)
PROBE_PROBLEMS = 64            # val problems x G samples for the probe
TIED = dict(ratio=3.0, redo=0.7)  # the rule (module docstring)
ARMS = {"tied": True, "control": False}


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


def probe(model, seed, max_new_tokens):
    """The reflection numbers of `model` on its own samples of PROBE_PROBLEMS val problems (module docstring)."""
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
    """One arm of one seed: retry documents, continued pre-training, probe. Returns its record."""
    d = os.path.join(out_dir, f"{arm}-s{seed}")
    os.makedirs(d, exist_ok=True)
    new = RL[preset]["max_new_tokens"]
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
    cfg = pretrain_config(preset, corpus=corpus, seed=seed, steps=route["steps"], lr=route["lr"], init=init, mix=mix,
                          mix_share=0.0 if mix is None else route["mix_share"], eval_every=max(1, route["steps"] // 5))
    _, m, _ = pretrain(cfg, d, device, resume=True, progress=True)
    model = model_from_checkpoint(load_checkpoint(os.path.join(d, "base.pt")), device)
    rec = cached(os.path.join(d, "probe.json"), lambda: probe(model, seed, new))
    return {"arm": arm, "seed": seed, "mix": stats, "test_pass@1": m["pass@1"], **rec}


def table(rows):
    lines = ["| model | seed | documents | test pass@1 | P(wait) ratio with prompt | without | observed ratio | "
             "wait after wrong / right | redo right | tied |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['seed']} | {r.get('mix', {}).get('documents', '-')} | "
                     f"{r['test_pass@1']:.3f} | {r['ratio_cond']:.2f} | {r['ratio_pre']:.2f} | "
                     f"{r['ratio_observed']:.2f} | {r['wait_after_wrong']:.3f} / {r['wait_after_right']:.3f} | "
                     f"{r['redo_right']:.2f} | {'yes' if r['tied'] else 'no'} |")
    return "\n".join(lines)


def make_route(args, preset):
    """ROUTE with the command line's values; --scratch takes the preset's schedule unless --steps / --lr say."""
    route = dict(ROUTE, scratch=int(args.scratch), check=int(args.check))
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
    for seed in range(args.seeds):
        base = committed_base(preset, seed) or os.path.join(args.out, preset, "base.pt")
        if not os.path.exists(base):
            pretrain(pretrain_config(preset, seed=seed), os.path.dirname(base), device, resume=True)
        model = model_from_checkpoint(load_checkpoint(base), device)
        rec = cached(os.path.join(top, f"base-s{seed}-probe.json"),  # one per base, shared by the routes
                     lambda: probe(model, seed, RL[preset]["max_new_tokens"]))
        ck = load_checkpoint(base)
        rows.append({"arm": "base", "seed": seed, "test_pass@1": ck.get("base_eval", {}).get("pass@1", float("nan")),
                     **rec})
        rows += [run_arm(preset, base, seed, arm, route, out_dir, device) for arm in ARMS]
    summary = {"preset": preset, "seeds": args.seeds, "route": route, "G": G, "rule": TIED, "rows": rows,
               "wall_minutes": (time.time() - t0) / 60}
    for arm in ("base", *ARMS):
        summary[arm] = {k: mean_ci([r[k] for r in rows if r["arm"] == arm])
                        for k in ("ratio_cond", "ratio_pre", "ratio_observed", "redo_right", "test_pass@1")}
    write_json(os.path.join(out_dir, "reflection.json"), summary)
    text = (f"# reflection tied to the model's errors ({preset}, {args.seeds} seeds, route {route_name(route)}: "
            f"{route})\n\n{table(rows)}\n")
    with open(os.path.join(out_dir, "reflection.md"), "w") as f:
        f.write(text)
    print(text)


def main(argv=None):
    ap = common_args(__doc__, f"continued pre-training steps (default {ROUTE['steps']})")
    ap.add_argument("--seeds", type=int, default=1, help="bases 0 .. N-1, each with both arms")
    ap.add_argument("--problems", type=int, default=None,
                    help=f"train problems sampled (x {G}) for retry documents (default {ROUTE['problems']})")
    ap.add_argument("--mix-share", type=float, default=None,
                    help=f"share of retry documents in the continued pre-training (default {ROUTE['mix_share']})")
    ap.add_argument("--lr", type=float, default=None, help=f"continued pre-training's peak lr (default {ROUTE['lr']})")
    ap.add_argument("--scratch", action="store_true", help="pre-train a new model on the mixed stream (the preset's "
                    "schedule) instead of continuing the base: retry data from the start of pre-training")
    ap.add_argument("--check", action="store_true", help="the arms are corpora instead of retry documents: check "
                    "digits after every step result, reflections after slips (tied) or after random right steps (control)")
    ap.add_argument("--reflect", type=float, default=None, help="share of the corpus's slips followed by a "
                    f"reflection in the continued pre-training (default {ROUTE['reflect']})")
    ap.add_argument("--workers", type=int, default=None, help=argparse.SUPPRESS)  # suite_setup checks it
    a = ap.parse_args(argv)
    if a.problems is not None and a.problems < 1:
        fail(f"--problems must be positive, got {a.problems}")
    if a.mix_share is not None and not 0 < a.mix_share <= 1:
        fail(f"--mix-share must be in (0, 1], got {a.mix_share}")
    if a.reflect is not None and not 0 <= a.reflect <= 1:
        fail(f"--reflect must be in [0, 1], got {a.reflect}")
    if a.lr is not None and a.lr <= 0:
        fail(f"--lr must be positive, got {a.lr}")
    reflection(a, *suite_setup(a))


if __name__ == "__main__":
    main()
