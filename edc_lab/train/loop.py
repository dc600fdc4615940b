"""The training loop: plain code, one path for a laptop CPU and a GPU cluster.

Read :func:`train` from top to bottom; it is the whole story (nanoGPT's habit:
no framework, no callbacks-within-callbacks). EDC's two stages (DESIGN §2,
arXiv 2603.20811; the teacher–student scheme is CloudSeg's):

* ``stage="teacher"``: the network sees the **cloud-free** optical image + SAR
  and learns segmentation only (cross-entropy);
* ``stage="student"``: the same architecture sees the **cloudy** optical image +
  SAR; its loss adds the cloud-removal term (models with a cloud-removal head),
  feature distillation from the frozen teacher (which sees the cloud-free image
  of the same scene) and optionally logit distillation.

Baselines train with the same loop: a model whose ``has_cloud_removal`` is False
gets no cloud-removal term, single-modality models simply ignore one input.

Machinery (our choices, standard practice):

* device auto-detect; bf16 autocast on GPUs that support it, else fp16 with a
  GradScaler; full precision and ``torch.use_deterministic_algorithms`` on CPU;
* AdamW (no weight decay on biases and norms), linear warm-up then cosine decay;
* the data order is a function of (seed, step) only (:class:`StepSampler`, and
  augmentation drawn from a generator seeded by (seed, step, rank)); with the
  RNG states in the checkpoint, ``resume=True`` continues *exactly*: on CPU a
  resumed run ends with bit-identical weights to an uninterrupted one;
* checkpoints are written atomically (:mod:`edc_lab.train.checkpoint`);
* non-finite guards, each naming the step and the last checkpoint with finite
  weights: a NaN/Inf loss, or gradient norm, stops the run *before* the weights
  are touched; weights that an update made non-finite (say ``lr=inf``) stop it
  before they reach a checkpoint. So the last checkpoint is always a good one.
  With fp16, an overflowing gradient is GradScaler's ordinary business: the
  step is skipped, and so is the learning-rate schedule's step;
* labels that are all "ignore" (255) stop the run with an error before its
  first validation or checkpoint (loss 0 and mIoU NaN would otherwise pass in
  silence);
* under ``torchrun`` the model is wrapped in DistributedDataParallel
  (:mod:`edc_lab.train.distributed`); rank 0 writes; every rank evaluates its
  share of the validation set and the sums are added over ranks.

The metrics history is a list of dicts (``{"split": "train", "step", "loss",
"loss_seg", ..., "lr", "grad_norm"}`` every step, plus ``"skipped": True`` on
an fp16 step that GradScaler skipped; ``{"split": "val", "step", "miou",
"miou_cloudy", ...}`` at each validation), passed to ``callback(record,
history)`` as it grows — a notebook plots it live.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from edc_lab.models.discrepancy import cloud_bce
from edc_lab.train import distributed
from edc_lab.train.checkpoint import (
    CheckpointError,
    check_finite_weights,
    is_weights_only,
    load_checkpoint,
    non_finite_entries,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
)
from edc_lab.train.config import TrainConfig
from edc_lab.train.losses import (
    cloud_removal_loss,
    combine_losses,
    feature_distillation_loss,
    logit_distillation_loss,
    region_weight,
    segmentation_loss,
)
from edc_lab.train.metrics import IGNORE_INDEX, CloudRemovalMeter, SegmentationMeter, auroc, discrepancy_targets

Callback = Callable[[dict, list], None]
CHECKPOINT_NAME = "last.pt"
#: steps after which a run that has seen no labelled pixel (all 255) is stopped
LABEL_CHECK_STEPS = 20


class NonFiniteLossError(RuntimeError):
    """The loss, the gradient norm or the weights became NaN or infinite.

    The message names the step and the last checkpoint whose weights are finite.
    """


# --------------------------------------------------------------------------- small pieces
def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's ``random`` (CPU and all GPUs)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A generator whose state depends only on (seed, step, rank): per-step augmentation."""
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


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
    def factor(step: int) -> float:
        return lr_factor(step, config.warmup_steps, config.steps, config.min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(
    model: torch.nn.Module,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    grad_clip: float = 0.0,
) -> tuple[float, bool]:
    """Backward, clip, update; returns ``(gradient norm, whether the weights were updated)``.

    1. backward of the loss (multiplied by GradScaler's scale under fp16), then
       the gradients are unscaled so that their norm is the true one;
    2. ``norm = sqrt(sum of every squared gradient)``; clipped to ``grad_clip``
       when that is > 0;
    3. a non-finite norm: under fp16 that is GradScaler's ordinary overflow, it
       skips the update and halves its scale; without a scaler nothing is
       updated here, and :func:`train` stops the run naming the step;
    4. the learning-rate schedule advances only when the optimiser really took
       the step. GradScaler lowers its scale exactly when it skipped one, so
       comparing the scale before and after ``update()`` tells; without that
       check each skipped fp16 step would eat one step of warm-up or decay.
    """
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # nothing to do when the scaler is disabled
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    if grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm(gradients) if gradients else torch.zeros(())
    norm = float(norm)
    if not math.isfinite(norm) and not scaler.is_enabled():
        return norm, False
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    stepped = scaler.get_scale() >= scale
    if stepped:
        scheduler.step()
    return norm, stepped


def to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value for key, value in batch.items()}


