"""Checks of the metrics (edc_lab.train.metrics).

The metrics are computed with torchmetrics. The hand-computed examples of the
first part are the agreement tests: torchmetrics must give the numbers we work
out on paper. The second part compares torchmetrics with the hand formulas on
random inputs, and states where the two definitions differ (SSIM's border,
PSNR per image vs over the batch, SAM's units and zero spectra, AUROC of
logit-like scores).
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_f1_score,
    multiclass_jaccard_index,
)
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    spectral_angle_mapper,
    structural_similarity_index_measure,
)

from edc_lab.train.metrics import (
    CloudRemovalMeter,
    SegmentationMeter,
    auroc,
    confusion_matrix,
    discrepancy_targets,
    gaussian_window,
    psnr,
    segmentation_scores,
    spectral_angle,
    ssim,
)


def _tiny_case():
    target = torch.tensor([0, 0, 1, 1, 2, 255])
    prediction = torch.tensor([0, 1, 1, 1, 0, 2])
    return prediction, target


def test_confusion_matrix_by_hand():
    prediction, target = _tiny_case()
    matrix = confusion_matrix(prediction, target, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]  # rows truth, columns prediction; 255 left out


def test_scores_by_hand():
    prediction, target = _tiny_case()
    scores = segmentation_scores(confusion_matrix(prediction, target, 3))
    # class 0: TP 1, FP 1, FN 1; class 1: TP 2, FP 1, FN 0; class 2: TP 0, FP 0, FN 1
    assert scores["iou"] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert scores["f1"] == pytest.approx([2 / 4, 4 / 5, 0.0])
    assert scores["miou"] == pytest.approx(1 / 3)
    assert scores["mean_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert scores["oa"] == pytest.approx(3 / 5)
    assert scores["pixels"] == 5


def test_absent_class_is_nan_and_left_out_of_the_mean():
    prediction, target = _tiny_case()
    scores = segmentation_scores(confusion_matrix(prediction, target, 4))  # class 3 never occurs
    assert math.isnan(scores["iou"][3]) and scores["present"] == [0, 1, 2]
    assert scores["miou"] == pytest.approx(1 / 3)
    # a class that is predicted but absent from the truth counts with IoU 0
    scores = segmentation_scores(confusion_matrix(torch.tensor([3, 0]), torch.tensor([0, 0]), 4))
    assert scores["iou"][3] == 0.0 and scores["miou"] == pytest.approx((0.5 + 0.0) / 2)


def test_empty_matrix_gives_nan():
    scores = segmentation_scores(torch.zeros(3, 3, dtype=torch.int64))
    assert math.isnan(scores["miou"]) and math.isnan(scores["oa"])


def test_confusion_matrix_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"labels in \[0, 3\)"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 3)


def test_meter_splits_cloudy_and_clear_and_accumulates():
    prediction = torch.tensor([[[0, 1], [1, 1]]])
    target = torch.tensor([[[0, 0], [1, 255]]])
    cloud = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    meter = SegmentationMeter(2)
    meter.update(prediction, target, cloud)
    meter.update(prediction, target, cloud)  # twice: counts double, ratios unchanged
    result = meter.compute()
    assert result["cloudy"]["confusion"] == [[2, 2], [0, 0]]
    assert result["clear"]["confusion"] == [[0, 0], [0, 2]]
    assert np.array_equal(np.add(result["cloudy"]["confusion"], result["clear"]["confusion"]), result["all"]["confusion"])
    assert result["cloudy"]["miou"] == pytest.approx((0.5 + 0.0) / 2)
    assert result["clear"]["miou"] == pytest.approx(1.0)  # class 0 absent from clear pixels: left out
    assert result["all"]["oa"] == pytest.approx(4 / 6)


def test_psnr_of_constant_offset():
    target = torch.rand(2, 4, 8, 8) * 0.5
    assert psnr(target + 0.1, target) == pytest.approx(20.0)
    assert psnr(target + 0.01, target) == pytest.approx(40.0)
    assert psnr(target, target) == math.inf


def test_ssim_identity_constants_and_noise():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32)
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    # two constant images a, b: variances 0 so SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    c1 = 0.01**2
    a, b = 0.5, 0.6
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(torch.full((1, 1, 16, 16), a, dtype=torch.float64), torch.full((1, 1, 16, 16), b, dtype=torch.float64)) == pytest.approx(expected, rel=1e-9)
    noisy_a = ssim((image + 0.05 * torch.randn_like(image)).clamp(0, 1), image)
    noisy_b = ssim((image + 0.2 * torch.randn_like(image)).clamp(0, 1), image)
    assert 1.0 > noisy_a > noisy_b
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


def test_ssim_window_sums_to_one_and_matches_sigma():
    window = gaussian_window(11, 1.5)
    assert window.sum().item() == pytest.approx(1.0)
    assert window[5, 5] / window[5, 6] == pytest.approx(math.exp(1 / (2 * 1.5**2)))


def test_spectral_angle_parallel_orthogonal_and_45():
    x = torch.tensor([1.0, 2.0, 0.5, 0.1]).reshape(1, 4, 1, 1)
    assert spectral_angle(3 * x, x) == pytest.approx(0.0, abs=1e-5)
    e1 = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)
    e2 = torch.tensor([0.0, 1.0]).reshape(1, 2, 1, 1)
    assert spectral_angle(e1, e2) == pytest.approx(90.0)
    assert spectral_angle(e1, e1 + e2) == pytest.approx(45.0)


def test_cloud_removal_meter_averages_over_images():
    meter = CloudRemovalMeter()
    target = torch.full((1, 4, 16, 16), 0.5)
    meter.update(target + 0.1, target)  # 20 dB
    meter.update(torch.cat([target, target]) + 0.01, torch.cat([target, target]))  # 2 images at 40 dB
    assert meter.compute()["psnr"] == pytest.approx((20 + 2 * 40) / 3)


def test_auroc_by_hand():
    # positives 0.35, 0.8; negatives 0.1, 0.4: of the 4 pairs, 3 are ordered right
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auroc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == pytest.approx(0.5)  # a tie counts one half
    assert auroc([0.0, 1.0], [0, 1]) == 1.0 and auroc([1.0, 0.0], [0, 1]) == 0.0
    assert math.isnan(auroc([0.2, 0.3], [1, 1]))


def test_auroc_equals_pairwise_count():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)  # many ties
    labels = rng.random(200) > 0.6
    positives, negatives = scores[labels], scores[~labels]
    pairs = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    assert auroc(scores, labels) == pytest.approx(pairs / (len(positives) * len(negatives)))


def test_discrepancy_targets_downsample_mask():
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :] = 1.0
    mask[0, 2, 2] = 1.0  # a quarter of one cell: stays clear
    scores, labels = discrepancy_targets(torch.rand(1, 1, 2, 2), mask)
    assert labels.tolist() == [True, True, False, False] and scores.shape == (4,)


# --------------------------------------------------------------------------- torchmetrics vs the hand formulas
# The formulas of the module docstring, written out in float64: what metrics.py computed by hand before.
def _hand_confusion(prediction, target, num_classes, ignore_index=255):
    keep = target != ignore_index
    pairs = target[keep].long() * num_classes + prediction[keep].long()
    return torch.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def _hand_psnr_per_image(prediction, target):
    mse = (prediction.double() - target.double()).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse)  # (B,)


def _hand_ssim_map(prediction, target, reflect_pad):
    """(B, C, h, w) SSIM map, window 11, sigma 1.5, L = 1; valid part only unless reflect_pad."""
    x, y = prediction.double(), target.double()
    if reflect_pad:
        x, y = F.pad(x, (5, 5, 5, 5), mode="reflect"), F.pad(y, (5, 5, 5, 5), mode="reflect")
    channels = x.shape[1]
    kernel = gaussian_window(11, 1.5)[None, None].repeat(channels, 1, 1, 1)

    def local_mean(image):
        return F.conv2d(image, kernel, groups=channels)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x, var_y = local_mean(x * x) - mu_x**2, local_mean(y * y) - mu_y**2
    cov_xy = local_mean(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def _hand_sam_degrees(prediction, target):
    x, y = prediction.double(), target.double()
    cosine = (x * y).sum(dim=1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-12)
    return float(torch.rad2deg(torch.arccos(cosine.clamp(-1.0, 1.0))).mean())


def _hand_auroc(scores, labels):
    """Mann-Whitney with average ranks (the scipy implementation metrics.auroc used before)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    positives, negatives = labels.sum(), (~labels).sum()
    ranks = rankdata(scores, method="average")
    return (ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives)


