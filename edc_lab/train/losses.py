"""The training losses of EDC, as pure functions of tensors.

EDC (Meng et al., arXiv 2603.20811) trains the student network with three kinds
of signal (DESIGN §2):

1. **segmentation**: cross-entropy on the class logits, pixels labelled 255
   ignored (standard; the paper's and CloudSeg's);
2. **cloud removal**: the auxiliary head predicts the cloud-free optical image;
   a Charbonnier penalty ``sqrt((prediction - target)^2 + eps^2)`` (a smooth L1)
   compares it with the real cloud-free image, weighted ``1 + 5 * cloud_mask`` so
   that the pixels the head must *invent* count six times as much as the pixels
   it only has to copy. The weight is CloudSeg's: its ``ECCharbonnierLoss``
   (https://github.com/xufangchn/CloudSeg, ``StudentNet/losses.py``) computes
   ``mean((1 + 5 * cloud_mask) * ((prediction - target)^2 + eps^2) ** 0.45)``,
   ``eps = 1e-3``. Ours differs in the exponent (0.5, a true smooth L1, where
   CloudSeg's 0.45 grows a little slower than ``|error|``) and in dividing by the
   sum of the weights instead of the element count;
3. **distillation** from a frozen *teacher*, the same network trained on
   cloud-free optical + SAR: the student's decoder features are pulled towards
   the teacher's with a masked mean-squared error (feature distillation: the "hint"
   of FitNets, Romero et al. 2015, arXiv 1412.6550, as CloudSeg uses it), and
   optionally its logits towards the teacher's with a
   temperature-softened KL divergence (Hinton et al. 2015, arXiv 1503.02531).
   Which pixels the feature loss looks at — all, only clear or only cloudy ones —
   is a config value (``kd_region``) that notebook 05 compares. CloudSeg's
   ``MaskHint`` (same file) distils on clear pixels only:
   ``mean((1 - cloud_mask) * (student - teacher)^2)`` on one map, the
   full-resolution output of its cross-modal decoder, with weight 1 (so
   ``kd_region="clear"`` here, except that CloudSeg divides by all pixels, not by
   the clear ones); the default ``"all"`` and the choice of levels are ours.
   The paper speaks of "teacher-guided distillation" of its cloud-removal branch
   without giving the loss; distilling the *segmentation decoder's* features is
   our reading of it (CloudSeg's choice), not something the paper states.

Each function returns a scalar tensor that can be back-propagated; the weights
that combine them (``lambda_cr``, ``lambda_kd``, ``lambda_kl``, and ``lambda_cloud``
for the optional cloud supervision of the discrepancy maps,
:func:`edc_lab.models.discrepancy.cloud_bce`) live in
:class:`edc_lab.train.config.TrainConfig` and :func:`combine_losses`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

from edc_lab.models.grid import pool_to_map

IGNORE_INDEX = 255
KD_REGIONS = ("all", "clear", "cloudy")


def segmentation_loss(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over the labelled pixels.

    Args:
        logits: (B, K, H, W) unnormalised class scores.
        label: (B, H, W) int64 class indices; ``ignore_index`` pixels do not count.

    Returns a scalar. When every pixel is ignored the loss is 0 (with a graph,
    so ``backward`` still works) instead of the 0/0 = NaN of ``F.cross_entropy``.
    """
    if logits.shape[0] != label.shape[0] or logits.shape[2:] != label.shape[1:]:
        raise ValueError(f"segmentation_loss: logits {tuple(logits.shape)} and label {tuple(label.shape)} disagree")
    summed = F.cross_entropy(logits.float(), label, ignore_index=ignore_index, reduction="sum")
    labelled = (label != ignore_index).sum()
    return summed / labelled.clamp_min(1)