def augment_batch(batch: dict, generator: torch.Generator, size: int | None = None, flips: bool = True) -> dict:
    """Random crop to ``size`` (when the samples are larger) and flips / 90° rotations, per sample.

    Uses the data layer's transforms with an explicit generator, so the result
    is a function of the generator's seed alone.
    """
    from edc_lab.data.transforms import Compose, RandomCrop, RandomFlip, RandomRotate90

    steps = []
    height, width = batch["label"].shape[-2:]
    if size is not None and (height > size or width > size):
        steps.append(RandomCrop(size))
    if flips:
        steps += [RandomFlip(), RandomRotate90()]
    if not steps:
        return batch
    transform = Compose(steps)
    batch_size = batch["label"].shape[0]
    samples = [transform({key: value[i] for key, value in batch.items()}, generator=generator) for i in range(batch_size)]
    return {key: torch.stack([sample[key] for sample in samples]) for key in batch}


class CachedDataset(Dataset):
    """Keeps every sample of a small dataset in memory after its first read.

    Synthetic scenes are generated on the fly (deterministically per index);
    for the few hundred scenes of a CPU run, generating each once is cheaper
    than generating it again every epoch.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if index not in self.cache:
            self.cache[index] = self.dataset[index]
        return self.cache[index]

    def __getattr__(self, name: str):
        if name in ("dataset", "cache"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def model_inputs(batch: dict, inputs: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(optical, sar) for ``inputs="cloudy"`` (the observed image) or ``"clear"`` (cloud-free)."""
    if inputs == "clear":
        if not bool(batch["has_clear"].all()):
            raise ValueError("inputs='clear' (teacher): this dataset has samples without a cloud-free optical image")
        return batch["optical_clear"], batch["sar"]
    if inputs != "cloudy":
        raise ValueError(f"inputs: expected 'cloudy' or 'clear', found {inputs!r}")
    return batch["optical"], batch["sar"]


