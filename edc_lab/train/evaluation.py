"""Evaluating a model: how it is called on a batch, its metrics on a dataset, and its mIoU as the cloud cover grows.

:func:`evaluate` gives segmentation (all / cloudy / clear pixels), cloud-removal and discrepancy
metrics (:mod:`edc_lab.train.metrics`), in one process or summed over the ranks of a torchrun
run; :func:`cloud_cover_sweep` calls it on the same synthetic scenes under more and more cloud.
:func:`model_inputs` and :func:`forward` are how training and evaluation both feed a model.
Standard metrics; the per-region and per-cover breakdowns are edc_lab's (DESIGN §2).
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext

import torch
from torch.utils.data import DataLoader, Dataset

from edc_lab.models.contract import call_model

from edc_lab.train import distributed
from edc_lab.train.metrics import IGNORE_INDEX, CloudRemovalMeter, SegmentationMeter, auroc, discrepancy_targets
from edc_lab.train.run_data import to_device
from edc_lab.train.runtime import progress_bar


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
    mask = batch["cloud_mask"] if inputs == "cloudy" else torch.zeros_like(batch["cloud_mask"])
    return call_model(model, optical, sar, mask, reads_mask)


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
    loader = _evaluation_loader(model, data, batch_size, context)
    if num_classes is None:
        num_classes = getattr(loader.dataset, "num_classes", None)
    if context.enabled and num_classes is None:
        raise ValueError("evaluate: with several processes pass num_classes "
                         "(a rank may have no batch to infer it from)")
    batches = progress_bar(loader, progress and context.is_main, "evaluate")
    segmentation, cloud_removal, scores, labels, images = _accumulate(model, batches, inputs, device, amp_dtype,
                                                                      num_classes)
    model.train(was_training)
    if context.enabled:
        segmentation = segmentation or SegmentationMeter(num_classes)
        images = _reduce_over_ranks(segmentation, cloud_removal, scores, labels, images, context)
    if segmentation is None or images == 0:
        raise ValueError("evaluate: the dataset is empty")
    return _result(segmentation, cloud_removal, scores, labels, images, inputs)


def _accumulate(model: torch.nn.Module, batches, inputs: str, device: torch.device, amp_dtype: torch.dtype | None,
                num_classes: int | None) -> tuple:
    """Run the model over the batches and accumulate ``(segmentation meter, cloud-removal meter,
    discrepancy scores per stage, cloud labels per stage, image count)``; the segmentation meter
    is None when there was no batch."""
    segmentation = None
    cloud_removal = CloudRemovalMeter()
    scores: dict[int, list] = {}
    labels: dict[int, list] = {}
    images = 0
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    for batch in batches:
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
    return segmentation, cloud_removal, scores, labels, images


def _evaluation_loader(model: torch.nn.Module, data: Dataset | DataLoader, batch_size: int,
                       context: distributed.DistributedContext) -> DataLoader:
    """The batches this rank evaluates: all of them in order, or under torchrun its own block of whole batches
    (after rank 0's buffers have been copied to every rank)."""
    if not context.enabled:
        return data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, shuffle=False)
    if isinstance(data, DataLoader):
        raise ValueError("evaluate: with several processes pass the dataset, not a DataLoader "
                         "(each rank reads its own batches)")
    distributed.broadcast_buffers(model, context)
    return DataLoader(data, batch_sampler=distributed.shard_batches(len(data), batch_size, context))


def _result(segmentation: SegmentationMeter, cloud_removal: CloudRemovalMeter, scores: dict, labels: dict,
            images: int, inputs: str) -> dict:
    """The JSON-ready result of :func:`evaluate` from its accumulated meters and discrepancy scores."""
    regions = segmentation.compute()
    if regions["all"]["pixels"] == 0:
        warnings.warn(
            f"evaluate: all {images} images have only 'ignore' ({IGNORE_INDEX}) labels: no labelled pixel, "
            f"so mIoU, OA and F1 are NaN",
            stacklevel=3,
        )
    return {
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
