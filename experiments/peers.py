"""
Our sampler and RL step against the tools a user would pick instead, on the same model shape, batch and machine,
in one run: Hugging Face transformers' `generate` and TRL's `GRPOTrainer`. They are an optional extra, never a
requirement of the project (`pip install trl`, which brings transformers, datasets and accelerate); without them
this command says so and exits 1.

    python -m experiments.peers                           # both comparisons, the cpu preset's shape
    python -m experiments.peers --what sampler --rows 256 1024
    python -m experiments.peers --what rl-step --steps 4

Equal work on both sides: the same GPT shape (model.PRESETS[--preset]) with random weights and the end token
banned, so that every row runs to the token budget (trained models stop their rows at different points in each
implementation); full-softmax sampling at temperature 1 (transformers' generate defaults to top_k=50: switched off);
fp32; for the RL step the preset's batch (dsrl.RL: prompts x group, max_new_tokens), one optimizer step per batch,
no KL term, the token-mean loss (TRL's loss_type="dapo"), AdamW at the preset's learning rate. Every figure is
printed beside the machine: chip, threads, measured fp32 matmul rate.
"""
import argparse
import contextlib
import io
import random
import importlib.util
import statistics
import sys
import tempfile
import time
import warnings

import torch

from dsrl import Phase, rl_config
from experiments.bench import copy_gbps, matmul_gflops, where
from model import GPT, PRESETS
from reward import BOS_ID, EOS_ID, PAD_ID, SPLITS, fail, make_problem, make_split, score
from sample import generate, prompt_ids
from train import rl_step

PEERS = ("transformers", "trl", "datasets", "tokenizers")


def missing_peers():
    return [p for p in PEERS if importlib.util.find_spec(p) is None]


def ban_end_token(model):
    """Every forward pass of our model returns -inf for the end token: no row stops before the budget (a forward
    hook, so the sampler and the training passes are the code that runs in training)."""
    def hook(module, args, logits):
        return logits.index_fill(-1, torch.tensor([EOS_ID], device=logits.device), float("-inf"))
    return model.register_forward_hook(hook)


def hf_twin(cfg):
    """transformers' GPT-2 of our preset's shape (GPT2LMHeadModel; its MLP and attention carry biases, ours do not:
    0.3% more parameters), random weights, no dropout."""
    from transformers import GPT2Config, GPT2LMHeadModel
    c = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                   n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=BOS_ID,
                   eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    torch.manual_seed(0)
    return GPT2LMHeadModel(c).eval()


def hf_tokenizer():
    """A transformers tokenizer with our token ids: one token per ASCII character (its byte value, as
    reward.tokenizer's ranks give it) and the three special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {chr(i): i for i in range(32, 127)}
    vocab.update({"<unk>": 0, "<|bos|>": BOS_ID, "<|eos|>": EOS_ID, "<|pad|>": PAD_ID})
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    t.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<|bos|>", eos_token="<|eos|>",
                                   pad_token="<|pad|>", padding_side="left")


def best_of(fn, reps):
    """The fastest of reps timed calls (the machine's noise only ever adds time) and the last call's result."""
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def sampler_vs_generate(preset, rows_list, new_tokens, reps=3):
    """tokens/s of our KV-cached sampler and of transformers' generate (KV cache, sampling) on the same prompts;
    the decode step against its FLOP floor (2 x params per row) and memory floor (weights + KV cache read once)."""
    cfg = PRESETS[preset]
    torch.manual_seed(0)
    ours, hf = GPT(cfg).eval(), hf_twin(cfg)
    ban_end_token(ours)
    gflops, gbps = matmul_gflops("cpu"), copy_gbps("cpu")
    print(f"sampler: {preset} shape, {new_tokens} new tokens per row, every row to the budget; {where(gflops)}, "
          f"memory copy {gbps:.1f} GB/s")
    for rows in rows_list:
        prompts = [prompt_ids(p) for p in make_split("test", rows)]
        Tp = max(len(p) for p in prompts)
        ids = torch.tensor([[PAD_ID] * (Tp - len(p)) + p for p in prompts])
        mask = (ids != PAD_ID).long()
        gen = torch.Generator().manual_seed(0)
        generate(ours, prompts[:8], max_new_tokens=4)  # warm up both
        with torch.no_grad():
            kw = dict(attention_mask=mask, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                      max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=PAD_ID, eos_token_id=EOS_ID)
            hf.generate(ids[:8], **{**kw, "attention_mask": mask[:8], "max_new_tokens": 4, "min_new_tokens": 4})
            t_hf, out = best_of(lambda: hf.generate(ids, **kw), reps)
        t_ours, ro = best_of(lambda: generate(ours, prompts, max_new_tokens=new_tokens, generator=gen,
                                              check_every=10 ** 9), reps)
        assert ro.mask.all() and out.shape[1] - Tp == new_tokens  # equal work: every row wrote new_tokens tokens
        n = rows * new_tokens
        step_ms = t_ours / new_tokens * 1e3
        flop_ms = 2 * ours.num_params() * rows / (gflops * 1e9) * 1e3
        kv = 2 * cfg.n_layer * rows * (Tp + new_tokens / 2) * cfg.n_embd * 4
        mem_ms = (4 * ours.num_params() + kv) / (gbps * 1e9) * 1e3
        print(f"  {rows:5d} rows: ours {n / t_ours:9.0f} tokens/s, transformers generate {n / t_hf:9.0f} tokens/s: "
              f"{t_hf / t_ours:.2f}x; our decode step {step_ms:.1f} ms = {step_ms / max(flop_ms, mem_ms):.1f}x "
              f"max(FLOP floor {flop_ms:.2f} ms, memory floor {mem_ms:.2f} ms)")


class StepTimer:
    """A transformers TrainerCallback's two hooks: the wall time of each optimizer step (generation included)."""
    def __init__(self):
        self.times, self.t = [], None

    def on_step_begin(self, args, state, control, **kw):
        self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.t)


