"""The SAR share of the decision on both sides of the cloud edge, over many scenes.

The idea in plain words: one scene says little, so notebook 07 and
``benchmarks/attribution_evidence.py`` ask the same question of every scene of a test set.
Per scene:

1. the **target class** ``c`` is the class with the most pixels on *both* sides of the cloud
   edge (``class_on_both_sides``: the largest ``min(cloudy count, clear count)`` of the true
   labels), so both regions hold the same land cover, with and without a cloud above it;
2. a scene whose smaller side has fewer than ``min_pixels`` pixels is left out (chosen from the
   labels only: the same scenes for every model);
3. two regions, the cloudy pixels labelled ``c`` and the clear pixels labelled ``c``; for each,
   the exact Shapley values of the four groups (optical/SAR x in cloud/clear,
   ``modality_shares``) of ``F`` = the mean logit of ``c`` over the region, and the **SAR share
   of the decision** ``(|v_sar_cloudy| + |v_sar_clear|) / sum_g |v_g|``
   (``ModalityShares.sar_share``).

The **rise** is the mean share on cloudy pixels minus the mean share on clear pixels. EDC's
promise, in these terms: a positive rise (the model turns to the radar where clouds hide the
ground), larger than in a fusion that does not know where the clouds are.

Whose idea: the question is the paper's promise (Meng et al., arXiv 2603.20811); the Shapley
values are Shapley's (1953), computed exactly by ``exact_group_shapley``; the target rule,
the regions and the share are edc_lab's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from edc_lab.explain.baselines import BaselineSpec
from edc_lab.explain.groups import GROUPS, class_on_both_sides, modality_shares

__all__ = ["SIDES", "SideShares", "shares_by_side"]

#: the two regions of every scene
SIDES = ("cloudy", "clear")


@dataclass
class SideShares:
    """Per-scene results of :func:`shares_by_side`.

    Attributes:
        scenes: the positions (in the scenes given) of the scenes kept; targets: their class.
        sar_share: ``{side: [share per kept scene]}`` (fractions in [0, 1]).
        values: ``{side: [[v_g for g in GROUPS] per kept scene]}``, the signed Shapley values
            (units of ``F``, logits by default).
        baseline: the removal used.
    """

    scenes: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    sar_share: dict[str, list[float]] = field(default_factory=lambda: {side: [] for side in SIDES})
    values: dict[str, list[list[float]]] = field(default_factory=lambda: {side: [] for side in SIDES})
    baseline: str = "blur"

    def mean(self, side: str) -> float:
        """The mean SAR share over the kept scenes on ``side`` (``"cloudy"`` or ``"clear"``)."""
        if side not in SIDES:
            raise ValueError(f"SideShares.mean: side must be one of {SIDES}, found {side!r}")
        return float(np.mean(self.sar_share[side])) if self.scenes else float("nan")

    @property
    def rise(self) -> float:
        """Mean SAR share on cloudy pixels minus on clear pixels (a fraction; x 100 for points)."""
        return self.mean("cloudy") - self.mean("clear")

    def mean_values(self, side: str = "cloudy") -> dict[str, float]:
        """``{group: mean signed Shapley value}`` over the kept scenes for the region on ``side``."""
        table = np.mean(self.values[side], axis=0) if self.scenes else [float("nan")] * len(GROUPS)
        return {group: float(value) for group, value in zip(GROUPS, table)}


def shares_by_side(model: nn.Module, scenes: Iterable[Mapping[str, torch.Tensor]], num_classes: int, *,
                   baseline: BaselineSpec = "blur", min_pixels: int = 20,
                   perturbations_per_eval: int = 4) -> SideShares:
    """The SAR share of the decision on the cloudy and the clear pixels of each scene's target class.

    Args:
        model: an edc_lab model in eval mode.
        scenes: torch samples with ``optical (C_o, H, W)``, ``sar (C_s, H, W)``, ``label (H, W)``,
            ``cloud_mask (H, W)`` (and ``optical_clear`` for the ``"cloudfree"`` baseline).
        num_classes: the number of classes of the labels.
        baseline: the removal (``edc_lab.explain.baselines``: ``"blur"``, ``"mean"``, ...).
        min_pixels: a scene is kept when both regions have at least this many pixels.
        perturbations_per_eval: coalitions per forward pass (``modality_shares``).
    """
    if not isinstance(min_pixels, int) or min_pixels < 1:
        raise ValueError(f"shares_by_side: min_pixels must be an integer >= 1, found {min_pixels!r}")
    result = SideShares(baseline=baseline if isinstance(baseline, str) else "custom")
    for position, scene in enumerate(scenes):
        target, count = class_on_both_sides(scene["label"], scene["cloud_mask"], num_classes)
        if count < min_pixels:
            continue
        result.scenes.append(position)
        result.targets.append(target)
        cloudy = scene["cloud_mask"].bool()
        of_class = scene["label"] == target
        optical_clear = scene.get("optical_clear")
        for side, pixels in zip(SIDES, (cloudy, ~cloudy)):
            shares = modality_shares(model, scene["optical"][None], scene["sar"][None], scene["cloud_mask"], target,
                                     of_class & pixels, baseline=baseline,
                                     optical_clear=None if optical_clear is None else optical_clear[None],
                                     perturbations_per_eval=perturbations_per_eval)
            result.sar_share[side].append(float(shares.sar_share[0]))
            result.values[side].append([float(shares.values[group][0]) for group in GROUPS])
    return result
