"""
Group sampling with a KV cache, pass@k, and evaluation of a checkpoint.

    python sample.py --ckpt out/cpu/base.pt                       # held-out split: pass@k, markers, samples
    python sample.py --ckpt out/cpu/base.pt --problems mine.jsonl  # your own questions, {"question": "94+3*2"}

How a group is sampled (GRPO needs G answers per prompt):
  1) the B prompts are left-padded into one batch and run through the model once (prefill), filling the cache;
  2) the cache and the last logits are repeated G times (B -> B*G rows);
  3) every row then samples its own tokens, the first one included, until it writes the end token.
"""
import argparse
import json
import math
import os
import time
from dataclasses import dataclass

import torch

from model import load_checkpoint, model_from_checkpoint
from reward import (EOS_ID, PAD_ID, BOS_ID, TOKEN_CLASSES, UserError, fail, Problem, char_classes, count_markers,
                    decode, encode, habit_stats, make_split, reflection_stats, score, solve, MARKERS)


@dataclass
class Rollout:
    """B*G sampled responses; row b*G + g is sample g of prompt b."""
    prompt: torch.Tensor    # (N, Tp) <|bos|> + prompt tokens, left-padded with <|pad|>
    pad: torch.Tensor       # (N,) number of left-pad tokens in each prompt row
    response: torch.Tensor  # (N, Tr) sampled tokens; <|pad|> after the end token
    mask: torch.Tensor      # (N, Tr) bool: the response tokens, end token included, nothing after it
    finished: torch.Tensor  # (N,) bool: the row wrote the end token (else it was truncated)
    texts: list             # N strings: the response before its end token


def rollout_rows(ro, rows):
    """The rows `rows` (a slice) of a Rollout, e.g. one micro-batch of whole groups."""
    return Rollout(ro.prompt[rows], ro.pad[rows], ro.response[rows], ro.mask[rows], ro.finished[rows], ro.texts[rows])


def token_classes(ro):
    """(N, Tr) long: the reward.TOKEN_CLASSES index of every response token (reward.char_classes; pads and the
    end token are "other"). The question is read back from each prompt row."""
    cls = torch.full(ro.response.shape, TOKEN_CLASSES.index("other"), dtype=torch.long)
    for i in range(ro.response.size(0)):
        question = decode(t for t in ro.prompt[i].tolist() if t < 256).split(":", 1)[-1].rstrip("=")
        ids = ro.response[i].tolist()
        text = "".join(chr(t) if t < 256 else "\0" for t in ids)  # one character per token, bytes as latin-1
        cls[i] = torch.tensor(char_classes(question, text))
    return cls.to(ro.response.device)


def prompt_ids(problem):
    return [BOS_ID] + encode(problem.prompt)