def forward(model: torch.nn.Module, optical: torch.Tensor, sar: torch.Tensor, batch: dict, inputs: str,
            reads_mask: bool | None = None) -> dict:
    """``model(optical, sar)``, with the cloud mask for a model that reads it (the ``"oracle"`` arm of
    ``EDCConfig.reliability``): the batch's mask on cloudy inputs, an empty one on cloud-free inputs.

    ``reads_mask`` defaults to ``model.needs_cloud_mask``; pass it for a wrapped (DDP) model.
    """
    if reads_mask is None:
        reads_mask = bool(getattr(model, "needs_cloud_mask", False))
    if not reads_mask:
        return model(optical, sar)
    mask = batch["cloud_mask"] if inputs == "cloudy" else torch.zeros_like(batch["cloud_mask"])
    return model(optical, sar, cloud_mask=mask)


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: Dataset | DataLoader,
    *,
    inputs: str = "cloudy",
    batch_size: int = 8,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    num_classes: int | None = None,
    progress: bool = False,
    context: distributed.DistributedContext | None = None,
) -> dict:
    """Segmentation, cloud-removal and discrepancy metrics of a model on a dataset.

    Args:
        model: a model of :func:`edc_lab.models.build_model` (forward contract).
        data: a dataset of torch samples or a DataLoader over one.
        inputs: ``"cloudy"`` (default: the real task) or ``"clear"`` (cloud-free
            optical, the teacher's condition).
        num_classes: default: the dataset's ``num_classes``, else the logits'.
        context: under torchrun, every rank calls ``evaluate`` with the same
            dataset (not a DataLoader) and its bare model. Rank 0's buffers
            (BatchNorm statistics) are copied to all ranks first, then each
            rank reads its own contiguous block of whole batches
            (:func:`~edc_lab.train.distributed.shard_batches`: no padding, no
            sample counted twice); confusion matrices and cloud-removal sums are
            added over ranks and the discrepancy scores gathered in rank order.
            Every rank returns the single-process result: segmentation and
            AUROC exactly, PSNR / SSIM / SAM up to the order of a
            floating-point sum.

    Returns a JSON-ready dict: ``miou``, ``oa``, ``mean_f1``, ``miou_cloudy``,
    ``miou_clear`` (headline numbers), ``segmentation`` (per region: per-class
    IoU / F1, confusion matrix), ``cloud_removal`` (PSNR / SSIM / SAM, models
    with a cloud-removal head), ``auroc`` (per stage: discrepancy map vs the
    cloud mask on that stage's grid; empty for models without one) and
    ``images``.
    """
    context = context or distributed.DistributedContext()
    was_training = model.training
    model.eval()
    if device is None:
        device = next(iter(model.parameters()), torch.empty(0)).device
    device = torch.device(device)
    if context.enabled:
        if isinstance(data, DataLoader):
            raise ValueError("evaluate: with several processes pass the dataset, not a DataLoader "
                             "(each rank reads its own batches)")
        distributed.broadcast_buffers(model, context)
        loader = DataLoader(data, batch_sampler=distributed.shard_batches(len(data), batch_size, context))
    else:
        loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, shuffle=False)
    if num_classes is None:
        num_classes = getattr(loader.dataset, "num_classes", None)
    if context.enabled and num_classes is None:
        raise ValueError("evaluate: with several processes pass num_classes "
                         "(a rank may have no batch to infer it from)")
    segmentation = None
    cloud_removal = CloudRemovalMeter()
    scores: dict[int, list] = {}
    labels: dict[int, list] = {}
    images = 0
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    for batch in _progress(loader, progress and context.is_main, "evaluate"):
        batch = to_device(batch, device)
        optical, sar = model_inputs(batch, inputs)
        with autocast:
            outputs = forward(model, optical, sar, batch, inputs)
        logits = outputs["logits"].float()
        if segmentation is None:
            segmentation = SegmentationMeter(num_classes or logits.shape[1])
        segmentation.update(logits.argmax(dim=1), batch["label"], batch["cloud_mask"])
        if outputs.get("cloudfree") is not None and bool(batch["has_clear"].all()):
            cloud_removal.update(outputs["cloudfree"].float(), batch["optical_clear"])
        for stage, discrepancy in enumerate(outputs.get("discrepancy") or []):
            if discrepancy is None:
                continue
            stage_scores, stage_labels = discrepancy_targets(discrepancy.float(), batch["cloud_mask"])
            scores.setdefault(stage, []).append(stage_scores)
            labels.setdefault(stage, []).append(stage_labels)
        images += logits.shape[0]
    model.train(was_training)
    if context.enabled:
        segmentation = segmentation or SegmentationMeter(num_classes)
        images = _reduce_over_ranks(segmentation, cloud_removal, scores, labels, images, context)
    if segmentation is None or images == 0:
        raise ValueError("evaluate: the dataset is empty")
    regions = segmentation.compute()
    if regions["all"]["pixels"] == 0:
        warnings.warn(
            f"evaluate: all {images} images have only 'ignore' ({IGNORE_INDEX}) labels: no labelled pixel, "
            f"so mIoU, OA and F1 are NaN",
            stacklevel=2,
        )
    result = {
        "miou": regions["all"]["miou"],
        "oa": regions["all"]["oa"],
        "mean_f1": regions["all"]["mean_f1"],
        "miou_cloudy": regions["cloudy"]["miou"],
        "miou_clear": regions["clear"]["miou"],
        "segmentation": regions,
        "cloud_removal": cloud_removal.compute(),
        "auroc": [auroc(torch.cat(scores[s]), torch.cat(labels[s])) for s in sorted(scores)],
        "images": images,
        "inputs": inputs,
    }
    return result