def _random_segmentation(seed, num_classes=6, shape=(3, 40, 48)):
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, shape, generator=generator)
    target[torch.rand(shape, generator=generator) < 0.1] = 255
    guess = torch.randint(0, num_classes, shape, generator=generator)
    prediction = torch.where(torch.rand(shape, generator=generator) < 0.6, target.clamp(max=num_classes - 1), guess)
    cloud = torch.rand(shape, generator=generator) < 0.4
    return prediction, target, cloud


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_equals_hand_count_with_ignore_and_mask(seed):
    prediction, target, cloud = _random_segmentation(seed)
    assert torch.equal(confusion_matrix(prediction, target, 6), _hand_confusion(prediction, target, 6))
    assert torch.equal(
        confusion_matrix(prediction, target, 6, mask=cloud), _hand_confusion(prediction[cloud], target[cloud], 6)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segmentation_scores_agree_with_hand_formulas_and_public_torchmetrics(seed):
    prediction, target, _ = _random_segmentation(seed)
    prediction[prediction == 5] = 4  # class 5 in the truth, never predicted: IoU 0, counted in the mean
    scores = segmentation_scores(confusion_matrix(prediction, target, 7))  # class 6 absent: NaN, left out
    matrix = _hand_confusion(prediction, target, 7).double().numpy()
    true_positive = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - true_positive
    with np.errstate(invalid="ignore"):
        iou, f1 = true_positive / union, 2 * true_positive / (union + true_positive)
    # the hand formulas, in float64; torchmetrics takes IoU in float32
    assert np.allclose(scores["iou"], iou, rtol=1e-6, equal_nan=True) and math.isnan(scores["iou"][6])
    assert scores["iou"][5] == 0.0 and scores["present"] == [0, 1, 2, 3, 4, 5]
    assert np.allclose(scores["f1"], f1, rtol=1e-12, equal_nan=True)
    assert scores["miou"] == pytest.approx(np.nanmean(iou), rel=1e-6)
    assert scores["mean_f1"] == pytest.approx(np.nanmean(f1), rel=1e-12)
    assert scores["oa"] == pytest.approx(true_positive.sum() / matrix.sum(), rel=1e-12)
    # torchmetrics' public API on the pixels themselves gives the same numbers as its reducers on our matrix
    public = dict(num_classes=7, ignore_index=255)
    assert float(multiclass_jaccard_index(prediction, target, average="macro", **public)) == pytest.approx(scores["miou"])
    assert float(multiclass_f1_score(prediction, target, average="macro", **public)) == pytest.approx(scores["mean_f1"])
    assert float(multiclass_accuracy(prediction, target, average="micro", **public)) == pytest.approx(scores["oa"])
    per_class = multiclass_jaccard_index(prediction, target, average="none", **public)
    assert np.allclose(per_class[:6].numpy(), scores["iou"][:6]) and per_class[6] == 0.0  # torchmetrics: 0, ours: NaN


@pytest.mark.parametrize("seed", [0, 1])
def test_psnr_agrees_with_hand_formula_per_image_not_with_torchmetrics_default(seed):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(4, 5, 16, 24, generator=generator)
    noise_level = torch.tensor([0.01, 0.03, 0.1, 0.3]).reshape(4, 1, 1, 1)  # very different errors per image
    prediction = (target + noise_level * torch.randn(target.shape, generator=generator)).clamp(0, 1)
    per_image = _hand_psnr_per_image(prediction, target)
    # torchmetrics converts ln to log10 with a float32 constant: 1e-7 relative
    assert psnr(prediction, target) == pytest.approx(float(per_image.mean()), rel=1e-6)
    # torchmetrics' default (dim=None) pools the MSE over the batch: another number, which we do not use
    pooled = float(peak_signal_noise_ratio(prediction.double(), target.double(), data_range=1.0))
    assert pooled == pytest.approx(float(10 * torch.log10(1 / (prediction.double() - target.double()).pow(2).mean())))
    assert abs(pooled - psnr(prediction, target)) > 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_is_the_hand_formula_on_reflect_padded_images(seed):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, 24, 32, generator=generator)
    prediction = (target + 0.1 * torch.randn(target.shape, generator=generator)).clamp(0, 1)
    padded_map, valid_map = _hand_ssim_map(prediction, target, True), _hand_ssim_map(prediction, target, False)
    assert ssim(prediction, target) == pytest.approx(float(padded_map.mean()), abs=1e-12)
    # inside, away from the border, torchmetrics' map is our old "valid" map exactly ...
    _, full_map = structural_similarity_index_measure(
        prediction.double(), target.double(), data_range=1.0, return_full_image=True
    )
    assert torch.allclose(full_map[..., 5:-5, 5:-5], valid_map, atol=1e-12)
    # ... but the border pixels now count: the mean over the valid part alone is another number
    assert abs(ssim(prediction, target) - float(valid_map.mean())) > 1e-5


