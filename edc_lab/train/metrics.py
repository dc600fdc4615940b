"""Metrics for segmentation under clouds, cloud removal and the discrepancy map.

Segmentation (standard definitions; DESIGN §2):

* a **confusion matrix** ``C[t, p]`` counts pixels of true class t predicted as
  p (rows = truth, columns = prediction); pixels labelled 255 are left out;
* per class k: ``IoU_k = TP / (TP + FP + FN)``, ``F1_k = 2 TP / (2 TP + FP + FN)``
  with TP = C[k, k], FP = column sum − TP, FN = row sum − TP;
* **mIoU** (mean F1 likewise) is the mean over the classes that occur in the
  truth *or* the prediction. A class absent from both has 0/0 IoU: it is
  reported as NaN and left out of the mean (our choice, the usual one: a class
  that never appears can be neither right nor wrong). A class present in the
  truth but never predicted counts with IoU 0, and vice versa;
* **OA** (overall accuracy) = trace / total.

Confusion matrices are *accumulated* over a whole test set before any ratio is
taken (not averaged per image), separately for all pixels, pixels under cloud
and clear pixels (``cloud_mask`` of the sample) — EDC's point is the cloudy ones.

Cloud removal (standard definitions, data range 1):

* **PSNR** = 10 log10(1 / MSE) per image, averaged over images;
* **SSIM** (Wang et al. 2004) with an 11×11 Gaussian window, σ = 1.5,
  K1 = 0.01, K2 = 0.03, computed on the "valid" part of the image (no padding)
  per band, averaged over bands, pixels and images;
* **SAM** (spectral angle mapper): the angle in degrees between predicted and
  true spectra (vectors over bands) per pixel, averaged.

Discrepancy map: :func:`auroc` — how well the scores of D rank cloudy pixels
above clear ones, 0.5 = no better than chance (the paper claims D finds
clouds without supervision; edc_lab measures it).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from scipy.stats import rankdata

IGNORE_INDEX = 255


# --------------------------------------------------------------------------- segmentation
def confusion_matrix(
    prediction: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    ignore_index: int = IGNORE_INDEX,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(K, K) int64 counts, rows = true class, columns = predicted class.

    Args:
        prediction, target: integer tensors of the same shape (any, e.g. (B, H, W)).
        mask: optional bool tensor of the same shape; only True pixels count.
    Pixels whose target is ``ignore_index`` never count. A target outside
    [0, K) other than ``ignore_index`` is an error.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"confusion_matrix: prediction {tuple(prediction.shape)} vs target {tuple(target.shape)}")
    keep = target != ignore_index
    if mask is not None:
        keep = keep & mask.bool()
    truth = target[keep].long()
    guess = prediction[keep].long()
    if truth.numel() and (truth.min() < 0 or truth.max() >= num_classes):
        raise ValueError(
            f"confusion_matrix: expected labels in [0, {num_classes}) or {ignore_index}, "
            f"found values {int(truth.min())}..{int(truth.max())}"
        )
    if guess.numel() and (guess.min() < 0 or guess.max() >= num_classes):
        raise ValueError(f"confusion_matrix: predictions outside [0, {num_classes})")
    counts = torch.bincount(truth * num_classes + guess, minlength=num_classes * num_classes)
    return rearrange(counts, "(t p) -> t p", t=num_classes).cpu()


def segmentation_scores(confusion: torch.Tensor | np.ndarray) -> dict:
    """IoU, F1, mIoU, mean F1 and OA from an accumulated confusion matrix.

    Returns a dict of plain Python values (JSON-ready): ``iou`` and ``f1`` lists
    (NaN for classes absent from truth and prediction), ``miou``, ``mean_f1``,
    ``oa`` (NaN when the matrix is empty), ``pixels`` (how many counted),
    ``present`` (the classes that entered the means).
    """
    matrix = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(matrix)
    false_positive = matrix.sum(axis=0) - true_positive
    false_negative = matrix.sum(axis=1) - true_positive
    union = true_positive + false_positive + false_negative
    present = union > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, true_positive / union, np.nan)
        f1 = np.where(present, 2 * true_positive / (2 * true_positive + false_positive + false_negative), np.nan)
    total = matrix.sum()
    return {
        "iou": [float(v) for v in iou],
        "f1": [float(v) for v in f1],
        "miou": float(np.nanmean(iou)) if present.any() else math.nan,
        "mean_f1": float(np.nanmean(f1)) if present.any() else math.nan,
        "oa": float(true_positive.sum() / total) if total > 0 else math.nan,
        "pixels": int(total),
        "present": [int(k) for k in np.flatnonzero(present)],
    }


class SegmentationMeter:
    """Accumulates confusion matrices over all, cloudy and clear pixels.

    >>> meter = SegmentationMeter(num_classes=7)
    >>> meter.update(logits.argmax(1), batch["label"], batch["cloud_mask"])  # doctest: +SKIP
    >>> meter.compute()["cloudy"]["miou"]  # doctest: +SKIP
    """

    REGIONS = ("all", "cloudy", "clear")

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = {region: torch.zeros(num_classes, num_classes, dtype=torch.int64) for region in self.REGIONS}

    def update(self, prediction: torch.Tensor, target: torch.Tensor, cloud_mask: torch.Tensor | None = None) -> None:
        """prediction, target: (B, H, W) ints; cloud_mask: (B, H, W) in {0, 1} or None (= all clear)."""
        cloudy = torch.zeros_like(target, dtype=torch.bool) if cloud_mask is None else cloud_mask > 0.5
        for region, mask in (("all", None), ("cloudy", cloudy), ("clear", ~cloudy)):
            self.confusion[region] += confusion_matrix(
                prediction, target, self.num_classes, ignore_index=self.ignore_index, mask=mask
            )

    def compute(self) -> dict:
        """{"all"|"cloudy"|"clear": segmentation_scores(...) + "confusion": list of lists}."""
        result = {}
        for region, matrix in self.confusion.items():
            result[region] = {**segmentation_scores(matrix), "confusion": matrix.tolist()}
        return result


# --------------------------------------------------------------------------- cloud removal
def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of (B, C, H, W) images, averaged over images.

    An image identical to its target has infinite PSNR (returned as ``inf``).
    """
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(f"psnr: expected two (B, C, H, W) tensors, found {tuple(prediction.shape)}, {tuple(target.shape)}")
    mse = (prediction.double() - target.double()).pow(2).mean(dim=(1, 2, 3))
    per_image = 10.0 * torch.log10(data_range**2 / mse)
    return float(per_image.mean())


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size, size) normalised Gaussian, the SSIM window of Wang et al. 2004."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    profile = torch.exp(-(coords**2) / (2 * sigma**2))
    profile = profile / profile.sum()
    return torch.outer(profile, profile)


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity of (B, C, H, W) images (H, W >= window_size).

    Local means, variances and covariance come from the Gaussian window (per
    band); ``SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``
    with ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``, L = data_range.
    """
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(f"ssim: expected two (B, C, H, W) tensors, found {tuple(prediction.shape)}, {tuple(target.shape)}")
    if min(prediction.shape[-2:]) < window_size:
        raise ValueError(f"ssim: images of {tuple(prediction.shape[-2:])} are smaller than the {window_size}x{window_size} window")
    channels = prediction.shape[1]
    kernel = rearrange(gaussian_window(window_size, sigma), "h w -> 1 1 h w").repeat(channels, 1, 1, 1)
    x, y = prediction.double(), target.double()

    def local_mean(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(image, kernel.to(image.device), groups=channels)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov_xy = local_mean(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def spectral_angle(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean spectral angle (degrees) between (B, C, H, W) images, spectra along C.

    Parallel spectra (any positive scale) give 0°, orthogonal ones 90°.
    """
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(
            f"spectral_angle: expected two (B, C, H, W) tensors, found {tuple(prediction.shape)}, {tuple(target.shape)}"
        )
    x, y = prediction.double(), target.double()
    cosine = (x * y).sum(dim=1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(eps)
    return float(torch.rad2deg(torch.arccos(cosine.clamp(-1.0, 1.0))).mean())


class CloudRemovalMeter:
    """Averages PSNR, SSIM and SAM over images (each batch weighted by its size)."""

    def __init__(self):
        self.totals = {"psnr": 0.0, "ssim": 0.0, "sam": 0.0}
        self.images = 0

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        batch = prediction.shape[0]
        prediction = prediction.float().clamp(0.0, 1.0)
        self.totals["psnr"] += psnr(prediction, target) * batch
        self.totals["sam"] += spectral_angle(prediction, target) * batch
        if min(prediction.shape[-2:]) >= 11:
            self.totals["ssim"] += ssim(prediction, target) * batch
        self.images += batch

    def compute(self) -> dict:
        if self.images == 0:
            return {}
        return {name: total / self.images for name, total in self.totals.items()}


# --------------------------------------------------------------------------- discrepancy map
def auroc(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the binary ``labels``, rank-based.

    AUROC = P(score of a random positive > score of a random negative), ties
    counting one half — the Mann–Whitney U statistic divided by n_pos · n_neg:
    ``(sum of the positives' ranks − n_pos (n_pos + 1) / 2) / (n_pos n_neg)``
    with average ranks for ties. Returns NaN when the labels are all one class
    (the AUROC is undefined there: e.g. a scene without clouds).
    """
    scores = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64).ravel()
    labels = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"auroc: {scores.size} scores but {labels.size} labels")
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = rankdata(scores, method="average")
    u_statistic = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u_statistic / (positives * negatives))


def discrepancy_targets(discrepancy: torch.Tensor, cloud_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair a (B, 1, h, w) discrepancy map with the cloud mask on its grid.

    The (B, H, W) mask is area-averaged to (h, w) and a cell counts as cloudy
    when more than half of it is cloud. Returns flat (scores, labels) for :func:`auroc`.
    """
    fraction = F.adaptive_avg_pool2d(rearrange(cloud_mask.float(), "b h w -> b 1 h w"), discrepancy.shape[-2:])
    return discrepancy.detach().float().flatten().cpu(), (fraction > 0.5).flatten().cpu()
