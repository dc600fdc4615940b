"""Modality shares: how much of a prediction comes from optical vs SAR, inside vs outside clouds.

The idea in plain words: instead of one number per pixel, split the input into
four **feature groups** and ask what each group as a whole contributes:

====  =================  ==========================================
 id   group              input values
====  =================  ==========================================
 0    ``optical_cloudy``  every optical band at cloudy pixels
 1    ``optical_clear``   every optical band at clear pixels
 2    ``sar_cloudy``      every SAR channel at cloudy pixels
 3    ``sar_clear``       every SAR channel at clear pixels
====  =================  ==========================================

A group is **removed** by replacing its values with the baseline
(``edc_lab.explain.baselines``: blur, zero, cloud-free, or yours). With only four
players, the **exact Shapley values** are cheap: 2^4 = 16 coalitions, each evaluated
once (:func:`exact_group_shapley`; captum's ``ShapleyValues`` walks the 4! = 24 orderings
one by one, 97 evaluations for the same values). Shapley
values are **efficient**: the four values add up to
``F(x) - F(all four groups removed) = F(x) - F(baseline)``, and a group the
model ignores gets exactly 0. ``ShapleyValueSampling`` (``n_samples`` random
orderings) is the cheaper estimate for bigger groupings; ``FeatureAblation``
(occlusion of one group at a time, ``F(x) - F(x with group g removed)``) is the
cheapest and is *not* efficient: interactions are counted by neither or both.

Shares, all per sample (``(B,)`` tensors):

* ``shares[g] = value[g] / sum_h |value[h]|`` (signed; the absolute shares sum to 1);
* ``sar_share_cloudy = |v_sar_cloudy| / (|v_optical_cloudy| + |v_sar_cloudy|)``:
  of what the pixels *under the clouds* contribute, the part that comes from SAR;
* ``sar_share_clear = |v_sar_clear| / (|v_optical_clear| + |v_sar_clear|)``: the same
  for the clear pixels.

A denominator of 0 (e.g. no cloudy pixel at all) gives NaN, not a made-up number.
EDC's promise, in these terms: under clouds the SAR share should be larger than
outside.

Whose idea: Shapley values (Shapley, 1953; for model explanations Lundberg and
Lee, 2017; Štrumbelj and Kononenko, 2014). The exact values over the 16 coalitions are
computed here (edc_lab's, checked against captum's ``ShapleyValues`` in the tests); the
sampled estimate and the ablation are captum's (Kokhlikyan et al., 2020, https://captum.ai)
``ShapleyValueSampling`` and ``FeatureAblation`` with a ``feature_mask`` per input.
Integrated Gradients (Sundararajan et al., 2017) is the pixel-level counterpart in
``edc_lab.explain.pixels``. The four-group split by the cloud mask and the shares
are edc_lab's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from captum.attr import FeatureAblation, ShapleyValueSampling
from torch import nn

from edc_lab.explain.baselines import BLUR_SIGMA, BaselineSpec
from edc_lab.explain.checks import binary_mask
from edc_lab.explain.region import Region, explanation_inputs

__all__ = [
    "GROUPS",
    "GROUP_METHODS",
    "ModalityShares",
    "captum_group_values",
    "class_on_both_sides",
    "exact_group_shapley",
    "modality_feature_masks",
    "modality_shares",
]

GROUPS = ("optical_cloudy", "optical_clear", "sar_cloudy", "sar_clear")
GROUP_METHODS = ("shapley", "shapley_sampling", "ablation")


def modality_feature_masks(cloud_mask: torch.Tensor, batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Captum ``feature_mask`` for ``(optical, sar)`` from ``cloud_mask`` ``(H, W)`` or ``(B, H, W)``
    (or ``(B, 1, H, W)``; boolean or 0/1, 1 = cloudy; a probability map is refused).

    Returns ``(optical_groups (B, 1, H, W), sar_groups (B, 1, H, W))`` of int64 group ids
    (``GROUPS``): optical 0 where cloudy, 1 where clear; SAR 2 where cloudy, 3 where clear.
    The channel axis of 1 broadcasts over bands: a group holds every band of its pixels.
    """
    mask = binary_mask("modality_feature_masks", "cloud_mask", cloud_mask)
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.dim() == 2:
        mask = mask[None].expand(batch or 1, -1, -1)
    if mask.dim() != 3:
        raise ValueError(
            f"modality_feature_masks: cloud_mask must be (H, W), (B, H, W) or (B, 1, H, W), found {tuple(mask.shape)}"
        )
    cloudy = mask[:, None]  # (B, 1, H, W) bool
    optical_groups = torch.where(cloudy, 0, 1).long()
    sar_groups = torch.where(cloudy, 2, 3).long()
    return optical_groups, sar_groups


