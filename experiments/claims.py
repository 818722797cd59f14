"""
What the paper suite reports: one figure per claim and the numbers RESULTS.md quotes, computed from the run
JSONs that experiments/suite.py writes. Claims (paper): C1 gradient alignment of the two spaces, C2 which tokens
differ, C3 PreRL alone (collapse), C4 reflection / transition markers, C5 DSRL vs GRPO, C6 NSR warmup in P(y|x)
vs P(y), C7 pass@k of Zhu et al.'s objectives.
"""
import statistics

from dsrl import half_width, markdown_table, plot_curves, plot_markers, plot_passk, pyplot, save
from experiments.report import mean_ci
from reward import MARKERS

# what the suite varies for the claims (experiments/suite.py builds the runs from these)
SWEEP = (0.025, 0.05, 0.10, 0.20)            # DSRL warmup S as a share of the RL steps (S = 0 is GRPO)
GRID_LRS = (1e-6, 1e-5, 3e-5, 1e-4)          # NSR-PreRL alone: at which rate does it stay stable?
MECH_LRS = (1e-5, 3e-5, 1e-4)                # NSR-PreRL phases of 10% of the steps: which errors go first?


def sweep_name(share):
    return f"dsrl-S{100 * share:g}%"



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
        a2.errorbar(xs, [y[0] for y in ys], yerr=[half_width(y) for y in ys], marker="o", capsize=3, label=split)
    a2.set(xlabel="S: NSR-PreRL warmup, % of RL steps", ylabel="final pass@1", title="S sweep")
    a2.legend()
    save(fig, out_dir, "c5_dsrl.png")
    # C6: warmup in the conditional space vs the pre-train space, both followed by the same GRPO
    fig, ax = plt.subplots(figsize=(5, 3.2))
    names = ["grpo", "nsr-rl-warmup", sweep_name(0.05)] + ([dsrl_name] if dsrl_name != sweep_name(0.05) else [])
    ax.bar(names, [cfg[n]["test/pass@1"][0] for n in names], yerr=[half_width(cfg[n]["test/pass@1"]) for n in names],
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
    f = lambda mc, s=1: f"{mc[0] * s:.3f} ± {half_width(mc) * s:.3f}"
    st, L = align["stats"], []
    L += ["## C1 gradient alignment (base model)",
          f"{st['n']} responses: mean cosine {st['cosine_mean']:.3f}, negative inner products "
          f"{100 * st['inner_negative_share']:.1f}%, inner product mean {st['inner_mean']:.3g} "
          f"(min {st['inner_min']:.3g}, max {st['inner_max']:.3g})"]
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
