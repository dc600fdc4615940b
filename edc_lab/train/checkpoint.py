"""Checkpoints that survive a crash and load safely.

A checkpoint is one ``torch.save`` file holding a plain dict:

=================  =========================================================
``model``          the model's ``state_dict`` (tensors)
``build_args``     ``build_model(**build_args)`` rebuilds the architecture
``optimizer``      AdamW ``state_dict`` (None in a weights-only export)
``scheduler``      learning-rate scheduler ``state_dict`` (None in an export)
``scaler``         fp16 GradScaler ``state_dict`` or None
``step``           optimiser steps taken
``rng``            one RNG state per rank: torch / CUDA / NumPy / Python, as
                   tensors and lists (None in an export)
``config``         the :class:`TrainConfig` as a dict
``data``           dataset name, class names and colours, SAR channels — what
                   ``predict`` needs to normalise new images the same way
``history``        the metrics history so far (list of dicts)
=================  =========================================================

A **weights-only export** (:func:`export_weights`) is the same dict with
``optimizer``, ``scheduler``, ``scaler`` and ``rng`` set to None: smaller, enough
for ``predict`` and ``evaluate``; ``train(resume=True)`` continues from it with
a fresh optimiser (and says so).

Three habits make it robust (our choices, standard practice):

* **atomic write**: the file is written to a temporary name in the same
  directory (``.last.pt.<8 random characters>.tmp``), flushed and ``fsync``-ed,
  then renamed over the old one with ``os.replace`` (atomic on POSIX and
  Windows). A run killed mid-write leaves the previous checkpoint intact, never
  a half-written one. A save that raises deletes its temporary file; one that
  was killed (SIGKILL, SIGTERM) cannot, so the next save to the same path
  deletes such leftovers;
* **finite weights**: the training loop never writes weights holding NaN or
  Inf (:func:`non_finite_entries`), so the last checkpoint is always one to go
  back to; and every load (:func:`load_checkpoint`: ``predict``, ``evaluate``,
  the teacher of a student; ``train --resume``) refuses such weights from
  elsewhere (:func:`check_finite_weights`) instead of turning them into a
  normal-looking map, a table of NaN or a NaN distillation signal;
* **safe load**: ``torch.load(weights_only=True)`` refuses arbitrary pickled
  objects, so a checkpoint from the internet cannot run code. That is why every
  entry above is a tensor, number, string, list or dict — the NumPy and Python
  RNG states are converted to tensors and lists.
"""

from __future__ import annotations

