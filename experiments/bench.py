"""
The RL-step benchmark behind `python train.py --bench`: where the time of one training step goes (sampling, the
log-prob passes, backward and the optimizer step), with and without the logging-only log-prob pass, and the peak
memory of the process.
"""
import os
import random

import torch

from model import GPT, PRESETS, load_checkpoint, model_from_checkpoint
from reward import SPLITS, make_problem
from sample import peak_memory_mb
from train import RL, RL_DEFAULTS, rl_step


def bench_rl_step(preset, device, reps=3, out="out", micro_batch=None):
    """Time one GRPO step of `preset` (rl_step, as training runs it): sampling / log-prob passes / backward +
    optimizer step, with and without the logging-only pass of the other space, and the peak memory. Uses
    OUT/<preset>/base.pt when it exists (realistic response lengths), else random weights (every row runs to
    max_new_tokens: the worst case)."""
    hp = dict(RL_DEFAULTS, **RL[preset])
    if micro_batch is not None:
        hp["micro_batch"] = micro_batch
    path = os.path.join(out, preset, "base.pt")
    torch.manual_seed(0)
    model = model_from_checkpoint(load_checkpoint(path), device) if os.path.exists(path) else GPT(PRESETS[preset]).to(device)
    opt = model.configure_optimizers(hp["lr"], device_type=device.split(":")[0])
    rng, gen = random.Random(0), torch.Generator(device=device).manual_seed(0)
    for other_space in (True, False):
        times = []
        for rep in range(reps + 1):  # the first step warms up
            problems = [make_problem(rng, SPLITS["train"][0]) for _ in range(hp["batch_prompts"])]
            ro, *_, t = rl_step(model, opt, problems, "grpo", dict(hp, other_space=other_space), gen)
            if rep:
                times.append((*t, int(ro.mask.sum()) + ro.prompt.numel(), ro.response.numel()))
        s, lp, bw, tok, gen_tok = (sum(x[i] for x in times) / reps for i in range(5))
        total = s + lp + bw
        print(f"{preset:4s} ({'base.pt' if os.path.exists(path) else 'random weights'}, {hp['batch_prompts']}x{hp['group']} "
              f"rows, micro-batch {hp['micro_batch'] or 'all'}, logging pass {'on' if other_space else 'off'}): "
              f"step {total:.2f} s = sampling {s:.2f} s ({100 * s / total:.0f}%, {gen_tok / s:.0f} tokens/s) + "
              f"log-prob passes {lp:.2f} s ({100 * lp / total:.0f}%, {tok / lp:.0f} tokens/s) + backward/step "
              f"{bw:.2f} s ({100 * bw / total:.0f}%, {tok / bw:.0f} tokens/s)")
    print(f"  peak memory of the process: {peak_memory_mb(device):.0f} MB "
          f"({'torch.cuda.max_memory_allocated' if device.startswith('cuda') else 'resident set size'})")
