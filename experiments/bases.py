"""
Base models that hold still: one pre-training recipe (train.TRAIN), several seeds and thread counts, and whether
each run ends on a plateau.

    python -m experiments.bases --preset cpu --seeds 3                 # seeds 0, 1, 2 with this machine's threads
    python -m experiments.bases --preset cpu --seeds 1 --threads 1 2 4 # one seed, three thread counts
    python -m experiments.bases --preset cpu --seeds 3 --export results/cpu/bases   # + weights-only sN.pt
    python -m experiments.bases --measure results/cpu/bases/s0.pt results/cpu/bases/s1.pt  # the measurement's noise

Each run is train.pretrain in its own process (torch.set_num_threads), resumable: a finished run is reused, an
interrupted one resumes from its checkpoint. Runs land in OUT/<preset>/bases/s<seed>-t<threads>/. The report
(bases.md, bases.json, bases.png beside them) gives each run's test pass@1 (train.pretrain's final evaluation:
TRAIN's eval_problems x eval_samples, seed 0 of the sampler) and its plateau: the spread (max - min) of val pass@1
and of the held-out loss over the last 20% of the curve's points. The rule, fixed before the runs: a run is on a
plateau when its last-20% val pass@1 spread is at most 0.05 and its held-out loss spread at most 0.02 nats.
"""
import argparse
import json
import os
import subprocess
import sys

from dsrl import pyplot, save
from experiments.report import changed_name, mean_ci, write_json
from model import load_checkpoint, save_checkpoint
from reward import UserError, fail
from train import TRAIN

PLATEAU_PASS, PLATEAU_LOSS = 0.05, 0.02  # the plateau rule (module docstring)

RUN_ONE = """
import json, sys, torch
import train as T
preset, seed, threads, out, recipe = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
torch.set_num_threads(threads)
corpus = {k[len("corpus_"):]: recipe.pop(k) for k in list(recipe) if k.startswith("corpus_")}
cfg = T.pretrain_config(preset, seed=seed, eval_every=max(1, recipe["steps"] // 20), corpus=corpus, **recipe)
T.pretrain(cfg, out, "cpu", resume=True)
"""


def flat_recipe(preset):
    """TRAIN[preset] with its corpus fields as corpus_<field> keys (one flat dict of numbers)."""
    recipe = dict(TRAIN[preset])
    corpus = recipe.pop("corpus", {})
    return {**recipe, **{f"corpus_{k}": v for k, v in corpus.items()}}


def run_dir(out, preset, recipe, seed, threads):
    name = changed_name(recipe, flat_recipe(preset), "recipe")
    return os.path.join(out, preset, "bases", name, f"s{seed}-t{threads}")


def pretrain_run(preset, recipe, seed, threads, d):
    """One pre-training in a subprocess with `threads` torch threads (skipped when d/base_eval.json is there)."""
    if os.path.exists(os.path.join(d, "base_eval.json")) and load_checkpoint(os.path.join(d, "base.pt")).get("done"):
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    subprocess.run([sys.executable, "-c", RUN_ONE, preset, str(seed), str(threads), d, json.dumps(recipe)], cwd=root,
                   env=env, check=True)


def plateau(curve):
    """(val pass@1 spread, held-out loss spread) over the last 20% of the curve's points (at least 2)."""
    tail = curve[-max(2, round(0.2 * len(curve))):]
    p, l = [c["val_pass@1"] for c in tail], [c["heldout_loss"] for c in tail]
    return max(p) - min(p), max(l) - min(l)


def where(machine):
    return f"{machine['chip']}, {machine['threads']} threads, torch {machine['torch']}" if machine else "not recorded"


