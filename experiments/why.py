"""
The report of the mechanism study (experiments/mechanisms.py): the numbers of each hypothesis over seeds, a
verdict by the rule the hypothesis states, and one figure per hypothesis. "± x" is the half-width of the 95%
t-interval over seeds; a paired difference is taken seed by seed (both runs start from that seed's base).
"""
from dsrl import half_width, markdown_table, plot_curves, pyplot, save
from experiments.report import mean_ci
from reward import MARKERS, TOKEN_CLASSES

COLLAPSE = 0.5  # a run "collapses" if its final val pass@1 is below half of its step-0 value
SEES_SLIPS = 2.0  # H2: the base "sees" its slips if P(wait | slip) / P(wait | right step) is above this


def fmt(mc, scale=1, d=3):
    m, ci = mc
    return f"{m * scale:.{d}f}" + (f" ± {ci * scale:.{d}f}" if ci == ci else "")


def per_seed(runs, name, get):
    return [get(r) for r in runs[name]]


def paired(runs, a, b, get):
    """Mean and interval of get(a) - get(b), seed by seed."""
    return mean_ci([get(x) - get(y) for x, y in zip(runs[a], runs[b])])


def test_pass1(r):
    return r["final"]["test"]["pass@1"]


def above(mc):
    return mc[0] - half_width(mc) > 0


def pretrain_section(runs):
    out = {}
    for name in ("pretrain", "pretrain-modes"):
        rs = runs[name]
        curve = [(c["step"], mean_ci([r["base_eval"]["curve"][i]["heldout_loss"] for r in rs]),
                  mean_ci([r["base_eval"]["curve"][i]["val_pass@1"] for r in rs]))
                 for i, c in enumerate(rs[0]["base_eval"]["curve"])]
        p = [r["base_eval"]["pass@1"] for r in rs]
        out[name] = {"curve": curve, "test_pass@1": p, "spread": max(p) - min(p),
                     "minutes": [r["base_eval"]["pretrain_minutes"] for r in rs]}
    return out


def h1(runs):
    shares = {obj: {c: mean_ci([r[obj]["share"][c] for r in runs["shares"]]) for c in TOKEN_CLASSES}
              for obj in ("nsr-prerl", "grpo")}
    token_share = {c: mean_ci([r["token_share"][c] for r in runs["shares"]]) for c in TOKEN_CLASSES}
    end = {n: {"start": mean_ci(per_seed(runs, n, lambda r: r["evals"][0]["pass@1"])),
               "end": mean_ci(per_seed(runs, n, lambda r: r["evals"][-1]["pass@1"])),
               "collapsed": sum(r["evals"][-1]["pass@1"] < COLLAPSE * r["evals"][0]["pass@1"] for r in runs[n])}
           for n in ("h1-nsr-prerl", "h1-nsr-prerl-masked")}
    op = shares["nsr-prerl"]["question operand"]
    n = len(runs["shares"])
    if op[0] < 0.30 or end["h1-nsr-prerl-masked"]["collapsed"] > n // 2:
        verdict = "refuted"
    elif end["h1-nsr-prerl"]["collapsed"] > n // 2 and end["h1-nsr-prerl-masked"]["collapsed"] == 0:
        verdict = "supported"
    else:
        verdict = "inconclusive"
    return {"shares": shares, "token_share": token_share, "runs": end, "verdict": verdict}


def h2(runs):
    names = [n for n in ("h2-nsr-prerl", "h1-nsr-prerl", "nsr-prerl-official") if n in runs]
    base = runs["h2-nsr-prerl"]
    ratio = {sp: mean_ci([r["evals"][0][f"p_wait_slip_{sp}"] / r["evals"][0][f"p_wait_right_{sp}"] for r in base])
             for sp in ("cond", "pre")}
    p0 = {f"{k}_{sp}": mean_ci([r["evals"][0][f"p_wait_{k}_{sp}"] for r in base])
          for k in ("slip", "right") for sp in ("cond", "pre")}
    change = {n: {sp: mean_ci([r["evals"][-1][f"p_wait_slip_{sp}"] - r["evals"][0][f"p_wait_slip_{sp}"]
                               for r in runs[n]]) for sp in ("cond", "pre")} for n in names}
    raised = above(change["h2-nsr-prerl"]["cond"])
    sees = ratio["cond"][0] > SEES_SLIPS
    verdict = "inconclusive (no slips to probe)" if ratio["cond"][0] != ratio["cond"][0] else \
        "supported" if not sees else ("refuted" if not raised else "refuted (it sees them, and NSR-PreRL "
                                                                         "raises P(wait | slip))")
    return {"ratio": ratio, "base": p0, "change": change, "verdict": verdict}


