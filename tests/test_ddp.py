"""Data parallel under torchrun: 2 gloo processes against 1 on the tiny preset, on CPU.

What must hold: the step of 2 ranks is the step of one process on the same global batch. Each rank samples with
its own generator, so the 2-rank run's tokens differ from the 1-process run's; the tests therefore compare
(1) the gradient on one fixed rollout split between the ranks (every objective family, every aggregation,
micro-batches), (2) whole runs with the test hook PRERL_TEST_WHOLE_BATCH=1, under which every rank samples the
whole batch with the one-process stream and keeps its rows (model.sampler_seed), (3) the prompts each rank
samples in a normal run, and (4) kill -9 under torchrun, then --resume.
"""
import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import dsrl as D
import losses as L
import model as M
import reward as R
import sample as S
import train as T
from experiments import suite

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join(rank, port, fn, args):
    """A spawned rank: the environment torchrun would give it, one thread, then the code's own setup."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    assert M.init_distributed("cpu") == "cpu" and M.rank_world() == (rank, WORLD)
    fn(rank, *args)
    # Leave together, and skip the interpreter's teardown: a rank that tears gloo down while its peer is already
    # gone can abort in C++ on the way out. Seen once here: a rank ended with SIGABRT and "terminate called without
    # an active exception", what C++ prints when a thread still runs at teardown.
    torch.distributed.barrier()
    os._exit(0)


def spawn(fn, *args):
    mp.spawn(join, args=(free_port(), fn, args), nprocs=WORLD)


def max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


# --- 1) the gradient of one fixed rollout, split between the ranks -------------------------------------------

CASES = [  # (objective, aggregation, micro-batch rows per rank, kl_coef)
    ("grpo", "token-mean", None, 0.0),
    ("grpo", "token-mean", None, 0.1),                 # with k3 KL to a reference model
    ("nsr-prerl", "token-mean", None, 0.0),            # the ranks keep different numbers of tokens
    ("psr-prerl", "seq-mean-token-mean", None, 0.0),   # ... and of samples
    ("nsr", "seq-mean-token-sum-norm", None, 0.0),
    ("w-reinforce", "token-mean", 4, 0.0),             # two micro-batches per rank, the first under no_sync
]


def cfg_of(agg, micro_batch, kl_coef):
    return D.rl_config("tiny", agg=agg, micro_batch=micro_batch, kl_coef=kl_coef)


def fixed_rollout():
    """A random tiny model, 4 prompts x 4 samples whose lengths differ row by row (so the two ranks hold
    different token counts), mixed rewards, and a reference model for the KL case."""
    torch.manual_seed(0)
    m = M.GPT(M.PRESETS["tiny"])
    ro = S.generate(m, [S.prompt_ids(p) for p in R.make_split("test", 4)], G=4, max_new_tokens=12,
                    generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([2, 12, 5, 9, 3, 3, 11, 7, 12, 12, 4, 10, 6, 2, 8, 12])
    keep = torch.arange(ro.response.size(1))[None, :] < lengths[:, None]
    ro.response, ro.mask = ro.response.masked_fill(~keep, R.PAD_ID), ro.mask & keep
    r = torch.tensor([1., 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 1, 0, 1, 1, 1])
    ref = copy.deepcopy(m)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return m, ro, r, ref


def rank_gradients(rank, m, ro, r, ref):
    """What train.micro_batched_backward leaves in .grad on this rank, for each case, on its 2 prompts x 4 samples."""
    rows = slice(rank * 8, (rank + 1) * 8)
    results = []
    for name, agg, mb, kl in CASES:
        net = copy.deepcopy(m)
        loss, st, _ = T.micro_batched_backward(M.data_parallel(net), S.rollout_rows(ro, rows), r[rows],
                                               D.Phase(name, 1e-3), cfg_of(agg, mb, kl), ref if kl else None, True,
                                               lambda: None)
        results.append((float(loss), st, [p.grad.clone() for p in net.parameters()]))
    return results


def test_two_ranks_give_the_one_process_gradient(runs):
    two = runs[0]
    m, ro, r, ref = fixed_rollout()
    ranks = [torch.load(two / f"grads-{k}.pt", weights_only=False) for k in range(WORLD)]
    for i, (name, agg, mb, kl) in enumerate(CASES):
        net = copy.deepcopy(m)
        loss, st = L.objective_loss(name, net, ro, r, cfg_of(agg, mb, kl), ref if kl else None)
        loss.backward()
        want = [p.grad for p in net.parameters()]
        scale = max(float(g.abs().max()) for g in want)
        assert scale > 0, name
        for k in range(WORLD):
            loss_k, st_k, grads = ranks[k][i]
            what = f"{name} {agg} micro-batch {mb} kl {kl}, rank {k}"
            assert max_diff(grads, want) <= 1e-5 * scale, f"{what}: gradient off by {max_diff(grads, want):.3g}"
            assert abs(loss_k - loss.item()) <= 1e-6 * max(1.0, abs(loss.item())), what
            assert st_k["tokens"] == st["tokens"] and st_k["samples"] == st["samples"], what  # counts summed


# --- 2) whole runs: pre-training and RL, 2 ranks against 1 (one spawn for every test, to keep the file fast) ------

RL_KW = dict(eval_every=100, eval_problems=2, eval_samples=2)
PRE_KW = dict(steps=3, eval_every=1000, eval_problems=2, eval_samples=1)


def rl(base, objective, path, resume=False, **kw):
    """rl_train of `objective` from `base` on the tiny preset with cheap evaluations; RL_KW and kw set the rest."""
    cfg = D.rl_config("tiny", **RL_KW, **kw)
    return T.rl_train(base, D.schedule(objective, cfg), cfg, path, "cpu", resume=resume, progress=False)


def pretrain(out_dir, **kw):
    """3 pre-training steps of the tiny preset into out_dir, cheap evaluations."""
    return T.pretrain(T.pretrain_config("tiny", **PRE_KW, **kw), out_dir, "cpu", progress=False)


def recording_generate(seen):
    """train.generate that also records the prompts of each RL step (evaluation calls sample.generate)."""
    real = T.generate
    return lambda model, prompts, **kw: seen.append(prompts) or real(model, prompts, **kw)


def runs_worker(rank, base, out, rollout):
    torch.save(rank_gradients(rank, *rollout), f"{out}/grads-{rank}.pt")
    seen = []
    T.generate = recording_generate(seen)
    os.environ["PRERL_TEST_WHOLE_BATCH"] = "1"  # the one-process tokens on both ranks
    rl(base, "w-reinforce", f"{out}/whole.pt", steps=3, other_space_every=1)  # its log: whole.jsonl beside it
    pretrain(f"{out}/pre")
    os.environ["PRERL_TEST_WHOLE_BATCH"] = "0"  # a normal run: each rank samples its share with its own stream
    del seen[:]
    rl(base, "w-reinforce", f"{out}/own.pt", steps=4, ckpt_every=2)
    try:
        rl(base, "grpo", f"{out}/odd.pt", steps=1, batch_prompts=3)
        error = ""
    except R.UserError as e:
        error = str(e)
    with open(f"{out}/seen-{rank}.json", "w") as f:
        json.dump({"prompts": seen, "error": error}, f)


@pytest.fixture(scope="module")
def runs(tiny_base, tmp_path_factory):
    """The 2-rank gradients and runs (spawned once for the whole file) and the runs' 1-process counterparts."""
    two, one = tmp_path_factory.mktemp("two"), tmp_path_factory.mktemp("one")
    spawn(runs_worker, str(tiny_base), str(two), fixed_rollout())
    seen = []
    T_generate, threads = T.generate, torch.get_num_threads()
    T.generate = recording_generate(seen)
    torch.set_num_threads(1)  # as each rank (join): the same float reductions, so "bit for bit" below can hold
    try:
        rl(str(tiny_base), "w-reinforce", str(one / "whole.pt"), steps=3, other_space_every=1)  # every log compared
        pretrain(str(one / "pre"))
        pretrain(str(one / "pre-chunks"), micro_batch=16)  # the two ranks' rows as two chunks of one process
        # the same rows in the same two chunks as the two ranks (micro-batches of 2 prompts x 4 samples)
        rl(str(tiny_base), "w-reinforce", str(one / "chunks.pt"), steps=3, micro_batch=8)
        del seen[:]
        rl(str(tiny_base), "w-reinforce", str(one / "own.pt"), steps=4, ckpt_every=2)
    finally:
        T.generate = T_generate
        torch.set_num_threads(threads)
    ranks = [json.load(open(two / f"seen-{k}.json")) for k in range(WORLD)]
    return two, one, seen, ranks


