"""
Training: pre-training of the base model (its settings and `python train.py --preset cpu`: out/cpu/base.pt), the
online RL loop (its settings and command line: dsrl.py), and the flags train.py and dsrl.py share.

Pre-training is plain next-token prediction (nanoGPT) on documents `<|bos|>` + text + `<|eos|>`, one per row,
right-padded, pad targets ignored; documents are drawn fresh from reward.corpus_document every step (no dataset
on disk, no epoch).

The RL loop, one step: B fresh training problems -> G samples each from P(y|x) (the KV-cached group sampler) ->
verifier rewards -> the loss of the step's objective (losses.OBJECTIVES) -> gradient clipped to norm 1 -> one
AdamW step (betas 0.9/0.999, constant learning rate, weight decay 0 unless RLConfig.weight_decay says otherwise).
The run's schedule (dsrl.py) says which objective and learning rate each step uses.
"""
import argparse
import contextlib
import copy
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field

import torch
from torch.nn import functional as F

import sample
from losses import objective_loss
from model import (PRESETS, GPT, save_checkpoint, load_checkpoint, model_from_checkpoint, restore, rng_state,
                   kill_point, init_distributed, rank_world, is_rank0, data_parallel, all_reduce_sum, reduce_stats,
                   on_rank0, gather, barrier, sampler_seed, machine)
from reward import BOS_ID, EOS_ID, PAD_ID, SPLITS, UserError, fail, CorpusConfig, corpus_document, encode, \
    make_problem, make_split, TERSE
from sample import describe, evaluate, generate, pick_device, prompt_ids, rollout_rows, rollout_stats

# -----------------------------------------------------------------------------
# pre-training settings per preset (the model sizes are model.PRESETS, the RL settings dsrl.RL)

TRAIN = {  # pre-training; python train.py --preset P prints the minutes it took
    "tiny": dict(steps=150, batch_size=32, lr=3e-3),
    # lab: ends in the learning transition, so pass@1 depends on the seed (0 / 1 / 2: 0.092 / 0.177 / 0.177 on an
    # Intel Xeon, 0.152 / 0.146 / 0.099 on an AMD EPYC; candidates: results/cpu/bases-probe/README.md); lab.pt: seed 1
    "lab": dict(steps=8000, batch_size=16, lr=5e-3),
    # cpu: past the transition for every seed, seed 2 off the plateau rule by its last val point (3 seeds' curves,
    # thread counts: results/cpu/bases/README.md); slip 0.25 keeps the corpus's ceiling, so the base's, below 0.7
    "cpu": dict(steps=10000, batch_size=32, lr=3e-3, corpus=dict(slip=0.25)),
    "gpu": dict(steps=3000, batch_size=256, lr=1e-3, micro_batch=64),
}


@dataclass
class PretrainConfig:
    """Every setting of one pre-training run: TRAIN[preset] and the caller's overrides (pretrain_config)."""
    preset: str
    steps: int
    batch_size: int                 # documents per step
    lr: float                       # peak of the warmup-cosine schedule (lr_at)
    weight_decay: float = 0.1       # AdamW's, on the weight matrices (GPT.configure_optimizers)
    micro_batch: int = None         # documents per forward/backward chunk, each over the whole batch's token count
                                    # (the same gradient; None: the whole batch at once)
    seed: int = 0
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    init: str = None                # continue from this checkpoint's weights (a fresh optimizer) instead of a new model
    mix: str = None                 # a JSONL file of {"text": ...} documents, drawn instead of a corpus document
    mix_share: float = 0.0          # with this probability (the retry data of experiments/reflection.py)
    eval_every: int = 500           # steps between held-out loss / val pass@1 points of the curve
    eval_problems: int = 200        # the final test evaluation: problems x samples
    eval_samples: int = 8
    ckpt_every: int = 512           # a multiple of the 16-batch document pool, so a resumed run sees the same batches


def pretrain_config(preset, corpus=None, **overrides):
    """TRAIN[preset] with the caller's overrides (None: a flag left at its default); corpus: CorpusConfig fields
    over the preset's own (TRAIN[preset]["corpus"])."""
    recipe = dict(TRAIN[preset])
    fields = {**recipe.pop("corpus", {}), **(corpus or {})}
    return PretrainConfig(preset=preset, corpus=CorpusConfig(**fields),
                          **{**recipe, **{k: v for k, v in overrides.items() if v is not None}})


