"""
Training: pre-training of the base model on the generated corpus, and the online RL loop.

    python train.py --preset cpu                          # pre-train: out/cpu/base.pt
    python train.py --preset cpu --objective grpo         # RL from out/cpu/base.pt: out/cpu/grpo.pt
    python train.py --preset cpu --objective dsrl         # NSR-PreRL for --warmup-steps, then GRPO

Pre-training is plain next-token prediction (nanoGPT) on documents `<|bos|>` + text + `<|eos|>`, one document
per row, right-padded; the pad targets are ignored. Documents are drawn fresh from reward.corpus_document
every step, so there is no dataset on disk and no epoch. The checkpoint lands in out/<preset>/base.pt.

The RL loop, one step: B fresh training problems -> G samples each from P(y|x) at temperature 1 (the KV-cached
group sampler) -> verifier rewards -> the loss of the phase's objective (losses.py) -> gradient clipped to
norm 1 -> one AdamW step (betas 0.9/0.999, no weight decay, constant learning rate, as in the official code).
Every step is logged to OUT/<preset>/<objective>.jsonl; the held-out split is evaluated every few steps.
"""
import contextlib
import copy
import json
import math
import os
import random
import time
from dataclasses import asdict

import torch
from torch.nn import functional as F

from losses import objective_loss
from model import (PRESETS, TRAIN, RL, RL_DEFAULTS, OBJECTIVES, GPT, autocast, sampler_seed, save_checkpoint,
                   load_checkpoint, model_from_checkpoint, kill_point, restore, rng_state, rank_world, data_parallel,
                   all_reduce_sum, reduce_stats, on_rank0, gather, barrier)
from reward import (BOS_ID, EOS_ID, PAD_ID, SPLITS, UserError, fail, CorpusConfig, corpus_document,
                    encode, make_problem, make_split, TERSE)
import sample
from sample import (check_rl_args, common_args, describe, device_and_preset, evaluate, generate, prompt_ids,
                    rollout_stats)

def collate(docs, device):
    """Token lists -> x (B, T) inputs and y (B, T) targets, right-padded; pad targets are -1 (ignored)."""
    T = max(len(d) for d in docs) - 1
    x = torch.tensor([d[:-1] + [PAD_ID] * (T + 1 - len(d)) for d in docs], device=device)
    y = torch.tensor([d[1:] + [-1] * (T + 1 - len(d)) for d in docs], device=device)
    return x, y


def corpus_batches(rng, corpus, batch_size, device, pool=16):
    """Endless batches of fresh documents `<|bos|>` text `<|eos|>`. Documents are drawn `pool` batches at a
    time and sorted by length, so a batch holds documents of similar length: a cpu-preset step took 0.14 s
    instead of 0.27 s with random batches (2 cores), because far fewer pad tokens are computed."""
    while True:
        docs = [[BOS_ID] + encode(corpus_document(rng, corpus)) + [EOS_ID] for _ in range(batch_size * pool)]
        docs.sort(key=len)
        chunks = [docs[i:i + batch_size] for i in range(0, len(docs), batch_size)]
        rng.shuffle(chunks)
        for c in chunks:
            yield collate(c, device)


def lm_loss(model, x, y, tokens=None):
    """Mean next-token loss of the batch; with `tokens` (data parallel), the sum over these rows / `tokens`."""
    with autocast(x.device):
        logits = model(x).float()  # (B, T, V); bf16 autocast on a GPU, the loss in fp32
    if tokens is None:
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1, reduction="sum") / tokens


