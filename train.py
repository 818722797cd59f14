"""
Training: pre-training of the base model on the generated corpus.

    python train.py --preset cpu          # ~0.8M params, about 10 minutes on 2 CPU cores
    python train.py                       # picks cuda > mps > cpu and the matching preset

Pre-training is plain next-token prediction (nanoGPT) on documents `<|bos|>` + text + `<|eos|>`, one document
per row, right-padded; the pad targets are ignored. Documents are drawn fresh from reward.corpus_document
every step, so there is no dataset on disk and no epoch. The checkpoint lands in out/<preset>/base.pt.
"""
import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict

import torch
from torch.nn import functional as F

from model import PRESETS, GPT, save_checkpoint, load_checkpoint, model_from_checkpoint
from reward import BOS_ID, EOS_ID, PAD_ID, UserError, CorpusConfig, corpus_document, encode, make_split
from sample import evaluate, pick_device, describe

# Training settings per preset. Batch sizes and step counts are sized so that `cpu` pre-trains in about
# 10 minutes on 2 cores and `gpu` in about 2 minutes on one modern GPU.
TRAIN = {
    "tiny": dict(pretrain_steps=150, batch_size=32, lr=3e-3),
    "cpu": dict(pretrain_steps=3000, batch_size=64, lr=2e-3),
    "gpu": dict(pretrain_steps=3000, batch_size=256, lr=1e-3),
}


def default_preset(device):
    return "cpu" if device == "cpu" else "gpu"


def collate(docs, device):
    """Token lists -> x (B, T) inputs and y (B, T) targets, right-padded; pad targets are -1 (ignored)."""
    T = max(len(d) for d in docs) - 1
    x = torch.tensor([d[:-1] + [PAD_ID] * (T + 1 - len(d)) for d in docs], device=device)
    y = torch.tensor([d[1:] + [-1] * (T + 1 - len(d)) for d in docs], device=device)
    return x, y


def corpus_batches(rng, corpus, batch_size, device, pool=16):
    """Endless batches of fresh documents `<|bos|>` text `<|eos|>`. Documents are drawn `pool` batches at a
    time and sorted by length, so a batch holds documents of similar length: about 2.5x less padding than
    random batches, at no cost to what is learned."""
    while True:
        docs = [[BOS_ID] + encode(corpus_document(rng, corpus)) + [EOS_ID] for _ in range(batch_size * pool)]
        docs.sort(key=len)
        chunks = [docs[i:i + batch_size] for i in range(0, len(docs), batch_size)]
        rng.shuffle(chunks)
        for c in chunks:
            yield collate(c, device)


def lm_loss(model, x, y):
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)


def lr_at(step, total, lr, warmup=100):
    """Linear warmup, then cosine decay to lr/10 (nanoGPT)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def rng_state():
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def pretrain(preset, out_dir, device, seed=0, steps=None, corpus=None, eval_every=500, eval_problems=200,
             eval_samples=8, progress=True):
    """Pre-train a GPT of `preset` size and write out_dir/base.pt. Returns (path, eval metrics)."""
    from tqdm import tqdm
    hp = TRAIN[preset]
    steps = steps or hp["pretrain_steps"]
    corpus = corpus or CorpusConfig()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = GPT(PRESETS[preset]).to(device)
    opt = model.configure_optimizers(hp["lr"], device_type=device.split(":")[0])
    heldout_docs = corpus_batches(random.Random(10_000), corpus, 64, device, pool=4)
    heldout = [next(heldout_docs) for _ in range(4)]  # a fixed held-out set (its own seed)
    batches = corpus_batches(rng, corpus, hp["batch_size"], device)
    path = os.path.join(out_dir, "base.pt")
    t0 = time.time()
    bar = tqdm(range(steps), desc=f"pretrain {preset}", disable=not progress)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, hp["lr"])
        x, y = next(batches)
        loss = lm_loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            model.eval()
            with torch.no_grad():
                hl = sum(lm_loss(model, x, y).item() for x, y in heldout) / len(heldout)
            model.train()
            bar.write(f"step {step + 1}: train loss {loss.item():.4f}, held-out loss {hl:.4f}, "
                      f"{time.time() - t0:.0f}s")
    minutes = (time.time() - t0) / 60
    save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                           "config": asdict(model.config), "preset": preset, "step": steps, "phase": "pretrain",
                           "corpus": asdict(corpus), "rng": rng_state(), "seed": seed})
    m, samples = evaluate(model, make_split("test", eval_problems), n=eval_samples, seed=seed, progress=progress)
    m["pretrain_minutes"] = minutes
    with open(os.path.join(out_dir, "base_eval.json"), "w") as f:
        json.dump(m, f, indent=1)
    return path, m, samples


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="tiny, cpu or gpu (default: gpu on cuda/mps, else cpu)")
    ap.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    ap.add_argument("--out", default="out", help="output folder; checkpoints go to OUT/<preset>/")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="pre-training steps (default: the preset's)")
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    preset = args.preset or default_preset(device)
    try:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}: choose from {sorted(PRESETS)}")
        if args.steps is not None and args.steps <= 0:
            raise UserError(f"--steps must be positive, got {args.steps}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    path, m, samples = pretrain(preset, os.path.join(args.out, preset), device, seed=args.seed, steps=args.steps)
    print(f"wrote {path} ({m['pretrain_minutes']:.1f} min)")
    print(json.dumps({k: round(v, 4) for k, v in m.items()}, indent=1))
    for p, text, r in samples[:6]:
        print(describe(p, text, r))


if __name__ == "__main__":
    main()