def _reduce_over_ranks(segmentation, cloud_removal, scores, labels, images, context) -> int:
    """Add every rank's evaluation sums into its meters in place; return the total image count.

    Confusion matrices (int64) and the cloud-removal sums are ``all_reduce``-d;
    the discrepancy scores / labels of each stage are gathered and put in rank
    order, which is the single-process order since rank r read block r.
    """
    for region, matrix in segmentation.confusion.items():
        segmentation.confusion[region] = distributed.all_reduce_sum(matrix.to(context.device), context).cpu()
    names = list(cloud_removal.totals)
    sums = torch.tensor([*cloud_removal.totals.values(), cloud_removal.images, images], dtype=torch.float64)
    sums = distributed.all_reduce_sum(sums.to(context.device), context).cpu().tolist()
    cloud_removal.totals = dict(zip(names, sums[: len(names)]))
    cloud_removal.images = int(sums[-2])
    local = {stage: (torch.cat(scores[stage]), torch.cat(labels[stage])) for stage in scores}
    gathered = distributed.all_gather_objects(local, context)
    scores.clear()
    labels.clear()
    for rank_stages in gathered:
        for stage, (stage_scores, stage_labels) in rank_stages.items():
            scores.setdefault(stage, []).append(stage_scores)
            labels.setdefault(stage, []).append(stage_labels)
    return int(sums[-1])


def cloud_cover_sweep(
    model: torch.nn.Module,
    covers=(0.0, 0.2, 0.4, 0.6, 0.8),
    *,
    count: int = 16,
    size: int = 96,
    seed: int = 0,
    sar_channels: int = 2,
    inputs: str = "cloudy",
    batch_size: int = 8,
    device: torch.device | str | None = None,
    family: str = "default",
    clouds: dict | None = None,
) -> list[dict]:
    """mIoU of a model on synthetic test scenes (of scene ``family``) as the cloud cover grows.

    ``clouds``: the clouds' options (``edc_lab.data.cloud_models.cloud_model``); None: realistic.

    The same ``count`` test-split scenes (land cover, spectra, SAR) are drawn at
    every cover, only the clouds change, so the curve shows the effect of
    clouds alone. Returns one dict per cover: ``cloud_cover``, ``miou``,
    ``miou_cloudy`` (NaN at cover 0), ``miou_clear``, ``oa``, ``auroc``.
    """
    from edc_lab.data.datasets import build_dataset

    rows = []
    for cover in covers:
        scenes = build_dataset("synthetic", split="test", size=size, count=count, seed=seed,
                               cloud_cover=float(cover), sar_channels=sar_channels, family=family, clouds=clouds)
        metrics = evaluate(model, scenes, inputs=inputs, batch_size=batch_size, device=device)
        rows.append({"cloud_cover": float(cover),
                     **{key: metrics[key] for key in ("miou", "miou_cloudy", "miou_clear", "oa", "auroc")}})
    return rows