def report(runs, preset, recipe, out_dir):
    """bases.json / bases.md / bases.png of finished runs {label: base_eval dict}."""
    rows, lines = {}, [f"# base models ({preset} preset, recipe {recipe})", "",
                       f"`python -m experiments.bases {' '.join(sys.argv[1:])}` on {os.cpu_count()} CPU cores", "",
                       "| run | test pass@1 | pass@8 | wait % | last-20% val pass@1 spread | held-out loss spread | "
                       "plateau | minutes | machine |", "|---|---|---|---|---|---|---|---|---|"]
    for label, m in runs.items():
        dp, dl = plateau(m["curve"])
        flat = dp <= PLATEAU_PASS and dl <= PLATEAU_LOSS
        rows[label] = {"test_pass@1": m["pass@1"], "pass@8": m.get("pass@8"), "wait_share": m["wait_share"],
                       "spread_val_pass@1": dp, "spread_heldout_loss": dl, "plateau": flat, "machine": m.get("machine"),
                       "minutes": m["pretrain_minutes"], "curve": m["curve"]}
        lines.append(f"| {label} | {m['pass@1']:.3f} | {m.get('pass@8', float('nan')):.3f} | "
                     f"{100 * m['wait_share']:.1f} | {dp:.3f} | {dl:.4f} | {'yes' if flat else 'no'} | "
                     f"{m['pretrain_minutes']:.1f} | {where(m.get('machine'))} |")
    p1 = [r["test_pass@1"] for r in rows.values()]
    mc = mean_ci(p1)
    lines += ["", f"test pass@1 over the {len(p1)} runs: {mc[0]:.3f} ± {mc[1]:.3f} (95% t), spread "
                  f"{max(p1) - min(p1):.3f}; plateau rule: last-20% spread of val pass@1 <= {PLATEAU_PASS} and of "
                  f"held-out loss <= {PLATEAU_LOSS}"]
    write_json(os.path.join(out_dir, "bases.json"), {"preset": preset, "recipe": recipe, "runs": rows})
    with open(os.path.join(out_dir, "bases.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    for label, r in rows.items():
        steps = [c["step"] for c in r["curve"]]
        a.plot(steps, [c["val_pass@1"] for c in r["curve"]], marker=".", label=label)
        b.plot(steps, [c["heldout_loss"] for c in r["curve"]], marker=".", label=label)
    a.set(xlabel="pre-training step", ylabel="val pass@1 (100 x 4)")
    b.set(xlabel="pre-training step", ylabel="held-out loss (nats)")
    a.legend(fontsize=7)
    save(fig, out_dir, "bases.png")
    print("\n".join(lines))


def step_accuracy(path, n=300, seed=5):
    """Teacher-forced on n clean documents (no slips, reflections, method switches or habits): the share of steps whose
    whole result the checkpoint's greedy next tokens get right, per operation ('+', '-', '*'; '3' when the result has
    three digits), and a few of its wrong results. Where the transition stands: which results the model can write."""
    import random
    import re
    import torch
    from model import model_from_checkpoint
    from reward import BOS_ID, EOS_ID, CorpusConfig, corpus_document, decode, encode
    model = model_from_checkpoint(load_checkpoint(path)).eval()
    rng, clean = random.Random(seed), CorpusConfig(slip=0, reflect=0, transition=0, bare=0, guess=0, repeat=0)
    right, wrong = {}, []
    for _ in range(n):
        text = corpus_document(rng, clean)
        ids = [BOS_ID] + encode(text) + [EOS_ID]
        with torch.no_grad():
            pred = model(torch.tensor([ids[:-1]]))[0].argmax(-1).tolist()  # pred[i] predicts character i of text
        start = text.index("=") + 1
        for m in re.finditer(r"(\d+)([-+*])(\d+)=(\d+)", text[start:]):
            lo, hi = start + m.start(4), start + m.end(4)
            ok = all(pred[i] == ids[i + 1] for i in range(lo, hi))
            kind = m.group(2) + ("3" if len(m.group(4)) == 3 else "")
            right.setdefault(kind, []).append(ok)
            if not ok and len(wrong) < 5:
                wrong.append(f"{m.group(1)}{m.group(2)}{m.group(3)} -> {decode(pred[lo:hi])} (not {m.group(4)})")
    for kind, oks in sorted(right.items()):
        print(f"{kind:3s} {sum(oks)}/{len(oks)} = {sum(oks) / len(oks):.2f}")
    print("wrong results:", "; ".join(wrong))


def measurement_spread(paths, seeds=5, problems=200, samples=8, big=(1000, 16)):
    """How much of the spread between bases is the measurement's own: each checkpoint's test pass@1 at problems x
    samples (the same problems) with sampler seeds 0 .. seeds-1, and once at big = (problems, samples), seed 0.
    Returns the markdown table (one row per checkpoint: every seed's value, their mean and range, the big one) and
    a line with the spread (max - min) over the checkpoints of the seed-0 values, of the means and of the big ones."""
    import torch
    from model import model_from_checkpoint
    from reward import make_split
    from sample import evaluate
    spread = lambda v: max(v) - min(v)  # noqa: E731
    rows, seed0, means, bigs = [], [], [], []
    for path in paths:
        model = model_from_checkpoint(load_checkpoint(path))
        p1 = [evaluate(model, make_split("test", problems), n=samples, seed=s, progress=False)[0]["pass@1"]
              for s in range(seeds)]
        b = evaluate(model, make_split("test", big[0]), n=big[1], seed=0, progress=False)[0]["pass@1"]
        seed0.append(p1[0])
        means.append(sum(p1) / seeds)
        bigs.append(b)
        rows.append(f"| `{path}` | {' / '.join(f'{v:.3f}' for v in p1)} | {means[-1]:.3f} | {spread(p1):.3f} "
                    f"| {b:.3f} |")
    return "\n".join([
        f"| checkpoint | test pass@1 ({problems} x {samples}), sampler seeds 0-{seeds - 1} | mean | range "
        f"| test pass@1 ({big[0]} x {big[1]}) |", "|---|---|---|---|---|", *rows, "",
        f"spread over the checkpoints: {spread(seed0):.3f} at sampler seed 0, {spread(means):.3f} of the means, "
        f"{spread(bigs):.3f} at {big[0]} x {big[1]} ({torch.get_num_threads()} torch threads)"])


def step_time(preset, batch_sizes=(16, 32, 64), steps=20):
    """Seconds per pre-training step of the preset's model at each batch size (this process's torch threads; the
    median of `steps` steps after 5 warm-up steps): what a schedule of N steps of B documents costs here."""
    import random
    import statistics
    import time
    import torch
    from model import GPT, PRESETS
    from train import corpus_batches, pretrain_config, pretrain_step
    torch.manual_seed(0)
    model = GPT(PRESETS[preset])
    opt = model.configure_optimizers(1e-3)
    for B in batch_sizes:
        batches, times = corpus_batches(random.Random(0), pretrain_config(preset).corpus, B, "cpu"), []
        for i in range(5 + steps):
            x, y = next(batches)
            t0 = time.perf_counter()
            pretrain_step(model, opt, x, y, int((y != -1).sum()), None, 1)
            times.append(time.perf_counter() - t0)
        print(f"{preset}, batch {B}: {statistics.median(times[5:]):.3f} s per step ({torch.get_num_threads()} threads)")


def export(d, path, seed, extra=None):
    """Weights and config only (no optimizer state): a few MB, loadable by python sample.py --ckpt; pre-training's
    metrics and curve (base_eval.json) ride along as "base_eval", and the keys of `extra`."""
    ck = load_checkpoint(os.path.join(d, "base.pt"))
    with open(os.path.join(d, "base_eval.json")) as f:
        m = json.load(f)
    save_checkpoint(path, {"model": ck["model"], "config": ck["config"], "preset": ck["preset"], "seed": seed,
                           "done": True, "run": ck["run"], "base_eval": m, **(extra or {})})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", choices=sorted(TRAIN))
    ap.add_argument("--seeds", type=int, default=3, help="pre-training seeds 0 .. N-1")
    ap.add_argument("--only", type=int, nargs="+", default=None, metavar="SEED",
                    help="run these seeds alone (one process per seed by hand: two on two cores); no report")
    ap.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1], help="torch threads per run")
    ap.add_argument("--out", default="out")
    ap.add_argument("--steps", type=int, default=None, help="pre-training steps (default: TRAIN[preset]'s)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: TRAIN[preset]'s)")
    ap.add_argument("--batch-size", type=int, default=None, help="documents per step (default: TRAIN[preset]'s)")
    ap.add_argument("--weight-decay", type=float, default=None, help="AdamW's weight decay (default: 0.1)")
    ap.add_argument("--slip", type=float, default=None, help="the corpus's slip rate (default: TRAIN[preset]'s corpus)")
    ap.add_argument("--digits", type=int, default=None, help="the corpus's step numbers 0-padded to this width")
    ap.add_argument("--step-accuracy", metavar="CKPT", help="print CKPT's teacher-forced step accuracy per operation "
                    "and exit")
    ap.add_argument("--step-time", action="store_true", help="print the seconds per pre-training step of --preset's "
                    "model at batch sizes 16, 32, 64 and exit")
    ap.add_argument("--measure", metavar="CKPT", nargs="+", help="print the test pass@1 of each CKPT at 200 x 8 "
                    "with sampler seeds 0-4 and at 1000 x 16: how much of a spread the measurement makes, then exit")
    ap.add_argument("--report", metavar="DIR", help="write bases.md / .json / .png to DIR (default: beside the runs)")
    ap.add_argument("--export", metavar="DIR", help="also write DIR/s<seed>.pt (weights and config) of each seed's "
                    "run with the first --threads")
    a = ap.parse_args(argv)
    try:
        if a.step_accuracy:
            return step_accuracy(a.step_accuracy)
        if a.measure:
            return print(measurement_spread(a.measure))
    except UserError as e:  # a checkpoint that is not there or not a checkpoint: one line
        fail(e)
    if a.step_time:
        return step_time(a.preset)
    if a.seeds < 1 or min(a.threads) < 1:
        fail(f"--seeds and --threads must be positive, got {a.seeds} and {a.threads}")
    flags = (("steps", a.steps), ("lr", a.lr), ("batch_size", a.batch_size), ("weight_decay", a.weight_decay),
             ("corpus_slip", a.slip), ("corpus_digits", a.digits))
    recipe = {**flat_recipe(a.preset), **{k: v for k, v in flags if v is not None}}
    runs = {}
    for seed in a.only or range(a.seeds):
        for t in a.threads:
            d = run_dir(a.out, a.preset, recipe, seed, t)
            pretrain_run(a.preset, recipe, seed, t, d)
            with open(os.path.join(d, "base_eval.json")) as f:
                runs[f"seed {seed}, {t} threads"] = json.load(f)
            if a.export and t == a.threads[0]:
                export(d, os.path.join(a.export, f"s{seed}.pt"), seed)
    if a.only is None:
        if a.report:
            os.makedirs(a.report, exist_ok=True)
        report(runs, a.preset, recipe, a.report or os.path.dirname(d))


if __name__ == "__main__":
    main()