@dataclass
class ModalityShares:
    """Group values and shares, one entry per sample (``(B,)`` tensors); see the module docstring.

    Attributes:
        values: ``{group: (B,)}`` contribution of each group in ``GROUPS`` (units of ``F``).
        score: ``F(x)``; baseline_score: ``F`` with all four groups removed.
        method: ``"shapley"``, ``"shapley_sampling"`` or ``"ablation"``; baseline: its name.
    """

    values: dict[str, torch.Tensor]
    score: torch.Tensor
    baseline_score: torch.Tensor
    method: str
    baseline: str
    units: str

    @property
    def total(self) -> torch.Tensor:
        """Sum of the four values (= ``score - baseline_score`` for Shapley values)."""
        return sum(self.values[g] for g in GROUPS)

    @property
    def shares(self) -> dict[str, torch.Tensor]:
        """``value[g] / sum_h |value[h]|`` (signed; NaN if every value is 0)."""
        norm = sum(self.values[g].abs() for g in GROUPS)
        return {g: self.values[g] / norm for g in GROUPS}

    @staticmethod
    def _sar_share(optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        return sar.abs() / (optical.abs() + sar.abs())

    @property
    def sar_share(self) -> torch.Tensor:
        """The SAR share of the whole decision, ``(|v_sar_cloudy| + |v_sar_clear|) / sum_g |v_g|``, ``(B,)``.

        With the region set to the cloudy (or the clear) pixels of a class, this is "how much of
        the decision about those pixels comes from the radar": EDC's promise is that it is larger
        for pixels under clouds.
        """
        sar = self.values["sar_cloudy"].abs() + self.values["sar_clear"].abs()
        return sar / sum(self.values[g].abs() for g in GROUPS)

    @property
    def sar_share_cloudy(self) -> torch.Tensor:
        """``|v_sar_cloudy| / (|v_optical_cloudy| + |v_sar_cloudy|)``, ``(B,)``."""
        return self._sar_share(self.values["optical_cloudy"], self.values["sar_cloudy"])

    @property
    def sar_share_clear(self) -> torch.Tensor:
        """``|v_sar_clear| / (|v_optical_clear| + |v_sar_clear|)``, ``(B,)``."""
        return self._sar_share(self.values["optical_clear"], self.values["sar_clear"])

    def summary(self, sample: int = 0) -> dict[str, float]:
        """Plain floats for one sample: the four values, their shares and the two SAR shares."""
        out = {f"value_{g}": float(self.values[g][sample]) for g in GROUPS}
        out.update({f"share_{g}": float(share[sample]) for g, share in self.shares.items()})
        out["sar_share"] = float(self.sar_share[sample])
        out["sar_share_cloudy"] = float(self.sar_share_cloudy[sample])
        out["sar_share_clear"] = float(self.sar_share_clear[sample])
        out["score"] = float(self.score[sample])
        out["baseline_score"] = float(self.baseline_score[sample])
        return out


def modality_shares(
    model: nn.Module,
    optical: torch.Tensor,
    sar: torch.Tensor,
    cloud_mask: torch.Tensor,
    target: int,
    region: Region = None,
    *,
    method: str = "shapley",
    baseline: BaselineSpec = "blur",
    optical_clear: torch.Tensor | None = None,
    output: str = "logit",
    n_samples: int = 25,
    perturbations_per_eval: int = 1,
    blur_sigma: float = BLUR_SIGMA,
) -> ModalityShares:
    """The contribution of the four groups (optical/SAR x cloudy/clear) to ``F`` (``RegionScore``).

    Args:
        model, optical, sar, target, region, output: as for ``pixel_attributions``.
        cloud_mask: ``(H, W)`` or ``(B, H, W)``, boolean or 0/1 (1 = cloudy); a probability map is
            refused (threshold it yourself, e.g. ``probability > 0.5``).
        method: ``"shapley"`` (exact, the 16 coalitions: :func:`exact_group_shapley`), ``"shapley_sampling"``
            (``n_samples`` random orderings) or ``"ablation"`` (captum ``FeatureAblation``: one group
            removed at a time).
        baseline, optical_clear, blur_sigma: what "removed" means (``edc_lab.explain.baselines``).
        perturbations_per_eval: how many perturbed copies run in one forward pass. The
            default 1 is exact: every coalition is evaluated in a batch of the same size, so a
            group the model ignores gets exactly 0.0; more is faster, but a different batch size
            changes float rounding (a dummy group then gets ~1e-7).

    Precision: ``"shapley"`` sums in float64, so its values add up to ``F(x) - F(baseline)`` to
    the model's own rounding; captum (``"shapley_sampling"``, ``"ablation"``) accumulates in
    float32 even for float64 models (~1e-6 relative).
    """
    if method not in GROUP_METHODS:
        raise ValueError(f"modality_shares: method must be one of {GROUP_METHODS}, found {method!r}")
    score_fn, region_args, inputs, baselines = explanation_inputs(
        model, optical, sar, target, region, output, baseline, optical_clear, blur_sigma, owner="modality_shares",
        settings=dict(n_samples=n_samples, perturbations_per_eval=perturbations_per_eval),
    )
    batch, _, height, width = optical.shape
    cloud_mask = binary_mask("modality_shares", "cloud_mask", cloud_mask).to(optical.device)
    if tuple(cloud_mask.shape[-2:]) != (height, width) or cloud_mask.dim() == 3 and cloud_mask.shape[0] != batch:
        raise ValueError(
            f"modality_shares: cloud_mask must be (H, W) = ({height}, {width}) or (B, H, W) = "
            f"({batch}, {height}, {width}), found {tuple(cloud_mask.shape)}"
        )
    feature_mask = modality_feature_masks(cloud_mask, batch)
    with torch.no_grad():
        score = score_fn(*inputs, *region_args)
        baseline_score = score_fn(*baselines, *region_args)
        if method == "shapley":
            values = exact_group_shapley(score_fn, inputs, baselines, feature_mask, region_args, perturbations_per_eval)
        else:
            common = dict(baselines=baselines, additional_forward_args=region_args, feature_mask=feature_mask,
                          perturbations_per_eval=perturbations_per_eval)
            if method == "shapley_sampling":
                attributions = ShapleyValueSampling(score_fn).attribute(inputs, n_samples=n_samples, **common)
            else:
                attributions = FeatureAblation(score_fn).attribute(inputs, **common)
            values = captum_group_values(attributions, feature_mask)
    return ModalityShares(
        values={group: value.to(score.dtype) for group, value in values.items()},
        score=score,
        baseline_score=baseline_score,
        method=method,
        baseline=baseline if isinstance(baseline, str) else "custom",
        units=output,
    )


def captum_group_values(attributions: tuple[torch.Tensor, torch.Tensor],
                        feature_mask: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{group: (B,)}`` from captum's per-value attributions of ``(optical, sar)`` with ``feature_mask``.

    captum gives every input value the value of its whole group: read it back (the mean over the
    group's members, all equal); a group with no member in a sample gets 0.
    """
    values = {}
    for input_index, (attribution, groups) in enumerate(zip(attributions, feature_mask)):
        groups = groups.expand_as(attribution)
        for group_id in (2 * input_index, 2 * input_index + 1):
            members = (groups == group_id).flatten(1)
            count = members.sum(1)
            mean = (attribution.flatten(1) * members).sum(1) / count.clamp(min=1)
            values[GROUPS[group_id]] = torch.where(count > 0, mean, torch.zeros_like(mean))
    return values


def exact_group_shapley(
    score_fn: nn.Module,
    inputs: tuple[torch.Tensor, torch.Tensor],
    baselines: tuple[torch.Tensor, torch.Tensor],
    feature_mask: tuple[torch.Tensor, torch.Tensor],
    region_args: tuple[torch.Tensor, ...] = (),
    perturbations_per_eval: int = 1,
) -> dict[str, torch.Tensor]:
    """Exact Shapley values of the four ``GROUPS`` from the 2^4 = 16 coalitions, ``{group: (B,)}`` (float64).

    ``v(S)`` is ``score_fn`` with the groups outside ``S`` replaced by the baseline; then

        phi_g = sum over S not holding g of |S|! (n - 1 - |S|)! / n! * (v(S + g) - v(S)),   n = 4.

    Each coalition is evaluated once: 16 forward passes of the batch (``perturbations_per_eval``
    coalitions per pass; 1 keeps every pass at the batch size of the input, so a group the model
    ignores gets exactly 0). captum's ``ShapleyValues`` gives the same values but walks the 24
    orderings one by one, 97 evaluations for four groups, six times the work. The weighted sum is
    taken in float64.
    """
    if perturbations_per_eval < 1:
        raise ValueError(f"perturbations_per_eval must be >= 1, found {perturbations_per_eval}")
    players = len(GROUPS)
    batch = inputs[0].shape[0]

    def perturbed(coalition: int) -> list[torch.Tensor]:
        kept = torch.tensor([g for g in range(players) if coalition >> g & 1], dtype=torch.long,
                            device=inputs[0].device)
        return [torch.where(torch.isin(groups, kept), x, b) for x, b, groups in zip(inputs, baselines, feature_mask)]

    coalitions = list(range(2**players))
    scores = []
    for start in range(0, len(coalitions), perturbations_per_eval):
        chunk = coalitions[start:start + perturbations_per_eval]
        images = [torch.cat(parts) for parts in zip(*(perturbed(c) for c in chunk))]
        extra = [torch.cat([arg] * len(chunk)) if torch.is_tensor(arg) else arg for arg in region_args]
        scores.extend(score_fn(*images, *extra).double().reshape(len(chunk), batch))
    weight = [math.factorial(size) * math.factorial(players - 1 - size) / math.factorial(players)
              for size in range(players)]
    values = {}
    for g, name in enumerate(GROUPS):
        without = [c for c in coalitions if not c >> g & 1]
        values[name] = sum(weight[c.bit_count()] * (scores[c | 1 << g] - scores[c]) for c in without)
    return values


def class_on_both_sides(label: torch.Tensor, cloud_mask: torch.Tensor, num_classes: int,
                        ignore_index: int = 255) -> tuple[int, int]:
    """The class with the most pixels on *both* sides of the cloud edge, and that count.

    ``label (H, W)`` and ``cloud_mask (H, W)``: for each class, ``min(cloudy pixels, clear pixels)``;
    returns ``(class, count)`` of the largest. Explaining this class once over its cloudy pixels
    and once over its clear pixels compares like with like (the same land cover, with and without
    a cloud above it). ``ignore_index`` pixels count for no class.
    """
    label, cloudy = torch.as_tensor(label), binary_mask("class_on_both_sides", "cloud_mask", cloud_mask)
    if label.shape != cloudy.shape or label.dim() != 2:
        raise ValueError(
            f"class_on_both_sides: expected label and cloud_mask of one shape (H, W), found "
            f"{tuple(label.shape)} and {tuple(cloudy.shape)}"
        )
    counts = []
    for klass in range(num_classes):
        of_class = (label == klass) & (label != ignore_index)
        counts.append(min(int((of_class & cloudy).sum()), int((of_class & ~cloudy).sum())))
    best = max(range(num_classes), key=counts.__getitem__)
    return best, counts[best]
