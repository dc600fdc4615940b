"""The encoder's grid: which input pixels a cell of a stride-``s`` map covers.

Every map of EDC (https://arxiv.org/abs/2603.20811) and its baselines is made by
convolutions of stride 2 with padding 1, so a stride-``s`` map of an ``H x W``
input has ``ceil(H / s) x ceil(W / s)`` cells, and **cell i covers the input
pixels** ``[i*s, (i+1)*s)`` of the image padded at the bottom/right to a multiple
of ``s``. When ``H`` is not a multiple of ``s`` the last cell reaches into the
padding: it covers only ``H - (h-1)*s`` real pixels.

Moving values between a map and the input must respect that grid:

* **map -> input** (``upsample_to_input``): upsample by exactly the stride, which
  gives the padded grid ``(s*h, s*w)``, then crop the padding at the bottom/right;
* **input -> map** (``pool_to_grid``): pad, sum over each ``s x s`` cell, and divide
  by the number of the cell's *real* pixels: for a cloud mask, the cloudy fraction
  of what the cell actually sees.

Resizing straight to the other size (``F.interpolate(size=...)`` or
``adaptive_avg_pool2d``) instead *stretches* the map over the image: at 300 x 300
the stride-32 grid (10 cells = 320 padded pixels) is squeezed onto 300 pixels and
the last cell lands 18.8 pixels away from where the encoder computed it.

``infer_stride`` recovers ``s`` from the two sizes. Strides are powers of two
(4, 8, 16, 32 for the encoder, 1 for the input grid itself). For a side with
``h >= 2`` cells, ``ceil(H / s) = h`` means ``H / h <= s < H / (h - 1)``, an interval
shorter than a factor of 2, so at most one power of two fits: the stride is
unique. A side with one cell only says ``s >= H``; every such stride gives the same
result here (one cell covers all real pixels), so the smallest one is returned.

Whose idea: none of this is in the paper; it is the usual "stride, pad, crop"
bookkeeping of dense prediction, written down once (edc_lab's).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from einops import reduce

from edc_lab.models.windows import pad_to_multiple, valid_mask

__all__ = ["infer_stride", "upsample_to_input", "pool_to_grid", "pool_to_map", "grid_size"]


def grid_size(size: Sequence[int], stride: int) -> tuple[int, int]:
    """``(ceil(H / stride), ceil(W / stride))``: the cells of a stride-``stride`` map of an ``H x W`` input."""
    return -(-int(size[0]) // stride), -(-int(size[1]) // stride)


def infer_stride(input_size: Sequence[int], map_size: Sequence[int]) -> int:
    """The power-of-two stride ``s`` of a map ``(h, w)`` made from an input ``(H, W)``.

    Raises ValueError when no power of two gives ``h = ceil(H / s)`` and ``w = ceil(W / s)``
    (the map was not made by the encoder from this input).
    """
    height, width = int(input_size[0]), int(input_size[1])
    rows, cols = int(map_size[0]), int(map_size[1])
    # 2**k for k up to the first power of two >= max(H, W): beyond it every map is 1 x 1
    for stride in (2**k for k in range(max(height, width, 1).bit_length() + 1)):
        if grid_size((height, width), stride) == (rows, cols):
            return stride
    raise ValueError(
        f"infer_stride: a {rows} x {cols} map is not ceil(H / s) x ceil(W / s) of an input {height} x {width} "
        "for any power-of-two stride s"
    )


def upsample_to_input(x: torch.Tensor, stride: int, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Map ``x (B, C, h, w)`` at stride ``stride`` -> ``(B, C, *size)`` on the input grid.

    Upsampling by exactly ``stride`` (``mode`` ``"bilinear"`` or ``"nearest"``) gives the
    padded grid ``(stride*h, stride*w)``, at least ``size`` because the encoder rounds
    ``H / stride`` up; the padding rows and columns at the bottom/right are cropped.
    ``"nearest"`` gives every input pixel the value of the cell that covers it.
    """
    height, width = int(size[0]), int(size[1])
    if x.shape[-2] * stride < height or x.shape[-1] * stride < width:
        raise ValueError(f"upsample_to_input: {tuple(x.shape[-2:])} x {stride} does not cover {(height, width)}")
    if stride != 1:
        if mode == "nearest":
            x = F.interpolate(x, scale_factor=stride, mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=stride, mode=mode, align_corners=False)
    return x[..., :height, :width]


def pool_to_grid(mask: torch.Tensor, stride: int, grid: Sequence[int] | None = None) -> torch.Tensor:
    """Mask ``(B, H, W)`` or ``(B, 1, H, W)`` -> ``(B, 1, ceil(H/stride), ceil(W/stride))`` float32.

    Each cell gets the mean of the mask over its *real* input pixels (the padding
    does not count): for a {0, 1} cloud mask, the cloudy fraction of the cell.
    ``grid``, when given, is the expected map size, checked.
    """
    if mask.dim() == 3:
        mask = mask[:, None]
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"pool_to_grid: expected a mask (B, H, W) or (B, 1, H, W), found shape {tuple(mask.shape)}")
    size = tuple(mask.shape[-2:])
    if grid is not None and tuple(int(v) for v in grid) != grid_size(size, stride):
        raise ValueError(
            f"pool_to_grid: a {size[0]} x {size[1]} mask at stride {stride} gives a {grid_size(size, stride)} grid, "
            f"not {tuple(grid)}"
        )
    padded, _ = pad_to_multiple(mask.float(), stride)
    cloudy = reduce(padded, "b 1 (h sh) (w sw) -> b 1 h w", "sum", sh=stride, sw=stride)
    real = reduce(valid_mask(size, stride, device=mask.device), "1 1 (h sh) (w sw) -> 1 1 h w", "sum", sh=stride, sw=stride)
    return cloudy / real


def pool_to_map(mask: torch.Tensor, map_size: Sequence[int]) -> torch.Tensor:
    """``pool_to_grid`` onto a map of size ``(h, w)``, its stride inferred from the mask's size."""
    stride = infer_stride(mask.shape[-2:], map_size)
    return pool_to_grid(mask, stride, map_size)