def sample_token(logits, temperature, top_k, generator, u=None):
    """logits (N, V) -> (N,) token ids. temperature 0 means greedy. u (N, 1): the rows' uniform draws, when the
    caller made them (generate draws for every row, finished or not, so dropping rows changes no other row's)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, [-1]], -float("inf"))
    # Inverse-CDF sampling: one uniform per row instead of torch.multinomial's one exponential per vocabulary
    # entry. The 1 - 1e-6 keeps u strictly below the total, so a token of probability 0
    # (masked by top-k) can never be drawn, even when float rounding lands u on the last boundary.
    cdf = torch.softmax(logits, -1).cumsum(-1)                                          # (N, V)
    if u is None:
        u = torch.rand(cdf.size(0), 1, device=cdf.device, generator=generator)
    u = u * cdf[:, -1:] * (1 - 1e-6)
    return torch.searchsorted(cdf, u, right=True).squeeze(1)


# PRERL_CUDA_GRAPH=1 in the environment: on a GPU, sample with the static cache and replay each decode step as a
# CUDA graph (generate's static=None). Opt-in until a GPU run has measured it; the default is the growing cache,
# the path the CPU tests run.
STATIC_ON_CUDA = os.environ.get("PRERL_CUDA_GRAPH", "0") == "1"


@torch.no_grad()
def generate(model, prompts, G=1, max_new_tokens=96, temperature=1.0, top_k=None, generator=None,
             use_cache=True, check_every=8, compact=True, compile=False, static=None):
    """Sample G responses to each prompt (a list of token-id lists). use_cache=False recomputes the whole
    sequence every step, as nanoGPT's generate does (the slow reference for tests and the benchmark).
    Returns a Rollout. Rows stop at the end token; we look for 'all rows done' only every `check_every`
    steps because each look is a host-device sync. At each look, compact=True (with the cache) drops the
    finished rows from the batch and the cache when they are at least a quarter of it: later steps cost only the
    rows still writing. Every row keeps its own random draws, so the tokens are the ones compact=False samples.
    compile=True runs the decode steps through torch.compile'd blocks (dynamic shapes: the cache grows every step
    and rows leave it); the first call compiles, for tens of seconds. static=True keeps every shape of a decode step
    fixed (a static cache, model.KVCache; no rows leave): on a GPU the step is then captured once as a CUDA graph and
    replayed, one launch per step instead of one per kernel. On a CPU it is slower (every step reads the whole
    buffer and no rows leave), so static=None (the default) means STATIC_ON_CUDA on a GPU and False elsewhere.
    (Twelve arguments: the sampling knobs, then one switch per sampler path, so that tests and the benchmark
    compare the paths on the same rows.)"""
    device = model.lm_head.weight.device
    static = use_cache and (STATIC_ON_CUDA and device.type == "cuda" if static is None else static)
    B, Tp = len(prompts), max(len(p) for p in prompts)
    pad = torch.tensor([Tp - len(p) for p in prompts], device=device)
    idx = torch.tensor([[PAD_ID] * (Tp - len(p)) + p for p in prompts], device=device)  # (B, Tp)
    max_new_tokens = min(max_new_tokens, model.config.block_size - Tp)
    cache = model.new_cache(B, Tp + max_new_tokens, pad, static=static) if use_cache else None
    if compile and cache is not None:
        cache.blocks = [torch.compile(b, dynamic=True) for b in model.transformer.h]
    step = lambda tok: model(tok[:, None], cache=cache)[:, -1]  # one decode step: (n,) tokens -> (n, V) logits
    if static and device.type == "cuda":
        step = cuda_graph(step)
    compact = compact and not static
    logits = model(idx, pad=pad, cache=cache)[:, -1]  # prefill once per prompt: (B, V)
    # expand to G rows per prompt; each row draws its own first token below
    logits, idx, pad = logits.repeat_interleave(G, 0), idx.repeat_interleave(G, 0), pad.repeat_interleave(G)
    if cache is not None:
        cache.expand(G)
    N = B * G
    out = torch.full((N, max_new_tokens), PAD_ID, dtype=torch.long, device=device)
    done = torch.zeros(N, dtype=torch.bool, device=device)
    steps = max_new_tokens
    never = torch.zeros(logits.size(-1), dtype=torch.bool, device=device)
    never[[PAD_ID, BOS_ID]] = True  # a response is bytes and the end token; pad and bos are never sampled
    live = torch.arange(N, device=device)  # the rows still in the batch (all, until a compaction)
    for i in range(max_new_tokens):
        u = torch.rand(N, 1, device=device, generator=generator)[live] if temperature > 0 else None  # (n, 1)
        tok = sample_token(logits.masked_fill(never, -float("inf")), temperature, top_k, generator, u)
        tok = tok.masked_fill(done[live], PAD_ID)  # (n,) for the n live rows
        out[live, i] = tok
        done[live] |= tok == EOS_ID
        if i + 1 == max_new_tokens:
            steps = i + 1
            break
        if (i + 1) % check_every == 0:
            still = ~done[live]  # (n,); rows out of the batch are done
            writing = int(still.sum())  # the one host-device sync of a check
            if writing == 0:
                steps = i + 1
                break
            if compact and cache is not None and 4 * writing <= 3 * live.numel():  # a quarter or more finished
                live, tok = live[still], tok[still]
                cache.keep(still.nonzero().squeeze(1))
        if cache is not None:
            logits = step(tok)
        else:
            logits = model(torch.cat([idx, out[:, :i + 1]], 1), pad=pad)[:, -1]
    out = out[:, :steps]
    mask = out != PAD_ID  # tokens up to and including the end token (pads come only after it)
    rows = out.tolist()
    texts = [decode(r[:r.index(EOS_ID)] if EOS_ID in r else [t for t in r if t != PAD_ID]) for r in rows]
    return Rollout(idx, pad, out, mask, done.clone(), texts)


def cuda_graph(step):
    """step(tok) -> logits over a static cache, captured once as a CUDA graph and replayed after that. The first call
    runs eagerly on a side stream (it warms up the kernels, and compiles them under compile=True); the second
    captures the step, which writes its keys and values and advances the cache position on every replay."""
    graph, io = None, {}

    def run(tok):
        nonlocal graph
        if not io:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                io["warm"] = step(tok)
            torch.cuda.current_stream().wait_stream(side)
            return io["warm"]
        if graph is None:
            io["tok"], graph = tok.clone(), torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # records the kernels without running them; replay() below runs them
                io["logits"] = step(io["tok"])
        io["tok"].copy_(tok)
        graph.replay()
        return io["logits"]
    return run


def rewards(rollout, answers):
    """1.0 for a right answer before the end token; a truncated response scores 0."""
    return [score(t, a) if f else 0.0 for t, a, f in zip(rollout.texts, answers, rollout.finished.tolist())]


def rollout_stats(ro, r, G):
    """What explains an RL step besides its reward (TRL names); r (N,) rewards, G samples per prompt."""
    g = r.view(-1, G)
    std = g.std(1)
    counts = [count_markers(t) for t in ro.texts]
    return {"reward": float(r.mean()), "reward_std": float(std.mean()),
            "frac_reward_zero_std": float((std == 0).float().mean()),
            "solved_all": int((g.min(1).values == 1).sum()), "solved_none": int((g.max(1).values == 0).sum()),
            "length": float(ro.mask.sum(1).float().mean()), "truncated": float((~ro.finished).float().mean()),
            **{f"{k}_share": sum(c[k] > 0 for c in counts) / len(counts) for k in MARKERS}}


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / j for j in range(n - c + 1, n + 1))


def evaluate(model, problems, n=8, max_new_tokens=96, temperature=1.0, top_k=None, seed=0, batch_size=64,
             ks=None, progress=False):
    """Sample n responses per problem and measure: pass@k for k in ks (default 1, 2, 4, ... up to n), the
    share of responses containing each marker and its count per response, mean length in tokens, the
    truncation share, whether reflection works (reflection_stats) and how often the prompt-independent bad
    habits show (habit_stats). Returns (metrics, samples). (Ten arguments: the sampling knobs of generate and the
    evaluation's own; each caller sets a different few.)"""
    ks = ks or [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= n]
    gen = torch.Generator(device=model.lm_head.weight.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    correct, texts, lengths, truncated, samples = [], [], [], 0, []
    it = range(0, len(problems), batch_size)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="evaluate", leave=False)
    for s in it:
        chunk = problems[s:s + batch_size]
        ro = generate(model, [prompt_ids(p) for p in chunk], G=n, max_new_tokens=max_new_tokens,
                      temperature=temperature, top_k=top_k, generator=gen)
        r = rewards(ro, [p.answer for p in chunk for _ in range(n)])
        for b, p in enumerate(chunk):
            correct.append(int(sum(r[b * n:(b + 1) * n])))
            samples.append((p, ro.texts[b * n], r[b * n]))
        texts += ro.texts
        lengths += ro.mask.sum(1).tolist()
        truncated += int((~ro.finished).sum())
    model.train(was_training)
    m = {f"pass@{k}": sum(pass_at_k(n, c, k) for c in correct) / len(correct) for k in ks}
    counts = [count_markers(t) for t in texts]
    for name in MARKERS:
        m[f"{name}_share"] = sum(c[name] > 0 for c in counts) / len(texts)   # responses with >= 1
        m[f"{name}_per_response"] = sum(c[name] for c in counts) / len(texts)
    m["length"] = sum(lengths) / len(lengths)
    m["truncated"] = truncated / len(texts)
    m.update({f"reflection_{k}": v for k, v in reflection_stats(texts).items()})
    questions = [p.question for p in problems for _ in range(n)]
    m.update({f"habit_{k}": v for k, v in habit_stats(questions, texts).items()})
    return m, samples


def final_metrics(model, problems, n=(8, 4), max_new_tokens=96, seed=0, passk=0, tag="Q", progress=False):
    """Held-out metrics of a finished model: `problems` test and ood problems with n[0] and n[1] samples each,
    and pass@k up to 64 on `passk` test problems (0: none); tag: the prompts' tag (reward.Problem)."""
    final = {split: evaluate(model, make_split(split, problems, tag=tag), n=k, max_new_tokens=max_new_tokens,
                             seed=seed + offset, progress=progress)[0]
             for split, k, offset in (("test", n[0], 7), ("ood", n[1], 8))}
    if passk:
        final["passk"] = evaluate(model, make_split("test", passk, tag=tag), n=64, max_new_tokens=max_new_tokens,
                                  seed=seed + 11)[0]
    return final


def describe(problem, text, r):
    """minGPT-style sentence about one sample."""
    verdict = "right" if r else f"wrong (answer {problem.answer})"
    return f"  {problem.question} -> {text!r}: {verdict}"


def read_problems(path):
    """JSONL lines {"question": "94+3*2-72", "answer": 28 (optional)} -> Problems. A bad line raises a
    UserError naming its number."""
    problems = []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read problems file {path}: {e}") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{i}: not valid JSON") from None
        if not isinstance(d, dict) or not isinstance(d.get("question"), str):
            raise UserError(f"{path}:{i}: needs a \"question\" string")
        try:
            value = solve(d["question"])
        except UserError as e:
            raise UserError(f"{path}:{i}: {e}") from None
        answer = d.get("answer", value)
        if not isinstance(answer, int) or isinstance(answer, bool):
            raise UserError(f"{path}:{i}: \"answer\" must be an integer, got {answer!r}")
        problems.append(Problem(d["question"].replace(" ", ""), answer))
    if not problems:
        raise UserError(f"{path}: no problems in the file")
    return problems


