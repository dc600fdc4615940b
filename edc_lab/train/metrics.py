"""Metrics for segmentation under clouds, cloud removal and the discrepancy map.

Every number is computed with **torchmetrics** (functional API,
https://lightning.ai/docs/torchmetrics), the implementation readers use when
they compare with papers, except SSIM: torchmetrics' definition, computed here
with the Gaussian window split into two 1-D passes (the same number to 1e-12,
about ten times faster on the CPU; :func:`ssim`). The formulas below are for the reader; each
function's docstring names the torchmetrics function and says where its
definition differs from the one we wrote by hand before, and
``tests/test_metrics.py`` checks the two against hand-computed examples.

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

Cloud removal (standard definitions, data range 1 = reflectance in [0, 1]):

* **PSNR** = 10 log10(1 / MSE) per image (MSE over bands and pixels), averaged
  over images;
* **SSIM** (Wang et al. 2004) with an 11×11 Gaussian window, σ = 1.5,
  K1 = 0.01, K2 = 0.03, per band, averaged over bands, pixels and images; the
  image is reflect-padded by 5 pixels so that every pixel, the border included,
  has an SSIM value (torchmetrics' border handling; before, only the "valid"
  (H − 10) × (W − 10) part was averaged);
* **SAM** (spectral angle mapper): the angle in degrees between predicted and
  true spectra (vectors over bands) per pixel, averaged.

Discrepancy map: :func:`auroc` — how well the scores of D rank cloudy pixels
above clear ones, 0.5 = no better than chance (the paper claims D finds
clouds without supervision; edc_lab measures it). The function lives in
``edc_lab/auroc.py``, below both the models and training, which both need it;
it is importable from here as well.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torchmetrics.functional.classification import multiclass_confusion_matrix

# The classification reducers below are the ``compute()`` step of torchmetrics'
# MulticlassJaccardIndex / MulticlassF1Score / MulticlassAccuracy: they turn an
# accumulated confusion matrix (or its TP, FP, TN, FN) into scores. The public
# functional API only takes pixels, and we accumulate matrices over a test set.
# They are private names: tests/test_metrics.py checks them against the public
# multiclass_jaccard_index / multiclass_f1_score / multiclass_accuracy.
from torchmetrics.functional.classification.accuracy import _accuracy_reduce
from torchmetrics.functional.classification.f_beta import _fbeta_reduce
from torchmetrics.functional.classification.jaccard import _jaccard_index_reduce
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    spectral_angle_mapper,
)

from edc_lab.auroc import auroc  # noqa: F401  (lives below models and train; importable from here too)

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

    ``C[t, p]`` = number of counted pixels with target t and prediction p.
    Computed with torchmetrics ``multiclass_confusion_matrix`` (same convention:
    rows = truth; its ``ignore_index`` drops the pixels whose *target* is
    ``ignore_index``, whatever they were predicted as).

    Args:
        prediction, target: integer tensors of the same shape (any, e.g. (B, H, W)).
        mask: optional bool tensor of the same shape; only True pixels count.
    Pixels whose target is ``ignore_index`` never count. A target outside
    [0, K) other than ``ignore_index`` is an error, and so is a prediction
    outside [0, K) (checked here, with a clear message, before torchmetrics).
    """
    if prediction.shape != target.shape:
        raise ValueError(f"confusion_matrix: prediction {tuple(prediction.shape)} vs target {tuple(target.shape)}")
    if mask is not None:
        if mask.shape != target.shape:
            raise ValueError(f"confusion_matrix: mask {tuple(mask.shape)} vs target {tuple(target.shape)}")
        region = mask.bool()
        prediction, target = prediction[region], target[region]  # (N,) the pixels of the region
    prediction, target = prediction.long(), target.long()
    counted = target != ignore_index
    truth, guess = target[counted], prediction[counted]
    if truth.numel() and (truth.min() < 0 or truth.max() >= num_classes):
        raise ValueError(
            f"confusion_matrix: expected labels in [0, {num_classes}) or {ignore_index}, "
            f"found values {int(truth.min())}..{int(truth.max())}"
        )
    if guess.numel() and (guess.min() < 0 or guess.max() >= num_classes):
        raise ValueError(f"confusion_matrix: predictions outside [0, {num_classes})")
    counts = multiclass_confusion_matrix(
        prediction, target, num_classes, ignore_index=ignore_index, validate_args=False
    )  # (K, K), rows = truth
    return counts.cpu()