def lr_at(step, total, lr, warmup=100):
    """Linear warmup, then cosine decay to lr/10 (nanoGPT)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def pretrain(preset, out_dir, device, seed=0, steps=None, corpus=None, eval_every=500, eval_problems=200,
             eval_samples=8, progress=True, resume=False, ckpt_every=512, micro_batch=None):
    """Pre-train a GPT of `preset` size; checkpoint to out_dir/base.pt every `ckpt_every` steps (a multiple of
    the 16-batch document pool, so a resumed run sees exactly the same batches) and at the end. Under torchrun
    every rank draws the same batch and trains on its share of the rows (see the loop); rank 0 evaluates and writes.
    Returns (path, held-out metrics, samples)."""
    from tqdm import tqdm
    hp = dict(TRAIN[preset], micro_batch=micro_batch or TRAIN[preset].get("micro_batch"))
    steps = steps or hp["pretrain_steps"]
    corpus = corpus or CorpusConfig()
    rank, world = rank_world()
    progress = progress and rank == 0
    if hp["batch_size"] % world:
        raise UserError(f"{preset}: batch of {hp['batch_size']} documents does not split over {world} processes")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = GPT(PRESETS[preset]).to(device)
    opt = model.configure_optimizers(hp["lr"], device_type=device.split(":")[0])
    path = os.path.join(out_dir, "base.pt")
    run = {"preset": preset, "steps": steps, "seed": seed, "corpus": asdict(corpus), **hp}
    del run["micro_batch"]  # the same gradient in any chunk size: a run may resume with another
    start, minutes, curve, seen = 0, 0.0, [], 0  # seen: the documents' tokens trained on (FLOPs ~ 6 x params x seen)
    if resume and os.path.exists(path):
        ck = restore(path, run, model, opt, rng, device)
        start, minutes, curve, seen = ck["step"], ck["minutes"], ck.get("curve", []), ck.get("tokens", 0)
    ddp = data_parallel(model)
    rows = slice(rank * hp["batch_size"] // world, (rank + 1) * hp["batch_size"] // world)  # this rank's share
    tag = TERSE if corpus.modes else "Q"  # the two-mode corpus is evaluated in its terse mode, as RL asks
    heldout_docs = corpus_batches(random.Random(10_000), corpus, 64, device, pool=4)
    heldout = [next(heldout_docs) for _ in range(4)]  # a fixed held-out set (its own seed)
    batches = corpus_batches(rng, corpus, hp["batch_size"], device)
    t0 = time.time()

    def checkpoint(step):
        if rank == 0:
            save_checkpoint(path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "config": asdict(model.config),
                "preset": preset, "step": step, "done": step == steps, "phase": "pretrain", "run": run,
                "minutes": minutes + (time.time() - t0) / 60, "rng": rng_state(rng), "seed": seed, "curve": curve,
                "tokens": seen})
        barrier()

    def heldout_eval():
        model.eval()
        with torch.no_grad():
            hl = sum(lm_loss(model, x, y).item() for x, y in heldout) / len(heldout)
        # the pre-training curve: held-out loss and val pass@1 (100 problems x 4), both cheap
        mv, _ = evaluate(model, make_split("val", 100, tag=tag), n=4, seed=seed, progress=False)
        model.train()
        return hl, mv["pass@1"]

    bar = tqdm(range(start, steps), desc=f"pretrain {preset}", disable=not progress, initial=start, total=steps)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, hp["lr"])
        x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        # this rank's rows (all of them in one process), in chunks of micro_batch rows, each over the whole batch's
        # token count, times world (DDP averages the ranks' gradients, in the last chunk's backward): the gradient
        # of the whole batch's mean loss
        tokens, x, y, loss = int((y != -1).sum()), x[rows], y[rows], 0.0
        seen += tokens
        mb = hp["micro_batch"] or len(x)
        for lo in range(0, len(x), mb):
            with ddp.no_sync() if world > 1 and lo + mb < len(x) else contextlib.nullcontext():
                part = lm_loss(ddp, x[lo:lo + mb], y[lo:lo + mb], tokens=tokens) * world
                part.backward()
            loss = loss + part.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        evaluating = (step + 1) % eval_every == 0 or step + 1 == steps
        if step % 20 == 0 or evaluating:
            train_loss = all_reduce_sum([loss.item()])[0] / world  # the whole batch's loss
            bar.set_postfix(loss=f"{train_loss:.3f}")
        if evaluating:
            hl, pass1 = on_rank0(heldout_eval)
            curve.append({"step": step + 1, "heldout_loss": hl, "val_pass@1": pass1})
            if progress:
                bar.write(f"step {step + 1}: train loss {train_loss:.4f}, held-out loss {hl:.4f}, "
                          f"val pass@1 {pass1:.3f}, {time.time() - t0:.0f}s")
        if (step + 1) % ckpt_every == 0 or step + 1 == steps:
            checkpoint(step + 1)  # the rng now stands at a pool boundary: the next batches are reproducible
            kill_point(step + 1)
    minutes += (time.time() - t0) / 60
    m, samples = on_rank0(lambda: evaluate(model, make_split("test", eval_problems, tag=tag), n=eval_samples,
                                           seed=seed, progress=progress))
    m["pretrain_minutes"], m["pretrain_tokens"], m["curve"] = minutes, seen, curve
    if rank == 0:
        with open(os.path.join(out_dir, "base_eval.json"), "w") as f:
            json.dump(m, f, indent=1)
    return path, m, samples


# -----------------------------------------------------------------------------
# online RL: sample B prompts x G answers from P(y|x) -> score -> advantages -> loss -> one optimizer step

class Diverged(RuntimeError):
    """Several non-finite steps in a row: the run stops with this one-line message."""


def rl_train(init, objective, out_path, device, seed=0, preset="cpu", steps=None, warmup_steps=None,
             progress=True, log_path=None, resume=False, ckpt_every=10, eval_extra=None, **overrides):
    """Online RL from checkpoint `init` with `objective`; checkpoints to out_path every `ckpt_every` steps and
    at the end. resume=True continues from out_path if it holds an unfinished run of the same settings (on
    CPU the result is identical to an uninterrupted run). overrides: any key of RL[preset] or agg / eps_high /
    kl_coef / lam / prerl_advantage (RL_DEFAULTS). eval_extra(model) -> dict adds its numbers to every
    held-out evaluation. Under torchrun every rank draws the same problems, then samples its share of them with its
    own generator (rl_step); rewards and statistics are reduced over ranks, rank 0 evaluates (the others get its
    numbers) and writes the checkpoint and the log.
    Returns (model, history: per-step dicts, evals: held-out evaluations)."""
    from tqdm import tqdm
    from dsrl import TWO_PHASE, default_warmup, phase  # the schedule (loss and lr per step); dsrl.py imports this file
    hp = dict(RL_DEFAULTS, **RL[preset])  # a preset may override a default (micro_batch)
    hp.update({k: v for k, v in overrides.items() if v is not None})
    steps = steps or hp["steps"]
    S = warmup_steps if warmup_steps is not None else default_warmup(steps)  # dsrl.py: 5% of the steps
    G = hp["group"]
    rank, world = rank_world()
    progress = progress and rank == 0
    if hp["batch_prompts"] % world:
        raise UserError(f"--batch-prompts {hp['batch_prompts']} must be a multiple of the {world} processes")
    model = model_from_checkpoint(load_checkpoint(init), device)
    if asdict(model.config) != asdict(PRESETS[preset]):
        raise UserError(f"checkpoint {init} is a {model.config.n_layer}x{model.config.n_embd} model, "
                        f"not the {preset} preset's {PRESETS[preset].n_layer}x{PRESETS[preset].n_embd}")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    gen = torch.Generator(device=device).manual_seed(sampler_seed(seed, rank))
    # the same optimizer for both phases (not reset at the switch, as in the official code)
    opt = model.configure_optimizers(hp["lr"], weight_decay=hp["weight_decay"], betas=(0.9, 0.999),
                                     device_type=device.split(":")[0])
    ref = copy.deepcopy(model).eval() if hp["kl_coef"] > 0 else None
    test = make_split(hp["eval_split"], hp["eval_problems"], tag=hp["prompt_tag"])
    run = {"init": os.path.abspath(init), "objective": objective, "steps": steps, "warmup_steps": S, "hp": hp,
           "seed": seed, "preset": preset, **({"processes": world} if world > 1 else {})}
    history, evals, start, bad_in_a_row = [], [], 0, 0
    if resume and os.path.exists(out_path):
        ck = restore(out_path, run, model, opt, rng, device)
        if ref is not None:
            ref.load_state_dict(ck["ref"])
        gen.set_state((ck["rng"]["sampler"][rank] if world > 1 else ck["rng"]["sampler"]).cpu())
        history, evals, start, bad_in_a_row = ck["history"], ck["evals"], ck["step"], ck["bad_in_a_row"]
    ddp = data_parallel(model)  # the loss and backward go through DDP; sampling and evaluation use `model`
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    log = open(log_path, "w") if log_path and rank == 0 else None
    for rec in history if log else ():  # a resumed run rewrites its log up to the checkpoint
        log.write(json.dumps(rec) + "\n")
    train_cfg = SPLITS["train"][0]

    def run_eval(step):
        m, _ = on_rank0(lambda: evaluate(model, test, n=hp["eval_samples"], max_new_tokens=hp["max_new_tokens"],
                                         seed=seed + 1))
        return {"step": step, **m, **(on_rank0(lambda: eval_extra(model)) if eval_extra else {})}

    def checkpoint(step):
        sampler = gen.get_state().cpu()
        sampler = gather(sampler) if world > 1 else sampler  # every rank's sampling stream, in rank order
        if rank == 0:
            save_checkpoint(out_path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "config": asdict(model.config),
                "preset": preset, "step": step, "done": step == steps, "phase": phase(objective, step - 1, S, 0, 0)[0],
                "run": run, "history": history, "evals": evals, "bad_in_a_row": bad_in_a_row,
                "rng": {**rng_state(rng), "sampler": sampler},
                **({"ref": ref.state_dict()} if ref is not None else {})})
        barrier()

    if not evals:
        evals.append(run_eval(0))
    bar = tqdm(range(start, steps), desc=f"{objective} {preset}", disable=not progress, initial=start, total=steps)
    for step in bar:
        name, lr = phase(objective, step, S, hp["lr"], hp["warmup_lr"])
        if objective in TWO_PHASE and step == S and ref is not None:
            ref.load_state_dict(model.state_dict())  # policy reincarnation: re-anchor the KL reference
        if objective in TWO_PHASE and step == S and hp["reset_at_switch"]:
            opt.state.clear()  # the control of H3: phase 2 starts with fresh AdamW moments
        for g in opt.param_groups:
            g["lr"] = lr
        problems = [make_problem(rng, train_cfg) for _ in range(hp["batch_prompts"])]
        for p in problems:
            p.tag = hp["prompt_tag"]
        every = hp["other_space_every"]
        step_hp = dict(hp, other_space=bool(every) and step % every == 0,  # the logging-only pass, or not
                       loss_coef=hp["warmup_coef"] if objective in TWO_PHASE and step < S else 1.0)
        ro, r, loss, st, gnorm, finite, times = rl_step(ddp, opt, problems, name, step_hp, gen, ref)
        bad_in_a_row = 0 if finite else bad_in_a_row + 1
        if bad_in_a_row >= 3:  # a blown-up step (NSR can push log-probs to -inf) is skipped; 3 in a row stop
            raise Diverged(f"{objective}: {bad_in_a_row} non-finite steps in a row at step {step + 1} "
                           f"(lr {lr}); lower the learning rate")
        rec = {"step": step + 1, "objective": name, "lr": lr, "loss": loss.item(), "grad_norm": float(gnorm),
               "skipped": not finite, "skipped_total": sum(h["skipped"] for h in history) + (not finite),
               **reduce_stats(rollout_stats(ro, r, G)), **st,
               "t_sample": times[0], "t_learn": times[1] + times[2]}  # measured before any evaluation
        switch = objective in TWO_PHASE and step + 1 == S  # right after the NSR phase
        if (step + 1) % hp["eval_every"] == 0 or step + 1 == steps or switch:
            evals.append(run_eval(step + 1))
            rec["eval"] = evals[-1]
            if progress:
                bar.write(f"step {step + 1} ({name}): held-out pass@1 {evals[-1]['pass@1']:.3f}, "
                          f"wait {evals[-1]['wait_share']:.3f}, length {evals[-1]['length']:.1f}")
        history.append(rec)
        if log:
            log.write(json.dumps(rec) + "\n")
            log.flush()
        bar.set_postfix(reward=f"{rec['reward']:.2f}", len=f"{rec['length']:.0f}", gn=f"{rec['grad_norm']:.2f}")
        if (step + 1) % ckpt_every == 0 or step + 1 == steps:
            checkpoint(step + 1)
            kill_point(step + 1)
    if log:
        log.close()
    return model, history, evals


def rl_step(model, opt, problems, name, hp, gen, ref=None):
    """One online RL step with phase objective `name`: sample G answers per problem from P(y|x), score them,
    loss, backward, clip, optimizer step. A step whose loss or gradient is not finite is not applied.
    Log-probs, loss and backward run in micro_batched_backward: in one chunk, or with hp["micro_batch"] rows per
    chunk (whole groups) chunk by chunk, the same gradient with a peak memory that does not grow with the batch.
    Under torchrun `model` is the DDP wrapper: this rank samples its contiguous share of the problems (whole
    groups) with its own generator, and micro_batched_backward divides by the whole batch's counts.
    Returns (this rank's rollout and rewards, loss, stats, grad_norm, finite, seconds for sampling / log-prob
    passes / backward)."""
    net = getattr(model, "module", model)  # the GPT itself: sampling never goes through DDP
    device, G = net.lm_head.weight.device, hp["group"]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)  # honest timings on a GPU
    rank, world = rank_world()
    share = len(problems) // world
    mine = problems[rank * share:(rank + 1) * share]
    whole = world > 1 and os.environ.get("PRERL_TEST_WHOLE_BATCH") == "1"  # test hook: see sampler_seed
    t0 = time.perf_counter()
    net.eval()
    ro = generate(net, [prompt_ids(p) for p in (problems if whole else mine)], G=G,
                  max_new_tokens=hp["max_new_tokens"], temperature=hp["temperature"], generator=gen)
    if whole:
        ro = sample.rollout_rows(ro, slice(rank * share * G, (rank + 1) * share * G))
    # sample.rewards is looked up at call time: a replacement (sample.rewards = mine) takes effect
    r = torch.tensor(sample.rewards(ro, [p.answer for p in mine for _ in range(G)]), device=device)
    sync()
    t1 = time.perf_counter()
    model.train()
    opt.zero_grad(set_to_none=True)
    loss, st, (t_lp, t_bw) = micro_batched_backward(model, ro, r, name, hp, ref, sync)
    t3 = time.perf_counter()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(gnorm))
    st["update_norm"] = 0.0  # a skipped step moves nothing
    if finite:
        before = torch.cat([p.detach().flatten() for p in model.parameters()])  # 0.8M floats on cpu: cheap
        opt.step()
        st["update_norm"] = float((torch.cat([p.detach().flatten() for p in model.parameters()]) - before).norm())
    opt.zero_grad(set_to_none=True)
    sync()
    return ro, r, loss, st, gnorm, finite, (t1 - t0, t_lp, t_bw + time.perf_counter() - t3)


def micro_batched_backward(model, ro, r, name, hp, ref, sync):
    """Gradient accumulation over chunks of hp["micro_batch"] rows (whole groups, so group advantages are
    unchanged), as verl's micro-batches. Every loss here is (sum of per-token or per-sequence terms) / (count the
    objective keeps), so each chunk's backward takes loss * its own count, and the summed gradient is divided by
    the whole batch's count at the end: the denominator is the batch's, never the chunk's, and the gradient equals
    the one-chunk gradient up to float rounding. Logged statistics are row-weighted means of the chunks' (counts
    summed). Without micro_batch the whole batch is one chunk. Under torchrun (`model` the DDP wrapper, ro this
    rank's rows) the same holds across ranks: DDP averages the summed gradients over the ranks (in the last chunk's
    backward; the others run under no_sync), the counts are summed over ranks, and the gradient is divided by the
    whole batch's count over world, so it is one process's gradient on the same rows, whatever the number of ranks.
    Returns (loss, stats, (seconds in log-prob passes, seconds in backward))."""
    G, N, world = hp["group"], r.numel(), rank_world()[1]
    mb = min(hp.get("micro_batch") or N, N)
    count_key = "tokens" if hp["agg"] == "token-mean" else "samples"  # what each aggregation divides by
    total, loss_sum, parts, t_lp, t_bw = 0, 0.0, [], 0.0, 0.0
    for lo in range(0, N, mb):
        rows = slice(lo, min(N, lo + mb))
        ta = time.perf_counter()
        with model.no_sync() if world > 1 and rows.stop < N else contextlib.nullcontext():
            with autocast(r.device):
                loss, st = objective_loss(name, model, sample.rollout_rows(ro, rows), r[rows], G, hp, ref)
            sync()
            tb = time.perf_counter()
            (loss * st[count_key]).backward()
        sync()
        t_lp, t_bw = t_lp + tb - ta, t_bw + time.perf_counter() - tb
        total += st[count_key]
        loss_sum += float(loss.detach()) * st[count_key]
        parts.append((rows.stop - rows.start, st))
    total, loss_sum = all_reduce_sum([total, loss_sum])  # the whole batch's (no-ops in one process)
    for p in model.parameters():
        if p.grad is not None:
            p.grad /= max(1, total) / world
    stats = {}
    for k in parts[0][1]:
        vals = [(n, st[k]) for n, st in parts if k in st]
        stats[k] = sum(v for _, v in vals) if isinstance(vals[0][1], int) else sum(n * v for n, v in vals) / N
    return torch.tensor(loss_sum / max(1, total)), reduce_stats(stats), (t_lp, t_bw)


def main(argv=None):
    ap = common_args(__doc__, "pre-training or RL steps (default: the preset's)")
    rl = ap.add_argument_group("RL (given --objective)")
    rl.add_argument("--objective", default=None, help=f"one of: {', '.join(OBJECTIVES)}")
    rl.add_argument("--init", default=None, help="checkpoint to start RL from (default OUT/<preset>/base.pt)")
    rl.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    rl.add_argument("--batch-prompts", type=int, default=None, help="B: prompts per step")
    rl.add_argument("--group", type=int, default=None, help="G: samples per prompt")
    rl.add_argument("--agg", default="token-mean", choices=("token-mean", "seq-mean-token-mean",
                                                             "seq-mean-token-sum-norm"))
    rl.add_argument("--eps-high", type=float, default=0.2, help="PPO clip upper epsilon (0.28: clip-higher)")
    rl.add_argument("--kl-coef", type=float, default=0.0, help="k3 KL to the initial model (0: off, the paper)")
    rl.add_argument("--prerl-advantage", default="r-mean", choices=("r-mean", "+-1"))
    rl.add_argument("--temperature", type=float, default=1.0, help="rollout temperature (the paper: 1.0)")
    rl.add_argument("--micro-batch", type=int, default=None,
                    help="rows per forward/backward chunk (RL: a multiple of --group; pre-training: documents) "
                         "with the whole batch's denominators (default: the preset's; all rows at once)")
    rl.add_argument("--other-space-every", type=int, default=1,
                    help="run the logging-only log-prob pass of the untrained space every k-th step (0: never)")
    ap.add_argument("--bench", action="store_true",
                    help="time RL steps of the cpu and gpu presets (--steps of them, default 3) and exit")
    ap.add_argument("--ckpt-every", type=int, default=None,
                    help="checkpoint interval in steps (default: 512 for pre-training, 10 for RL)")
    args = ap.parse_args(argv)
    try:
        device, preset = device_and_preset(args)
        if args.bench:
            print(f"RL step benchmark on {device} ({torch.get_num_threads()} threads)")
            from experiments.bench import bench_rl_step  # benchmark machinery lives with the experiments
            for p in ([args.preset] if args.preset else ["cpu", "gpu"]):
                bench_rl_step(p, device, reps=args.steps or 3, out=args.out, micro_batch=args.micro_batch)
            return
        if args.ckpt_every is not None and (args.ckpt_every <= 0 or (args.objective is None and args.ckpt_every % 16)):
            raise UserError(f"--ckpt-every {args.ckpt_every}: must be positive (a multiple of 16 for pre-training)")
        if args.objective is None:
            if args.micro_batch is not None and args.micro_batch <= 0:
                raise UserError(f"--micro-batch {args.micro_batch}: must be a positive number of documents")
            path, m, samples = pretrain(preset, os.path.join(args.out, preset), device, seed=args.seed,
                                        steps=args.steps, resume=args.resume, ckpt_every=args.ckpt_every or 512,
                                        micro_batch=args.micro_batch)
            print(f"wrote {path} ({m['pretrain_minutes']:.1f} min)")
            print(json.dumps({k: round(v, 4) for k, v in m.items() if k != "curve"}, indent=1))
            for p, text, r in samples[:6]:
                print(describe(p, text, r))
            return
        check_rl_args(args, preset)
        init = args.init or os.path.join(args.out, preset, "base.pt")
        load_checkpoint(init)  # fail now, with one line, if it is missing or corrupt
        out = os.path.join(args.out, preset, f"{args.objective}.pt")
        _, history, evals = rl_train(
            init, args.objective, out, device, seed=args.seed, preset=preset, steps=args.steps,
            warmup_steps=args.warmup_steps, log_path=out[:-3] + ".jsonl", resume=args.resume,
            ckpt_every=args.ckpt_every or 10, lr=args.lr, warmup_lr=args.warmup_lr, batch_prompts=args.batch_prompts,
            group=args.group, agg=args.agg, eps_high=args.eps_high, kl_coef=args.kl_coef,
            prerl_advantage=args.prerl_advantage, temperature=args.temperature, micro_batch=args.micro_batch,
            other_space_every=args.other_space_every)
    except UserError as e:
        fail(e)
    except Diverged as e:
        fail(e, code=1)
    print(f"wrote {out}; held-out pass@1 {evals[0]['pass@1']:.3f} -> {evals[-1]['pass@1']:.3f}")


if __name__ == "__main__":
    main()
