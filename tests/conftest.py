"""Shared fixtures: where the read-only reference data lives, and torch determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
M3MCR_SAMPLE = SHARED_DATA / "m3mcr_sample"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def m3mcr_sample_root() -> Path:
    """The real M3M-CR quartet of ../shared/data, or a skip when it is absent."""
    if not (M3MCR_SAMPLE / "one_train_sample.csv").is_file():
        pytest.skip(f"real M3M-CR sample not found at {M3MCR_SAMPLE} (../shared/data is optional)")
    return M3MCR_SAMPLE


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
