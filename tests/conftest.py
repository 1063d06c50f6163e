"""Shared fixtures and checks for the losskit test suite."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# small tensors: one intra-op thread avoids the thread-pool overhead that dominates here
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_and_checks():
    import losskit

    torch.manual_seed(0)
    losskit.set_checks(True)
    yield
    losskit.set_checks(True)