def weights(path):
    return list(M.load_checkpoint(str(path))["model"].values())


def test_weights_after_3_rl_steps_and_pretraining_match_one_process(runs):
    two, one, _, _ = runs
    # 2.6e-6 measured: gradients equal to float rounding, which AdamW amplifies on near-zero gradients (lr 1e-3)
    d = max_diff(weights(two / "whole.pt"), weights(one / "whole.pt"))
    assert d <= 1e-5, f"RL weights after 3 steps differ by {d:.3g}"
    # and bit for bit the one process that sums the same two halves of the batch (micro-batches): DDP adds the
    # ranks' gradients as micro_batched_backward adds its chunks', and halving is exact
    d = max_diff(weights(two / "whole.pt"), weights(one / "chunks.pt"))
    assert d == 0, f"2 ranks differ from 1 process with the ranks' rows as micro-batches by {d:.3g}"
    d = max_diff(weights(two / "pre/base.pt"), weights(one / "pre/base.pt"))
    assert d <= 1e-5, f"pre-training weights after 3 steps differ by {d:.3g}"
    d = max_diff(weights(two / "pre/base.pt"), weights(one / "pre-chunks/base.pt"))
    assert d == 0, f"2 ranks differ from 1 process pre-training the ranks' rows as micro-batches by {d:.3g}"
    # the logged statistics are the whole batch's: reduced over the ranks, the same as one process's
    logs = [[json.loads(line) for line in open(d / "whole.jsonl")] for d in (two, one)]
    for a, b in zip(*logs):
        assert a["tokens"] == b["tokens"] and a["solved_none"] == b["solved_none"]
        for key in ("reward", "length", "truncated", "loss", "grad_norm", "entropy_cond", "entropy_pre"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key


def test_each_rank_samples_its_share_of_the_same_prompts(runs):
    two, one, seen, ranks = runs
    assert len(seen) == 4 and all(len(step) == D.RL["tiny"]["batch_prompts"] for step in seen)
    for step, prompts in enumerate(seen):
        assert ranks[0]["prompts"][step] + ranks[1]["prompts"][step] == prompts, f"step {step + 1}"
    ck = M.load_checkpoint(str(two / "own.pt"))
    assert ck["run"]["processes"] == WORLD
    assert len(ck["rng"]["sampler"]) == WORLD and not torch.equal(*ck["rng"]["sampler"])  # one stream per rank
    assert all("multiple of the 2 processes" in r["error"] for r in ranks)


def test_a_two_process_run_does_not_resume_in_one_process(runs, tiny_base):
    two, _, _, _ = runs
    with pytest.raises(R.UserError, match="cannot resume"):
        rl(str(tiny_base), "w-reinforce", str(two / "own.pt"), resume=True, steps=4, ckpt_every=2)


# --- 3) kill -9 under torchrun, then --resume -----------------------------------------------------------------

def torchrun(*args, env=None):
    e = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}", "dsrl.py"]
    return subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True, timeout=300, env=e)


