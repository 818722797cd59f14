"""
Benchmarks and checks of the machinery, each a command that prints its numbers:

    python -m experiments.bench --sampler [--rows 256 1024] [--profile] [--compile]   # tokens/s of the sampler
    python -m experiments.bench --rl-step [--preset cpu] [--steps 3] [--micro-batch N] # where an RL step's time goes
    python -m experiments.bench --processes 2 --preset tiny --init BASE.pt             # one process vs torchrun
    python -m experiments.bench --tokens-vs OTHER_CHECKOUT                            # same sampled tokens?

--sampler: naive recompute vs the KV cache (growing, static, and through torch.compile) against the decode step's
FLOP and memory floors, with --profile the per-op table. --rl-step: one training step split into sampling, the
log-prob passes and backward with the optimizer step, with and without the logging-only log-prob pass, and the
peak memory of the process.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

import torch

from dsrl import Phase, peak_memory_mb, rl_config
from model import GPT, PRESETS, data_parallel, load_checkpoint, machine, model_from_checkpoint
from reward import SPLITS, fail, make_problem, make_split
from sample import generate, pick_device, prompt_ids
from train import rl_step


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflops(device, dtype=torch.float32, n=1024, reps=10):
    """The machine's measured dense-matmul rate: the arithmetic ceiling for one decode step."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def copy_gbps(device, mib=256, reps=5):
    """The machine's measured memory bandwidth: bytes read + written per second by a large tensor copy."""
    a = torch.ones(mib * 2 ** 18, device=device)  # mib MiB of fp32
    b = torch.empty_like(a)
    b.copy_(a)
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        b.copy_(a)
    sync(device)
    return 2 * a.numel() * 4 * reps / (time.perf_counter() - t) / 1e9


def where(gflops, device="cpu"):
    """The machine beside every figure: chip, threads, torch, and the measured matmul rate the floors use."""
    m = machine(device)
    return f"{m['chip']}, {m['threads']} threads, torch {m['torch']}, fp32 matmul {gflops:.0f} GFLOP/s"


def bench_sampler(args):
    """--sampler: tokens/s of naive recompute vs the KV-cached sampler (the growing cache, the static
    one, and with --compile both through torch.compile) on one model, same rows and lengths, against the FLOP and
    memory floors of a decode step on this machine."""
    device = pick_device(args.device)
    torch.manual_seed(0)
    model = GPT(PRESETS[args.preset]).to(device).eval()  # random weights: rows never stop early
    gflops, gbps = matmul_gflops(device), copy_gbps(device)
    print(f"bench: preset {args.preset} ({model.num_params() / 1e6:.2f}M params), {args.new_tokens} new tokens per "
          f"row, device {device}; {where(gflops, device)}, memory copy {gbps:.1f} GB/s")
    if device.startswith("cuda"):  # the rates training runs at (bf16 autocast), for the README's laptop estimate
        print(f"  large matmuls (n=4096): fp32 {matmul_gflops(device, n=4096):.0f} GFLOP/s, bf16 "
              f"{matmul_gflops(device, torch.bfloat16, n=4096):.0f} GFLOP/s")
    for rows in args.rows:
        prompts = [prompt_ids(p) for p in make_split("test", rows)]
        tps, tokens = {}, {}
        static = "static + CUDA graph" if device.startswith("cuda") else "static cache"
        runs = [("naive recompute", False, False, False), ("kv cache", True, False, False), (static, True, False, True)]
        if args.compile:
            runs += [("kv + compile", True, True, False), (static + " + compile", True, True, True)]
        for name, use_cache, compiled, fixed in runs:
            kw = dict(use_cache=use_cache, compile=compiled, static=fixed)
            t = time.perf_counter()
            generate(model, prompts[:8], max_new_tokens=4, **kw)  # warm up
            if compiled:
                print(f"  {rows:5d} rows  torch.compile of the decode step: {time.perf_counter() - t:.0f} s")
            dt = float("inf")
            for _ in range(3 if use_cache else 1):  # the cached run is short: best of 3 against machine noise
                sync(device)
                t = time.perf_counter()
                ro = generate(model, prompts, max_new_tokens=args.new_tokens, **kw, check_every=10 ** 9,
                              generator=torch.Generator(device=device).manual_seed(0))
                sync(device)
                dt = min(dt, time.perf_counter() - t)
            tps[name], tokens[name] = ro.response.numel() / dt, ro.response
            print(f"  {rows:5d} rows  {name:26s} {tps[name]:10.0f} tokens/s  ({dt:.2f} s, "
                  f"{dt / args.new_tokens * 1e3:.1f} ms per step)")
        for name, *_ in runs[2:]:
            print(f"  {rows:5d} rows  {name} vs kv cache: {tps[name] / tps['kv cache']:.2f}x; rows sampled otherwise: "
                  f"{int((tokens[name] != tokens['kv cache']).any(1).sum())} of {rows}")
        floor_ms = 2 * model.num_params() * rows / (gflops * 1e9) * 1e3
        # what a decode step must read at least: the weights once, and every cached key and value (fp32),
        # on average over the run (prompt + half the response cached)
        cfg = model.config
        avg_t = sum(len(p) for p in prompts) / rows + args.new_tokens / 2
        kv_bytes = 2 * cfg.n_layer * rows * avg_t * cfg.n_embd * 4
        mem_ms = (4 * model.num_params() + kv_bytes) / (gbps * 1e9) * 1e3
        step_ms = rows / tps["kv cache"] * 1e3
        print(f"  {rows:5d} rows  speed-up {tps['kv cache'] / tps['naive recompute']:.1f}x; decode step "
              f"{step_ms:.1f} ms vs FLOP floor {floor_ms:.2f} ms ({step_ms / floor_ms:.1f}x the floor), "
              f"memory floor {mem_ms:.2f} ms ({step_ms / mem_ms:.1f}x; {kv_bytes / 2 ** 20:.0f} MiB of KV cache read); "
              f"rows sampled otherwise than by naive recompute: "
              f"{int((tokens['kv cache'] != tokens['naive recompute']).any(1).sum())} of {rows}")
        mm_ms = step_matmuls_ms(model, rows, device)
        print(f"  {rows:5d} rows  the step's {len(linears(model))} weight matmuls alone, at their shapes: {mm_ms:.2f} ms "
              f"({mm_ms / floor_ms:.1f}x the FLOP floor, {100 * mm_ms / step_ms:.0f}% of the step)")
    print(f"  peak memory {peak_memory_mb(device):.0f} MB")
    if args.profile:
        for rows in args.rows:
            profile_decode(model, [prompt_ids(p) for p in make_split("test", rows)], args.new_tokens, device)


