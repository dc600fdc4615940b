"""Where and how a run computes: seeds, deterministic algorithms, the autocast dtype of the device, a progress bar.

Our choices, standard practice: bf16 autocast on GPUs that compute it natively, else fp16 (with a
GradScaler, :mod:`edc_lab.train.loop`); full precision and deterministic algorithms on the CPU.
"""

from __future__ import annotations

import random
from contextlib import contextmanager

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's ``random`` (CPU and all GPUs)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextmanager
def deterministic_mode(enabled: bool):
    """``torch.use_deterministic_algorithms(True)`` inside the block, restored after."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: None on CPU or with ``"off"``; bf16 where the GPU computes it natively
    (Ampere and newer), else fp16 (V100, T4: their bf16 is only emulated, and slow)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "bf16" or (amp == "auto" and native_bf16(device)):
        return torch.bfloat16
    return torch.float16


def native_bf16(device: torch.device) -> bool:
    """Whether the GPU ``device`` computes bf16 in hardware (compute capability 8.0 or newer)."""
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def progress_bar(iterable, enabled: bool, description: str, total: int | None = None, initial: int = 0):
    """A ``tqdm.auto`` bar (a widget in Jupyter, text in a terminal), or the iterable itself."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, total=total, initial=initial, leave=True, dynamic_ncols=True)