def test_torchrun_kill_9_then_resume_continues_the_run(runs, tiny_base, tmp_path):
    two, _, _, _ = runs
    args = ["--preset", "tiny", "--objective", "w-reinforce", "--alone", "--steps", "4", "--ckpt-every", "2",
            "--eval-samples", "1", "--init", str(tiny_base), "--out", str(tmp_path)]
    p = torchrun(*args, env={"PRERL_TEST_KILL_AT_STEP": "2"})
    assert p.returncode != 0 and M.load_checkpoint(str(tmp_path / "tiny/w-reinforce.pt"))["step"] == 2, p.stderr[-2000:]
    p = torchrun(*args, "--resume")
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("wrote ") == 1, p.stdout  # rank 0 alone evaluates and writes the results
    assert (tmp_path / "tiny/results.json").exists()
    # the resumed run ends where the uninterrupted 2-rank run of the same settings ended (runs_worker), bit for bit
    assert max_diff(weights(tmp_path / "tiny/w-reinforce.pt"), weights(two / "own.pt")) == 0
    log = [json.loads(line) for line in open(tmp_path / "tiny/w-reinforce.jsonl")]
    assert [rec["step"] for rec in log] == [1, 2, 3, 4]


# --- the suite on a machine with several GPUs -------------------------------------------------------------------

def test_suite_gives_each_worker_its_own_gpu():
    assert suite.worker_devices("cuda", None, gpus=4) == (["cuda:0", "cuda:1", "cuda:2", "cuda:3"],
                                                         "4 workers, one GPU each")
    assert suite.worker_devices("cuda", 8, gpus=4)[0] == [f"cuda:{i % 4}" for i in range(8)]
    assert suite.worker_devices("cuda", None, gpus=1) == (["cuda"] * 8, "8 workers")
    assert suite.worker_devices("cpu", None, gpus=0) == (["cpu"] * 2, "2 workers")
