"""Shared fixtures: where the read-only reference data lives, and torch determinism."""

from __future__ import annotations

import sys
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


@pytest.fixture(autouse=True)
def _close_figures():
    """Close every matplotlib figure a test left open (only where pyplot was imported)."""
    yield
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")


@pytest.fixture(scope="session")
def m3mcr_checkpoint(tmp_path_factory) -> Path:
    """An untrained ``edc_tiny`` checkpoint with M3M-CR metadata (6 classes, 2 SAR bands), seed 0."""
    from edc_lab.models import build_model
    from edc_lab.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model("edc_tiny", num_classes=6)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, {
        "model": model.state_dict(), "build_args": model.build_args, "step": 0,
        "data": {"name": "m3mcr", "class_names": ["forest", "rangeland", "agriculture", "urban", "barren", "water"],
                 "in_sar": 2},
    })
    return path
