"""The training loop: plain code, one path for a laptop CPU and a GPU cluster.

Read :func:`train` from top to bottom; it is the whole story (nanoGPT's habit:
no framework, no callbacks-within-callbacks), as a few named steps, each a
function on one screen (PyTorch's reference ``train.py``). EDC's two stages
(DESIGN §2, arXiv 2603.20811; the teacher–student scheme is CloudSeg's):

* ``stage="teacher"``: the network sees the **cloud-free** optical image + SAR
  and learns segmentation only (cross-entropy);
* ``stage="student"``: the same architecture sees the **cloudy** optical image +
  SAR; its loss adds the cloud-removal term (models with a cloud-removal head),
  feature distillation from the frozen teacher (which sees the cloud-free image
  of the same scene) and optionally logit distillation.

Baselines train with the same loop: a model whose ``has_cloud_removal`` is False
gets no cloud-removal term, single-modality models simply ignore one input.

Where each piece lives (our choices, standard practice):

* ``runtime``: device precision (bf16 autocast on GPUs that support it, else
  fp16 with a GradScaler; full precision and ``torch.use_deterministic_algorithms``
  on CPU), seeds, the progress bar;
* ``run_data``: the datasets, and each step's batch: the data order is a function
  of (seed, step) only (:class:`~edc_lab.train.distributed.StepSampler`, and
  augmentation drawn from a generator seeded by (seed, step, rank));
* ``optim``: AdamW (no weight decay on biases and norms), linear warm-up then
  cosine decay;
* ``training_step``: the loss terms, the update, and the non-finite guards, each
  naming the step and the last checkpoint with finite weights: a NaN/Inf loss, or
  gradient norm, stops the run *before* the weights are touched; weights that an
  update made non-finite (say ``lr=inf``) stop it before they reach a checkpoint.
  Labels that are all "ignore" (255) stop the run with an error before its first
  validation or checkpoint (loss 0 and mIoU NaN would otherwise pass in silence);
* ``evaluation``: :func:`~edc_lab.train.evaluation.evaluate`; under ``torchrun``
  every rank evaluates its share of the validation set and the sums are added
  over ranks;
* ``run_checkpoints``: resume (with the RNG states in the checkpoint,
  ``resume=True`` continues *exactly*: on CPU a resumed run ends with
  bit-identical weights to an uninterrupted one) and atomic writes, by rank 0
  (:mod:`edc_lab.train.checkpoint`);
* ``distributed``: under ``torchrun`` the model is wrapped in
  DistributedDataParallel.

The metrics history is a list of dicts (``{"split": "train", "step", "loss",
"loss_seg", ..., "lr", "grad_norm"}`` every step, plus ``"skipped": True`` on
an fp16 step that GradScaler skipped; ``{"split": "val", "step", "miou",
"miou_cloudy", ...}`` at each validation), passed to ``callback(record,
history)`` as it grows — a notebook plots it live.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset

from edc_lab.train import distributed
from edc_lab.train.config import TrainConfig
from edc_lab.train.evaluation import evaluate
from edc_lab.train.optim import build_optimizer, build_scheduler
from edc_lab.train.run_checkpoints import (
    CHECKPOINT_NAME,
    checkpoint_to_resume,
    load_teacher,
    restore,
    restore_rng_states,
    write_checkpoint,
)
from edc_lab.train.run_data import build_datasets, build_loader, dataset_info, training_batch
from edc_lab.train.runtime import deterministic_mode, progress_bar, resolve_amp, seed_everything
from edc_lab.train.state import TrainState
from edc_lab.train.training_step import NonFiniteLossError, train_step

# Importable from here as before the loop was split (notebooks 05 and 06 import CachedDataset from
# edc_lab.train.loop, edc_lab.predict resolve_amp): their homes are the modules named.
from edc_lab.train.evaluation import cloud_cover_sweep  # noqa: F401
from edc_lab.train.run_data import CachedDataset  # noqa: F401

Callback = Callable[[dict, list], None]

__all__ = ["CachedDataset", "NonFiniteLossError", "cloud_cover_sweep", "evaluate", "resolve_amp", "train"]


def train(config: TrainConfig, callback: Callback | None = None) -> list[dict]:
    """Train one model as ``config`` says; return the metrics history.

    Writes ``<out>/last.pt`` (checkpoint), ``<out>/history.json`` and
    ``<out>/config.json``. Under torchrun every rank calls this; rank 0 writes.
    Raises :class:`NonFiniteLossError` when the loss, the gradient norm or the
    weights stop being finite, ``ValueError`` on labels that are all "ignore".
    """
    config.validate()
    context = distributed.setup(config.device)
    finished = False
    try:
        with deterministic_mode(config.deterministic and context.device.type == "cpu"):
            history = _train(config, context, callback)
        finished = True
        return history
    finally:
        distributed.cleanup(context, synchronize=finished)  # after an error the other ranks may be elsewhere


def _train(config: TrainConfig, context: distributed.DistributedContext, callback: Callback | None) -> list[dict]:
    """The steps of a run, in order, on every rank."""
    checkpoint_path = Path(config.out) / CHECKPOINT_NAME

    # 1. what to resume from (decided before anything consumes random numbers)
    resume_from = checkpoint_to_resume(config, checkpoint_path)

    # 2. data, model, teacher, optimiser: identical on every rank (same seed)
    seed_everything(config.seed)
    train_set, val_set = build_datasets(config)
    state = build_state(config, context, dataset_info(train_set, config), checkpoint_path, resume_from)

    # 3. the batches of steps start_step .. steps-1, a function of (seed, step) only
    batches = iter(build_loader(train_set, config, state.start_step, context))
    if resume_from is not None:
        restore_rng_states(resume_from, context)
        if context.is_main:
            print(f"resumed {checkpoint_path} at step {state.start_step} of {config.steps}", file=sys.stderr)
    del resume_from

    # 4. the steps, with a validation every eval_every steps and a checkpoint every checkpoint_every
    train_steps(state, batches, val_set, callback)

    # 5. under DDP, the replicas must have stayed identical
    distributed.check_replicas(state.model, context)
    return state.history  # the DDP wrapper (in a reference cycle) is freed by distributed.cleanup's gc.collect()


def build_state(config: TrainConfig, context: distributed.DistributedContext, info: dict, checkpoint_path: Path,
                resume_from: dict | None) -> TrainState:
    """The model (restored when resuming), the frozen teacher, AdamW, its schedule and the GradScaler."""
    from edc_lab.models import build_model

    device = context.device
    model = build_model(
        config.model, in_optical=4, in_sar=info["in_sar"], num_classes=info["num_classes"], **config.model_overrides
    ).to(device)
    teacher = None
    distilling = config.lambda_kd > 0 or config.lambda_kl > 0 or config.init_from_teacher
    if config.stage == "student" and config.teacher and distilling:
        teacher = load_teacher(config, device, model.build_args)
        if config.init_from_teacher and resume_from is None:
            model.load_state_dict(teacher.state_dict())
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    amp_dtype = resolve_amp(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    state = TrainState(config, context, model, model, teacher, optimizer, scheduler, scaler, amp_dtype, info,
                       checkpoint_path)
    if resume_from is not None:
        state.start_step = restore(resume_from, model, optimizer, scheduler, scaler, checkpoint_path, context)
        state.history = list(resume_from.get("history") or [])
        state.last_good = state.start_step
    state.wrapped = distributed.wrap_model(model, context)
    return state


def train_steps(state: TrainState, batches: Iterator[dict], val_set: Dataset, callback: Callback | None) -> None:
    """Steps ``start_step .. steps - 1``: each a training step, then a validation and a checkpoint when due."""
    config, context = state.config, state.context
    show = config.progress and context.is_main
    bar = progress_bar(range(state.start_step, config.steps), show, f"{config.stage} {config.model}", config.steps,
                       state.start_step)
    state.wrapped.train()
    tick = time.perf_counter()
    for step in bar:
        done = step + 1
        validating = bool(config.eval_every and done % config.eval_every == 0) or done == config.steps
        checkpointing = done % max(1, config.checkpoint_every) == 0 or done == config.steps
        batch = training_batch(next(batches), config, step, context)
        record = train_step(state, batch, step, reporting=validating or checkpointing, started=tick)
        tick = time.perf_counter()
        if show and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
        _report(state, record, callback)
        if validating:
            _report(state, validate(state, val_set, done), callback)
            tick = time.perf_counter()
        if checkpointing:
            write_checkpoint(state, done)
            state.last_good = done
    if show and hasattr(bar, "close"):
        bar.close()


def validate(state: TrainState, val_set: Dataset, step: int) -> dict:
    """The validation record after ``step``; every rank evaluates its share (none idles at a barrier meanwhile)."""
    metrics = evaluate(state.model, val_set, inputs=state.inputs, batch_size=state.config.batch_size,
                       device=state.context.device, amp_dtype=state.amp_dtype, num_classes=state.info["num_classes"],
                       context=state.context)
    return {
        "split": "val",
        "step": step,
        **{key: metrics[key] for key in ("miou", "oa", "mean_f1", "miou_cloudy", "miou_clear")},
        "auroc": metrics["auroc"],
    }


def _report(state: TrainState, record: dict, callback: Callback | None) -> None:
    """Append ``record`` to the history and, on rank 0, pass it to the callback."""
    state.history.append(record)
    if callback is not None and state.context.is_main:
        callback(record, state.history)