def _progress(iterable, enabled: bool, description: str, total: int | None = None, initial: int = 0):
    """A ``tqdm.auto`` bar (a widget in Jupyter, text in a terminal), or the iterable itself."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, total=total, initial=initial, leave=True, dynamic_ncols=True)


# --------------------------------------------------------------------------- building blocks of a run
def build_datasets(config: TrainConfig) -> tuple[Dataset, Dataset]:
    """(train, validation) datasets of the config; synthetic scenes are cached in memory.

    The validation split is ``config.val_split``, by default the data layer's
    ``"val"`` split for synthetic scenes (its own seed range: never a training or
    test scene) and ``"test"`` for real datasets.
    """
    from edc_lab.data.datasets import build_dataset
    from edc_lab.data.transforms import CenterCrop

    common = dict(root=config.root, size=config.size, cloud_cover=tuple(config.cloud_cover), seed=config.data_seed)
    if config.data == "synthetic":
        common["family"] = config.scene_family
        common["clouds"] = config.clouds()
    elif config.scene_family != "default":
        raise ValueError(f"scene_family={config.scene_family!r} concerns synthetic scenes only, found data={config.data!r}")
    # training crops come from augment_batch (seeded by the step), not from the reader's global RNG
    train_set = build_dataset(config.data, split="train", count=config.train_count, transforms=_unchanged, **common)
    val_split = config.val_split or ("val" if config.data == "synthetic" else "test")
    # real data: the centre of each validation scene (the same pixels every time)
    center = None if config.data == "synthetic" else CenterCrop(config.size, at_most=True)
    val_set = build_dataset(config.data, split=val_split, count=config.val_count, transforms=center, **common)
    if config.data == "synthetic":
        val_set = CachedDataset(val_set)
        if config.num_workers == 0:  # worker processes would each keep their own copy: generate there instead
            train_set = CachedDataset(train_set)
    return train_set, val_set


def _unchanged(sample: dict) -> dict:
    return sample


def dataset_info(dataset: Dataset, config: TrainConfig) -> dict:
    """What ``predict`` needs to treat new images like the training data (stored in checkpoints)."""
    return {
        "name": config.data,
        "num_classes": int(dataset.num_classes),
        "class_names": list(dataset.class_names),
        "class_colors": list(getattr(dataset, "class_colors", []) or []),
        "in_sar": int(dataset.in_sar),
        "size": int(config.size),
    }


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


def compute_losses(
    outputs: dict,
    batch: dict,
    config: TrainConfig,
    has_cloud_removal: bool,
    teacher_outputs: dict | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The stage's loss terms and their weighted sum (DESIGN §2).

    Returns ``(total, terms)`` with terms ``seg`` always, ``cr`` (student, model
    with a cloud-removal head, lambda_cr > 0), ``kd`` / ``kl`` (student with a
    teacher and lambda_kd / lambda_kl > 0), ``cloud`` (student, model with
    discrepancy maps, lambda_cloud > 0: the mean over stages of the BCE of D_k
    against the down-sampled cloud mask, DESIGN §1's optional supervision of D).
    """
    terms = {"seg": segmentation_loss(outputs["logits"], batch["label"])}
    student = config.stage == "student"
    if student and has_cloud_removal and config.lambda_cr > 0 and outputs.get("cloudfree") is not None:
        terms["cr"] = cloud_removal_loss(
            outputs["cloudfree"],
            batch["optical_clear"],
            batch["cloud_mask"],
            cloud_weight=config.cloud_weight,
            valid=batch["has_clear"],
        )
    if student and teacher_outputs is not None:
        if config.lambda_kd > 0 and outputs.get("features"):
            terms["kd"] = feature_distillation_loss(
                outputs["features"], teacher_outputs["features"], batch["cloud_mask"], config.kd_region
            )
        if config.lambda_kl > 0:
            weight = region_weight(batch["cloud_mask"], tuple(outputs["logits"].shape[-2:]), config.kd_region)
            terms["kl"] = logit_distillation_loss(
                outputs["logits"], teacher_outputs["logits"], config.temperature, weight=weight
            )
    maps = [d for d in outputs.get("discrepancy") or [] if d is not None]
    if student and config.lambda_cloud > 0 and maps:
        terms["cloud"] = torch.stack([cloud_bce(d, batch["cloud_mask"]) for d in maps]).mean()
    weights = {"cr": config.lambda_cr, "kd": config.lambda_kd, "kl": config.lambda_kl, "cloud": config.lambda_cloud}
    return combine_losses(terms, weights), terms