def trl_step_seconds(preset, steps, problems):
    """Median seconds of TRL GRPOTrainer steps 2.. (the first warms up) on our batch, task and verifier."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    rl = rl_config(preset)
    data = Dataset.from_list([{"prompt": "<|bos|>" + p.prompt, "answer": p.answer} for p in problems])

    def verifier(prompts, completions, answer, **kw):
        return [score(c, a) for c, a in zip(completions, answer)]

    timer = StepTimer()
    callback = type("Timer", (TrainerCallback,), {"on_step_begin": timer.on_step_begin,
                                                   "on_step_end": timer.on_step_end})()
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, per_device_train_batch_size=rl.batch_prompts * rl.group,
                          num_generations=rl.group, max_completion_length=rl.max_new_tokens, beta=0.0,
                          loss_type="dapo", learning_rate=rl.lr, lr_scheduler_type="constant", warmup_steps=0,
                          max_steps=steps + 1, max_grad_norm=1.0, num_iterations=1, gradient_accumulation_steps=1,
                          temperature=1.0, top_k=0, top_p=1.0, generation_kwargs={"min_new_tokens": rl.max_new_tokens},
                          use_cpu=True, bf16=False, fp16=False, logging_steps=10 ** 6, save_strategy="no",
                          report_to="none", disable_tqdm=True, seed=0, dataloader_num_workers=0)
        trainer = GRPOTrainer(model=hf_twin(PRESETS[preset]), reward_funcs=[verifier], args=args, train_dataset=data,
                              processing_class=hf_tokenizer(), callbacks=[callback])
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # its end-of-run metrics dict
            warnings.simplefilter("ignore")
            trainer.train()
    return statistics.median(timer.times[1:])


def rl_step_vs_trl(preset, steps):
    """Our rl_step (GRPO, logging pass of the other space on and off) against TRL's GRPOTrainer step."""
    rl = rl_config(preset)
    gflops = matmul_gflops("cpu")
    print(f"RL step: {preset} shape, {rl.batch_prompts} prompts x {rl.group}, {rl.max_new_tokens} new tokens, every "
          f"row to the budget; {where(gflops)}")
    rng = random.Random(0)
    problems = [make_problem(rng, SPLITS["train"][0]) for _ in range(rl.batch_prompts * (steps + 1))]
    torch.manual_seed(0)
    model = GPT(PRESETS[preset])
    ban_end_token(model)
    opt = model.configure_optimizers(rl.lr, device_type="cpu")
    gen, ours = torch.Generator().manual_seed(0), {}
    for other_space in (True, False):
        times = []
        for i in range(steps + 1):
            batch = problems[i * rl.batch_prompts:(i + 1) * rl.batch_prompts]
            t = time.perf_counter()
            ro, *_ = rl_step(model, opt, batch, Phase("grpo", rl.lr), rl, gen, other_space=other_space)
            times.append(time.perf_counter() - t)
            assert ro.mask.all()
        ours[other_space] = statistics.median(times[1:])
    trl_s = trl_step_seconds(preset, steps, problems)
    k = rl.other_space_every  # training's default: the logging pass on one step in k
    rows = {"logging pass on every step": ours[True], "logging pass off": ours[False]}
    if k > 1:
        rows[f"the default, logging pass on one step in {k} (average)"] = (ours[True] + (k - 1) * ours[False]) / k
    for name, s in rows.items():
        print(f"  ours ({name}): {s:.2f} s per step; TRL GRPOTrainer {trl_s:.2f} s: {trl_s / s:.2f}x")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", choices=("both", "sampler", "rl-step"), default="both")
    ap.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    ap.add_argument("--rows", type=int, nargs="+", default=[256, 1024], help="sampler: rows per call")
    ap.add_argument("--new-tokens", type=int, default=64, help="sampler: new tokens per row")
    ap.add_argument("--steps", type=int, default=3, help="RL step: timed steps per side (after one warm-up step)")
    a = ap.parse_args(argv)
    if min(a.rows) < 1 or a.new_tokens < 1 or a.steps < 1:
        fail(f"--rows, --new-tokens and --steps must be positive, got {a.rows}, {a.new_tokens} and {a.steps}")
    if missing_peers():
        print(f"peers: {', '.join(missing_peers())} not installed; the comparison needs them (pip install trl, an "
              f"optional extra of this project)", file=sys.stderr)
        sys.exit(1)
    if a.what in ("both", "sampler"):
        sampler_vs_generate(a.preset, a.rows, a.new_tokens)
    if a.what in ("both", "rl-step"):
        rl_step_vs_trl(a.preset, a.steps)


if __name__ == "__main__":
    main()
