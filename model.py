"""
A small GPT in the style of nanoGPT (Karpathy), with a KV cache for incremental decoding; its checkpoints; and the
model on several processes (torchrun).

Two things differ from nanoGPT, both for RL:
1) Left padding. Rollouts batch prompts of different lengths, so a row may start with `pad[b]` pad tokens.
   Those keys are masked out and positions start at 0 on the row's first real token, so a padded row
   computes exactly what it would compute alone.
2) A KV cache. Sampling appends one token per step; with the cache each step costs one token's work
   instead of re-running the whole sequence (nanoGPT's generate recomputes everything).
"""
import atexit
import math
import os
import platform
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn import functional as F

from reward import VOCAB_SIZE, UserError


@dataclass
class GPTConfig:
    block_size: int = 256   # longest sequence (prompt + response) the model can see
    vocab_size: int = VOCAB_SIZE
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False


PRESETS = {  # model sizes; the settings of each preset: pre-training at the top of train.py, RL of dsrl.py
    "tiny": GPTConfig(n_layer=2, n_head=2, n_embd=32),            # tests: seconds
    "lab": GPTConfig(n_layer=2, n_head=2, n_embd=64),             # ~0.14M params, the classroom model (tutorial/)
    "cpu": GPTConfig(n_layer=4, n_head=4, n_embd=128),            # ~0.8M params, a laptop CPU
    "gpu": GPTConfig(n_layer=6, n_head=6, n_embd=384),            # ~10.7M params, nanoGPT's shakespeare-char size
}


