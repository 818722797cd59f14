"""model.py: the GPT's KV cache (growing and static) and left padding compute what a plain forward computes; a
checkpoint is written atomically and read without running code."""
import os
import shlex

import pytest
import torch

import model as M
import reward as R
import sample as S


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """This module's tests run on one thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return M.GPT(M.PRESETS["tiny"]).eval()


def prompts(n, seed=0):
    return [S.prompt_ids(p) for p in R.make_split("test", n, seed=seed)]


# --- KV cache and padding ----------------------------------------------------------------------------------

def test_kv_cache_logits_equal_full_forward(tiny):
    idx = torch.randint(0, 256, (3, 20), generator=torch.Generator().manual_seed(0))
    full = tiny(idx)
    cache = tiny.new_cache(3, 20, torch.zeros(3, dtype=torch.long))
    parts = [tiny(idx[:, :8], cache=cache)] + [tiny(idx[:, t:t + 1], cache=cache) for t in range(8, 20)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)


def test_left_padding_changes_nothing(tiny):
    a = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([torch.full((1, 5), R.PAD_ID), a], 1)
    out = tiny(padded, pad=torch.tensor([5]))
    torch.testing.assert_close(out[:, 5:], tiny(a), atol=1e-5, rtol=0)
    assert torch.isfinite(out).all()  # the pad rows do not make NaNs


def test_static_decode_step_matches_the_growing_cache(tiny):
    ps = prompts(4)
    pad = torch.tensor([max(map(len, ps)) - len(p) for p in ps])
    assert len(set(pad.tolist())) > 1  # rows of different lengths: the static mask must keep the left padding out
    idx = torch.tensor([[R.PAD_ID] * int(n) + p for n, p in zip(pad, ps)])
    caches = [tiny.new_cache(4, idx.size(1) + 6, pad, static=s) for s in (False, True)]
    for c in caches:
        tiny(idx, pad=pad, cache=c)
    tok = torch.tensor([[5], [6], [7], [8]])
    for _ in range(6):
        a, b = (tiny(tok, cache=c)[:, -1] for c in caches)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
        assert int(caches[1].pos) == caches[1].t
        tok = a.argmax(-1, keepdim=True)


# --- checkpoints -------------------------------------------------------------------------------------------

def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    M.save_checkpoint(path, {"model": {}, "config": {}, "step": 1})
    real_save = torch.save

    def boom(obj, f, *a, **k):  # the disk fills up halfway through writing the file
        real_save({"half": "written"}, f)
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        M.save_checkpoint(path, {"model": {}, "config": {}, "step": 2})
    assert M.load_checkpoint(str(path))["step"] == 1  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # and no temporary file is left behind


class Boom:
    """Unpickling this object runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_checkpoint_cannot_run_code_on_load(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "pwned_by_checkpoint"
    torch.save({"model": {}, "config": {}, "x": Boom(marker)}, path, pickle_protocol=2)
    with pytest.raises(R.UserError, match="corrupt or not a prerl checkpoint"):
        M.load_checkpoint(str(path))
    assert not marker.exists()
    # the file is really armed: a plain (unsafe) unpickling runs its command
    torch.load(path, weights_only=False)
    assert marker.exists()