# --------------------------------------------------------------------------- the loop
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
    from edc_lab.models import build_model

    device = context.device
    out = Path(config.out)
    checkpoint_path = out / CHECKPOINT_NAME
    show = config.progress and context.is_main

    # 1. what to resume from (decided before anything consumes random numbers)
    resume_from = None
    if checkpoint_path.exists():
        if not config.resume:
            raise ValueError(
                f"{checkpoint_path}: a checkpoint already exists; pass --resume (resume=True) to continue it, "
                f"or choose another --out"
            )
        # read onto the CPU: load_state_dict moves weights and optimiser state to the model's device,
        # and the RNG states must stay CPU tensors
        resume_from = read_checkpoint(checkpoint_path, map_location="cpu")
        _check_resumable(resume_from, config, checkpoint_path)

    # 2. data, model, teacher, optimiser: identical on every rank (same seed)
    seed_everything(config.seed)
    train_set, val_set = build_datasets(config)
    info = dataset_info(train_set, config)
    model = build_model(
        config.model, in_optical=4, in_sar=info["in_sar"], num_classes=info["num_classes"], **config.model_overrides
    ).to(device)
    teacher = None
    distilling = config.lambda_kd > 0 or config.lambda_kl > 0 or config.init_from_teacher
    if config.stage == "student" and config.teacher and distilling:
        teacher = load_teacher(config, device, model.build_args)
        if config.init_from_teacher and resume_from is None:
            model.load_state_dict(teacher.state_dict())
    has_cloud_removal = bool(getattr(model, "has_cloud_removal", False))
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    amp_dtype = resolve_amp(config.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    history: list[dict] = []
    start_step = 0
    if resume_from is not None:
        start_step = _restore(resume_from, model, optimizer, scheduler, scaler, checkpoint_path, context)
        history = list(resume_from.get("history") or [])
    if context.enabled:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,  # e.g. a teacher's cloud-removal head gets no gradient
        )
    else:
        wrapped = model

    # 3. the batches of steps start_step .. steps-1, a function of (seed, step) only
    sampler = distributed.StepSampler(train_set, config.batch_size, config.seed, start_step, config.steps, context)
    loader = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed),  # keeps the global RNG untouched
        persistent_workers=False,
    )
    batches = iter(loader)
    if resume_from is not None:
        states = resume_from.get("rng")
        if states:  # a weights-only export has none: the seeds of seed_everything stand
            set_rng_state(states[context.rank] if len(states) == context.world_size else states[0])
        if context.is_main:
            print(f"resumed {checkpoint_path} at step {start_step} of {config.steps}", file=sys.stderr)
    del resume_from

    # 4. the steps
    inputs = "clear" if config.stage == "teacher" else "cloudy"
    model_reads_mask = bool(getattr(model, "needs_cloud_mask", False))  # the "oracle" arm
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    last_good = start_step if checkpoint_path.exists() else None
    labelled_seen = 0.0
    bar = _progress(range(start_step, config.steps), show, f"{config.stage} {config.model}", config.steps, start_step)
    wrapped.train()
    tick = time.perf_counter()
    for step in bar:
        batch = to_device(next(batches), device)
        if config.augment or batch["label"].shape[-1] > config.size or batch["label"].shape[-2] > config.size:
            batch = augment_batch(batch, step_generator(config.seed, step, context.rank), config.size, config.augment)
        optical, sar = model_inputs(batch, inputs)

        # forward: the student (and the frozen teacher on the cloud-free image)
        with autocast:
            outputs = forward(wrapped, optical, sar, batch, inputs, reads_mask=model_reads_mask)
            teacher_outputs = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_outputs = forward(teacher, batch["optical_clear"], batch["sar"], batch, "clear")
            loss, terms = compute_losses(outputs, batch, config, has_cloud_removal, teacher_outputs)

        # one all_reduce: the loss terms (averaged over ranks) and the labelled pixels (summed)
        local = [loss.detach().float()] + [t.detach().float() for t in terms.values()]
        labelled = (batch["label"] != IGNORE_INDEX).sum().float()
        summed = distributed.all_reduce_sum(torch.stack(local + [labelled]), context)
        values, labelled_seen = summed[:-1] / context.world_size, labelled_seen + summed[-1].item()
        where = f"{checkpoint_path} (step {last_good})" if last_good is not None else "none written yet"

        done = step + 1
        evaluating = bool(config.eval_every and done % config.eval_every == 0) or done == config.steps
        checkpointing = done % max(1, config.checkpoint_every) == 0 or done == config.steps

        # labels that are all "ignore": loss 0, mIoU NaN, nothing learnt. A single such batch can be
        # real (a tile of no-data), so: a warning at once, an error once LABEL_CHECK_STEPS steps, or
        # the first validation / checkpoint, have seen no labelled pixel at all
        if labelled_seen == 0 and step == start_step:
            warnings.warn(f"step {done}: this batch has no labelled pixel (every label is {IGNORE_INDEX}, 'ignore')",
                          stacklevel=2)
        if labelled_seen == 0 and (done - start_step >= LABEL_CHECK_STEPS or evaluating or checkpointing):
            raise ValueError(
                f"labels: the first {done - start_step} training step(s) had no labelled pixel: "
                f"every label is {IGNORE_INDEX} ('ignore'), so the segmentation loss is 0 and the mIoU NaN. Check the label files and the "
                f"dataset's class mapping (data={config.data!r}, num_classes={info['num_classes']})"
            )

        # stop before touching the weights if any rank's loss is not finite
        if not bool(torch.isfinite(values).all()):
            raise NonFiniteLossError(
                f"step {step + 1} of {config.steps}: the loss is not finite "
                f"({', '.join(f'{k}={v:.4g}' for k, v in zip(['total', *terms], values.tolist()))}); "
                f"stopped before updating the weights. Last good checkpoint: {where}. "
                f"Try a lower lr, amp='off', or check the data for NaN/Inf."
            )

        # backward and update (gradients are identical on all ranks after DDP's all_reduce: same decision)
        grad_norm, stepped = optimizer_step(model, loss, optimizer, scheduler, scaler, config.grad_clip)
        if not stepped and not scaler.is_enabled():
            raise NonFiniteLossError(
                f"step {step + 1} of {config.steps}: the gradient norm is not finite ({grad_norm:.4g}) although "
                f"the loss is ({values[0].item():.4g}); stopped before updating the weights. Last good checkpoint: "
                f"{where}. Try a lower lr, a grad_clip, amp='off', or look for a NaN-prone operation (sqrt, log, "
                f"division) in the loss."
            )
        # weights that the update made non-finite (e.g. lr=inf) must not reach a checkpoint
        broken = non_finite_entries(unwrap(model).state_dict())
        count = distributed.all_reduce_sum(torch.tensor([float(len(broken))], device=device), context)
        if count.item() > 0:
            named = ", ".join(broken[:3]) + (" ..." if len(broken) > 3 else "") if broken else "on another rank"
            raise NonFiniteLossError(
                f"step {step + 1} of {config.steps}: after the update the weights are not finite ({named}); "
                f"stopped without writing them. Last checkpoint with finite weights: {where}. "
                f"Try a lower (finite) lr, amp='off', or a grad_clip."
            )

        now = time.perf_counter()
        record = {"split": "train", "step": step + 1, "loss": values[0].item()}
        record.update({f"loss_{name}": value for name, value in zip(terms, values[1:].tolist())})
        record.update({"lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm, "seconds": now - tick})
        if not stepped:
            record["skipped"] = True  # fp16 overflow: GradScaler skipped the update (and the schedule its step)
        tick = now
        history.append(record)
        if show and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)
        if callback is not None and context.is_main:
            callback(record, history)

        if evaluating:
            # every rank evaluates its share of the validation set (no rank idles at a barrier meanwhile)
            metrics = evaluate(model, val_set, inputs=inputs, batch_size=config.batch_size, device=device,
                               amp_dtype=amp_dtype, num_classes=info["num_classes"], context=context)
            val_record = {
                "split": "val",
                "step": done,
                **{key: metrics[key] for key in ("miou", "oa", "mean_f1", "miou_cloudy", "miou_clear")},
                "auroc": metrics["auroc"],
            }
            history.append(val_record)
            if callback is not None and context.is_main:
                callback(val_record, history)
            tick = time.perf_counter()
        if checkpointing:
            _write_checkpoint(checkpoint_path, model, optimizer, scheduler, scaler, done, config, info, history, context)
            last_good = done
    if show and hasattr(bar, "close"):
        bar.close()

    _check_replicas(model, context)
    return history  # the DDP wrapper (in a reference cycle) is freed by distributed.cleanup's gc.collect()


def _restore(payload, model, optimizer, scheduler, scaler, path: Path, context) -> int:
    """Load a checkpoint's weights and optimiser / schedule / scaler states; return its step.

    A checkpoint whose weights hold NaN or Inf is refused. A weights-only export
    (:func:`~edc_lab.train.checkpoint.export_weights`: no optimiser state) is
    resumed from its weights with a fresh AdamW, with a warning: that run is not
    bit-identical to an uninterrupted one. Either way the learning rate of the
    next step is then recomputed from this run's schedule (``steps``,
    ``warmup_steps``, ``min_lr_ratio``, which may have changed and are what
    config.json records); with an unchanged schedule it is the stored rate, bit
    for bit. ``lr`` and ``weight_decay`` cannot change (:func:`_check_resumable`).
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
                stacklevel=3,
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


#: settings a resumed run must share with its checkpoint: they define the run (the model, the data, the
#: batches), or, for ``init_from_teacher``, they act only when a run starts, so a new value would be
#: recorded in config.json without having been applied
RESUME_FIXED = ("stage", "model", "model_overrides", "data", "size", "batch_size", "seed", "data_seed", "train_count",
                "init_from_teacher", "scene_family", "cloud_cover", "cloud_model", "cloud_options")
#: settings the optimiser state of a full checkpoint carries (AdamW's param groups, the schedule's
#: base rates): resuming would run with the stored value while config.json records the new one. A
#: weights-only export starts a fresh AdamW from the config, so there they may change
OPTIMIZER_FIXED = ("lr", "weight_decay")


def _plain(value):
    """``value`` with tuples as lists (a stored config went through ``to_dict``, a new one may hold tuples)."""
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _check_resumable(payload: dict, config: TrainConfig, path: Path) -> None:
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


def _write_checkpoint(path, model, optimizer, scheduler, scaler, step, config, info, history, context) -> None:
    """Gather every rank's RNG state; rank 0 writes checkpoint, history and config."""
    states = [rng_state()]
    if context.enabled:
        states = [None] * context.world_size
        torch.distributed.all_gather_object(states, rng_state())
    if context.is_main:
        raw = unwrap(model)
        save_checkpoint(
            path,
            {
                "model": raw.state_dict(),
                "build_args": dict(raw.build_args),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "step": step,
                "rng": states,
                "config": config.to_dict(),
                "data": info,
                "history": history,
            },
        )
        (path.parent / "history.json").write_text(json.dumps(history, indent=0, allow_nan=True))
        (path.parent / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    distributed.barrier(context)


def _check_replicas(model: torch.nn.Module, context: distributed.DistributedContext) -> None:
    """Under DDP: every rank prints its weights' digest; rank 0 refuses diverged replicas."""
    if not context.enabled:
        return
    distributed.broadcast_buffers(unwrap(model), context)
    digest = distributed.parameter_digest(unwrap(model))
    digests = [None] * context.world_size
    torch.distributed.all_gather_object(digests, digest)
    print(f"rank {context.rank}/{context.world_size}: finished, parameter digest {digest}", flush=True)
    if context.is_main and len(set(digests)) != 1:
        raise RuntimeError(f"DDP replicas diverged: parameter digests per rank {digests}")
