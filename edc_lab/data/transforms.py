"""Paired geometric transforms: crop, flip and rotate every layer of a sample identically.

The idea in plain words
-----------------------
An optical–SAR sample is a stack of co-registered layers: the cloudy optical,
the clear optical, the SAR, the label and the cloud mask. Augmenting one layer
without the others would break the pixel-to-pixel correspondence the model
learns from, so every transform here draws its random numbers *once* per
sample and applies the same geometry to every tensor of the dict: (C, H, W)
images and (H, W) maps alike (any tensor with at least two dimensions, the
last two being H, W). Tensors with fewer dimensions (such as ``has_clear``)
pass through unchanged. The input dict is never modified.

Only geometry is changed, never values: a flip or a 90° rotation is exact,
and no interpolation touches the labels. Randomness comes from the
``generator`` given at call time, else the one given at construction, else
torch's global RNG (so a seeded ``torch.Generator`` makes a pipeline
reproducible).

Whose idea is it
----------------
Paired flips, 90° rotations and random crops are the standard augmentation of
remote-sensing segmentation (TorchGeo's convention of transforms on sample
dicts); the EDC paper (arXiv 2603.20811) trains with such augmentation. The
implementation is ours.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

Sample = Mapping[str, torch.Tensor]

__all__ = [
    "Transform",
    "Compose",
    "RandomCrop",
    "CenterCrop",
    "RandomFlip",
    "RandomRotate90",
    "spatial_size",
    "crop",
    "flip",
    "rotate90",
]


def _is_spatial(value) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim >= 2


def spatial_size(sample: Sample) -> tuple[int, int]:
    """(H, W) shared by every spatial tensor of ``sample``.

    Raises:
        ValueError: no tensor with at least two dimensions, or layers of different sizes.
    """
    sizes = {key: tuple(value.shape[-2:]) for key, value in sample.items() if _is_spatial(value)}
    if not sizes:
        raise ValueError(f"transform: expected a sample with (C, H, W) or (H, W) tensors, found keys {list(sample)}")
    first_key, first_size = next(iter(sizes.items()))
    for key, size in sizes.items():
        if size != first_size:
            raise ValueError(
                f"transform: expected every layer on one (H, W) grid, found {first_key} {first_size} and {key} {size}"
            )
    return first_size


def _apply(sample: Sample, function: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    return {key: function(value) if _is_spatial(value) else value for key, value in sample.items()}


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> dict:
    """Every layer cut to rows ``top:top+height``, columns ``left:left+width``."""
    return _apply(sample, lambda t: t[..., top : top + height, left : left + width])


def flip(sample: Sample, horizontal: bool, vertical: bool) -> dict:
    """Every layer mirrored left-right (``horizontal``) and/or upside-down (``vertical``)."""
    dims = ([-1] if horizontal else []) + ([-2] if vertical else [])
    if not dims:
        return dict(sample)
    return _apply(sample, lambda t: torch.flip(t, dims))


def rotate90(sample: Sample, k: int) -> dict:
    """Every layer rotated by ``k`` quarter turns (counter-clockwise, as ``torch.rot90``)."""
    k = int(k) % 4
    if k == 0:
        return dict(sample)
    return _apply(sample, lambda t: torch.rot90(t, k, dims=(-2, -1)))


def _pair(size, name: str) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if height < 1 or width < 1:
        raise ValueError(f"{name}: expected a positive crop size, found {size}")
    return int(height), int(width)


class Transform:
    """Base of the paired transforms: ``transform(sample, generator=None) -> new sample``.

    Args:
        generator: default ``torch.Generator`` for random draws (None: torch's global RNG).
    """

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def _generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        return generator if generator is not None else self.generator

    def _uniform(self, generator: torch.Generator | None) -> float:
        return float(torch.rand((), generator=self._generator(generator)))

    def _integer(self, high: int, generator: torch.Generator | None) -> int:
        """Uniform integer in [0, high)."""
        return int(torch.randint(0, high, (), generator=self._generator(generator)))

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> dict:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Compose(Transform):
    """Apply ``transforms`` in order (each gets the same ``generator``)."""

    def __init__(self, transforms: Sequence[Callable], generator: torch.Generator | None = None):
        super().__init__(generator)
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> dict:
        generator = self._generator(generator)
        for transform in self.transforms:
            sample = transform(sample, generator=generator) if isinstance(transform, Transform) else transform(sample)
        return dict(sample)

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomCrop(Transform):
    """Cut a random ``size`` window (int or (height, width)), the same for every layer.

    Raises ValueError when the sample is smaller than the window.
    """

    def __init__(self, size: int | tuple[int, int], generator: torch.Generator | None = None):
        super().__init__(generator)
        self.size = _pair(size, "RandomCrop")

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> dict:
        height, width = spatial_size(sample)
        crop_height, crop_width = self.size
        if height < crop_height or width < crop_width:
            raise ValueError(
                f"RandomCrop: expected a sample of at least {crop_height}x{crop_width} pixels, "
                f"found {height}x{width}"
            )
        top = self._integer(height - crop_height + 1, generator)
        left = self._integer(width - crop_width + 1, generator)
        return crop(sample, top, left, crop_height, crop_width)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size})"


class CenterCrop(Transform):
    """Cut the central ``size`` window (int or (height, width)).

    A sample smaller than ``size`` raises ValueError, unless ``at_most=True``: then a
    side shorter than the window is kept whole (validation on scenes of mixed sizes).
    """

    def __init__(self, size: int | tuple[int, int], generator: torch.Generator | None = None, at_most: bool = False):
        super().__init__(generator)
        self.size = _pair(size, "CenterCrop")
        self.at_most = at_most

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> dict:
        height, width = spatial_size(sample)
        crop_height, crop_width = self.size
        if self.at_most:
            crop_height, crop_width = min(crop_height, height), min(crop_width, width)
        if height < crop_height or width < crop_width:
            raise ValueError(
                f"CenterCrop: expected a sample of at least {crop_height}x{crop_width} pixels, "
                f"found {height}x{width}"
            )
        return crop(sample, (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width)

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size}" + (", at_most=True)" if self.at_most else ")")


class RandomFlip(Transform):
    """Mirror left-right with probability ``p`` and, independently, upside-down with probability ``p``.

    ``horizontal`` / ``vertical`` switch either flip off.
    """

    def __init__(
        self,
        p: float = 0.5,
        horizontal: bool = True,
        vertical: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__(generator)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomFlip: expected a probability p in [0, 1], found {p}")
        self.p, self.horizontal, self.vertical = float(p), bool(horizontal), bool(vertical)

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> dict:
        spatial_size(sample)
        # Both draws are always made, so the random stream does not depend on the flags.
        flip_horizontal = self._uniform(generator) < self.p
        flip_vertical = self._uniform(generator) < self.p
        return flip(sample, self.horizontal and flip_horizontal, self.vertical and flip_vertical)

    def __repr__(self) -> str:
        return f"RandomFlip(p={self.p}, horizontal={self.horizontal}, vertical={self.vertical})"


class RandomRotate90(Transform):
    """Rotate by 0, 90, 180 or 270 degrees, each with probability 1/4 (non-square samples swap H and W)."""

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> dict:
        spatial_size(sample)
        return rotate90(sample, self._integer(4, generator))
