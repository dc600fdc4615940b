"""``RegionScore``: a segmentation model as the one-number-per-sample function captum explains.

The idea in plain words: captum's attribution methods explain a function that
returns one number per sample. A segmentation model returns a whole map of class
scores, so we first have to say *which* number we ask about: "how sure is the
model that the pixels in this region are farmland?". ``RegionScore`` wraps a
model into exactly that question:

    F(optical, sar) = mean over the region of  logits[b, target, row, col]     (output="logit", default)
    F(optical, sar) = mean over the region of softmax(logits)[b, target, row, col]   (output="probability")

one value per sample, shape ``(B,)``. We take the **mean**, not the sum, so
``F`` (and every attribution, which adds up to a difference of ``F``) is in
*logit units* and does not grow with the size of the region: a 1-pixel and a
1000-pixel region give numbers of the same scale.

The region is one of:

* ``None``: the whole image;
* a pixel ``(row, col)``;
* a box ``(r0, r1, c0, c1)``: rows ``r0:r1`` and columns ``c0:c1`` (half-open,
  like Python slices);
* a boolean mask ``(H, W)`` (the same for every sample) or ``(B, H, W)`` (one
  per sample), e.g. ``cloud_mask & (prediction == FARMLAND)``: "cloudy pixels
  predicted as farmland".

Batching. Captum evaluates many perturbed copies of the batch at once
(Integrated Gradients: ``n_steps`` copies, cut into ``internal_batch_size``
chunks; GradientShap: ``n_samples`` copies in another order). A per-sample mask
must follow its sample through that expansion. Captum already does this for
every tensor passed as ``additional_forward_args`` (it repeats them exactly as
it repeats the inputs), so the functions of ``edc_lab.explain`` pass the
``(B, H, W)`` region mask that way (``RegionScore.forward_args``). Called
without it on a batch that is ``n`` times the mask's batch, ``forward`` tiles
the mask ``n`` times (``torch.cat([mask] * n)``: the order of Integrated
Gradients, FeatureAblation and ShapleyValues, *not* of NoiseTunnel/GradientShap,
which interleave: pass ``additional_forward_args`` there).

Models that ignore one input (``optical_only``, ``sar_only``) would make autograd
fail ("one of the differentiated tensors was not used in the graph"); ``forward``
adds ``0 * sum(input)`` for both inputs, so the ignored input gets an exact zero
gradient, hence exactly zero attribution.

Whose idea: wrapping a segmentation output into a scalar per sample is captum's
recommended practice (captum "segmentation interpretation" tutorial, Kokhlikyan
et al., 2020, https://captum.ai); the mean over a region, the region forms, the
checks and the batching rule are edc_lab's.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
from torch import nn

from edc_lab.explain.checks import binary_mask, check_finite, check_settings

__all__ = ["RegionScore", "Region", "OUTPUTS"]

Region = Union[None, Sequence[int], np.ndarray, torch.Tensor]
#: what ``RegionScore`` averages: the class logit or its softmax probability
OUTPUTS = ("logit", "probability")


class RegionScore(nn.Module):
    """``forward(optical (B, C_o, H, W), sar (B, C_s, H, W)[, region_mask (B, H, W)]) -> (B,)``.

    Args:
        model: any edc_lab model (``model(optical, sar)["logits"]`` is ``(B, K, H, W)``).
        target: the class ``0 <= target < K`` whose score is explained.
        region: ``None`` (whole image), ``(row, col)``, ``(r0, r1, c0, c1)`` or a
            boolean mask ``(H, W)`` / ``(B, H, W)``; see the module docstring.
        output: ``"logit"`` (default; attributions in logit units) or
            ``"probability"`` (softmax over the K classes; attributions in
            probability units).

    Bad input raises ``ValueError`` naming what was expected and what was found:
    a class index out of range, an empty region, a mask of the wrong shape or not
    boolean / 0-1 (a probability map is refused, not thresholded), a pixel or box
    outside the image, NaN/Inf inputs (``forward_args``).
    """

    def __init__(self, model: nn.Module, target: int, region: Region = None, *, output: str = "logit"):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"RegionScore: output must be one of {OUTPUTS}, found {output!r}")
        if isinstance(target, torch.Tensor) and target.numel() == 1:
            target = int(target.item())
        if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)):
            raise ValueError(f"RegionScore: target must be a class index (int), found {target!r}")
        num_classes = getattr(model, "num_classes", None)
        if isinstance(num_classes, int):
            self._check_target(int(target), num_classes)
        self.model = model
        self.target = int(target)
        self.output = output
        self.region = self._normalise_region(region)

    # ---------------------------------------------------------------- checks
    @staticmethod
    def _check_target(target: int, num_classes: int) -> None:
        if not 0 <= target < num_classes:
            raise ValueError(
                f"RegionScore: target class must be in [0, {num_classes - 1}] (the model has {num_classes} "
                f"classes), found {target}"
            )

    @staticmethod
    def _normalise_region(region: Region):
        """``None``, ``("pixel", r, c)``, ``("box", r0, r1, c0, c1)`` or ``("mask", bool (H, W) | (B, H, W))``."""
        if region is None:
            return None
        if isinstance(region, (np.ndarray, torch.Tensor)):
            mask = binary_mask("RegionScore", "region", region)  # a probability map is refused, not thresholded
            if mask.dim() not in (2, 3):
                raise ValueError(
                    "RegionScore: a region mask must have shape (H, W) or (B, H, W), "
                    f"found shape {tuple(mask.shape)}"
                )
            pixels = mask.flatten(1).sum(1) if mask.dim() == 3 else mask.sum().reshape(1)
            empty = [i for i, count in enumerate(pixels.tolist()) if count == 0]
            if empty:
                where = f" (sample(s) {empty})" if mask.dim() == 3 else ""
                raise ValueError(
                    f"RegionScore: the region mask is empty{where}: expected at least one True pixel, found none"
                )
            return ("mask", mask)
        if isinstance(region, (tuple, list)) and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in region
        ):
            values = tuple(int(v) for v in region)
            if len(values) == 2:
                return ("pixel", *values)
            if len(values) == 4:
                r0, r1, c0, c1 = values
                if r0 < 0 or c0 < 0 or r1 <= r0 or c1 <= c0:
                    raise ValueError(
                        f"RegionScore: a box (r0, r1, c0, c1) selects rows r0:r1 and columns c0:c1 and needs "
                        f"0 <= r0 < r1 and 0 <= c0 < c1; found {values}, an empty region"
                    )
                return ("box", *values)
        raise ValueError(
            "RegionScore: region must be None, a pixel (row, col), a box (r0, r1, c0, c1) of ints or a boolean "
            f"mask (H, W) / (B, H, W); found {type(region).__name__} {region!r}"[:300]
        )

    def region_mask(self, batch: int, height: int, width: int, device=None) -> torch.Tensor:
        """The region as a float mask ``(batch, H, W)`` of 0/1, after checking it fits the image.

        A ``(B, H, W)`` mask needs ``batch == B`` (or a multiple of ``B``: tiled, see the module docstring).
        """
        kind = None if self.region is None else self.region[0]
        mask = torch.zeros(batch, height, width, dtype=torch.bool, device=device)
        if kind is None:
            mask[:] = True
        elif kind == "pixel":
            _, row, col = self.region
            if not (0 <= row < height and 0 <= col < width):
                raise ValueError(
                    f"RegionScore: pixel (row, col) must lie inside the {height} x {width} image "
                    f"(0 <= row < {height}, 0 <= col < {width}), found ({row}, {col})"
                )
            mask[:, row, col] = True
        elif kind == "box":
            _, r0, r1, c0, c1 = self.region
            if r1 > height or c1 > width:
                raise ValueError(
                    f"RegionScore: box (r0, r1, c0, c1) must lie inside the {height} x {width} image "
                    f"(r1 <= {height}, c1 <= {width}), found {(r0, r1, c0, c1)}"
                )
            mask[:, r0:r1, c0:c1] = True
        else:
            region = self.region[1].to(device)
            if tuple(region.shape[-2:]) != (height, width):
                raise ValueError(
                    f"RegionScore: the region mask must have shape (H, W) = ({height}, {width}) or (B, H, W) = "
                    f"({batch}, {height}, {width}) to match the image, found {tuple(region.shape)}"
                )
            if region.dim() == 2:
                mask[:] = region
            elif region.shape[0] == batch:
                mask = region.clone()
            elif batch % region.shape[0] == 0:
                mask = torch.cat([region] * (batch // region.shape[0]))  # captum's "repeat" expansion order
            else:
                raise ValueError(
                    f"RegionScore: the region mask has {region.shape[0]} samples, (B, H, W) = "
                    f"{tuple(region.shape)}, but the images have batch {batch}; expected B = {batch}"
                )
        return mask.float()

    def forward_args(self, optical: torch.Tensor, sar: torch.Tensor, owner: str = "RegionScore") -> tuple[torch.Tensor]:
        """Check the inputs (shapes, finite values) and the region; return ``(region_mask (B, H, W),)`` for
        captum's ``additional_forward_args`` (captum then expands it exactly like the inputs). ``owner``
        names the caller in messages."""
        for what, image in (("optical", optical), ("sar", sar)):
            if not isinstance(image, torch.Tensor) or image.dim() != 4:
                found = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
                raise ValueError(f"{owner}: {what} must be a tensor (B, C, H, W), found {found}")
            check_finite(owner, what, image)
        if optical.shape[0] != sar.shape[0] or optical.shape[-2:] != sar.shape[-2:]:
            raise ValueError(
                f"RegionScore: optical {tuple(optical.shape)} and sar {tuple(sar.shape)} need the same B, H, W"
            )
        if self.model.training:
            raise ValueError(
                "RegionScore: the model is in training mode (BatchNorm would mix the perturbed copies captum "
                "batches together); call model.eval() first"
            )
        batch, _, height, width = optical.shape
        return (self.region_mask(batch, height, width, optical.device).to(optical.dtype),)

    # ---------------------------------------------------------------- forward
    def forward(
        self, optical: torch.Tensor, sar: torch.Tensor, region_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = self.model(optical, sar)["logits"]  # (B, K, H, W)
        batch, num_classes, height, width = logits.shape
        self._check_target(self.target, num_classes)
        scores = torch.softmax(logits, dim=1) if self.output == "probability" else logits
        scores = scores[:, self.target]  # (B, H, W)
        if region_mask is None:
            region_mask = self.region_mask(batch, height, width, logits.device)
        elif tuple(region_mask.shape) != (batch, height, width):
            raise ValueError(
                f"RegionScore: region_mask must be (B, H, W) = {(batch, height, width)}, "
                f"found {tuple(region_mask.shape)}"
            )
        region_mask = region_mask.to(scores.dtype)
        # mean of the class score over the region, one value per sample
        score = (scores * region_mask).sum(dim=(1, 2)) / region_mask.sum(dim=(1, 2))
        # tie both inputs into the graph: an ignored input gets an exact zero gradient, not an autograd error
        unused = optical.sum(dim=(1, 2, 3)) + sar.sum(dim=(1, 2, 3))
        return score + 0.0 * unused


def explanation_inputs(model: nn.Module, optical: torch.Tensor, sar: torch.Tensor, target: int, region: Region,
                       output: str, baseline, optical_clear, blur_sigma: float, *,
                       owner: str = "explanation_inputs", settings: dict | None = None):
    """What every captum call of ``edc_lab.explain`` starts from, after every check.

    Checks (``edc_lab.explain.checks``; one ``ValueError`` naming ``owner`` and the argument):
    the numeric ``settings`` (``n_steps``, ``n_samples``, ...) and ``blur_sigma``, the target
    and region (``RegionScore``), the input shapes, finite inputs, optical_clear and baselines.

    Returns ``(score_fn, region_args, inputs, baselines)``: the ``RegionScore``, its
    ``additional_forward_args``, the detached ``(optical, sar)`` and the baseline pair
    (``edc_lab.explain.baselines.make_baselines``).
    """
    from edc_lab.explain.baselines import make_baselines

    check_settings(owner, blur_sigma=blur_sigma, **(settings or {}))
    score_fn = RegionScore(model, target, region, output=output)
    region_args = score_fn.forward_args(optical, sar, owner)
    inputs = (optical.detach(), sar.detach())
    check_finite(owner, "optical_clear", optical_clear)
    baselines = make_baselines(baseline, inputs[0], inputs[1], optical_clear, sigma=blur_sigma)
    for what, image in zip(("optical baseline", "sar baseline"), baselines):
        check_finite(owner, what, image)
    return score_fn, region_args, inputs, baselines