def autocast(device):
    """The precision of the training forward passes: bf16 autocast on a GPU that has bf16 (matmuls in bf16; weights,
    gradients and AdamW stay fp32, and the log-probs and losses are taken from fp32 logits); plain fp32 on a CPU,
    where runs stay bit-reproducible and bf16 matmuls are slower on most chips. Sampling is always fp32."""
    if str(device).startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# -----------------------------------------------------------------------------
# pre-training: next-token prediction on fresh corpus documents

def collate(docs, device):
    """Token lists -> x (B, T) inputs and y (B, T) targets, right-padded; pad targets are -1 (ignored)."""
    T = max(len(d) for d in docs) - 1
    x = torch.tensor([d[:-1] + [PAD_ID] * (T + 1 - len(d)) for d in docs], device=device)
    y = torch.tensor([d[1:] + [-1] * (T + 1 - len(d)) for d in docs], device=device)
    return x, y


def corpus_batches(rng, corpus, batch_size, device, pool=16, mix=(), mix_share=0.0):
    """Endless batches of fresh documents `<|bos|>` text `<|eos|>`, drawn `pool` batches at a time and sorted by
    length, so that a batch holds documents of similar length and few pad tokens are computed. With `mix` (texts)
    each document is one of them with probability mix_share (drawn at random), else a fresh corpus document."""
    draw = lambda: rng.choice(mix) if mix and rng.random() < mix_share else corpus_document(rng, corpus)  # noqa: E731
    while True:
        docs = [[BOS_ID] + encode(draw()) + [EOS_ID] for _ in range(batch_size * pool)]
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


def pretrain_step(model, opt, x, y, tokens, micro_batch, world):
    """One optimizer step on this rank's rows x, y (all rows in one process), in chunks of micro_batch rows, each
    chunk's loss over the whole batch's token count `tokens`, times world (DDP averages the ranks' gradients in the
    last chunk's backward): the gradient of the whole batch's mean loss. Returns the summed loss (a tensor)."""
    opt.zero_grad(set_to_none=True)
    loss, mb = 0.0, micro_batch or len(x)
    for lo in range(0, len(x), mb):
        with model.no_sync() if world > 1 and lo + mb < len(x) else contextlib.nullcontext():
            part = lm_loss(model, x[lo:lo + mb], y[lo:lo + mb], tokens=tokens) * world
            part.backward()
        loss = loss + part.detach()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


def heldout_eval(model, heldout, tag, seed):
    """The pre-training curve's point: held-out loss and val pass@1 (100 problems x 4), both cheap."""
    model.eval()
    with torch.no_grad():
        hl = sum(lm_loss(model, x, y).item() for x, y in heldout) / len(heldout)
    mv, _ = evaluate(model, make_split("val", 100, tag=tag), n=4, seed=seed, progress=False)
    model.train()
    return hl, mv["pass@1"]