def update_norms(runs, name, S, k=5):
    """Mean parameter update norm over the k steps after the switch at S (1-based log steps S+1..S+k)."""
    return [sum(h["update_norm"] for h in r["train"] if S < h["step"] <= S + k) / k for r in runs[name]]


def h3(runs, S):
    d = {"dsrl - grpo (ours)": paired(runs, "dsrl", "grpo", test_pass1),
         "dsrl-official - grpo-official (0.2/0.28)": paired(runs, "dsrl-official", "grpo-official", test_pass1),
         "dsrl-official - grpo-official-clip0.2": paired(runs, "dsrl-official", "grpo-official-clip0.2", test_pass1),
         "dsrl-official-reset - dsrl-official": paired(runs, "dsrl-official-reset", "dsrl-official", test_pass1),
         "nsr-rl-warmup-official - grpo-official-clip0.2": paired(runs, "nsr-rl-warmup-official",
                                                                  "grpo-official-clip0.2", test_pass1)}
    base = {mk: [r["final"]["test"][f"{mk}_share"] for r in runs["base"]] for mk in MARKERS}
    c4 = {mk: mean_ci([r["final"]["test"][f"{mk}_share"] / max(b, 1e-9)
                       for r, b in zip(runs["nsr-prerl-official"], base[mk])]) for mk in MARKERS}
    c4_ours = {mk: mean_ci([r["final"]["test"][f"{mk}_share"] / max(b, 1e-9)
                            for r, b in zip(runs["h2-nsr-prerl"], base[mk])]) for mk in MARKERS}
    un = {n: update_norms(runs, n, S) for n in ("dsrl-official", "dsrl-official-reset", "grpo-official-clip0.2")}
    ratio = mean_ci([a / b for a, b in zip(un["dsrl-official"], un["grpo-official-clip0.2"])])
    verdicts = {"C4": "reproduced" if all(c4[mk][0] >= 2 for mk in MARKERS) else "not reproduced",
                "C5": "reproduced" if above(d["dsrl-official - grpo-official (0.2/0.28)"]) else "not reproduced",
                "C6": "reproduced" if above(d["dsrl-official - grpo-official-clip0.2"])
                and not above(d["nsr-rl-warmup-official - grpo-official-clip0.2"]) else "not reproduced"}
    # the same verdicts with our settings: C4 and C5 from this study's runs on the same bases, C6 from the paper
    # suite (RESULTS.md: not reproduced)
    ours = {"C4": "reproduced" if all(c4_ours[mk][0] >= 2 for mk in MARKERS) else "not reproduced",
            "C5": "reproduced" if above(d["dsrl - grpo (ours)"]) else "not reproduced",
            "C6": "not reproduced"}
    changed = any(verdicts[k] != ours[k] for k in verdicts)
    same_norm = 2 / 3 <= ratio[0] <= 1.5
    verdict = "refuted" if not changed and same_norm else ("supported" if changed else
                                                          "inconclusive (the verdicts stay, the update norms differ)")
    untimed = [[{k: v for k, v in h.items() if not k.startswith("t_")} for h in r["train"]]
               for r in runs["grpo-official"] + runs["grpo-official-clip0.2"]]
    n = len(runs["grpo-official"])
    clip_same = all(a == b for a, b in zip(untimed[:n], untimed[n:]))  # one update per batch: ratio 1, no clip
    return {"clip_0.28_equals_0.2": clip_same, "paired_test_pass@1": d, "c4_official": c4, "c4_ours_same_bases": c4_ours, "update_norm_after_switch":
            {n: mean_ci(v) for n, v in un.items()}, "update_norm_ratio": ratio, "verdicts": verdicts,
            "verdicts_ours": ours,
            "verdict": verdict}


