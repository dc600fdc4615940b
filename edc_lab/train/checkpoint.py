"""Checkpoints that survive a crash and load safely.

A checkpoint is one ``torch.save`` file holding a plain dict:

=================  =========================================================
``model``          the model's ``state_dict`` (tensors)
``build_args``     ``build_model(**build_args)`` rebuilds the architecture
``optimizer``      AdamW ``state_dict`` (None in a weights-only export)
``scheduler``      learning-rate scheduler ``state_dict``
``scaler``         fp16 GradScaler ``state_dict`` or None
``step``           optimiser steps taken
``rng``            torch / CUDA / NumPy / Python RNG states, as tensors and lists
``config``         the :class:`TrainConfig` as a dict
``data``           dataset name, class names and colours, SAR channels — what
                   ``predict`` needs to normalise new images the same way
``history``        the metrics history so far (list of dicts)
=================  =========================================================

Two habits make it robust (our choices, standard practice):

* **atomic write**: the file is written to a temporary name in the same
  directory, flushed and ``fsync``-ed, then renamed over the old one with
  ``os.replace`` (atomic on POSIX and Windows). A run killed mid-write leaves the
  previous checkpoint intact, never a half-written one;
* **safe load**: ``torch.load(weights_only=True)`` refuses arbitrary pickled
  objects, so a checkpoint from the internet cannot run code. That is why every
  entry above is a tensor, number, string, list or dict — the NumPy and Python
  RNG states are converted to tensors and lists.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "edc_lab-checkpoint-1"


class CheckpointError(ValueError):
    """A file that is not a usable edc_lab checkpoint (the message names it)."""


# --------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """Every random generator's state as tensors / lists / numbers."""
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],  # this process's GPU
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "position": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": {"version": python_state[0], "state": list(python_state[1]), "gauss_next": python_state[2]},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0].cpu())
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].cpu().numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss_next"]))


# --------------------------------------------------------------------------- write / read
def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, **payload}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX; not possible on Windows)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError:
        pass
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, loaded with ``weights_only=True``; clear errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: expected an edc_lab checkpoint file, found no such file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: expected an edc_lab checkpoint (torch.save file), could not load it: {error}") from None
    if not isinstance(payload, dict) or "model" not in payload or "build_args" not in payload:
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: expected a checkpoint dict with 'model' and 'build_args', found {found}")
    return payload


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a DistributedDataParallel (or compiled) wrapper."""
    while hasattr(model, "module") and isinstance(getattr(model, "module"), torch.nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint, load its weights, put it in eval mode.

    Returns ``(model, meta)`` where ``meta`` is the checkpoint dict without the
    large state dicts (``config``, ``data``, ``step``, ``history``, ``build_args``...).
    """
    from edc_lab.models import build_model

    payload = read_checkpoint(path, map_location)
    model = build_model(**payload["build_args"])
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: the weights do not fit build_model(**{payload['build_args']}): {error}") from None
    model.to(map_location).eval()
    meta = {key: value for key, value in payload.items() if key not in ("model", "optimizer", "scheduler", "scaler", "rng")}
    return model, meta