def pretrain(cfg, out_dir, device, resume=False, progress=True):
    """Pre-train a GPT of cfg.preset's size (a PretrainConfig); checkpoint to out_dir/base.pt every cfg.ckpt_every
    steps and at the end. Under torchrun every rank draws the same batch and trains on its share of the rows; rank 0
    evaluates and writes. Returns (path, held-out metrics, samples)."""
    from tqdm import tqdm
    rank, world = rank_world()
    progress = progress and rank == 0
    if cfg.batch_size % world:
        raise UserError(f"{cfg.preset}: batch of {cfg.batch_size} documents does not split over {world} processes")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model = GPT(PRESETS[cfg.preset]).to(device)
    if cfg.init:  # continued pre-training: the weights of cfg.init, a fresh optimizer and schedule
        model.load_state_dict(load_checkpoint(cfg.init, map_location=device)["model"])
    opt = model.configure_optimizers(cfg.lr, cfg.weight_decay, device_type=device.split(":")[0])
    path = os.path.join(out_dir, "base.pt")
    # the settings a resumed run must share (any chunk size: the same gradient; a run that neither continues nor
    # mixes keeps the record it had before those settings existed)
    run = {k: v for k, v in asdict(cfg).items() if k != "micro_batch" and not (k.startswith(("init", "mix")) and not v)}
    start, minutes, curve, seen = 0, 0.0, [], 0  # seen: the documents' tokens trained on (FLOPs ~ 6 x params x seen)
    if resume and os.path.exists(path):
        ck = restore(path, run, model, opt, rng, device)
        start, minutes, curve, seen = ck["step"], ck["minutes"], ck.get("curve", []), ck.get("tokens", 0)
    ddp = data_parallel(model)
    rows = slice(rank * cfg.batch_size // world, (rank + 1) * cfg.batch_size // world)  # this rank's share
    tag = TERSE if cfg.corpus.modes else "Q"  # the two-mode corpus is evaluated in its terse mode, as RL asks
    heldout_docs = corpus_batches(random.Random(10_000), cfg.corpus, 64, device, pool=4)
    heldout = [next(heldout_docs) for _ in range(4)]  # a fixed held-out set (its own seed)
    mix = ()
    if cfg.mix:
        with open(cfg.mix) as f:
            mix = [json.loads(line)["text"] for line in f]
    batches = corpus_batches(rng, cfg.corpus, cfg.batch_size, device, mix=mix, mix_share=cfg.mix_share)
    t0 = time.time()
    bar = tqdm(range(start, cfg.steps), desc=f"pretrain {cfg.preset}", disable=not progress, initial=start,
               total=cfg.steps)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.steps, cfg.lr)
        x, y = next(batches)
        tokens = int((y != -1).sum())
        seen += tokens
        loss = pretrain_step(ddp, opt, x[rows], y[rows], tokens, cfg.micro_batch, world)
        evaluating = (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps
        if step % 20 == 0 or evaluating:
            train_loss = all_reduce_sum([loss.item()])[0] / world  # the whole batch's loss
            bar.set_postfix(loss=f"{train_loss:.3f}")
        if evaluating:
            hl, pass1 = on_rank0(lambda: heldout_eval(model, heldout, tag, cfg.seed))
            curve.append({"step": step + 1, "heldout_loss": hl, "val_pass@1": pass1})
            if progress:
                bar.write(f"step {step + 1}: train loss {train_loss:.4f}, held-out loss {hl:.4f}, "
                          f"val pass@1 {pass1:.3f}, {time.time() - t0:.0f}s")
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:  # the rng stands at a pool boundary here
            if rank == 0:
                save_checkpoint(path, {
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "config": asdict(model.config),
                    "preset": cfg.preset, "step": step + 1, "done": step + 1 == cfg.steps, "phase": "pretrain",
                    "run": run, "minutes": minutes + (time.time() - t0) / 60, "rng": rng_state(rng), "seed": cfg.seed,
                    "curve": curve, "tokens": seen})
            barrier()
            kill_point(step + 1)
    minutes += (time.time() - t0) / 60
    m, samples = on_rank0(lambda: evaluate(model, make_split("test", cfg.eval_problems, tag=tag),
                                           n=cfg.eval_samples, seed=cfg.seed, progress=progress))
    m["pretrain_minutes"], m["pretrain_tokens"], m["curve"], m["machine"] = minutes, seen, curve, machine(device)
    if rank == 0:
        with open(os.path.join(out_dir, "base_eval.json"), "w") as f:
            json.dump(m, f, indent=1)
    return path, m, samples


# -----------------------------------------------------------------------------
# online RL: sample B prompts x G answers from P(y|x) -> score -> advantages -> loss -> one optimizer step

class Diverged(RuntimeError):
    """Several non-finite steps in a row: the run stops with this one-line message."""


def start_rl_run(init, run, cfg, out_path, device, resume):
    """Policy, optimizer, KL reference (a copy apart from the policy; None when cfg.kl_coef is 0), problem and
    sampling generators, and the checkpoint of the run being resumed (None if not), loaded into all of them."""
    model = model_from_checkpoint(load_checkpoint(init), device)
    if asdict(model.config) != asdict(PRESETS[cfg.preset]):
        raise UserError(f"checkpoint {init} is a {model.config.n_layer}x{model.config.n_embd} model, "
                        f"not the {cfg.preset} preset's {PRESETS[cfg.preset].n_layer}x{PRESETS[cfg.preset].n_embd}")
    rank, world = rank_world()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(sampler_seed(cfg.seed, rank))
    # one optimizer for both phases of a two-phase run (not reset at the switch, as in the official code)
    opt = model.configure_optimizers(cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999),
                                     device_type=device.split(":")[0])
    ref = copy.deepcopy(model).eval() if cfg.kl_coef > 0 else None
    ck = restore(out_path, run, model, opt, rng, device) if resume and os.path.exists(out_path) else None
    if ck is not None:
        if ref is not None:
            ref.load_state_dict(ck["ref"])
        gen.set_state((ck["rng"]["sampler"][rank] if world > 1 else ck["rng"]["sampler"]).cpu())
    return model, opt, ref, rng, gen, ck