def growth(runs, name, base_name, mk="wait"):
    return mean_ci([r["final"]["test"][f"{mk}_share"] / max(b["final"]["test"][f"{mk}_share"], 1e-9)
                    for r, b in zip(runs[name], runs[base_name])])


def h4(runs):
    g = {f"{mk} x, {corpus}": growth(runs, run, base, mk) for mk in MARKERS
         for corpus, run, base in (("two-mode (terse prompts)", "modes-nsr-prerl", "modes-base"),
                                   ("faithful", "h2-nsr-prerl", "base"))}
    more = {mk: mean_ci([a["final"]["test"][f"{mk}_share"] / max(ab["final"]["test"][f"{mk}_share"], 1e-9)
                         - b["final"]["test"][f"{mk}_share"] / max(bb["final"]["test"][f"{mk}_share"], 1e-9)
                         for a, ab, b, bb in zip(runs["modes-nsr-prerl"], runs["modes-base"], runs["h2-nsr-prerl"],
                                                 runs["base"])]) for mk in MARKERS}
    dsrl = paired(runs, "modes-dsrl", "modes-grpo", test_pass1)
    verdict = "supported" if any(above(v) for v in more.values()) else "refuted"
    return {"growth": g, "growth_difference": more, "dsrl - grpo (two-mode)": dsrl,
            "base_markers": {mk: mean_ci([r["final"]["test"][f"{mk}_share"] for r in runs["modes-base"]])
                             for mk in MARKERS}, "verdict": verdict}


