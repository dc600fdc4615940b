"""The AUROC of scores against binary labels: how well the scores rank the positives above the negatives.

Models (``edc_lab.models.discrepancy.discrepancy_auroc``) and training
(``edc_lab.train.evaluate``) both score the discrepancy map against the cloud
mask with it, so it lives below both (ARCHITECTURE.md);
``edc_lab.train.metrics.auroc`` is the same function. Standard statistics,
computed with torchmetrics.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

__all__ = ["auroc", "INVERTED_BELOW", "FINDS_ABOVE", "auroc_verdict"]

#: how the series reads a discrepancy map's AUROC against the cloud mask (notebooks 03-07): below
#: ``INVERTED_BELOW`` the map is an inverted detector (it marks the clear ground), above ``FINDS_ABOVE``
#: it finds the clouds, in between it is near chance (0.5)
INVERTED_BELOW = 0.4
FINDS_ABOVE = 0.6


def auroc(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the binary ``labels``.

    AUROC = P(score of a random positive > score of a random negative), ties
    counting one half — the Mann–Whitney U statistic divided by n_pos · n_neg:
    ``(sum of the positives' ranks − n_pos (n_pos + 1) / 2) / (n_pos n_neg)``
    with average ranks for ties. Returns NaN when the labels are all one class
    (the AUROC is undefined there: e.g. a scene without clouds) or a score is NaN.

    Computed with torchmetrics ``binary_auroc`` with ``thresholds=None``, the
    exact (not binned) version: it sorts the scores and integrates the ROC curve
    with the trapezoidal rule over the distinct score values. A block of tied
    scores is one diagonal step of that curve, and its trapezoid is exactly the
    "ties count one half" of Mann–Whitney, so both give the same number; it is
    not bit-identical, since torchmetrics takes the rates and the trapezoids in
    float32 (agreement to about 1e-7). Two torchmetrics habits we step around:
    scores outside [0, 1] would be read as logits and squashed by a sigmoid,
    which in floating point merges large distinct scores into ties — those are
    first replaced by their dense ranks (the AUROC only depends on the order);
    and one-class labels would give a warning and 0, not NaN.
    """
    scores = scores.detach().cpu() if isinstance(scores, torch.Tensor) else torch.as_tensor(np.asarray(scores))
    labels = labels.detach().cpu() if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    scores, labels = scores.flatten(), labels.flatten().bool()
    if scores.shape != labels.shape:
        raise ValueError(f"auroc: {scores.numel()} scores but {labels.numel()} labels")
    if scores.dtype not in (torch.float32, torch.float64):
        scores = scores.double()  # integers, float16/bfloat16: exact in float64
    positives = int(labels.sum())
    if positives == 0 or positives == labels.numel() or bool(scores.isnan().any()):
        return math.nan
    if bool((scores < 0).any() or (scores > 1).any()):
        distinct, dense_rank = torch.unique(scores, return_inverse=True)
        scores = dense_rank.double() / max(distinct.numel() - 1, 1)  # same order, same ties, in [0, 1]
    return float(binary_auroc(scores, labels.long(), thresholds=None, validate_args=False))


def auroc_verdict(value: float) -> str:
    """``"inverted"``, ``"near chance"`` or ``"finds clouds"`` (``INVERTED_BELOW``, ``FINDS_ABOVE``);
    ``"undefined"`` for NaN (one class only, see :func:`auroc`)."""
    if math.isnan(value):
        return "undefined"
    return "inverted" if value < INVERTED_BELOW else ("finds clouds" if value > FINDS_ABOVE else "near chance")
