"""Hand-computed checks of the training losses (edc_lab.train.losses)."""

import math

import pytest
import torch
import torch.nn.functional as F

from edc_lab.train.losses import (
    charbonnier,
    cloud_removal_loss,
    combine_losses,
    feature_distillation_loss,
    logit_distillation_loss,
    region_weight,
    segmentation_loss,
)


def test_cross_entropy_by_hand_and_ignore_index():
    # three pixels in a row; K = 2
    logits = torch.tensor([[0.0, math.log(3.0), 50.0], [0.0, 0.0, -50.0]]).reshape(1, 2, 1, 3)
    label = torch.tensor([[[0, 0, 255]]])  # third pixel ignored although it would be a huge loss for class 1
    expected = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    assert segmentation_loss(logits, label).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_all_ignored_is_zero_and_differentiable():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((2, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_cross_entropy_shape_mismatch_is_named():
    with pytest.raises(ValueError, match="disagree"):
        segmentation_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


def test_charbonnier_values():
    assert charbonnier(torch.tensor(3.0), torch.tensor(0.0), eps=4.0).item() == pytest.approx(5.0)
    assert charbonnier(torch.tensor(0.2), torch.tensor(0.2), eps=1e-3).item() == pytest.approx(1e-3)


def test_cloud_removal_weighting_by_hand():
    # one band, two pixels: clear error 0.1, cloudy error 0.4 -> (1*0.1 + 6*0.4) / 7
    prediction = torch.tensor([0.1, 0.4]).reshape(1, 1, 1, 2)
    target = torch.zeros(1, 1, 1, 2)
    mask = torch.tensor([[[0.0, 1.0]]])
    loss = cloud_removal_loss(prediction, target, mask, eps=1e-9)
    assert loss.item() == pytest.approx((0.1 + 6 * 0.4) / 7, rel=1e-6)


def test_cloud_removal_constant_error_independent_of_mask_and_gradient_six_times():
    target = torch.rand(2, 4, 8, 8)
    mask = (torch.rand(2, 8, 8) > 0.5).float()
    prediction = (target + 0.25).requires_grad_(True)
    loss = cloud_removal_loss(prediction, target, mask, eps=1e-6)
    assert loss.item() == pytest.approx(0.25, rel=1e-5)
    loss.backward()
    grad = prediction.grad[:, 0]
    cloudy, clear = grad[mask > 0.5], grad[mask < 0.5]
    assert torch.allclose(cloudy, 6 * clear[0].expand_as(cloudy)) and torch.allclose(clear, clear[0].expand_as(clear))


def test_cloud_removal_ignores_samples_without_clear_target():
    target = torch.zeros(2, 4, 4, 4)
    prediction = torch.zeros(2, 4, 4, 4)
    prediction[1] = 100.0  # sample 1 has no real cloud-free image: its error must not count
    mask = torch.zeros(2, 4, 4)
    loss = cloud_removal_loss(prediction, target, mask, eps=1e-3, valid=torch.tensor([True, False]))
    assert loss.item() == pytest.approx(1e-3)
    none_valid = cloud_removal_loss(prediction, target, mask, valid=torch.tensor([False, False]))
    assert none_valid.item() == 0.0


def test_region_weight_resizes_by_area():
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :2] = 1.0  # top-left quadrant cloudy
    mask[0, 2, 2] = 1.0  # one of four pixels of the bottom-right cell
    cloudy = region_weight(mask, (2, 2), "cloudy")[0, 0]
    assert torch.allclose(cloudy, torch.tensor([[1.0, 0.0], [0.0, 0.25]]))
    assert torch.allclose(region_weight(mask, (2, 2), "clear")[0, 0], 1 - cloudy)
    assert torch.all(region_weight(mask, (2, 2), "all") == 1)
    with pytest.raises(ValueError, match="kd_region"):
        region_weight(mask, (2, 2), "sunny")


def test_feature_distillation_regions_by_hand():
    teacher = torch.zeros(1, 3, 2, 2, requires_grad=True)
    student = torch.zeros(1, 3, 2, 2)
    student[0, :, 0, 0] = 0.5  # the only error sits under the cloud
    mask = torch.zeros(1, 2, 2)
    mask[0, 0, 0] = 1.0
    student.requires_grad_(True)
    cloudy = feature_distillation_loss([student], [teacher], mask, "cloudy")
    assert cloudy.item() == pytest.approx(0.25)  # weight sum 1, squared error 0.25
    assert feature_distillation_loss([student], [teacher], mask, "all").item() == pytest.approx(0.25 / 4)
    assert feature_distillation_loss([student], [teacher], mask, "clear").item() == 0.0
    cloudy.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0  # the teacher is frozen


def test_feature_distillation_averages_levels_and_resizes_mask():
    mask = torch.ones(1, 8, 8)
    levels_student = [torch.ones(1, 2, 4, 4), torch.full((1, 2, 2, 2), 2.0)]
    levels_teacher = [torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2)]
    assert feature_distillation_loss(levels_student, levels_teacher, mask, "cloudy").item() == pytest.approx((1 + 4) / 2)
    assert feature_distillation_loss(levels_student, levels_teacher, mask, "clear").item() == 0.0
    with pytest.raises(ValueError, match="same architecture"):
        feature_distillation_loss([torch.zeros(1, 2, 4, 4)], [torch.zeros(1, 3, 4, 4)], mask)


def test_logit_distillation_by_hand_and_temperature_scaling():
    teacher = torch.zeros(1, 2, 1, 1)  # p = (1/2, 1/2)
    student = torch.tensor([math.log(3.0), 0.0]).reshape(1, 2, 1, 1)  # q = (3/4, 1/4)
    expected = 0.5 * math.log(4.0 / 3.0)  # 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25)
    assert logit_distillation_loss(student, teacher, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    # the same soft distributions at T = 2: KL unchanged, times T^2 = 4
    assert logit_distillation_loss(2 * student, teacher, temperature=2.0).item() == pytest.approx(4 * expected, rel=1e-6)
    s, t = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)
    reference = F.kl_div(F.log_softmax(s / 3, 1), F.log_softmax(t / 3, 1), log_target=True, reduction="none").sum(1).mean() * 9
    assert logit_distillation_loss(s, t, temperature=3.0).item() == pytest.approx(reference.item(), rel=1e-5)
    assert logit_distillation_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="temperature"):
        logit_distillation_loss(s, t, temperature=0.0)


def test_logit_distillation_weight_selects_pixels():
    teacher = torch.zeros(1, 2, 1, 2)
    student = torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, 0.0]]]])  # pixel 0 differs, pixel 1 matches
    weight = torch.tensor([[[[0.0, 1.0]]]])
    assert logit_distillation_loss(student, teacher, 1.0, weight=weight).item() == pytest.approx(0.0, abs=1e-7)


def test_combine_losses():
    total = combine_losses({"seg": torch.tensor(2.0), "cr": torch.tensor(1.0), "kd": torch.tensor(4.0)}, {"cr": 0.5, "kd": 0.25})
    assert total.item() == pytest.approx(2 + 0.5 + 1)
    with pytest.raises(ValueError):
        combine_losses({}, {})