def test_ssim_window_is_derived_from_sigma_as_in_torchmetrics():
    from torchmetrics.functional.image.utils import _gaussian_kernel_2d

    kernel = _gaussian_kernel_2d(1, (11, 11), (1.5, 1.5), torch.float64, "cpu")[0, 0]
    assert torch.allclose(kernel, gaussian_window(11, 1.5), atol=1e-15)
    image = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="derives the Gaussian window from sigma"):
        ssim(image, image, window_size=7)  # torchmetrics would silently use 11 for sigma = 1.5


@pytest.mark.parametrize("seed", [0, 1])
def test_spectral_angle_agrees_with_hand_formula_in_degrees(seed):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(3, 6, 16, 16, generator=generator)
    prediction = (target + 0.2 * torch.randn(target.shape, generator=generator)).clamp(0, 1)
    assert spectral_angle(prediction, target) == pytest.approx(_hand_sam_degrees(prediction, target), abs=1e-10)
    # torchmetrics returns radians; we report degrees
    radians = float(spectral_angle_mapper(prediction.double(), target.double()))
    assert spectral_angle(prediction, target) == pytest.approx(math.degrees(radians), rel=1e-12)


def test_spectral_angle_of_a_zero_spectrum_is_nan_as_in_torchmetrics():
    target = torch.rand(1, 4, 2, 2) + 0.1
    prediction = target.clone()
    prediction[0, :, 0, 0] = 0.0  # a pixel predicted black in every band: no direction
    assert math.isnan(spectral_angle(prediction, target))  # the hand-written version counted 90 degrees
    with pytest.raises(ValueError, match="C >= 2"):
        spectral_angle(target[:, :1], target[:, :1])


