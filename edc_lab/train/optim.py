"""The optimiser and its schedule: AdamW with nanoGPT's weight-decay split, linear warm-up then cosine decay.

Our choices, standard practice. How an update is taken (backward, clipping, GradScaler, the
non-finite guards) is one training step's business: :mod:`edc_lab.train.step`.
"""

from __future__ import annotations

import math

import torch

from edc_lab.train.config import TrainConfig


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear warm-up to 1, then cosine decay to ``min_ratio``.

    ``step`` counts optimiser steps already taken (LambdaLR's convention).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; matrices and kernels decay, biases / norms / 1-d parameters do not (nanoGPT's split).

    ``foreach=True`` everywhere: PyTorch picks the multi-tensor update by itself only on GPUs. On
    the CPU it gives the same weights, bit for bit, as the one-tensor-at-a-time loop (tested), and
    a training step of ``edc_tiny`` (355 parameter tensors) takes about 10 % less time on 64²
    crops and 2 % less on 96² (batch 8, 2 threads; ``benchmarks/RESULTS.md``, "Training step on
    the CPU").
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), foreach=True)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of every step: ``config.lr`` times :func:`lr_factor` of the config's schedule."""

    def factor(step: int) -> float:
        return lr_factor(step, config.warmup_steps, config.steps, config.min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
