"""Where things are: the repository's small samples and the optional shared reference data."""

from __future__ import annotations

import os
from pathlib import Path

#: the checkout this package was installed from (editable install)
REPO_ROOT = Path(__file__).resolve().parents[2]

#: committed small samples written by ``edc-lab make-data``
SAMPLE_DATA = REPO_ROOT / "data"


def shared_data_dir() -> Path | None:
    """The team's read-only reference data (``../shared/data`` beside the checkout), or None.

    ``EDC_LAB_SHARED_DATA`` overrides the location. Nothing is downloaded.
    """
    candidates = []
    if os.environ.get("EDC_LAB_SHARED_DATA"):
        candidates.append(Path(os.environ["EDC_LAB_SHARED_DATA"]))
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None


def m3mcr_sample_dir() -> Path | None:
    """The real M3M-CR quartet (``m3mcr_sample/``) when the shared data is present."""
    shared = shared_data_dir()
    if shared is not None and (shared / "m3mcr_sample" / "one_train_sample.csv").is_file():
        return shared / "m3mcr_sample"
    return None