def rl_train(init, schedule, cfg, out_path, device, resume=False, progress=True, eval_extra=None):
    """Online RL from checkpoint `init` with `schedule` (dsrl.Schedule: each step's objective and learning rate) and
    settings `cfg` (dsrl.RLConfig); checkpoints to out_path every cfg.ckpt_every steps and at the end, logs every
    step to out_path's .jsonl. resume=True continues an unfinished run of the same settings at out_path (on CPU:
    identical to an uninterrupted run). eval_extra(model) -> dict joins every held-out evaluation. Under torchrun
    every rank draws the same problems and samples its share (rl_step); rank 0 evaluates and writes. Returns (model,
    history, evals). One loop, read top to bottom; its parts: start_rl_run, rl_step, save_rl_checkpoint."""
    from tqdm import tqdm
    rank, world = rank_world()
    progress = progress and rank == 0
    if cfg.batch_prompts % world:
        raise UserError(f"--batch-prompts {cfg.batch_prompts} must be a multiple of the {world} processes")
    run = {"init": os.path.abspath(init), "schedule": schedule.name, "switch": schedule.switch, "cfg": asdict(cfg),
           **({"processes": world} if world > 1 else {})}
    model, opt, ref, rng, gen, ck = start_rl_run(init, run, cfg, out_path, device, resume)
    history, evals, start, bad_in_a_row = ((ck["history"], ck["evals"], ck["step"], ck["bad_in_a_row"]) if ck
                                           else ([], [], 0, 0))
    ddp = data_parallel(model)  # the loss and backward go through DDP; sampling and evaluation use `model`
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    log = open(out_path[:-3] + ".jsonl", "w") if rank == 0 else None
    for rec in history if log else ():  # a resumed run rewrites its log up to the checkpoint
        log.write(json.dumps(rec) + "\n")
    test = make_split(cfg.eval_split, cfg.eval_problems, tag=cfg.prompt_tag)
    run_eval = lambda step: {"step": step, **on_rank0(lambda: evaluate(  # at the rollout temperature
        model, test, n=cfg.eval_samples, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
        seed=cfg.seed + 1)[0]), **(on_rank0(lambda: eval_extra(model)) if eval_extra else {})}
    evals = evals or [run_eval(0)]
    bar = tqdm(range(start, cfg.steps), desc=f"{schedule.name} {cfg.preset}", disable=not progress, initial=start,
               total=cfg.steps)
    for step in bar:
        phase = schedule.phase(step)
        if step == schedule.switch and schedule.at_switch is not None:
            schedule.at_switch(model, opt, ref)
        for g in opt.param_groups:
            g["lr"] = phase.lr
        problems = [make_problem(rng, SPLITS["train"][0]) for _ in range(cfg.batch_prompts)]
        for p in problems:
            p.tag = cfg.prompt_tag
        every = cfg.other_space_every  # the logging-only pass of the other space on this step, or not
        ro, r, loss, st, gnorm, finite, times = rl_step(ddp, opt, problems, phase, cfg, gen, ref,
                                                        other_space=bool(every) and step % every == 0)
        bad_in_a_row = 0 if finite else bad_in_a_row + 1
        if bad_in_a_row >= 3:  # a blown-up step (NSR can push log-probs to -inf) is skipped; 3 in a row stop
            raise Diverged(f"{schedule.name}: {bad_in_a_row} non-finite steps in a row at step {step + 1} "
                           f"(lr {phase.lr}); lower the learning rate")
        rec = {"step": step + 1, "objective": phase.objective, "lr": phase.lr, "loss": loss.item(),
               "grad_norm": float(gnorm), "skipped": not finite,
               "skipped_total": sum(h["skipped"] for h in history) + (not finite),
               **reduce_stats(rollout_stats(ro, r, cfg.group)), **st,
               "t_sample": times[0], "t_learn": times[1] + times[2]}  # measured before any evaluation
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps or step + 1 == schedule.switch:
            evals.append(run_eval(step + 1))
            rec["eval"] = evals[-1]
            if progress:
                bar.write(f"step {step + 1} ({phase.objective}): held-out pass@1 {evals[-1]['pass@1']:.3f}, "
                          f"wait {evals[-1]['wait_share']:.3f}, length {evals[-1]['length']:.1f}")
        history.append(rec)
        if log:
            log.write(json.dumps(rec) + "\n")
            log.flush()
        bar.set_postfix(reward=f"{rec['reward']:.2f}", len=f"{rec['length']:.0f}", gn=f"{rec['grad_norm']:.2f}")
        if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps:
            save_rl_checkpoint(out_path, model, opt, ref, rng, gen, dict(
                run=run, step=step + 1, done=step + 1 == cfg.steps, phase=phase.objective, history=history,
                evals=evals, bad_in_a_row=bad_in_a_row, preset=cfg.preset))
            kill_point(step + 1)
    if log:
        log.close()
    return model, history, evals


