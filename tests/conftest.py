"""Fixtures shared by the test files."""
from dataclasses import asdict

import pytest
import torch

import model as M
import reward as R
import sample as S


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """An untrained tiny-preset checkpoint to start RL runs from."""
    d = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    m = M.GPT(M.PRESETS["tiny"])
    M.save_checkpoint(d / "base.pt", {"model": m.state_dict(), "config": asdict(m.config), "preset": "tiny"})
    return d / "base.pt"


@pytest.fixture(scope="session")
def tiny_rollout():
    """A random tiny model and 3 held-out prompts x 2 samples (rows 2b, 2b+1 answer prompt b). Tests that train
    must deepcopy the model."""
    torch.manual_seed(0)
    m = M.GPT(M.PRESETS["tiny"])
    ps = [S.prompt_ids(p) for p in R.make_split("test", 3)]
    ro = S.generate(m, ps, G=2, max_new_tokens=10, generator=torch.Generator().manual_seed(0))
    return m, ro
