"""
Mutation check: is the test suite strong enough to catch the bugs a student or a hurried refactor would make?

    python tests/mutants.py               # every mutant, 2 at a time
    python tests/mutants.py --list        # the mutants and what each breaks
    python tests/mutants.py --only kl-sign --only nsr-keeps-zero-advantage

Each mutant is a small text edit of one core file (reward.py, model.py, sample.py, losses.py, train.py, dsrl.py).
For each, the repository is copied to a temporary folder, the edit applied, and the default test suite run
there with `-x`: the mutated module's own test file first (tests/test_<module>.py), then the others fastest
first, so most mutants die in seconds. A mutant is
  killed        when some test fails (what we want),
  survived      when every test passes: a behaviour nothing pins down; add a test, or mark the mutant
                equivalent below with the reason it cannot change behaviour,
  not applicable when its text is no longer in the file (the code moved: update the mutant;
                tests/test_mutants_apply.py fails in the default suite when that happens).
Exit status 1 if any mutant survived without a written reason or no longer applies.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# after the mutated module's own file, fastest first: pytest -x stops at the first failure; any other test file
# runs after these
TEST_ORDER = ["test_losses.py", "test_sample.py", "test_model.py", "test_reward.py", "test_train.py", "test_dsrl.py",
              "test_cli.py", "test_tutorial.py", "test_ddp.py", "test_experiments.py"]

# (name, file, [(old text, new text), ...], what the bug does, equivalence reason or None)
MUTANTS = [
    # --- losses.py -------------------------------------------------------------------------------------------
    ("logprob-shift", "losses.py", [("[:, context.size(1) - 1:]", "[:, context.size(1):]")],
     "off-by-one: logits of position t score token t instead of t+1", None),
    ("pretrain-context-pad", "losses.py", [("bos = torch.full((response.size(0), 1), BOS_ID",
                                            "bos = torch.full((response.size(0), 1), PAD_ID")],
     "pre-train space scored after <|pad|> instead of <|bos|>", None),
    ("population-std", "losses.py", [("a = a / (r.std(1, keepdim=True) + eps)",
                                      "a = a / (r.std(1, keepdim=True, unbiased=False) + eps)")],
     "GRPO advantage with the population std instead of torch.std (unbiased)", None),
    ("token-mean-counts-pads", "losses.py", [("return (per_token * m).sum() / m.sum().clamp(min=1)",
                                              "return (per_token * m).sum() / m.numel()")],
     "token-mean divides by every position, pads included", None),
    ("seq-mean-divides-by-T", "losses.py", [("per_seq = (per_token * m).sum(1) / m.sum(1).clamp(min=1)",
                                             "per_seq = (per_token * m).sum(1) / mask.size(1)")],
     "seq-mean-token-mean divides each row by the batch length", None),
    ("seq-modes-count-empty-rows", "losses.py", [("return (per_seq * kept).sum() / kept.sum().clamp(min=1)",
                                                  "return per_seq.mean()")],
     "sequence means count sequences with no kept token", None),
    ("sum-norm-uses-batch-length", "losses.py", [("per_seq = (per_token * m).sum(1) / norm",
                                                  "per_seq = (per_token * m).sum(1) / mask.size(1)")],
     "Dr. GRPO divisor is the generated length, not the fixed budget", None),
    ("kl-sign", "losses.py", [("d = ref_logp - logp", "d = logp - ref_logp")],
     "k3 KL with the log-ratio flipped (still >= 0, wrong value)", None),
    ("clip-bounds-swapped", "losses.py", [("ratio.clamp(1 - eps_low, 1 + eps_high)", "ratio.clamp(1 - eps_high, 1 + eps_low)")],
     "asymmetric clip with eps_low and eps_high exchanged", None),
    ("clip-min-not-max", "losses.py", [("pg = torch.maximum(-A * ratio, -A * ratio.clamp(",
                                        "pg = torch.minimum(-A * ratio, -A * ratio.clamp(")],
     "PPO pessimism inverted: min of the two terms", None),
    ("dual-clip-on-positive", "losses.py", [("dual = (A < 0) & (pg > -A * dual_clip)", "dual = (A > 0) & (pg > -A * dual_clip)")],
     "dual clip applied to positive advantages", None),
    ("clip-stat-counts-band", "losses.py", [("share((A < 0) & (ratio < 1 - eps_low))", "share(ratio < 1 - eps_low)")],
     "clip_ratio/low counts every ratio below the band, clipped or not", None),
    ("grpo-no-std", "losses.py", [("""    adv = group_advantages(rewards, G, normalize_std=True)
    loss, stats = ppo_clip_loss(""", """    adv = group_advantages(rewards, G, normalize_std=False)
    loss, stats = ppo_clip_loss(""")],
     "GRPO without the std normalization", None),
    ("grpo-ignores-dual-clip", "losses.py", [("eps_low, eps_high, dual_clip, agg=agg, norm=norm)",
                                              "eps_low, eps_high, agg=agg, norm=norm)")],
     "grpo_loss drops its dual_clip argument", None),
    ("nsr-keeps-zero-advantage", "losses.py", [('"negative": adv < 0', '"negative": adv <= 0')],
     "NSR-PreRL keeps zero-advantage samples (all-equal groups) in the token-mean denominator", None),
    ("selection-by-advantage", "losses.py", [("adv, mask & keep[:, None], agg=agg, norm=norm)",
                                              "adv * keep, mask, agg=agg, norm=norm)")],
     "sample selection multiplies the advantage instead of the mask", None),
    ("plus-minus-one-flipped", "losses.py", [("adv = rewards.float() * 2 - 1", "adv = 1 - rewards.float() * 2")],
     "Zhu et al.'s +1/-1 PreRL advantage with the sign flipped", None),
    ("nsr-rl-no-std", "losses.py", [("""    adv = group_advantages(rewards, G, normalize_std=True)
    return ppo_clip_loss(logp, logp.detach(), adv, mask & (adv < 0)""", """    adv = group_advantages(rewards, G, normalize_std=False)
    return ppo_clip_loss(logp, logp.detach(), adv, mask & (adv < 0)""")],
     "NSR-RL control without GRPO's std normalization", None),
    ("psr-keeps-wrong", "losses.py", [("mask & (rewards > 0)[:, None]", "mask & (rewards >= 0)[:, None]")],
     "PSR also trains on the wrong samples", None),
    ("nsr-selects-nothing", "losses.py", [("mask & (rewards <= 0)[:, None]", "mask & (rewards < 0)[:, None]")],
     "NSR keeps no sample at all (rewards are never negative)", None),
    ("w-reinforce-weights-swapped", "losses.py", [("torch.where(rewards > 0, lam, -1.0)", "torch.where(rewards > 0, 1.0, -lam)")],
     "W-REINFORCE down-weights the negatives instead of the positives", None),
    ("spaces-swapped", "losses.py", [('pre = space == "pre"', 'pre = space != "pre"')],
     "PreRL trains log P(y|x) and GRPO log P(y): the paper's subject inverted", None),
    ("prerl-detection", "losses.py", [('"nsr-prerl": ("pre", True,', '"nsr-prerl": ("post", True,'),
                                      ('"psr-prerl": ("pre", True,', '"psr-prerl": ("post", True,')],
     "nsr-prerl / psr-prerl not recognized as pre-train-space objectives", None),
    ("select-map-swapped", "losses.py", [('weighs -p_g."""\n    return prerl_loss(logp_pre, rewards, mask, G, "negative"',
                                          'weighs -p_g."""\n    return prerl_loss(logp_pre, rewards, mask, G, "positive"'),
                                         ('in log P(y)."""\n    return prerl_loss(logp_pre, rewards, mask, G, "positive"',
                                          'in log P(y)."""\n    return prerl_loss(logp_pre, rewards, mask, G, "negative"')],
     "NSR-PreRL keeps the positive samples", None),
    ("alignment-self-cosine", "losses.py", [("F.cosine_similarity(gc, gm, dim=0)", "F.cosine_similarity(gc, gc, dim=0)")],
     "gradient alignment compares a gradient with itself", None),
    # --- sample.py -------------------------------------------------------------------------------------------
    ("temperature-multiplies", "sample.py", [("logits = logits.float() / temperature", "logits = logits.float() * temperature")],
     "temperature multiplies the logits", None),
    ("top-k-drops-kth", "sample.py", [("logits.masked_fill(logits < v[:, [-1]]", "logits.masked_fill(logits <= v[:, [-1]]")],
     "top-k keeps only k-1 tokens", None),
    ("bos-sampled", "sample.py", [("never[[PAD_ID, BOS_ID]] = True", "never[[PAD_ID]] = True")],
     "the sampler may write <|bos|> inside a response", None),
    ("no-stop-after-eos", "sample.py", [("tok = tok.masked_fill(done[live], PAD_ID)", "tok = tok")],
     "rows keep writing tokens after their end token", None),
    ("length-buckets-not-put-back", "losses.py", [("torch.cat(logp)[back], torch.cat(ent)[back]",
                                                   "torch.cat(logp)[order], torch.cat(ent)[order]")],
     "the length-sorted buckets are returned in sorted order: rows get other rows' log-probs", None),
    ("length-buckets-keep-pad", "losses.py", [("ro.pad[rows] - lo, ro.response", "ro.pad[rows], ro.response")],
     "a bucket cuts the common left padding but keeps the old pad counts: positions shift", None),
    ("pretrain-chunk-denominator", "train.py", [("part = lm_loss(model, x[lo:lo + mb], y[lo:lo + mb], tokens=tokens) * world",
                                                 "part = lm_loss(model, x[lo:lo + mb], y[lo:lo + mb]) * world")],
     "pre-training micro-batches each divide by their own token count, not the batch's", None),
    ("compaction-shifts-random-draws", "sample.py", [("torch.rand(N, 1, device=device, generator=generator)[live]",
                                                      "torch.rand(live.numel(), 1, device=device, generator=generator)")],
     "after finished rows are dropped, the live rows take each other's random draws", None),
    ("compaction-keeps-stale-pads", "model.py", [("self.pad, self.bias = self.pad[rows], self.bias[rows]",
                                                  "self.bias = self.bias[rows]")],
     "dropping finished rows leaves the cache's pad counts misaligned with its rows", None),
    ("static-cache-sees-next-position", "model.py", [("> (self.pos if self.static else self.t)",
                                                      "> (self.pos + 1 if self.static else self.t)")],
     "a static-cache decode step attends to the unwritten position after its own (a zero key)", None),
    ("growing-cache-sees-unfilled", "model.py", [("> (self.pos if self.static else self.t)",
                                                  "> (self.pos if self.static else self.max_len)")],
     "a decode step attends to the zero keys of the cache's reserved, unfilled positions", None),
    ("static-cache-position-stuck", "model.py", [("                cache.pos += T", "                cache.pos += 0")],
     "the static cache's tensor position never advances: every step overwrites the same slot", None),
    ("cache-reserve-uninitialized", "model.py", [("torch.cat([old, old.new_zeros(", "torch.cat([old, old.new_empty(")],
     "the cache's reserved positions are uninitialized: masked garbage keys can be NaN or inf", None),
    ("cuda-graph-on-by-default", "sample.py", [('os.environ.get("PRERL_CUDA_GRAPH", "0") == "1"',
                                                'os.environ.get("PRERL_CUDA_GRAPH", "1") == "1"')],
     "the CUDA-graph sampler is on by default on a GPU instead of opt-in (PRERL_CUDA_GRAPH=1)", None),
    ("group-rows-misaligned", "sample.py", [("logits, idx, pad = logits.repeat_interleave(G, 0), idx.repeat_interleave(G, 0)",
                                             "logits, idx, pad = logits.repeat(G, 1), idx.repeat_interleave(G, 0)")],
     "first-token logits of a group come from other prompts", None),
    ("truncated-credited", "sample.py", [("[score(t, a) if f else 0.0 for t, a, f in", "[score(t, a) for t, a, f in")],
     "a response cut off by the length budget scores 1 when its text ends in the right #N", None),
    ("zero-std-inverted", "sample.py", [('"frac_reward_zero_std": float((std == 0)', '"frac_reward_zero_std": float((std > 0)')],
     "frac_reward_zero_std counts the groups that do teach", None),
    ("pass-at-k-boundary", "sample.py", [("if n - c < k:", "if n - c <= k:")],
     "pass@k is 1 when the wrong samples exactly fill k", None),
    ("pass-at-k-range", "sample.py", [("range(n - c + 1, n + 1)", "range(n - c, n + 1)")],
     "pass@k product over one factor too many", None),
    # --- reward.py -------------------------------------------------------------------------------------------
    ("score-several-answers", "reward.py", [('completion.count("#") != 1', 'completion.count("#") < 1')],
     "the verifier accepts responses with several answers",
     "equivalent: the answer pattern must match from the first '#' to the very end (fullmatch), so a second '#' "
     "fails it anyway; the count is a second, redundant guard"),
    ("negative-intermediates", "reward.py", [("if all(0 <= s[3] <= cfg.value_max for s in steps):",
                                              "if all(s[3] <= cfg.value_max for s in steps):")],
     "the generator lets intermediate values go below 0", None),
    ("multiply-by-one", "reward.py", [("rng.randint(2, 9) if op == \"*\"", "rng.randint(1, 9) if op == \"*\"")],
     "products by 1 in the questions", None),
    ("reflection-carries-slip", "reward.py", [('return f"{head}{d(first)}{chk} wait {head}{d(r)}{chk}", r',
                                                   'return f"{head}{d(first)}{chk} wait {head}{d(r)}{chk}", w')],
     "after a reflection the corpus carries the wrong value on", None),
    ("control-reflects-on-slips", "reward.py", [('first = w if cfg.reflect_after == "slip" else r', "first = w")],
     "the control corpus's reflections still follow its slips", None),
    ("switch-after-right-attempt", "reward.py", [('first = w if cfg.transition_after == "slip" else r', "first = r")],
     "the method switch follows a right attempt in the tied corpus too", None),
    ("switched-route-slips", "reward.py", [("txt, v = _switched(rng, a, b, replace(cfg, slip=0.0))",
                                            "txt, v = _switched(rng, a, b, cfg)")],
     "the other method after a failed attempt slips like any step", None),
    ("switch-any-product", "reward.py", [("return op == \"*\" and 10 <= a <= 99 and a % 10 != 0",
                                          "return op == \"*\" and 10 <= a <= 99")],
     "a product with a round first factor counts as a hard product", None),
    ("check-digit-of-operand", "reward.py", [("return f\"|{abs(a + b if op == '+' else a - b if op == '-' else a * b) % 10}\"",
                                               "return f\"|{a % 10}\"")],
     "the check digit is not the right result's last digit", None),
    ("markers-substring", "reward.py", [('len(re.findall(rf"\\b{m}\\b", text))', "text.count(m)")],
     "'waiting' counts as a reflection marker", None),
    ("special-tokens-typed", "reward.py", [("return tokenizer.encode_ordinary(text)",
                                            'return tokenizer.encode(text, allowed_special="all")')],
     "typed '<|eos|>' becomes the real end token", None),
    ("guess-anywhere", "reward.py", [('guess += t.startswith("#")', 'guess += "#" in t')],
     "every answered response counts as a guess", None),
    # --- model.py --------------------------------------------------------------------------------------------
    ("positions-not-from-zero", "model.py", [("pos = (q_pos[None, :] - pad[:, None]).clamp(min=0)",
                                              "pos = q_pos[None, :].expand(B, T)")],
     "left-padded rows start their positions at the pad, not at 0", None),
    ("decode-absolute-position", "model.py", [("pos = ((cache.pos if cache.static else t0) - pad)[:, None]",
                                               "pos = ((cache.pos if cache.static else t0) + 0 * pad)[:, None]")],
     "a cached decode step uses absolute positions", None),
    ("cache-bias-hides-first-token", "model.py", [("(self.k_pos[None, :] < pad[:, None])", "(self.k_pos[None, :] <= pad[:, None])")],
     "the cache masks the first real token of every row", None),
    ("cache-expand-tiles", "model.py", [("x.repeat_interleave(g, dim=0) for x in layers", "x.repeat(g, 1, 1, 1) for x in layers")],
     "the KV cache is tiled instead of repeated per row: samples attend to other prompts' keys", None),
    ("checkpoint-not-atomic", "model.py", [("torch.save(state, tmp)\n        os.replace(tmp, path)", "torch.save(state, path)")],
     "a crash during the write leaves half a checkpoint", None),
    # --- train.py / dsrl.py ----------------------------------------------------------------------------------
    ("no-grad-clip", "train.py", [("gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)",
                                   "gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), float('inf'))")],
     "RL updates are not clipped to gradient norm 1", None),
    ("step-applied-when-not-finite", "train.py", [("    if finite:\n        before", "    if True:\n        before")],
     "a non-finite step is applied anyway", None),
    ("no-kl-reanchor", "dsrl.py", [("        ref.load_state_dict(model.state_dict())\n", "        pass\n")],
     "the KL reference is not reset to the policy at the DSRL switch", None),
    ("resume-loses-sampler-rng", "train.py", [('        gen.set_state((ck["rng"]["sampler"][rank] if world > 1 else ck["rng"]["sampler"]).cpu())\n', "")],
     "a resumed run restarts the sampler's random stream", None),
    ("warmup-truncates", "dsrl.py", [("return max(1, round(0.05 * steps))", "return max(1, int(0.05 * steps))")],
     "the default S rounds down", None),
    ("no-eval-at-switch", "train.py", [("or step + 1 == schedule.switch:", "or step == schedule.switch:")],
     "no held-out evaluation right after the NSR phase", None),
    ("rl-adam-betas", "train.py", [("weight_decay=cfg.weight_decay, betas=(0.9, 0.999)", "weight_decay=cfg.weight_decay, betas=(0.9, 0.95)")],
     "RL uses pre-training's betas instead of the official (0.9, 0.999)", None),
    ("optimizer-reset-at-switch", "dsrl.py", [("    if reset_optimizer:\n        opt.state.clear()", "    opt.state.clear()")],
     "a fresh optimizer at the DSRL switch instead of the carried one", None),
    ("reset-at-switch-ignored", "dsrl.py", [("cfg.reset_at_switch))", "False))")],
     "the two-phase schedule never resets AdamW at the switch, whatever RLConfig.reset_at_switch says", None),
    ("warmup-coef-everywhere", "dsrl.py", [("cfg.warmup_coef if step < S else 1.0", "cfg.warmup_coef")],
     "the warmup's loss coefficient (the official 0.01) also scales every GRPO step after the switch", None),
    ("group-check-inverted", "dsrl.py", [("if OBJECTIVES[o][1]]", "if not OBJECTIVES[o][1]]")],
     "--group 1 accepted for the group-baseline objectives and refused for PSR / NSR / W-REINFORCE", None),
    ("rewards-tiled", "train.py", [("[p.answer for p in mine for _ in range(G)]", "[p.answer for _ in range(G) for p in mine]")],
     "row b*G + g is scored against problem (b*G + g) mod B: the answers tiled instead of repeated per group", None),
    ("kl-reference-is-the-policy", "train.py", [("ref = copy.deepcopy(model).eval() if", "ref = model if")],
     "the KL reference is the policy itself, not a copy apart: the KL term is always 0", None),
    ("resume-loses-reference", "train.py", [('            ref.load_state_dict(ck["ref"])\n', "            pass\n")],
     "a resumed run's KL reference is the initial model again, not the one re-anchored at the switch", None),
    ("eval-ignores-temperature", "train.py", [("max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,\n        seed=",
                                               "max_new_tokens=cfg.max_new_tokens,\n        seed=")],
     "the held-out evaluations sample at temperature 1, not at the run's temperature", None),
    ("lr-not-switched", "train.py", [('        for g in opt.param_groups:\n            g["lr"] = phase.lr\n        problems',
                                      '        problems')],
     "the learning rate of the optimizer never changes at the switch", None),
    ("switch-one-late", "dsrl.py", [("    if step < S:\n", "    if step <= S:\n")],
     "DSRL switches to GRPO at step S+1", None),
    ("control-in-wrong-space", "dsrl.py", [('"nsr-rl-warmup": "nsr-rl"}', '"nsr-rl-warmup": "nsr-prerl"}')],
     "the conditional-space control warms up in pre-train space", None),
    ("pretrain-pad-targets", "train.py", [("y = torch.tensor([d[1:] + [-1] * (T + 1 - len(d)) for d in docs]",
                                           "y = torch.tensor([d[1:] + [PAD_ID] * (T + 1 - len(d)) for d in docs]")],
     "pre-training learns to predict padding", None),
    ("micro-batch-chunk-means", "train.py", [("(loss * st[count_key]).backward()", "loss.backward()"),
                                             ("p.grad /= max(1, total)", "p.grad /= len(parts)")],
     "micro-batches averaged chunk by chunk: the token-mean denominator becomes the chunk's", None),
    ("lr-floor", "train.py", [("return lr * (0.1 + 0.9 * 0.5 *", "return lr * (0.0 + 1.0 * 0.5 *")],
     "pre-training's cosine decays to 0 instead of lr/10", None),
]


def apply(name, root):
    """Apply mutant `name` to the copy at `root`; False if some old text is not there exactly once."""
    _, file, edits, _, _ = next(m for m in MUTANTS if m[0] == name)
    path = root / file
    text = path.read_text()
    for old, new in edits:
        if text.count(old) != 1:
            return False
        text = text.replace(old, new)
    path.write_text(text)
    return True


def copy_repo(dst):
    """The working tree's tracked and untracked-but-not-ignored files (what a clone with your edits holds)."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)


def run_one(name, threads, timeout):
    with tempfile.TemporaryDirectory(prefix=f"mutant-{name}-") as d:
        d = Path(d)
        copy_repo(d)
        if not apply(name, d):
            return name, "not applicable", 0.0, ""
        _, file, *_ = next(m for m in MUTANTS if m[0] == name)
        order = [f"test_{Path(file).stem}.py"] + [t for t in TEST_ORDER if t != f"test_{Path(file).stem}.py"]
        tests = [f"tests/{t}" for t in order if (d / "tests" / t).exists()]
        tests += sorted(str(p.relative_to(d)) for p in (d / "tests").glob("test_*.py")
                        if p.name not in order and p.name != "test_mutants_apply.py")  # it fails on any mutant
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONDONTWRITEBYTECODE="1")
        t0 = time.time()
        try:
            p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=d,
                               capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return name, "killed", time.time() - t0, f"timeout after {timeout} s"
        failed = [line for line in p.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
        status = "survived" if p.returncode == 0 else "killed"
        return name, status, time.time() - t0, failed[0][:110] if failed else p.stdout.strip().splitlines()[-1][:110]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", help="run only this mutant (repeatable)")
    ap.add_argument("--jobs", type=int, default=2, help="mutants run at once (each with cores/jobs threads)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per mutant before it counts as killed")
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    args = ap.parse_args(argv)
    names = [m[0] for m in MUTANTS]
    if args.list:
        for name, file, _, what, eq in MUTANTS:
            print(f"{name:32s} {file:10s} {what}" + (f"  [equivalent: {eq}]" if eq else ""))
        return 0
    unknown = [n for n in args.only or [] if n not in names]
    if unknown or args.jobs < 1:
        print(f"error: unknown mutant {unknown[0]!r} (see --list)" if unknown else "error: --jobs must be positive",
              file=sys.stderr)
        return 2
    todo = args.only or names
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    results, t0 = [], time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        for name, status, secs, detail in pool.map(lambda n: run_one(n, threads, args.timeout), todo):
            results.append((name, status))
            print(f"{status:15s} {name:32s} {secs:6.0f} s  {detail}", flush=True)
    equivalent = {m[0] for m in MUTANTS if m[4]}
    killed = sum(s == "killed" and n not in equivalent for n, s in results)
    bad = [n for n, s in results if (s == "survived" and n not in equivalent) or s == "not applicable"]
    scored = [n for n, s in results if s != "not applicable" and n not in equivalent]
    print(f"\n{killed} of {len(scored)} mutants killed ({100 * killed / max(1, len(scored)):.0f}%), "
          f"{len(equivalent & set(todo))} documented as equivalent, {time.time() - t0:.0f} s")
    if bad:
        print("needs a test or a written reason: " + ", ".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