def save_rl_checkpoint(path, model, opt, ref, rng, gen, meta):  # rank 0 writes; every rank's sampling stream
    sampler = gen.get_state().cpu()
    sampler = gather(sampler) if rank_world()[1] > 1 else sampler
    if is_rank0():
        save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "config": asdict(model.config), **meta, "rng": {**rng_state(rng), "sampler": sampler},
                               **({"ref": ref.state_dict()} if ref is not None else {})})
    barrier()


def rl_step(model, opt, problems, phase, cfg, gen, ref=None, other_space=True):
    """One online RL step of `phase` (dsrl.Phase): sample G answers per problem from P(y|x), score them, then loss,
    backward (micro_batched_backward), clip, optimizer step; a step whose loss or gradient is not finite is not
    applied. Under torchrun `model` is the DDP wrapper and this rank samples its share of the problems (whole groups).
    Returns (this rank's rollout and rewards, loss, stats, grad_norm, finite, seconds of sampling / log-prob passes /
    backward)."""
    net = getattr(model, "module", model)  # the GPT itself: sampling never goes through DDP
    device, G = net.lm_head.weight.device, cfg.group
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)  # honest timings on a GPU
    rank, world = rank_world()
    share = len(problems) // world
    mine = problems[rank * share:(rank + 1) * share]
    whole = world > 1 and os.environ.get("PRERL_TEST_WHOLE_BATCH") == "1"  # test hook: see sampler_seed
    t0 = time.perf_counter()
    net.eval()
    ro = generate(net, [prompt_ids(p) for p in (problems if whole else mine)], G=G,
                  max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, generator=gen)
    if whole:
        ro = rollout_rows(ro, slice(rank * share * G, (rank + 1) * share * G))
    # sample.rewards is looked up at call time: a replacement (sample.rewards = mine) takes effect
    r = torch.tensor(sample.rewards(ro, [p.answer for p in mine for _ in range(G)]), device=device)
    sync()
    t1 = time.perf_counter()
    model.train()
    opt.zero_grad(set_to_none=True)
    loss, st, (t_lp, t_bw) = micro_batched_backward(model, ro, r, phase, cfg, ref, other_space, sync)
    t3 = time.perf_counter()
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(gnorm))
    st["update_norm"] = 0.0  # a skipped step moves nothing
    if finite:
        before = torch.cat([p.detach().flatten() for p in model.parameters()])  # a copy of the weights: cheap here
        opt.step()
        st["update_norm"] = float((torch.cat([p.detach().flatten() for p in model.parameters()]) - before).norm())
    opt.zero_grad(set_to_none=True)
    sync()
    return ro, r, loss, st, gnorm, finite, (t1 - t0, t_lp, t_bw + time.perf_counter() - t3)