def pick_device(name="auto"):
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="checkpoint to evaluate (e.g. out/cpu/base.pt)")
    ap.add_argument("--problems", help="JSONL file of {\"question\": ...}; default: the held-out split")
    ap.add_argument("--num-problems", type=int, default=200, help="held-out problems when no --problems")
    ap.add_argument("-n", type=int, default=16, help="samples per problem (pass@k for k <= n)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-k", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    ap.add_argument("--show", type=int, default=6, help="samples to print")
    args = ap.parse_args(argv)
    try:
        if not args.ckpt:
            raise UserError("--ckpt is required")
        if args.n < 1 or args.temperature < 0:
            raise UserError(f"need -n >= 1 and --temperature >= 0, got -n {args.n}, --temperature {args.temperature}")
        problems = read_problems(args.problems) if args.problems else make_split("test", args.num_problems)
        device = pick_device(args.device)
        model = model_from_checkpoint(load_checkpoint(args.ckpt), device)
    except UserError as e:
        fail(e)
    t = time.time()
    m, samples = evaluate(model, problems, n=args.n, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_k=args.top_k, seed=args.seed, progress=True)
    print(f"{len(problems)} problems x {args.n} samples, T={args.temperature}, {time.time() - t:.1f}s")
    for k, v in m.items():
        print(f"  {k:28s} {v:.4f}" if isinstance(v, float) else f"  {k:28s} {v}")
    print("samples:")
    for p, text, r in samples[:args.show]:
        print(describe(p, text, r))


if __name__ == "__main__":
    main()
