"""Heads: a light FPN segmentation head and a light cloud-removal decoder.

EDC (https://arxiv.org/abs/2603.20811) reads the land-cover map from the fused
cross-modal features ``X_1..X_4`` and, as an auxiliary task, reconstructs the
cloud-free optical image from the corrected optical features ``O_1..O_4``.
The paper does not spell out either decoder; edc_lab uses the lightest
reasonable choice for both:

* **FPN neck** (Lin et al., 2017): a 1x1 *lateral* convolution brings every level
  to ``dim`` channels; a *top-down* pass adds the coarser level, upsampled, to the
  finer one; a 3x3 convolution (BN, ReLU) smooths each sum. The result is a
  pyramid ``P_1..P_4`` at strides 4, 8, 16, 32, all with ``dim`` channels. These
  four maps are the model's ``features`` (what distillation compares).
* **Segmentation head**: every ``P_k`` is upsampled to stride 4 (by exactly its
  stride ratio 2, 4, 8, then cropped: ``edc_lab.models.grid``) and summed
  (Panoptic-FPN's semantic branch, without its extra convolutions), a 1x1
  convolution gives class logits at stride 4, bilinear upsampling by exactly 4
  brings them to the input grid (cropped at the bottom/right when H or W is not a
  multiple of 4: the stride-4 grid was rounded up, not stretched).
* **Cloud-removal head**: the same neck over ``O_1..O_4``, summed at stride 4, then
  a 1x1 convolution to ``bands * 4 * 4`` channels and a pixel shuffle give a
  full-resolution *correction* ``delta``. The prediction is a residual on the
  cloudy input in logit space, ``sigmoid(logit(optical) + delta)``: it always lies
  in (0, 1), equals the input where ``delta = 0`` (clear pixels need no change),
  and ``delta`` starts at zero, so an untrained head returns the cloudy image.
  With ``residual=False`` it predicts ``sigmoid(delta)`` from the features alone.
  The logit and the sigmoid are computed in float32 whatever the model's dtype:
  in bfloat16 the clamp bound ``1 - 1e-3`` rounds to 1 (an infinite logit, so no
  gradient on bright pixels).

Whose idea: the FPN is Lin et al.'s, the stride-4 sum Panoptic FPN's; the
pixel-shuffle output and the logit-space residual are edc_lab's choices.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from edc_lab.models.grid import upsample_to_input

__all__ = ["FPNNeck", "SegmentationHead", "CloudRemovalHead", "resize_to", "upsample_and_crop"]


def resize_to(x: torch.Tensor, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """``x (B, C, h, w)`` -> ``(B, C, *size)``; returns ``x`` itself when it already has that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


#: the logits' "upsample by the stride and crop" is the grid's one implementation (``edc_lab.models.grid``)
upsample_and_crop = upsample_to_input


class ConvNormAct(nn.Sequential):
    """``Conv(k x k) -> BN -> ReLU``, shape ``(B, C_in, H, W) -> (B, C_out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class FPNNeck(nn.Module):
    """Feature pyramid: ``[F_1..F_4]`` with ``F_k: (B, in_widths[k], H_k, W_k)`` -> ``[P_1..P_4]``,
    ``P_k: (B, dim, H_k, W_k)``.
    """

    def __init__(self, in_widths: Sequence[int], dim: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(width, dim, 1) for width in in_widths)
        self.smooth = nn.ModuleList(ConvNormAct(dim, dim, 3) for _ in in_widths)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(feature) for conv, feature in zip(self.lateral, features)]
        # Top-down: start at the coarsest level, add it (upsampled by exactly 2, cropped) to the next finer one.
        for level in range(len(laterals) - 2, -1, -1):
            coarser = upsample_to_input(laterals[level + 1], 2, laterals[level].shape[-2:], mode="nearest")
            laterals[level] = laterals[level] + coarser
        return [smooth(lateral) for smooth, lateral in zip(self.smooth, laterals)]


def sum_at_finest(pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
    """Add the pyramid ``P_1..P_k`` (``P_l: (B, D, H_l, W_l)``, each level half the previous) on ``P_1``'s grid.

    ``P_l`` is upsampled bilinearly by exactly its stride ratio ``2**(l-1)`` (2, 4, 8)
    and cropped to ``(H_1, W_1)``: ``H_l = ceil(H_1 / 2**(l-1))`` was rounded up, so the
    upsampled map is at least as large, and stretching it onto ``H_1`` would shift it.
    Returns ``(B, D, H_1, W_1)``.
    """
    size = pyramid[0].shape[-2:]
    fused = pyramid[0]
    for level, coarser in enumerate(pyramid[1:], start=1):
        fused = fused + upsample_to_input(coarser, 2**level, size)
    return fused


class SegmentationHead(nn.Module):
    """Light FPN segmentation head.

    ``forward(features [X_1..X_4], output_size (H, W))`` -> ``(logits (B, K, H, W), pyramid [P_1..P_4])``.
    """

    def __init__(self, in_widths: Sequence[int], dim: int, num_classes: int):
        super().__init__()
        self.neck = FPNNeck(in_widths, dim)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor], output_size: Sequence[int]):
        pyramid = self.neck(features)
        logits_stride4 = self.classifier(sum_at_finest(pyramid))
        return upsample_to_input(logits_stride4, 4, output_size), pyramid


class CloudRemovalHead(nn.Module):
    """Light cloud-removal decoder over the corrected optical features.

    Args:
        in_widths: channels of ``O_1..O_4``.
        dim: decoder width.
        bands: optical bands to predict (4: blue, green, red, NIR).
        residual: predict ``sigmoid(logit(optical) + delta)`` (default) or ``sigmoid(delta)``.

    ``forward(features [O_1..O_4], optical (B, bands, H, W))`` -> cloud-free image ``(B, bands, H, W)`` in (0, 1),
    computed in float32 and returned in the dtype of ``logit(optical) + delta`` (bfloat16 for a
    bfloat16 model; float32 under autocast, whose ``optical`` is float32).
    """

    #: the stride of ``O_1``; the pixel shuffle undoes it
    upscale = 4
    #: clamp of the input before the logit, so logit(0) and logit(1) stay finite
    eps = 1e-3

    def __init__(self, in_widths: Sequence[int], dim: int, bands: int = 4, residual: bool = True):
        super().__init__()
        self.bands = bands
        self.residual = residual
        self.neck = FPNNeck(in_widths, dim)
        self.to_subpixels = nn.Conv2d(dim, bands * self.upscale**2, 1)
        nn.init.zeros_(self.to_subpixels.weight)
        nn.init.zeros_(self.to_subpixels.bias)

    def forward(self, features: Sequence[torch.Tensor], optical: torch.Tensor) -> torch.Tensor:
        fused = sum_at_finest(self.neck(features))
        subpixels = self.to_subpixels(fused)  # (B, bands*4*4, H/4, W/4)
        delta = rearrange(subpixels, "b (c sh sw) h w -> b c (h sh) (w sw)", sh=self.upscale, sw=self.upscale)
        height, width = optical.shape[-2:]
        delta = delta[..., :height, :width]  # sizes not a multiple of 4: the stride-4 grid was rounded up
        if not self.residual:
            return torch.sigmoid(delta.float()).to(delta.dtype)
        # float32: in bfloat16, 1 - eps rounds to 1 and logit(1) = inf
        input_logit = torch.logit(optical.float().clamp(self.eps, 1 - self.eps))
        cloudfree = torch.sigmoid(input_logit + delta.float())
        return cloudfree.to(torch.promote_types(optical.dtype, delta.dtype))