class KVCache:
    """Keys and values of every layer for `batch` rows, up to `max_len` positions. `pad` (B,) counts each row's
    left-pad tokens; `t` is how many positions are filled.

    A decode step attends over the whole buffer, its unfilled positions masked: on a CPU a batched matmul over a
    slice of a longer tensor copies the slice first, so each layer's buffer is one whole tensor, grown by `chunk`
    positions at a time: a step reads at most chunk - 1 empty positions (the bmm rows of
    python -m experiments.bench --sampler --profile). static=True allocates all max_len positions at once and
    fixes every shape of a decode step, so that it can be captured once as a CUDA graph (sample.generate); it
    writes at `pos`, the position as a tensor."""

    def __init__(self, cfg, batch, max_len, pad, device, dtype, static=False, chunk=16):
        # One tensor per layer, (B, nh, capacity, hs), so that torch.compile writes a step in place (into a slice of
        # one tensor for all layers it copied the layer's whole cache every step). Zeros: an unfilled position is
        # masked, but it still enters the matmuls (0 * NaN = NaN).
        self.static, self.max_len, self.chunk = static, max_len, max_len if static else chunk
        empty = (batch, cfg.n_head, 0, cfg.n_embd // cfg.n_head)  # the first forward reserves its positions
        self.k, self.v = ([torch.zeros(empty, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
                          for _ in range(2))
        self.pad = pad
        self.t = 0
        self.pos = torch.zeros((), dtype=torch.long, device=device)  # = t, kept only when static
        self.blocks = None  # the blocks a decode step runs instead of the model's own (sample.generate(compile=True))
        # 0 on real keys, -inf on left padding: the additive attention bias of a decode step, before the unfilled
        # positions are masked
        self.k_pos = torch.arange(max_len, device=device)
        self.bias = torch.zeros(batch, 1, 1, max_len, device=device, dtype=dtype).masked_fill(
            (self.k_pos[None, :] < pad[:, None])[:, None, None], float("-inf"))  # (B, 1, 1, max_len)

    def capacity(self):
        return self.k[0].size(2)

    def reserve(self, n):
        """Make room for n positions: `chunk` more zeros (or as many chunks as it takes) after the filled ones."""
        if n <= self.capacity():
            return
        more = min(self.max_len, -(-n // self.chunk) * self.chunk) - self.capacity()
        for layers in (self.k, self.v):
            for i, old in enumerate(layers):
                layers[i] = torch.cat([old, old.new_zeros(*old.shape[:2], more, old.size(3))], 2)

    def decode_mask(self):
        """(B, 1, 1, capacity) additive bias of a decode step that writes position t: left padding and the
        positions after t are -inf."""
        cap = self.capacity()
        return self.bias[..., :cap].masked_fill(self.k_pos[:cap] > (self.pos if self.static else self.t),
                                                float("-inf"))

    def expand(self, g):
        """Repeat every row g times (B -> B*g): prefill a prompt once, then sample G answers from it."""
        if g == 1:
            return
        self.k, self.v = ([x.repeat_interleave(g, dim=0) for x in layers] for layers in (self.k, self.v))
        self.pad = self.pad.repeat_interleave(g)
        self.bias = self.bias.repeat_interleave(g, dim=0)

    def keep(self, rows):
        """Keep only `rows` (a LongTensor of row indices): drop the rows that have finished sampling, so that
        later decode steps neither compute nor read them (sample.generate)."""
        self.k, self.v = [k[rows] for k in self.k], [v[rows] for v in self.v]
        self.pad, self.bias = self.pad[rows], self.bias[rows]


class CausalSelfAttention(nn.Module):

    def __init__(self, cfg, layer):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head, self.dropout, self.layer = cfg.n_head, cfg.dropout, layer

    def forward(self, x, mask, cache):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
        if cache is not None and T == 1:  # a decode step: write this position, attend over the whole buffer
            ck, cv = cache.k[self.layer], cache.v[self.layer]                       # (B, nh, capacity, hs)
            if cache.static:  # at the tensor position (no Python int in a CUDA graph)
                ck.index_copy_(2, cache.pos.view(1), k)
                cv.index_copy_(2, cache.pos.view(1), v)
            else:
                ck[:, :, cache.t], cv[:, :, cache.t] = k[:, :, 0], v[:, :, 0]
            # one query per row: two plain batched matmuls read the cache faster than the fused kernel; the mask is
            # the cache's additive bias (KVCache.decode_mask)
            att = (q @ ck.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1))) + mask  # (B, nh, 1, capacity)
            y = torch.softmax(att, dim=-1) @ cv                                      # (B, nh, 1, hs)
        else:
            drop = self.dropout if self.training else 0.0
            if cache is not None:  # a prefill: write this chunk's keys/values, then attend over everything so far
                ck, cv = cache.k[self.layer], cache.v[self.layer]
                ck[:, :, cache.t:cache.t + T], cv[:, :, cache.t:cache.t + T] = k, v
                k, v = ck[:, :, :cache.t + T], cv[:, :, :cache.t + T]                  # (B, nh, t + T, hs)
            if mask is None:  # no padding, no cache: the plain causal fast path
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, cfg, layer):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg, layer)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, mask, cache):
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layer)]),
            ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as in GPT-2 / nanoGPT
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():  # scaled init of the residual projections (GPT-2 paper)
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters()) - self.transformer.wpe.weight.numel()

    def new_cache(self, batch, max_len, pad, static=False):
        p = self.lm_head.weight
        return KVCache(self.config, batch, max_len, pad, p.device, p.dtype, static)

    def forward(self, idx, pad=None, cache=None):
        """idx (B, T) token ids -> logits (B, T, vocab).
        pad (B,) left-pad count per row, or None when no row is padded on the left (right padding after
        the end token needs no mask: causal attention never looks ahead). With `cache`, idx holds the
        next T positions of the rows already in the cache."""
        B, T = idx.size()
        t0 = cache.t if cache is not None else 0
        if cache is not None:
            pad = cache.pad
        assert t0 + T <= self.config.block_size, f"sequence of {t0 + T} > block_size {self.config.block_size}"
        if cache is not None:
            cache.reserve(t0 + T)
        if cache is not None and T == 1:  # a decode step: one real query that may see every real key
            pos = ((cache.pos if cache.static else t0) - pad)[:, None]                              # (B, 1)
            mask = cache.decode_mask()                                                        # (B, 1, 1, capacity)
        elif pad is None:  # (a cache always carries a pad tensor, so this is the uncached path)
            pos, mask = torch.arange(T, device=idx.device), None
        else:
            q_pos = torch.arange(t0, t0 + T, device=idx.device)  # absolute positions of the queries (T,)
            pos = (q_pos[None, :] - pad[:, None]).clamp(min=0)  # (B, T): row positions start at 0
            k_pos = torch.arange(t0 + T, device=idx.device)
            causal = k_pos[None, None, :] <= q_pos[None, :, None]                     # (1, T, Tk)
            real = k_pos[None, None, :] >= pad[:, None, None]                        # (B, 1, Tk)
            itself = k_pos[None, None, :] == q_pos[None, :, None]  # pad queries see themselves, not NaN
            mask = (causal & (real | itself))[:, None]                               # (B, 1, T, Tk)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        blocks = cache.blocks if cache is not None and T == 1 and cache.blocks is not None else self.transformer.h
        for block in blocks:
            x = block(x, mask, cache)
        if cache is not None:
            cache.t += T
            if cache.static:  # in place: a replayed CUDA graph advances the position without Python
                cache.pos += T
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)

    def configure_optimizers(self, lr, weight_decay=0.1, betas=(0.9, 0.95), device_type="cpu"):
        """AdamW; weight decay on matrices only (nanoGPT). Fused on CUDA."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device_type == "cuda")


# -----------------------------------------------------------------------------
# checkpoints: written atomically (temp file + rename), read with weights_only=True so that a checkpoint
# from someone else cannot run code on load.

def save_checkpoint(path, state):
    """Write a dict of tensors / plain Python values to `path` atomically: a crash leaves the old file."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint written by save_checkpoint; UserError (one line) if missing or unreadable."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise UserError(f"checkpoint {path} is corrupt or not a prerl checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise UserError(f"checkpoint {path} has no model/config: not a prerl checkpoint")
    return ckpt


def model_from_checkpoint(ckpt, device="cpu"):
    """GPT with the checkpoint's config and weights."""
    try:
        model = GPT(GPTConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["model"])
    except (TypeError, RuntimeError) as e:
        raise UserError(f"checkpoint weights do not fit its config: {str(e).splitlines()[0]}") from None
    return model.to(device)


# -----------------------------------------------------------------------------
# a run's checkpoint: what it holds besides the weights (random states), and reading it back to resume

def restore(path, run, model, opt, rng, device):
    """Load an interrupted run's checkpoint into model, optimizer and rng; UserError if its settings differ."""
    ck = load_checkpoint(path, map_location=device)
    if ck.get("run") != run:
        raise UserError(f"cannot resume {path}: it was made with other settings or another base model")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    rng.setstate(ck["rng"]["python"])
    torch.set_rng_state(ck["rng"]["torch"].cpu())  # RNG states are CPU byte tensors, whatever map_location did
    return ck


def rng_state(rng):
    """Everything random a resumed run needs: our own Python generator and torch's global one."""
    return {"python": rng.getstate(), "torch": torch.get_rng_state()}


def machine(device="cpu"):
    """What a run's floats depend on, for its record: the chip, torch's thread count and version. The same seed on
    the same chip and thread count gives bit-identical CPU pre-training; another thread count sums the matmuls in
    another order (results/cpu/bases/README.md measures how far the base then moves)."""
    if str(device).startswith("cuda"):
        chip = torch.cuda.get_device_name(torch.device(device))
    else:
        chip = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                    None) if os.path.exists("/proc/cpuinfo") else None
        chip = chip or platform.processor() or platform.machine()
    return {"chip": chip, "threads": torch.get_num_threads(), "torch": torch.__version__}


