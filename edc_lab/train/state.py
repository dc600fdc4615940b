"""What the steps of one training run share: :class:`TrainState`, built once by :mod:`edc_lab.train.loop`.

nanoGPT keeps these as the globals of its ``train.py``; here they are one dataclass, so that a
training step, a validation and a checkpoint are functions of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from edc_lab.train.config import TrainConfig
from edc_lab.train.distributed import DistributedContext


@dataclass
class TrainState:
    """The model, what updates it, and the run's record so far.

    Attributes:
        config: the run's settings.
        context: this process's rank, world size and device.
        model: the bare model; its weights are the ones updated, checked and checkpointed.
        wrapped: the model in ``DistributedDataParallel`` under torchrun, else the model itself;
            the training forward pass goes through it (gradients averaged over ranks).
        teacher: the frozen teacher (student stage with distillation), else None.
        optimizer / scheduler: AdamW and its learning-rate schedule (:mod:`edc_lab.train.optim`).
        scaler: GradScaler, enabled under fp16 only.
        amp_dtype: the autocast dtype, None for full precision.
        info: the dataset facts a checkpoint records (:func:`~edc_lab.train.run_data.dataset_info`).
        checkpoint_path: ``<out>/last.pt``.
        history: the metrics records so far (a resumed run starts with the checkpoint's).
        start_step: the step this process starts at (0, or the resumed checkpoint's).
        last_good: the step of the last checkpoint with finite weights, None before the first.
        labelled_seen: labelled (not "ignore") pixels in the batches since ``start_step``, all ranks.
    """

    config: TrainConfig
    context: DistributedContext
    model: torch.nn.Module
    wrapped: torch.nn.Module
    teacher: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    info: dict
    checkpoint_path: Path
    history: list[dict] = field(default_factory=list)
    start_step: int = 0
    last_good: int | None = None
    labelled_seen: float = 0.0

    @property
    def inputs(self) -> str:
        """What the model sees: the cloud-free optical image (teacher) or the cloudy one (student)."""
        return "clear" if self.config.stage == "teacher" else "cloudy"

    @property
    def last_good_checkpoint(self) -> str:
        """The last checkpoint with finite weights, as the non-finite guards name it."""
        return f"{self.checkpoint_path} (step {self.last_good})" if self.last_good is not None else "none written yet"
