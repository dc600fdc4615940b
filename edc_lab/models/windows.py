"""Windows: cutting a feature map into square windows and stitching it back.

Window attention (Swin, FasterViT's HAT, EDC's carrier-token blocks; EDC:
https://arxiv.org/abs/2603.20811) lets every pixel attend only to the pixels of
its own ``window x window`` square. Two small operations make that possible:

* **partition** a map ``(B, C, H, W)`` into a batch of windows, each a short
  sequence of ``window**2`` tokens::

      rearrange(F, 'b c (nh wh) (nw ww) -> (b nh nw) (wh ww) c', wh=w, ww=w)

  The pattern *is* the documentation: the height ``H`` is read as ``nh`` rows
  of windows times ``wh`` pixel rows inside a window (same for the width), and
  every window becomes one item of the batch.
* **reverse** it with the mirrored pattern.

Real images are rarely a multiple of the window, so a block first **pads** the
map at the bottom and right with zeros (``pad_to_multiple``) and **crops** its
result back (``crop_to``). ``valid_mask`` says which pixels of the padded map are
real, so attention can ignore the padding.

Whose idea: window partition is Swin/FasterViT's; the einops patterns, padding
at bottom/right and the explicit valid mask are edc_lab's choices (FasterViT
fixes the sizes at construction; here every size is computed from the input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = ["pad_to_multiple", "crop_to", "window_partition", "window_reverse", "valid_mask"]


def _check_map(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{what}: expected a feature map (B, C, H, W), found shape {tuple(x.shape)}")


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad ``x`` at the bottom and right so H and W become multiples of ``multiple``.

    Args:
        x: feature map ``(B, C, H, W)``.
        multiple: the window (or cell) size in pixels, ``>= 1``.

    Returns:
        ``(x_padded (B, C, Hp, Wp), (H, W))`` where ``Hp = ceil(H / multiple) * multiple``
        and ``(H, W)`` is the original size, to hand to ``crop_to`` afterwards.
        An input that is already a multiple is returned as is (same tensor).
    """
    _check_map(x, "pad_to_multiple")
    if multiple < 1:
        raise ValueError(f"pad_to_multiple: multiple must be >= 1, found {multiple}")
    height, width = x.shape[-2:]
    pad_bottom = (-height) % multiple
    pad_right = (-width) % multiple
    if pad_bottom or pad_right:
        # F.pad's order is (left, right, top, bottom) for the last two axes.
        x = F.pad(x, (0, pad_right, 0, pad_bottom))
    return x, (height, width)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo ``pad_to_multiple``: keep the top-left ``size = (H, W)`` of ``x (B, C, Hp, Wp)``."""
    _check_map(x, "crop_to")
    height, width = size
    if height > x.shape[-2] or width > x.shape[-1]:
        raise ValueError(f"crop_to: cannot crop a {tuple(x.shape[-2:])} map to the larger size {tuple(size)}")
    return x[..., :height, :width]


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """Cut ``x (B, C, H, W)`` into non-overlapping windows.

    Returns:
        tokens ``(B * nh * nw, window * window, C)`` with ``nh = H / window``,
        ``nw = W / window``; windows are ordered batch-major, then row by row.

    H and W must be multiples of ``window`` (use ``pad_to_multiple`` first).
    """
    _check_map(x, "window_partition")
    height, width = x.shape[-2:]
    if height % window or width % window:
        raise ValueError(
            f"window_partition: H and W must be multiples of the window {window}, found H={height}, W={width}; "
            "call pad_to_multiple first"
        )
    return rearrange(x, "b c (nh wh) (nw ww) -> (b nh nw) (wh ww) c", wh=window, ww=window)


def window_reverse(tokens: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """Stitch windows ``(B * nh * nw, window * window, C)`` back into a map ``(B, C, H, W)``.

    The exact inverse of ``window_partition`` for the same ``window``, ``H`` and ``W``.
    """
    if tokens.dim() != 3 or tokens.shape[1] != window * window:
        raise ValueError(
            f"window_reverse: expected tokens (B*nh*nw, {window * window}, C), found shape {tuple(tokens.shape)}"
        )
    if height % window or width % window:
        raise ValueError(f"window_reverse: H={height} and W={width} must be multiples of the window {window}")
    windows_per_image = (height // window) * (width // window)
    if tokens.shape[0] % windows_per_image:
        raise ValueError(
            f"window_reverse: {tokens.shape[0]} windows is not a whole number of {height}x{width} images "
            f"({windows_per_image} windows each)"
        )
    return rearrange(
        tokens, "(b nh nw) (wh ww) c -> b c (nh wh) (nw ww)", nh=height // window, nw=width // window, wh=window
    )


def valid_mask(size: tuple[int, int], multiple: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Which pixels of the padded map are real: ``(1, 1, Hp, Wp)`` float, 1 inside ``size``, 0 in the padding."""
    height, width = size
    ones = torch.ones(1, 1, height, width, device=device)
    padded, _ = pad_to_multiple(ones, multiple)
    return padded