def kill_point(step):
    """Test hook: with PRERL_TEST_KILL_AT_STEP=N the process kills itself (kill -9) right after checkpoint N."""
    if os.environ.get("PRERL_TEST_KILL_AT_STEP") == str(step):
        os.kill(os.getpid(), signal.SIGKILL)


# -----------------------------------------------------------------------------
# the model on several processes under torchrun: one process per device (rank), gradients averaged by
# DistributedDataParallel. In a plain `python` run (WORLD_SIZE unset) torch.distributed is never initialised and
# every helper below is the one-process identity: rank 0 of 1, sums of one, fn() itself. They sit here, below
# sample.py and train.py, because both the training loops and the command lines of train.py and dsrl.py use them.

def init_distributed(device):
    """Under torchrun: join the process group (NCCL on CUDA, gloo on CPU) and return this process's device,
    cuda:LOCAL_RANK for `cuda`; ranks other than 0 print nothing (errors still reach stderr). Else: `device`."""
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return device
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    atexit.register(dist.destroy_process_group)
    if dist.get_rank() > 0:
        sys.stdout = open(os.devnull, "w")
    return device


def rank_world():  # (this process's rank, number of processes)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def is_rank0():
    return rank_world()[0] == 0


def data_parallel(model):
    """The model in DistributedDataParallel under torchrun (sampling and evaluation use the bare model)."""
    if not dist.is_initialized():
        return model
    dev = model.lm_head.weight.device
    return nn.parallel.DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)


def all_reduce_sum(values):
    """A list of numbers (token counts, loss sums) summed over ranks."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def reduce_stats(stats):
    """Statistics of this rank's rows (every rank holds as many) -> the whole batch's: ints summed, means averaged."""
    if not dist.is_initialized():
        return stats
    keys = sorted(stats)  # the same order on every rank
    total = dict(zip(keys, all_reduce_sum([float(stats[k]) for k in keys])))
    return {k: int(total[k]) if isinstance(v, int) else total[k] / dist.get_world_size() for k, v in stats.items()}


def on_rank0(fn):
    """fn() run by rank 0 alone and its result sent to every rank (evaluation: one process's numbers)."""
    if not dist.is_initialized():
        return fn()
    out = [fn() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(out, src=0)
    return out[0]


def gather(obj):
    """Every rank's `obj` in rank order (each rank's sampler state, for the checkpoint)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier():
    if dist.is_initialized():
        dist.barrier()


def sampler_seed(seed, rank):
    """The seed of a rank's sampling stream: seed + rank (rank 0's is the one-process stream). Test hook:
    PRERL_TEST_WHOLE_BATCH=1 gives every rank the one-process stream, and rl_step then samples the whole batch on
    every rank and keeps this rank's rows: one process's tokens, to compare weights with (tests/test_ddp.py)."""
    return seed if os.environ.get("PRERL_TEST_WHOLE_BATCH") == "1" else seed + rank