def segmentation_scores(confusion: torch.Tensor | np.ndarray) -> dict:
    """IoU, F1, mIoU, mean F1 and OA from an accumulated confusion matrix.

    Returns a dict of plain Python values (JSON-ready): ``iou`` and ``f1`` lists
    (NaN for classes absent from truth and prediction), ``miou``, ``mean_f1``,
    ``oa`` (NaN when the matrix is empty), ``pixels`` (how many counted),
    ``present`` (the classes that entered the means).

    Computed with torchmetrics: IoU and mIoU with ``_jaccard_index_reduce``
    (average ``"none"`` / ``"macro"``), F1 and mean F1 with ``_fbeta_reduce``
    (beta = 1), OA with ``_accuracy_reduce`` (average ``"micro"``) — the
    ``compute()`` step of ``MulticlassJaccardIndex``, ``MulticlassF1Score`` and
    ``MulticlassAccuracy``, applied to our accumulated matrix. Same conventions
    as the formulas of the module docstring: the macro means give weight 0 to a
    class absent from truth and prediction. Where torchmetrics writes 0 for such
    a class's IoU/F1 (its ``zero_division``) we report NaN, and where it returns
    0 for an empty matrix we return NaN. torchmetrics takes the IoU ratios in
    float32: they agree with the float64 formulas to about 1e-7 (relative).
    """
    if isinstance(confusion, torch.Tensor):
        matrix = confusion.detach().cpu().double()
    else:
        matrix = torch.as_tensor(np.asarray(confusion, dtype=np.float64))
    true_positive = torch.diag(matrix)
    false_positive = matrix.sum(dim=0) - true_positive
    false_negative = matrix.sum(dim=1) - true_positive
    true_negative = matrix.sum() - true_positive - false_positive - false_negative
    counts = (true_positive, false_positive, true_negative, false_negative)
    present = (true_positive + false_positive + false_negative) > 0
    nan = torch.tensor(math.nan, dtype=torch.float64)
    iou = torch.where(present, _jaccard_index_reduce(matrix, average="none").double(), nan)
    f1 = torch.where(present, _fbeta_reduce(*counts, beta=1.0, average="none").double(), nan)
    total = matrix.sum()
    return {
        "iou": [float(v) for v in iou],
        "f1": [float(v) for v in f1],
        "miou": float(_jaccard_index_reduce(matrix, average="macro")) if present.any() else math.nan,
        "mean_f1": float(_fbeta_reduce(*counts, beta=1.0, average="macro")) if present.any() else math.nan,
        "oa": float(_accuracy_reduce(*counts, average="micro")) if total > 0 else math.nan,
        "pixels": int(total),
        "present": [int(k) for k in torch.nonzero(present).flatten()],
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

    ``PSNR_i = 10 log10(L^2 / MSE_i)``, ``MSE_i`` the mean squared error of image
    i over its bands and pixels, L = ``data_range``; the result is the mean of
    ``PSNR_i`` over the batch. An image identical to its target has infinite
    PSNR (returned as ``inf``).

    Computed with torchmetrics ``peak_signal_noise_ratio(..., dim=(1, 2, 3))``, in
    float64. The ``dim`` matters: torchmetrics' default (``dim=None``) pools the
    squared errors of the whole batch into one MSE and takes one logarithm —
    another number whenever the images' errors differ (the log of a mean is not
    the mean of the logs), and one that would depend on the batch size in
    :class:`CloudRemovalMeter`. Cloud-removal papers average PSNR per image, so
    we ask torchmetrics for that.
    """
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(f"psnr: expected two (B, C, H, W) tensors, found {tuple(prediction.shape)}, {tuple(target.shape)}")
    per_image_mean = peak_signal_noise_ratio(
        prediction.double(), target.double(), data_range=data_range, dim=(1, 2, 3), reduction="elementwise_mean"
    )
    return float(per_image_mean)


def gaussian_profile(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size,) normalised 1-D Gaussian (float64); the SSIM window is its outer product with itself."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    profile = torch.exp(-(coords**2) / (2 * sigma**2))
    return profile / profile.sum()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size, size) normalised Gaussian, the SSIM window of Wang et al. 2004.

    For the reader and the tests: :func:`ssim` applies it as two 1-D passes of
    :func:`gaussian_profile` (the window is separable), which is the same window
    torchmetrics builds (``size = 2 int(3.5 sigma + 0.5) + 1``, 11 for sigma = 1.5).
    """
    profile = gaussian_profile(size, sigma)
    return torch.outer(profile, profile)