def why_report(meta, runs):
    """(summary dict, markdown) of every hypothesis."""
    summary = {"meta": meta, "pretrain": pretrain_section(runs), "H1": h1(runs), "H2": h2(runs),
               "H3": h3(runs, meta["S"]), "H4": h4(runs), "configs": {}}
    for name, rs in runs.items():
        if "final" in rs[0]:
            summary["configs"][name] = {f"{sp}/{k}": mean_ci([r["final"][sp][k] for r in rs])
                                        for sp in ("test", "ood") for k in ("pass@1", "pass@8", "wait_share",
                                                                              "alternatively_share", "length")
                                        if k in rs[0]["final"][sp]}
    P, a, b, c, d = summary["pretrain"], summary["H1"], summary["H2"], summary["H3"], summary["H4"]
    L = [f"# Why the toy differs from the paper ({meta['preset']}, {meta['seeds']} seeds)", "",
         f"`{meta['command']}`: {meta['wall_minutes']:.1f} min for this invocation (runs already on disk are "
         f"reused); {meta['device']}, {meta['cpu_cores']} CPU cores. RL runs: {meta['steps']} steps (NSR-PreRL "
         f"alone: {meta['steps'] // 2}); DSRL S = {meta['S']} at warmup lr {meta['warmup_lr']:g}; official "
         f"warmup: loss x 0.01 at lr {meta['lr']:g}, weight decay 0.01.", "", "## The bases", ""]
    for name, label in (("pretrain", "faithful corpus"), ("pretrain-modes", "two-mode corpus (terse prompts)")):
        p = P[name]
        L.append(f"- {label}: test pass@1 per pre-training seed {', '.join(f'{v:.3f}' for v in p['test_pass@1'])} "
                 f"(spread {p['spread']:.3f}); {', '.join(f'{m:.1f}' for m in p['minutes'])} min each. Curve "
                 "(step: held-out loss, val pass@1): " + "; ".join(f"{s}: {fmt(lo)}, {fmt(pa)}" for s, lo, pa in p["curve"]))
    L += ["", f"## H1, prompt tokens carry the update: **{a['verdict']}**", "",
          markdown_table({c: {"tok": a["token_share"][c], "nsr": a["shares"]["nsr-prerl"][c],
                              "grpo": a["shares"]["grpo"][c]} for c in TOKEN_CLASSES},
                         [("tok", "share of tokens %", 100), ("nsr", "NSR-PreRL grad norm share %", 100),
                          ("grpo", "GRPO grad norm share %", 100)], label="token class"), ""]
    for n, v in a["runs"].items():
        L.append(f"- {n} (lr {meta['lr']:g}): val pass@1 {fmt(v['start'])} -> {fmt(v['end'])}; collapsed "
                 f"(below {COLLAPSE:g} x start) in {v['collapsed']} of {meta['seeds']} seeds")
    L += ["", f"## H2, the model cannot see its own slips: **{b['verdict']}**", "",
          f"- base, teacher-forced: P(wait | slip) / P(wait | right step) = {fmt(b['ratio']['cond'], d=2)} with the "
          f"prompt, {fmt(b['ratio']['pre'], d=2)} without; P(wait | slip) {fmt(b['base']['slip_cond'])}, "
          f"P(wait | right) {fmt(b['base']['right_cond'])} (with the prompt); without: {fmt(b['base']['slip_pre'])}, "
          f"{fmt(b['base']['right_pre'])}"]
    for n, v in b["change"].items():
        L.append(f"- {n}: change of P(wait | slip) over the run {fmt(v['cond'])} with the prompt, "
                 f"{fmt(v['pre'])} without")
    L += ["", f"## H3, our settings differ from the official ones: **{c['verdict']}**", "",
          "Paired test pass@1 differences (seed by seed):", ""]
    L += [f"- {k}: {fmt(v)}" for k, v in c["paired_test_pass@1"].items()]
    L += ["- C4 under the official warmup (NSR-PreRL alone, test share / base): " + ", ".join(
        f"{mk} x{fmt(c['c4_official'][mk], d=2)}" for mk in MARKERS) + "; ours at lr "
          f"{meta['warmup_lr']:g}: " + ", ".join(f"{mk} x{fmt(c['c4_ours_same_bases'][mk], d=2)}" for mk in MARKERS),
          "- update norm, mean of the 5 steps after the switch: " + ", ".join(
              f"{n} {fmt(v, d=4)}" for n, v in c["update_norm_after_switch"].items()) +
          f"; dsrl-official / grpo-official-clip0.2 = {fmt(c['update_norm_ratio'], d=2)}",
          f"- clip 0.2/0.28 and 0.2/0.2 logged the same numbers at every step in every seed: {c['clip_0.28_equals_0.2']}",
          "- verdicts under the official settings: " + ", ".join(f"{k} {v}" for k, v in c["verdicts"].items()) +
          "; with ours: " + ", ".join(f"{k} {v}" for k, v in c["verdicts_ours"].items())]
    L += ["", f"## H4, a hidden mode leaks: **{d['verdict']}**", "",
          "- two-mode base, terse prompts: " + ", ".join(f"{mk} {fmt(v, 100, 1)}%" for mk, v in d["base_markers"].items())]
    L += [f"- NSR-PreRL marker growth (test share / its base), {k}: x{fmt(v, d=2)}" for k, v in d["growth"].items()]
    L += [f"- growth two-mode minus faithful, {mk}: {fmt(v, d=2)}" for mk, v in d["growth_difference"].items()]
    L += [f"- DSRL - GRPO on the two-mode corpus, test pass@1: {fmt(d['dsrl - grpo (two-mode)'])}", "",
          "## Every configuration (test and ood, mean ± 95% interval)", "",
          markdown_table(summary["configs"], [("test/pass@1", "test pass@1", 1), ("test/pass@8", "test pass@8", 1),
                                              ("ood/pass@1", "ood pass@1", 1), ("test/wait_share", "wait %", 100),
                                              ("test/alternatively_share", "alternatively %", 100),
                                              ("test/length", "length", 1)], label="run"), "",
          "## Per seed (seeds in order)", "", per_seed_table(runs)]
    return summary, "\n".join(L) + "\n"


def per_seed_table(runs):
    """Every run's numbers seed by seed: test pass@1, marker shares and the val pass@1 curve."""
    def col(rs, get):
        return " / ".join(get(r) for r in rs)
    L = ["| run | test pass@1 | wait % | alternatively % | val pass@1 (step: seeds) |", "|---|---|---|---|---|"]
    for name, rs in runs.items():
        if "final" not in rs[0]:
            continue
        share = {mk: col(rs, lambda r: f"{100 * r['final']['test'][mk + '_share']:.1f}") for mk in MARKERS}
        curve = "; ".join(f"{e['step']}: " + col(rs, lambda r: f"{r['evals'][i]['pass@1']:.3f}")
                          for i, e in enumerate(rs[0].get("evals", [])))
        L.append(f"| {name} | {col(rs, lambda r: f'{test_pass1(r):.3f}')} | {share['wait']} | "
                 f"{share['alternatively']} | {curve} |")
    return "\n".join(L)