def linears(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


def step_matmuls_ms(model, rows, device, reps=20):
    """ms of a decode step's weight matmuls alone, each at its own shape ((rows, in) @ (in, out)), back to back:
    what the step costs at least at this machine's rate for these small shapes (attention, the elementwise ops
    and Python come on top)."""
    xs = [(torch.randn(rows, m.in_features, device=device), m.weight) for m in linears(model)]
    with torch.no_grad():
        for x, w in xs:
            x @ w.t()
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            for x, w in xs:
                x @ w.t()
        sync(device)
    return (time.perf_counter() - t) / reps * 1e3


def bench_rl_step(preset, device, reps=3, out="out", micro_batch=None):
    """Time one GRPO step of `preset` (rl_step, as training runs it): sampling / log-prob passes / backward +
    optimizer step, with and without the logging-only pass of the other space, and the peak memory. Uses
    OUT/<preset>/base.pt when it exists (realistic response lengths), else random weights (every row runs to
    max_new_tokens: the worst case)."""
    cfg = rl_config(preset, micro_batch=micro_batch)
    path = os.path.join(out, preset, "base.pt")
    torch.manual_seed(0)
    model = model_from_checkpoint(load_checkpoint(path), device) if os.path.exists(path) else GPT(PRESETS[preset]).to(device)
    opt = model.configure_optimizers(cfg.lr, device_type=device.split(":")[0])
    ddp = data_parallel(model)  # under torchrun: this rank's share of the batch, as training runs it
    rng, gen = random.Random(0), torch.Generator(device=device).manual_seed(0)
    gflops, P, step_s = matmul_gflops(device), model.num_params(), {}
    for other_space in (True, False):
        times = []
        for rep in range(reps + 1):  # the first step warms up
            problems = [make_problem(rng, SPLITS["train"][0]) for _ in range(cfg.batch_prompts)]
            ro, *_, t = rl_step(ddp, opt, problems, Phase("grpo", cfg.lr), cfg, gen, other_space=other_space)
            if rep:
                times.append((*t, int(ro.mask.sum()) + ro.prompt.numel(), ro.response.numel()))
        s, lp, bw, tok, gen_tok = (sum(x[i] for x in times) / reps for i in range(5))
        total = step_s[other_space] = s + lp + bw
        # FLOP floor: 2 x params per token for each forward (the sampled tokens once, the scored sequences once per
        # log-prob pass), twice that for the backward, at the measured matmul rate
        floor = 2 * P * (gen_tok + (2 if other_space else 1) * tok + 2 * tok) / (gflops * 1e9)
        print(f"{preset:4s} ({'base.pt' if os.path.exists(path) else 'random weights'}, {cfg.batch_prompts}x{cfg.group} "
              f"rows, micro-batch {cfg.micro_batch or 'all'}, logging pass {'on' if other_space else 'off'}): "
              f"step {total:.2f} s = sampling {s:.2f} s ({100 * s / total:.0f}%, {gen_tok / s:.0f} tokens/s) + "
              f"log-prob passes {lp:.2f} s ({100 * lp / total:.0f}%, {tok / lp:.0f} tokens/s) + backward/step "
              f"{bw:.2f} s ({100 * bw / total:.0f}%, {tok / bw:.0f} tokens/s); FLOP floor {floor:.2f} s "
              f"({total / floor:.1f}x)")
    k = cfg.other_space_every
    if k > 1:  # what training runs: the logging pass on one step in k
        print(f"{preset:4s}  the default, logging pass on one step in {k}: {(step_s[True] + (k - 1) * step_s[False]) / k:.2f} s "
              f"per step on average")
    print(f"  peak memory of the process: {peak_memory_mb(device):.0f} MB "
          f"({'torch.cuda.max_memory_allocated' if device.startswith('cuda') else 'resident set size'})")


def compare_processes(preset, init, processes=2, steps=3, objective="grpo", out="out/ddp-check"):
    """The same RL run (`steps` steps of `objective` from `init`, seed 0) in one process and under torchrun in
    `processes` gloo processes, one thread each (dsrl.py's command line, alone, so evaluation included). Prints the
    largest |weight difference| to the one-process run on the same tokens (PRERL_TEST_WHOLE_BATCH=1: every rank
    samples the whole batch with the one-process stream and keeps its rows, model.sampler_seed) and with each rank's own stream (other
    samples: how far a real run moves), and the mean step time of each run (sampling + learning, from its log)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    runs = {"1 process": ([sys.executable], "0"), f"{processes} processes": (torchrun, "0"),
            f"{processes} processes, same tokens": (torchrun, "1")}
    weights, step_s = {}, {}
    for name, (launch, whole) in runs.items():
        d = os.path.join(out, name.replace(" ", "-").replace(",", ""))
        cmd = launch + ["dsrl.py", "--preset", preset, "--objective", objective, "--alone", "--steps", str(steps),
                        "--init", os.path.abspath(init), "--out", d, "--eval-samples", "1"]
        env = dict(os.environ, OMP_NUM_THREADS="1", PRERL_TEST_WHOLE_BATCH=whole)
        p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
        weights[name] = load_checkpoint(os.path.join(d, preset, f"{objective}.pt"))["model"]
        with open(os.path.join(d, preset, f"{objective}.jsonl")) as f:
            log = [json.loads(line) for line in f]
        step_s[name] = sum(r["t_sample"] + r["t_learn"] for r in log) / len(log)
        rewards = [round(r["reward"], 3) for r in log]
        print(f"  {name:28s} step {step_s[name]:.3f} s (mean of {len(log)}), reward per step {rewards}")
    one = weights["1 process"]
    for name in list(runs)[1:]:
        diff = max(float((weights[name][k] - one[k]).abs().max()) for k in one)
        print(f"  {name:28s} max |weight difference| to 1 process after {steps} steps: {diff:.3g}")
    print(f"  {preset}: {objective}, {steps} steps from {init}; {processes} gloo processes vs 1, one thread each, "
          f"{os.cpu_count()} CPU cores; step time 1 process {step_s['1 process']:.3f} s, {processes} processes "
          f"{step_s[list(runs)[1]]:.3f} s")


SAMPLE_ROWS = """
import sys, torch
from model import GPT, PRESETS
from reward import make_split
from sample import generate, prompt_ids
preset, new_tokens, out, *rows = sys.argv[1:]
torch.manual_seed(0)
m = GPT(PRESETS[preset]).eval()
torch.save({r: generate(m, [prompt_ids(p) for p in make_split("test", int(r))], max_new_tokens=int(new_tokens),
                        generator=torch.Generator().manual_seed(0), check_every=10 ** 9).response for r in rows}, out)
"""


def compare_tokens(other, preset="cpu", rows=(256, 1024), new_tokens=64, out="out/tokens"):
    """Is the sampler's output unchanged? The KV-cached sampler of another checkout `other` (e.g. `git worktree add
    ../before COMMIT`) and of this one, on the bench's rows: the same random model (torch seed 0), prompts and
    generator seed. Prints how many rows differ."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.abspath(out)  # each checkout's sampler runs in its own folder
    os.makedirs(out, exist_ok=True)
    got = {}
    for name, tree in (("other", os.path.abspath(other)), ("this", root)):
        path = os.path.join(out, f"{name}.pt")
        subprocess.run([sys.executable, "-c", SAMPLE_ROWS, preset, str(new_tokens), path, *map(str, rows)], cwd=tree,
                       check=True)
        got[name] = torch.load(path)
    for r in map(str, rows):
        a, b = got["other"][r], got["this"][r]
        differ = int((a != b).any(1).sum()) if a.shape == b.shape else r
        print(f"  {preset}, {r} rows x {new_tokens} new tokens: {differ} of {r} rows sampled otherwise than by {other}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--sampler", action="store_true", help="naive vs KV-cached sampling, tokens/s")
    what.add_argument("--rl-step", action="store_true", help="time RL steps (of --preset, default cpu and gpu)")
    what.add_argument("--tokens-vs", metavar="CHECKOUT", help="compare the sampled tokens with another checkout's")
    ap.add_argument("--processes", type=int, default=2, help="torchrun processes to compare with one (with --init)")
    ap.add_argument("--preset", default=None, help="model size (default: cpu for --sampler, tiny for --processes)")
    ap.add_argument("--init", help="base checkpoint of the preset, for --processes (python train.py --preset P)")
    ap.add_argument("--steps", type=int, default=3, help="RL steps (--rl-step, --processes)")
    ap.add_argument("--objective", default="grpo", help="with --processes")
    ap.add_argument("--out", default=None, help="--rl-step: uses OUT/<preset>/base.pt when there (default out); "
                    "--processes: its scratch folder")
    ap.add_argument("--micro-batch", type=int, default=None, help="--rl-step: rows per loss/backward chunk")
    ap.add_argument("--rows", type=int, nargs="+", default=[256, 1024], help="--sampler: rows")
    ap.add_argument("--new-tokens", type=int, default=64, help="--sampler: new tokens per row")
    ap.add_argument("--profile", action="store_true", help="--sampler: torch.profiler table of the decode step")
    ap.add_argument("--compile", action="store_true",
                    help="--sampler: also through torch.compile (needs a C++ compiler on CPU)")
    ap.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    a = ap.parse_args(argv)
    if a.preset is not None and a.preset not in PRESETS:
        fail(f"unknown preset {a.preset!r}: choose from {sorted(PRESETS)}")
    if a.sampler:
        a.preset = a.preset or "cpu"
        return bench_sampler(a)
    if a.rl_step:
        device = pick_device(a.device)
        print(f"RL step benchmark on {device}: {where(matmul_gflops(device), device)}")
        for p in ([a.preset] if a.preset else ["cpu", "gpu"]):
            bench_rl_step(p, device, reps=a.steps, out=a.out or "out", micro_batch=a.micro_batch)
        return
    if a.tokens_vs:
        if not os.path.isfile(os.path.join(a.tokens_vs, "sample.py")):
            fail(f"--tokens-vs {a.tokens_vs}: not a checkout of this project (no sample.py there)")
        return compare_tokens(a.tokens_vs)
    if not a.init:
        fail("give --sampler, --rl-step, --tokens-vs or --init (the torchrun comparison)")
    compare_processes(a.preset or "tiny", a.init, a.processes, a.steps, a.objective, a.out or "out/ddp-check")


def profile_decode(model, prompts, new_tokens, device, top=15):
    """Where a KV-cached decode step spends its time: torch.profiler over one generate() call, per op (self time,
    so nothing is counted twice), and the share of the wall time that no op accounts for (Python, dispatch,
    the profiler's own overhead). Prints the table; returns (wall ms per step, op ms per step)."""
    from torch.profiler import ProfilerActivity, profile
    kw = dict(static=False)  # the growing cache, kernel by kernel (a CUDA graph would show as one launch)
    generate(model, prompts[:8], max_new_tokens=4, **kw)  # warm up
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if str(device).startswith("cuda") else [])
    with profile(activities=acts) as prof:
        t = time.perf_counter()
        generate(model, prompts, max_new_tokens=new_tokens, generator=torch.Generator(device=device).manual_seed(0),
                 check_every=10 ** 9, **kw)
        sync(device)
        wall = (time.perf_counter() - t) * 1e3 / new_tokens
    # on a GPU, the kernels' own time: the rest is time the GPU waits for launches, Python and syncs
    key = "self_device_time_total" if str(device).startswith("cuda") else "self_cpu_time_total"
    events = prof.key_averages()
    ops = sum(getattr(e, key) for e in events) / 1e3 / new_tokens
    what = "kernel time" if key == "self_device_time_total" else "ops' self time"
    print(events.table(sort_by=key, row_limit=top))
    print(f"  {len(prompts)} rows: {wall:.2f} ms per decode step under the profiler (prefill included, spread over "
          f"{new_tokens} steps); {what} {ops:.2f} ms ({100 * ops / wall:.0f}%), the rest {wall - ops:.2f} ms")
    return wall, ops


if __name__ == "__main__":
    main()