def micro_batched_backward(model, ro, r, phase, cfg, ref, other_space, sync):
    """Gradient accumulation over chunks of cfg.micro_batch rows (whole groups, so group advantages are
    unchanged), as verl's micro-batches. Every loss is (sum of per-token or per-sequence terms) / (count the
    objective keeps), so each chunk's backward takes loss * its own count and the summed gradient is divided by the
    whole batch's count: the one-chunk gradient up to float rounding. Statistics: row-weighted means (counts
    summed). Under torchrun (`model` the DDP wrapper, ro this rank's rows) DDP averages the summed gradients over
    the ranks (in the last chunk's backward), the counts are summed over ranks and the gradient divided by the
    whole count over world: one process's gradient on the same rows, whatever the number of ranks.
    Returns (loss, stats, (seconds in log-prob passes, seconds in backward))."""
    N, world = r.numel(), rank_world()[1]
    mb = min(cfg.micro_batch or N, N)
    count_key = "tokens" if cfg.agg == "token-mean" else "samples"  # what each aggregation divides by
    total, loss_sum, parts, t_lp, t_bw = 0, 0.0, [], 0.0, 0.0
    for lo in range(0, N, mb):
        rows = slice(lo, min(N, lo + mb))
        ta = time.perf_counter()
        with model.no_sync() if world > 1 and rows.stop < N else contextlib.nullcontext():
            with autocast(r.device):
                loss, st = objective_loss(phase.objective, model, rollout_rows(ro, rows), r[rows], cfg, ref,
                                          other_space)
                loss = loss * phase.loss_coef  # the official warmup's 0.01 on phase 1 (RLConfig.warmup_coef)
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


# -----------------------------------------------------------------------------
# the command line: the flags train.py and dsrl.py share, and pre-training's

def common_args(doc, steps_help):
    """The flags train.py and dsrl.py share."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="tiny, lab, cpu or gpu (default: gpu on cuda/mps, else cpu)")
    ap.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    ap.add_argument("--out", default="out", help="output folder; everything goes to OUT/<preset>/")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help=steps_help)
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    return ap


def device_and_preset(args):
    """Resolve --device (under torchrun: this rank's) and --preset and check the shared flags; UserError if bad."""
    device = init_distributed(pick_device(args.device))
    preset = args.preset or ("cpu" if device == "cpu" else "gpu")
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}: choose from {sorted(PRESETS)}")
    if args.steps is not None and args.steps <= 0:
        raise UserError(f"--steps must be positive, got {args.steps}")
    return device, preset


def main(argv=None):
    ap = common_args(__doc__, "pre-training steps (default: the preset's)")
    ap.add_argument("--micro-batch", type=int, default=None, help="documents per forward/backward chunk (the same "
                    "gradient; default: the preset's)")
    ap.add_argument("--ckpt-every", type=int, default=None, help="checkpoint interval, a multiple of 16 (default 512)")
    args = ap.parse_args(argv)
    try:
        device, preset = device_and_preset(args)
        if args.ckpt_every is not None and (args.ckpt_every <= 0 or args.ckpt_every % 16):
            raise UserError(f"--ckpt-every {args.ckpt_every}: must be a positive multiple of 16")
        if args.micro_batch is not None and args.micro_batch <= 0:
            raise UserError(f"--micro-batch {args.micro_batch}: must be a positive number of documents")
        cfg = pretrain_config(preset, seed=args.seed, steps=args.steps, ckpt_every=args.ckpt_every,
                              micro_batch=args.micro_batch)
        path, m, samples = pretrain(cfg, os.path.join(args.out, preset), device, resume=args.resume)
    except UserError as e:
        fail(e)
    print(f"wrote {path} ({m['pretrain_minutes']:.1f} min)")
    print(json.dumps({k: round(v, 4) for k, v in m.items() if k != "curve"}, indent=1))
    for p, text, r in samples[:6]:
        print(describe(p, text, r))


if __name__ == "__main__":
    main()
