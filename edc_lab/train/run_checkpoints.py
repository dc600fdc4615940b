"""The checkpoints a training run reads and writes: the one it resumes (which settings may not change,
restoring weights, optimiser, schedule and random states), the teacher it distils from, and ``last.pt``
with ``history.json`` and ``config.json`` every ``checkpoint_every`` steps.

The file format (atomic writes, ``weights_only`` loads, RNG states, finite weights) is
:mod:`edc_lab.train.checkpoint`'s. With the RNG states in the checkpoint, ``resume=True`` continues
*exactly*: on the CPU a resumed run ends with bit-identical weights to an uninterrupted one.
Our choices, standard practice.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch

from edc_lab.train import distributed
from edc_lab.train.checkpoint import (
    CheckpointError,
    check_finite_weights,
    is_weights_only,
    load_checkpoint,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from edc_lab.train.config import TrainConfig
from edc_lab.train.state import TrainState

CHECKPOINT_NAME = "last.pt"

#: settings a resumed run must share with its checkpoint: they define the run (the model, the data, the
#: batches), or, for ``init_from_teacher``, they act only when a run starts, so a new value would be
#: recorded in config.json without having been applied
RESUME_FIXED = ("stage", "model", "model_overrides", "data", "size", "batch_size", "seed", "data_seed", "train_count",
                "init_from_teacher", "scene_family", "cloud_cover", "cloud_model", "cloud_options")
#: settings the optimiser state of a full checkpoint carries (AdamW's param groups, the schedule's
#: base rates): resuming would run with the stored value while config.json records the new one. A
#: weights-only export starts a fresh AdamW from the config, so there they may change
OPTIMIZER_FIXED = ("lr", "weight_decay")


# --------------------------------------------------------------------------- reading
def checkpoint_to_resume(config: TrainConfig, path: Path) -> dict | None:
    """The checkpoint at ``path`` that this run continues (read onto the CPU), or None for a new run.

    An existing checkpoint without ``resume`` is an error (a run never overwrites another), and
    so is one this run could not honour (:func:`check_resumable`).
    """
    if not path.exists():
        return None
    if not config.resume:
        raise ValueError(
            f"{path}: a checkpoint already exists; pass --resume (resume=True) to continue it, "
            f"or choose another --out"
        )
    # read onto the CPU: load_state_dict moves weights and optimiser state to the model's device,
    # and the RNG states must stay CPU tensors
    payload = read_checkpoint(path, map_location="cpu")
    check_resumable(payload, config, path)
    return payload


def _plain(value):
    """``value`` with tuples as lists (a stored config went through ``to_dict``, a new one may hold tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def check_resumable(payload: dict, config: TrainConfig, path: Path) -> None:
    """Refuse to resume with a setting the resumed run could not honour (``RESUME_FIXED``, ``OPTIMIZER_FIXED``).

    One run, one record: ``config.json`` is rewritten with this run's settings,
    so each of them must be what the run really uses.
    """
    stored = payload.get("config") or {}
    fixed = RESUME_FIXED + (() if is_weights_only(payload) else OPTIMIZER_FIXED)
    for key in fixed:
        if key in stored and _plain(stored[key]) != _plain(getattr(config, key)):
            raise ValueError(
                f"{path}: cannot resume: the checkpoint was trained with {key}={stored[key]!r}, "
                f"this run asks for {key}={getattr(config, key)!r}; expected the stored {key} (a resumed run "
                f"cannot change it): give it again, or start a new run in another --out"
            )
    if int(payload.get("step") or 0) > config.steps:
        raise ValueError(f"{path}: cannot resume: the checkpoint is at step {payload['step']}, beyond steps={config.steps}")


def load_teacher(config: TrainConfig, device: torch.device, student_args: dict) -> torch.nn.Module:
    """The frozen teacher: loaded from its checkpoint, eval mode, no gradients.

    A bad teacher file is named as such (``--teacher``): its NaN weights would
    otherwise surface as the student's first non-finite loss.
    """
    try:
        teacher, meta = load_checkpoint(config.teacher, map_location=device)
    except CheckpointError as error:
        raise CheckpointError(f"--teacher {error}") from None
    for key in ("num_classes", "in_sar", "in_optical"):
        if key in student_args and teacher.build_args.get(key) != student_args[key]:
            raise ValueError(
                f"{config.teacher}: expected a teacher with {key}={student_args[key]} like the student, "
                f"found {key}={teacher.build_args.get(key)}"
            )
    if meta.get("config", {}).get("stage") not in (None, "teacher"):
        print(f"note: {config.teacher} was trained as a {meta['config']['stage']}, used as the teacher", file=sys.stderr)
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


# --------------------------------------------------------------------------- restoring
def restore(payload, model, optimizer, scheduler, scaler, path: Path, context) -> int:
    """Load a checkpoint's weights and optimiser / schedule / scaler states; return its step.

    A checkpoint whose weights hold NaN or Inf is refused. A weights-only export
    (:func:`~edc_lab.train.checkpoint.export_weights`: no optimiser state) is
    resumed from its weights with a fresh AdamW, with a warning: that run is not
    bit-identical to an uninterrupted one. Either way the learning rate of the
    next step is then recomputed from this run's schedule (``steps``,
    ``warmup_steps``, ``min_lr_ratio``, which may have changed and are what
    config.json records); with an unchanged schedule it is the stored rate, bit
    for bit. ``lr`` and ``weight_decay`` cannot change (:func:`check_resumable`).
    """
    step = int(payload.get("step") or 0)
    check_finite_weights(path, payload["model"], action="cannot resume: ")
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: cannot resume: the weights do not fit --model {payload['build_args']}: {error}"
        ) from None
    position = step  # of the schedule: a weights-only export starts it at its step
    if is_weights_only(payload):
        if context.is_main:
            warnings.warn(
                f"{path}: a weights-only export (no optimiser state): resuming its weights at step {step} with a fresh "
                f"AdamW, the learning-rate schedule at step {step} and fresh random states; the result will not be "
                f"bit-identical to an uninterrupted run",
                stacklevel=4,  # at the call in train()
            )
    else:
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        position = scheduler.last_epoch  # behind `step` by the updates fp16 skipped
    # the next step's rate from this run's schedule (a full checkpoint holds the rate its old schedule set)
    scheduler.last_epoch = position - 1
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose here
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()
    if payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    return step


def restore_rng_states(payload: dict, context: distributed.DistributedContext) -> None:
    """This rank's random states from the checkpoint (a weights-only export has none: the seeds stand)."""
    states = payload.get("rng")
    if states:
        set_rng_state(states[context.rank] if len(states) == context.world_size else states[0])


# --------------------------------------------------------------------------- writing
def write_checkpoint(state: TrainState, step: int) -> None:
    """Gather every rank's RNG state; rank 0 writes checkpoint, history and config."""
    context, path, config = state.context, state.checkpoint_path, state.config
    states = [rng_state()]
    if context.enabled:
        states = [None] * context.world_size
        torch.distributed.all_gather_object(states, rng_state())
    if context.is_main:
        save_checkpoint(
            path,
            {
                "model": state.model.state_dict(),
                "build_args": dict(state.model.build_args),
                "optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict(),
                "scaler": state.scaler.state_dict() if state.scaler.is_enabled() else None,
                "step": step,
                "rng": states,
                "config": config.to_dict(),
                "data": state.info,
                "history": state.history,
            },
        )
        (path.parent / "history.json").write_text(json.dumps(state.history, indent=0, allow_nan=True))
        (path.parent / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    distributed.barrier(context)