def seed_curve(rs, key):
    return [(e["step"], *mean_ci([r["evals"][i][key] for r in rs])) for i, e in enumerate(rs[0]["evals"])]


def why_figures(out_dir, summary, runs):
    """pretrain.png, h1_tokens.png, h2_wait.png, h3_official.png, h4_modes.png."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name in ("pretrain", "pretrain-modes"):
        c = summary["pretrain"][name]["curve"]
        plot_curves(axes[0], {name: [(s, *lo) for s, lo, _ in c]})
        plot_curves(axes[1], {name: [(s, *pa) for s, _, pa in c]})
    axes[0].set(xlabel="pre-training step", ylabel="held-out loss")
    axes[1].set(xlabel="pre-training step", ylabel="val pass@1")
    save(fig, out_dir, "pretrain.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    a = summary["H1"]
    for i, obj in enumerate(("nsr-prerl", "grpo")):
        axes[0].bar([j + 0.4 * i for j in range(len(TOKEN_CLASSES))], [100 * a["shares"][obj][c][0] for c in TOKEN_CLASSES],
                    0.4, yerr=[100 * half_width(a["shares"][obj][c]) for c in TOKEN_CLASSES], label=obj)
    axes[0].set_xticks(range(len(TOKEN_CLASSES)), TOKEN_CLASSES, rotation=30, ha="right", fontsize=7)
    axes[0].set(ylabel="% of gradient norm")
    axes[0].legend()
    plot_curves(axes[1], {n: seed_curve(runs[n], "pass@1") for n in ("h1-nsr-prerl", "h1-nsr-prerl-masked")})
    axes[1].set(xlabel="RL step", ylabel="val pass@1", title="NSR-PreRL at the RL learning rate")
    save(fig, out_dir, "h1_tokens.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, sp in zip(axes, ("cond", "pre")):
        plot_curves(ax, {f"{n} {k}": seed_curve(runs[n], f"p_wait_{k}_{sp}") for n in ("h2-nsr-prerl", "h1-nsr-prerl")
                         for k in ("slip", "right")}, dashed=[f"{n} right" for n in ("h2-nsr-prerl", "h1-nsr-prerl")])
        ax.set(xlabel="NSR-PreRL step", ylabel="P(' wait' | step)", yscale="log",
               title="with the prompt" if sp == "cond" else "without the prompt")
    save(fig, out_dir, "h2_wait.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for n in ("dsrl-official", "dsrl-official-reset", "grpo-official-clip0.2", "dsrl"):
        steps = [h["step"] for h in runs[n][0]["train"]]
        m = [mean_ci([r["train"][i]["update_norm"] for r in runs[n]])[0] for i in range(len(steps))]
        axes[0].plot(steps, m, label=n)
    axes[0].axvline(summary["meta"]["S"] + 0.5, color="gray", ls=":")
    axes[0].set(xlabel="RL step", ylabel="parameter update norm", yscale="log")
    axes[0].legend(fontsize=7)
    plot_curves(axes[1], {n: seed_curve(runs[n], "pass@1") for n in
                          ("grpo", "dsrl", "grpo-official", "dsrl-official", "dsrl-official-reset")})
    axes[1].set(xlabel="RL step", ylabel="val pass@1")
    save(fig, out_dir, "h3_official.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    plot_curves(axes[0], {f"{n} {mk}": seed_curve(runs[n], f"{mk}_share") for n in ("modes-nsr-prerl", "h2-nsr-prerl")
                          for mk in MARKERS})
    axes[0].set(xlabel="NSR-PreRL step", ylabel="share of val responses", title="markers under NSR-PreRL")
    plot_curves(axes[1], {n: seed_curve(runs[n], "pass@1") for n in ("modes-grpo", "modes-dsrl")})
    axes[1].set(xlabel="RL step", ylabel="val pass@1 (terse prompts)")
    save(fig, out_dir, "h4_modes.png")
    plt.close("all")
