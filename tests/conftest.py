"""Fixtures shared by the test files."""
from dataclasses import asdict

import pytest
import torch

import model as M


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """An untrained tiny-preset checkpoint to start RL runs from."""
    d = tmp_path_factory.mktemp("base")
    torch.manual_seed(0)
    m = M.GPT(M.PRESETS["tiny"])
    M.save_checkpoint(d / "base.pt", {"model": m.state_dict(), "config": asdict(m.config), "preset": "tiny"})
    return d / "base.pt"
