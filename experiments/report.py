"""
Tables, intervals, held-out metrics and the figure helpers shared by `dsrl.py` (one seed, one comparison) and the
paper suite (`experiments/suite.py`, every claim over several seeds). A value in a table or a figure is either a
number or a (mean, 95% half-width) pair; the half-width is nan for a single seed.
"""
import json
import os
import statistics

from reward import MARKERS, make_split
from sample import evaluate
from train import RL

def final_metrics(model, preset, seed, problems, n=(8, 4), passk=0, progress=False, tag="Q"):
    """Held-out metrics of a finished model: `problems` test and ood problems with n[0] and n[1] samples each,
    and pass@k up to 64 on `passk` test problems (0: none); tag: the prompts' tag (reward.Problem)."""
    tokens = RL[preset]["max_new_tokens"]
    final = {split: evaluate(model, make_split(split, problems, tag=tag), n=k, max_new_tokens=tokens, seed=seed + offset,
                             progress=progress)[0] for split, k, offset in (("test", n[0], 7), ("ood", n[1], 8))}
    if passk:
        final["passk"] = evaluate(model, make_split("test", passk, tag=tag), n=64, max_new_tokens=tokens, seed=seed + 11)[0]
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


def mean_ci(values):
    """Mean and half-width of the 95% t-interval (n - 1 degrees of freedom)."""
    t95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
    n = len(values)
    if any(v != v for v in values):  # a nan (e.g. a probe with no items on a tiny model) stays nan
        return float("nan"), float("nan")
    m = statistics.fmean(values)
    return m, (t95.get(n - 1, 1.96) * statistics.stdev(values) / n ** 0.5 if n > 1 else float("nan"))


def write_json(path, obj):
    """Write JSON atomically (temp file + rename): an interrupted run never leaves half a file."""
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.replace(path + ".tmp", path)


# -----------------------------------------------------------------------------
# figures

def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, out_dir, name):
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=100)


def half_width(mc):
    """The interval half-width of a (mean, ci) pair; 0 when undefined (one seed)."""
    return 0.0 if mc[1] != mc[1] else mc[1]


def plot_curves(ax, curves, dashed=()):
    """curves: {label: [(step, mean, ci), ...]}: a line per label with its 95% band."""
    for label, c in curves.items():
        x, m, ci = zip(*c)
        ci = [half_width(p) for p in zip(m, ci)]
        line, = ax.plot(x, m, marker=".", label=label, ls="--" if label in dashed else "-")
        ax.fill_between(x, [a - b for a, b in zip(m, ci)], [a + b for a, b in zip(m, ci)], alpha=0.15,
                        color=line.get_color())
    ax.legend(fontsize=7)


def plot_markers(ax, shares):
    """shares: {model: {marker: (mean, ci)}} as fractions of responses: one group of bars per model."""
    names = list(shares)
    for i, mk in enumerate(MARKERS):
        ax.bar([j + 0.4 * i for j in range(len(names))], [100 * shares[n][mk][0] for n in names], 0.4,
               yerr=[100 * half_width(shares[n][mk]) for n in names], label=mk)
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


def comparison_figures(out_dir, curves, results, warmup_steps, names):
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