import os
import pickle
import random
import re
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
def stale_temporary_files(path: str | Path) -> list[Path]:
    """Temporary files that earlier, killed saves to ``path`` left in its folder.

    Only our own pattern, ``.<name>.<8 characters of tempfile's alphabet>.tmp``
    for this very ``name``: other files of the folder are never touched. One run
    folder has one writer (rank 0 of one run), so a match is never a save in
    progress.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_file())


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file, fsync, rename).

    Leftover temporary files of earlier killed saves to ``path`` are deleted
    first; if this save raises, its own temporary file is deleted too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, **payload}
    for leftover in stale_temporary_files(path):
        leftover.unlink(missing_ok=True)
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
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError) as error:
        # a text file or another format ends anywhere in torch's unpickler: IndexError and KeyError included
        raise CheckpointError(
            f"{path}: expected an edc_lab checkpoint (torch.save file), could not load it: "
            f"{type(error).__name__}: {error}"
        ) from None
    if not isinstance(payload, dict) or "model" not in payload or "build_args" not in payload:
        if isinstance(payload, dict) and payload and all(torch.is_tensor(v) for v in payload.values()):
            found = (f"a bare state_dict ({len(payload)} tensors, e.g. {next(iter(payload))!r}); save it as "
                     f"{{'model': model.state_dict(), 'build_args': model.build_args}}")
        else:
            found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: expected a checkpoint dict with 'model' and 'build_args', found {found}")
    return payload


def is_weights_only(payload: dict[str, Any]) -> bool:
    """Whether a checkpoint dict is a weights-only export (no optimiser state to resume)."""
    return payload.get("optimizer") is None


def export_weights(source: str | Path, destination: str | Path) -> Path:
    """Write the weights-only export of checkpoint ``source`` to ``destination``.

    Keeps ``model``, ``build_args``, ``step``, ``config``, ``data`` and
    ``history``; sets ``optimizer``, ``scheduler``, ``scaler`` and ``rng`` to
    None (AdamW's two moments alone are twice the size of the weights).
    """
    payload = read_checkpoint(source)
    payload.pop("format", None)
    payload.update(optimizer=None, scheduler=None, scaler=None, rng=None)
    return save_checkpoint(destination, payload)


def non_finite_entries(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a ``state_dict`` holding a NaN or an Inf.

    ``model.state_dict()`` holds parameters *and* buffers (BatchNorm running
    statistics), so this checks both. Training calls it after every step
    (:func:`~edc_lab.train.training_step.check_finite_update`), so the common case
    is cheap: one ``isfinite`` over all values of a device and dtype laid end to end (one host
    synchronisation per device and dtype, usually one), instead of two operations per tensor; only when something is not finite
    are the tensors looked at one by one, to name them.
    """
    named = [(name, value.detach()) for name, value in state_dict.items()
             if torch.is_tensor(value) and value.is_floating_point()]
    if not named:
        return []
    kinds: dict[tuple, list[torch.Tensor]] = {}
    for _, value in named:
        kinds.setdefault((value.device, value.dtype), []).append(value.reshape(-1))
    if all(bool(torch.cat(values).isfinite().all()) for values in kinds.values()):
        return []
    finite = torch.stack([value.isfinite().all() for _, value in named]).cpu().tolist()
    return [name for (name, _), ok in zip(named, finite) if not ok]


def _non_finite_counts(tensor: torch.Tensor) -> str:
    """``"3 NaN and 1 Inf of 216 values"`` for one tensor."""
    nan = int(torch.isnan(tensor).sum())
    inf = int(torch.isinf(tensor).sum())
    return f"{nan} NaN and {inf} Inf of {tensor.numel()} values"


def check_finite_weights(path: str | Path, state_dict: Any, action: str = "") -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` is a dict whose float tensors are all finite.

    Weights holding NaN or Inf do not fail loudly: ``predict`` writes a normal-looking
    map (argmax of NaN is class 0), ``evaluate`` a table of NaN, and a student
    distilling from such a teacher stops at its first loss, blaming the learning
    rate. So every load checks, before a model is built: the message names the
    file, the first (at most three) non-finite tensors with their NaN / Inf
    counts, and how many tensors are affected. ``action`` prefixes the finding
    (``"cannot resume: "``).
    """
    if not isinstance(state_dict, dict):
        raise CheckpointError(
            f"{path}: {action}expected 'model' to be a state_dict (a dict of tensors), "
            f"found {type(state_dict).__name__}"
        )
    broken = non_finite_entries(state_dict)
    if not broken:
        return
    floats = sum(1 for value in state_dict.values() if torch.is_tensor(value) and value.is_floating_point())
    named = "; ".join(f"{name}: {_non_finite_counts(state_dict[name])}" for name in broken[:3])
    raise CheckpointError(
        f"{path}: {action}the weights are not finite ({named}{'; ...' if len(broken) > 3 else ''}): "
        f"{len(broken)} of {floats} floating-point tensors hold NaN or Inf, expected none; "
        f"go back to an earlier checkpoint or train again"
    )


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside a DistributedDataParallel (or compiled) wrapper."""
    while hasattr(model, "module") and isinstance(getattr(model, "module"), torch.nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint, load its weights, put it in eval mode.

    Returns ``(model, meta)`` where ``meta`` is the checkpoint dict without the
    large state dicts (``config``, ``data``, ``step``, ``history``, ``build_args``...).

    Checked before the model is built, so a bad file allocates nothing beyond
    what ``torch.load`` read: ``build_args`` (a dict with a model name, which
    ``build_model`` checks field by field and refuses when it describes more
    than ``MAX_PARAMETERS`` parameters) and finite weights
    (:func:`check_finite_weights`).
    """
    from edc_lab.models import build_model

    payload = read_checkpoint(path, map_location)
    build_args = payload["build_args"]
    if not isinstance(build_args, dict) or not isinstance(build_args.get("name"), str):
        found = f"keys {sorted(build_args)}" if isinstance(build_args, dict) else type(build_args).__name__
        raise CheckpointError(f"{path}: expected 'build_args' to be a dict with a model 'name', found {found}")
    check_finite_weights(path, payload["model"])
    try:
        model = build_model(**build_args)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: its build_args {build_args} do not build a model: {error}") from None
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: the weights do not fit build_model(**{payload['build_args']}): {error}") from None
    model.to(map_location).eval()
    meta = {key: value for key, value in payload.items() if key not in ("model", "optimizer", "scheduler", "scaler", "rng")}
    return model, meta
