"""Hand-computed checks of the metrics (edc_lab.train.metrics)."""

import math

import numpy as np
import pytest
import torch

from edc_lab.train.metrics import (
    CloudRemovalMeter,
    SegmentationMeter,
    auroc,
    confusion_matrix,
    discrepancy_targets,
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
    from edc_lab.train.metrics import gaussian_window

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