def _separable_blur(images: torch.Tensor, profile: torch.Tensor) -> torch.Tensor:
    """'valid' filtering of (..., H, W) with ``outer(profile, profile)``: rows then columns,
    as sums of shifted slices (no im2col: a float64 2-D convolution on the CPU takes PyTorch's
    slow path, which copies every pixel 121 times for an 11 x 11 window)."""
    size = profile.numel()
    height, width = images.shape[-2] - size + 1, images.shape[-1] - size + 1
    rows = sum(profile[k] * images[..., k:k + height, :] for k in range(size))
    return sum(profile[k] * rows[..., k:k + width] for k in range(size))


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
    with ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``, L = data_range; the map is
    averaged over bands, pixels and images.

    **The definition of torchmetrics' ``structural_similarity_index_measure``**
    (Gaussian kernel, float64), computed here with the window split into two 1-D
    passes: the same number to 1e-12 (``tests/test_metrics.py`` compares the two),
    about ten times faster on the CPU, where PyTorch has no fast float64 2-D
    convolution (``benchmarks/RESULTS.md``, "Training step on the CPU"). Where
    this definition differs from the hand-written version we had before torchmetrics:

    * **border**: the images are reflect-padded by ``window_size // 2`` pixels
      and the SSIM map is averaged over all H × W pixels; we used to average
      only the "valid" (H − 10) × (W − 10) part, where the window lies inside the
      image (as the reference MATLAB code and scikit-image do). The two agree
      exactly on that inner part; the mean differs through the border pixels.
      (torchmetrics 1.4.0 still cropped the border; pyproject.toml asks for
      >= 1.5, which keeps it.)
    * **window size**: as in torchmetrics, the Gaussian window follows from sigma,
      ``2 int(3.5 sigma + 0.5) + 1`` pixels (11 for sigma = 1.5); a
      ``window_size`` that does not match is an error here.
    * **data range**: we always pass L = ``data_range`` (1 for reflectance);
      torchmetrics' default would estimate it from the images (max − min),
      which makes the score depend on their content.
    * the local variances are clamped at 0 (round-off only), as in torchmetrics.
    """
    if prediction.shape != target.shape or prediction.dim() != 4:
        raise ValueError(f"ssim: expected two (B, C, H, W) tensors, found {tuple(prediction.shape)}, {tuple(target.shape)}")
    if min(prediction.shape[-2:]) < window_size:
        raise ValueError(f"ssim: images of {tuple(prediction.shape[-2:])} are smaller than the {window_size}x{window_size} window")
    implied_size = 2 * int(3.5 * sigma + 0.5) + 1
    if window_size != implied_size:
        raise ValueError(
            f"ssim: torchmetrics derives the Gaussian window from sigma ({sigma} gives {implied_size}x{implied_size}), "
            f"found window_size={window_size}"
        )
    pad = window_size // 2
    x = F.pad(prediction.double(), (pad, pad, pad, pad), mode="reflect")
    y = F.pad(target.double(), (pad, pad, pad, pad), mode="reflect")
    profile = gaussian_profile(window_size, sigma).to(x.device)
    mu_x, mu_y, xx, yy, xy = _separable_blur(torch.stack((x, y, x * x, y * y, x * y)), profile)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    var_x = torch.clamp(xx - mu_x**2, min=0.0)
    var_y = torch.clamp(yy - mu_y**2, min=0.0)
    cov_xy = xy - mu_x * mu_y
    similarity = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(similarity.flatten(1).mean(1).mean())


def spectral_angle(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean spectral angle (degrees) between (B, C, H, W) images, spectra along C.

    ``SAM = arccos(<x, y> / (|x| |y|))`` per pixel, averaged over pixels (and so
    over images). Parallel spectra (any positive scale) give 0°, orthogonal
    ones 90°.

    Computed with torchmetrics ``spectral_angle_mapper`` (float64), which returns
    **radians**: we convert to degrees, the unit cloud-removal papers report
    (and ``edc-lab evaluate`` prints). A pixel whose predicted or true spectrum
    is all zero has no direction: torchmetrics gives NaN there (so the mean is
    NaN), where the hand-written version counted 90°; ``eps`` is no longer used
    and is kept only so that old calls still work. torchmetrics needs C >= 2.
    """
    if prediction.shape != target.shape or prediction.dim() != 4 or prediction.shape[1] < 2:
        raise ValueError(
            "spectral_angle: expected two (B, C, H, W) tensors with C >= 2 bands, found "
            f"{tuple(prediction.shape)}, {tuple(target.shape)}"
        )
    radians = spectral_angle_mapper(prediction.double(), target.double(), reduction="elementwise_mean")
    return math.degrees(float(radians))


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
# auroc: edc_lab/auroc.py (imported above)


def discrepancy_targets(discrepancy: torch.Tensor, cloud_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair a (B, 1, h, w) discrepancy map with the cloud mask on its grid.

    Each cell of the map gets the cloudy fraction of the real input pixels it
    covers (stride inferred from the sizes, mask pooled over the encoder's cells,
    padding left out: :func:`edc_lab.models.grid.pool_to_map`); a cell counts as
    cloudy when more than half of it is cloud. Returns flat (scores, labels) for :func:`auroc`.
    """
    from edc_lab.models.grid import pool_to_map

    fraction = pool_to_map(rearrange(cloud_mask.float(), "b h w -> b 1 h w"), discrepancy.shape[-2:])
    return discrepancy.detach().float().flatten().cpu(), (fraction > 0.5).flatten().cpu()
