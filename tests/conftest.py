"""Fixtures and helpers shared by the test files (one module's tests per file: test_<module>.py)."""
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import dsrl as D
import model as M
import reward as R
import sample as S
import train as T

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args, env=None, timeout=900, cwd=ROOT):
    """`python script args...` in the repository (a loaded 2-core machine runs 10x slower: a generous timeout)."""
    e = dict(os.environ, **(env or {}))
    cmd = [sys.executable, *(["-m", script[3:]] if script.startswith("-m ") else [script]), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e)


def one_line_error(p, *needles):
    """The process exited 2 with one `error: ...` line on stderr naming every needle, and no traceback."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def strip_times(path):
    """A run's .jsonl log without its wall-clock fields (t_sample, t_learn): what must be identical between runs."""
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("t_")} for line in open(path)]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """An untrained tiny-preset checkpoint to start RL runs from (rewards are nearly all 0 on it)."""
    d = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    m = M.GPT(M.PRESETS["tiny"])
    M.save_checkpoint(d / "base.pt", {"model": m.state_dict(), "config": asdict(m.config), "preset": "tiny"})
    return d / "base.pt"


@pytest.fixture(scope="session")
def tiny_rollout():
    """A random tiny model and 3 held-out prompts x 2 samples (rows 2b, 2b+1 answer prompt b). Read-only: a test
    that trains deep-copies the model, one that edits the rollout builds its own."""
    torch.manual_seed(0)
    m = M.GPT(M.PRESETS["tiny"])
    ps = [S.prompt_ids(p) for p in R.make_split("test", 3)]
    ro = S.generate(m, ps, G=2, max_new_tokens=10, generator=torch.Generator().manual_seed(0))
    return m, ro


@pytest.fixture(scope="module")
def one_thread():
    """The tiny models run fastest on one thread (a loaded 2-core machine makes torch's threads wait on each
    other); the setting is put back after the module that asks for it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cfg_of(**kw):
    """The tiny preset's RL settings with cheap held-out evaluations (2 problems x 2 samples)."""
    return D.rl_config("tiny", **{**dict(eval_every=100, eval_problems=2, eval_samples=2), **kw})


def rl_run(base, objective, path, S_=None, **kw):
    """rl_train of `objective`'s schedule (S_ warmup steps for a two-phase one) from `base` with cfg_of(**kw)."""
    cfg = cfg_of(**kw)
    return T.rl_train(str(base), D.schedule(objective, cfg, S_), cfg, str(path), "cpu", progress=False)


def alternating(ro, answers):
    """Rewards 1.0, 0.0, 1.0, ... row by row: every group (G even) has right and wrong samples."""
    return [float(i % 2 == 0) for i in range(len(answers))]