def charbonnier(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Element-wise Charbonnier penalty ``sqrt((prediction - target)^2 + eps^2)``.

    Behaves like |error| for large errors and like a parabola near 0, so it is
    differentiable everywhere (a "smooth L1").
    """
    return torch.sqrt((prediction.float() - target.float()) ** 2 + eps**2)


def cloud_removal_loss(
    cloudfree: torch.Tensor,
    target: torch.Tensor,
    cloud_mask: torch.Tensor,
    *,
    cloud_weight: float = 5.0,
    eps: float = 1e-3,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Charbonnier loss of the cloud-removal head, weighted ``1 + cloud_weight * cloud_mask``.

    Args:
        cloudfree: (B, C, H, W) the head's cloud-free estimate.
        target: (B, C, H, W) the real cloud-free optical image.
        cloud_mask: (B, H, W) in {0, 1} (or a soft mask in [0, 1]).
        valid: optional (B,) bool, False for samples without a real cloud-free
            image (``sample["has_clear"]``); they do not count.

    Returns the weighted *average* ``sum(w * rho) / sum(w)`` (w broadcast over
    the C bands), so a constant per-pixel error e gives e whatever the cloud
    cover; the weight only shifts attention towards cloudy pixels.
    """
    if cloudfree.shape != target.shape:
        raise ValueError(f"cloud_removal_loss: cloudfree {tuple(cloudfree.shape)} vs target {tuple(target.shape)}")
    weight = 1.0 + cloud_weight * rearrange(cloud_mask.float(), "b h w -> b 1 h w")
    if valid is not None:
        weight = weight * rearrange(valid.float(), "b -> b 1 1 1")
    weight = weight.expand_as(cloudfree)
    # clamp: an all-zero weight (no valid sample) gives 0 / tiny = 0, without a host sync
    return (weight * charbonnier(cloudfree, target, eps)).sum() / weight.sum().clamp_min(1e-12)


def region_weight(cloud_mask: torch.Tensor, size: tuple[int, int], region: str) -> torch.Tensor:
    """The cloud mask resized to a feature map, turned into a per-pixel weight.

    Args:
        cloud_mask: (B, H, W) in {0, 1} on the input grid.
        size: (h, w) of the feature map.
        region: ``"all"`` (weight 1), ``"clear"`` (weight = clear fraction of the
            cell) or ``"cloudy"`` (weight = cloudy fraction of the cell).

    Returns (B, 1, h, w). Each feature cell gets the cloudy fraction of the real
    input pixels it covers (a cell half covered by cloud gets 0.5): the stride
    ``s`` of the map is inferred from ``H / h`` and the mask is pooled over the
    encoder's ``s x s`` cells, the bottom/right padding left out
    (:func:`edc_lab.models.grid.pool_to_map`), not stretched onto ``(h, w)``.
    """
    if region not in KD_REGIONS:
        raise ValueError(f"kd_region: expected one of {KD_REGIONS}, found {region!r}")
    cloud_fraction = pool_to_map(rearrange(cloud_mask.float(), "b h w -> b 1 h w"), size)
    if region == "all":
        return torch.ones_like(cloud_fraction)
    if region == "clear":
        return 1.0 - cloud_fraction
    return cloud_fraction


def feature_distillation_loss(
    student_features: Sequence[torch.Tensor],
    teacher_features: Sequence[torch.Tensor],
    cloud_mask: torch.Tensor,
    region: str = "all",
) -> torch.Tensor:
    """Masked mean-squared error between student and (frozen) teacher features.

    Args:
        student_features, teacher_features: lists of (B, C_l, h_l, w_l) decoder
            feature maps of the same shapes (teacher and student share the
            architecture). The teacher's are detached here.
        cloud_mask: (B, H, W) on the input grid; resized to each (h_l, w_l).
        region: which pixels count (see :func:`region_weight`).

    For each level l: ``sum_p w_p * mean_c (s - t)^2 / sum_p w_p``; the result is
    the mean over levels. A level whose weights are all 0 (e.g. ``"cloudy"`` on a
    batch without clouds) contributes 0.
    """
    if len(student_features) != len(teacher_features) or not student_features:
        raise ValueError(
            f"feature_distillation_loss: expected equally many feature maps, found "
            f"{len(student_features)} (student) and {len(teacher_features)} (teacher)"
        )
    per_level = []
    for level, (student, teacher) in enumerate(zip(student_features, teacher_features)):
        if student.shape != teacher.shape:
            raise ValueError(
                f"feature_distillation_loss: level {level} student {tuple(student.shape)} "
                f"!= teacher {tuple(teacher.shape)}; the teacher must be the same architecture"
            )
        weight = region_weight(cloud_mask, tuple(student.shape[-2:]), region)
        squared_error = (student.float() - teacher.detach().float()).pow(2).mean(dim=1, keepdim=True)
        per_level.append((weight * squared_error).sum() / weight.sum().clamp_min(1e-12))
    return torch.stack(per_level).mean()


def logit_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 2.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hinton's soft-target loss ``T^2 * KL(softmax(t/T) || softmax(s/T))``, per pixel.

    Args:
        student_logits, teacher_logits: (B, K, H, W).
        temperature: T > 0; larger T exposes more of the teacher's "dark
            knowledge" (the ranking of the wrong classes). The T^2 factor keeps
            the gradient's size independent of T (Hinton et al. 2015).
        weight: optional (B, 1, H, W) or (B, H, W) per-pixel weight (e.g. a
            :func:`region_weight`); the result is the weighted mean over pixels.
    """
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, found {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"logit_distillation_loss: student {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}"
        )
    student_log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher_log_p = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    kl_per_pixel = (teacher_log_p.exp() * (teacher_log_p - student_log_p)).sum(dim=1)  # (B, H, W)
    if weight is None:
        return kl_per_pixel.mean() * temperature**2
    weight = weight.float().reshape(kl_per_pixel.shape)
    return (weight * kl_per_pixel).sum() / weight.sum().clamp_min(1e-12) * temperature**2


def combine_losses(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """``sum_k weights[k] * terms[k]`` over the terms present (missing weight = 1).

    >>> combine_losses({"seg": torch.tensor(2.0), "cr": torch.tensor(1.0)}, {"cr": 0.5})
    tensor(2.5000)
    """
    total = None
    for name, value in terms.items():
        contribution = float(weights.get(name, 1.0)) * value
        total = contribution if total is None else total + contribution
    if total is None:
        raise ValueError("combine_losses: no loss terms given")
    return total