@pytest.mark.parametrize("levels", [2, 5, 256, None])
def test_auroc_equals_mann_whitney_with_ties(levels):
    rng = np.random.default_rng(levels or 0)
    size = 50_000
    labels = rng.random(size) < 0.35
    if levels is None:
        scores = rng.random(size).astype(np.float32) * 0.8 + 0.1 * labels  # continuous, like a D map
    else:
        scores = (rng.integers(0, levels, size) + labels * rng.integers(0, 2, size)) / levels  # many ties
    assert auroc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(_hand_auroc(scores, labels), abs=1e-7)


def test_auroc_of_scores_outside_the_unit_interval_uses_their_order():
    # torchmetrics would treat these as logits: sigmoid(40), sigmoid(41), sigmoid(42) are all 1.0 in
    # float64, three ties, AUROC 0.5; the order says the positives are all above the negative
    assert auroc([40.0, 41.0, 42.0], [0, 1, 1]) == 1.0
    rng = np.random.default_rng(3)
    scores, labels = rng.integers(-3, 4, 5000) * 10.0, rng.random(5000) < 0.5
    assert auroc(scores, labels) == pytest.approx(_hand_auroc(scores, labels), abs=1e-7)
    assert math.isnan(auroc([0.1, float("nan")], [0, 1]))


@pytest.mark.parametrize("shape, seed", [((2, 3, 24, 32), 0), ((3, 4, 96, 96), 1), ((1, 2, 11, 17), 2)])
def test_ssim_equals_torchmetrics(shape, seed):
    # ssim() computes torchmetrics' definition with a separable window: the same number
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=generator)
    prediction = (target + 0.15 * torch.randn(shape, generator=generator)).clamp(0, 1)
    for a, b in ((prediction, target), (target, target), (torch.zeros(shape), target)):
        reference = structural_similarity_index_measure(a.double(), b.double(), gaussian_kernel=True, sigma=1.5,
                                                        kernel_size=11, data_range=1.0)
        assert ssim(a, b) == pytest.approx(float(reference), abs=1e-12)
    assert ssim(target, target) == pytest.approx(1.0, abs=1e-12)


def test_auroc_verdict_is_the_series_one_reading():
    from edc_lab.auroc import FINDS_ABOVE, INVERTED_BELOW, auroc_verdict

    assert (INVERTED_BELOW, FINDS_ABOVE) == (0.4, 0.6)
    assert [auroc_verdict(v) for v in (0.0, 0.399, 0.4, 0.5, 0.6, 0.601, 1.0)] == [
        "inverted", "inverted", "near chance", "near chance", "near chance", "finds clouds", "finds clouds"]
    assert auroc_verdict(float("nan")) == "undefined"
