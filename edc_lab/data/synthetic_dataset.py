"""The torch dataset of synthetic scenes, :class:`SyntheticScenes`: ``n`` scenes whose item ``i`` is a pure
function of ``(seed, i)``, served as dicts of tensors.

Speed
-----
:class:`SyntheticScenes` makes more than 50 scenes/s at 256² with clouds on one
core (``benchmarks/bench_scenes.py``): everything is vectorised numpy, smooth
fields come from small FFTs, windows are used for local objects
(:mod:`edc_lab.data.synthetic_land_cover`), and the
dataset skips the ``xarray.Dataset`` (it calls the same
:func:`~edc_lab.data.synthetic_assembly.scene_arrays` as
:func:`~edc_lab.data.synthetic_assembly.synthetic_scene`, so both give identical numbers).

Whose idea: TorchGeo's habits (one class per dataset, samples as dicts of
tensors, a ``plot(sample)`` method); the scenes are our choice.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from edc_lab.data.clouds import DEFAULT_HAZE, DEFAULT_THICKNESS, DEFAULT_THIN_FRACTION, unit_range
from edc_lab.data.sample import OPTICAL_BANDS, WHU_CLASSES, WHU_COLORS
from edc_lab.data.synthetic_assembly import check_scene_arguments, scene_arrays, synthetic_scene


def scene_seed(seed: int, index: int) -> int:
    """The scene seed of item ``index`` of a dataset seeded ``seed`` (independent streams per pair)."""
    return int(np.random.SeedSequence((int(seed), int(index))).generate_state(1, dtype=np.uint32)[0])


class SyntheticScenes(torch.utils.data.Dataset):
    """``n`` synthetic scenes as a torch dataset; item ``i`` is a pure function of ``(seed, i)``.

    Args:
        n: number of scenes.
        size: side in pixels.
        seed: dataset seed; scene ``i`` uses :func:`scene_seed(seed, i)`.
        cloud_cover: a float, or a ``(lo, hi)`` range from which each item draws
            its cover (deterministically from ``(seed, i)``).
        sar_channels: 2 (VV, VH) or 1 (VV).
        transforms: a callable on the sample dict (e.g. :mod:`edc_lab.data.transforms`);
            random transforms draw from their own generator or torch's global RNG.
        thickness, shadows, haze, family, thin_fraction: as
            :func:`~edc_lab.data.synthetic_assembly.synthetic_scene`
            (``**cloud_model("opaque")`` gives a named cloud model's four options).

    Items are dicts as :func:`edc_lab.data.sample.to_torch` makes them:
    ``optical`` / ``optical_clear`` (4, S, S) float32, ``sar`` (Cs, S, S)
    float32, ``label`` (S, S) int64, ``cloud_mask`` (S, S) float32,
    ``has_clear`` (True).
    """

    class_names: tuple[str, ...] = WHU_CLASSES
    class_colors: tuple[str, ...] = WHU_COLORS
    num_classes: int = len(WHU_CLASSES)
    in_optical: int = len(OPTICAL_BANDS)

    def __init__(
        self,
        n: int,
        size: int = 256,
        seed: int = 0,
        cloud_cover: float | tuple[float, float] = 0.5,
        sar_channels: int = 2,
        transforms=None,
        *,
        thickness: float | tuple[float, float] = DEFAULT_THICKNESS,
        shadows: bool = True,
        haze: float | tuple[float, float] = DEFAULT_HAZE,
        family: str = "default",
        thin_fraction: float = DEFAULT_THIN_FRACTION,
    ):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"SyntheticScenes: expected a non-negative integer n, found {n!r}")
        check_scene_arguments(seed, size, sar_channels, family)
        unit_range("thickness", thickness, owner="SyntheticScenes")
        unit_range("haze", haze, owner="SyntheticScenes")
        if not (isinstance(thin_fraction, (int, float)) and 0.0 <= thin_fraction <= 1.0):
            raise ValueError(f"SyntheticScenes: expected thin_fraction in [0, 1], found {thin_fraction!r}")
        if isinstance(cloud_cover, (tuple, list)):
            if len(cloud_cover) != 2 or not 0.0 <= cloud_cover[0] <= cloud_cover[1] <= 1.0:
                raise ValueError(
                    f"SyntheticScenes: expected cloud_cover as (lo, hi) with 0 <= lo <= hi <= 1, found {cloud_cover!r}"
                )
            self.cloud_cover: float | tuple[float, float] = (float(cloud_cover[0]), float(cloud_cover[1]))
        else:
            if not 0.0 <= cloud_cover <= 1.0:
                raise ValueError(f"SyntheticScenes: expected cloud_cover in [0, 1], found {cloud_cover!r}")
            self.cloud_cover = float(cloud_cover)
        self.n, self.size, self.seed = int(n), int(size), int(seed)
        self.sar_channels = self.in_sar = int(sar_channels)
        self.transforms = transforms
        self.cloud_options = dict(thickness=thickness, shadows=bool(shadows), haze=haze, family=family,
                                  thin_fraction=float(thin_fraction))

    def __len__(self) -> int:
        return self.n

    def cover_of(self, index: int) -> float:
        """The cloud cover requested for item ``index``."""
        if isinstance(self.cloud_cover, float):
            return self.cloud_cover
        low, high = self.cloud_cover
        draw = np.random.default_rng(np.random.SeedSequence((self.seed, index, 1))).random()
        return float(low + (high - low) * draw)

    def _index(self, index: int) -> int:
        if not -self.n <= index < self.n:
            raise IndexError(f"SyntheticScenes: index {index} out of range for {self.n} scenes")
        return index % self.n

    def scene(self, index: int) -> xr.Dataset:
        """Item ``index`` as the canonical ``xarray.Dataset`` (without transforms)."""
        index = self._index(index)
        return synthetic_scene(
            scene_seed(self.seed, index),
            self.size,
            self.cover_of(index),
            sar_channels=self.sar_channels,
            **self.cloud_options,
        )

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = self._index(index)
        arrays = scene_arrays(
            scene_seed(self.seed, index),
            self.size,
            self.cover_of(index),
            sar_channels=self.sar_channels,
            **self.cloud_options,
        )
        sample = {
            "optical": torch.from_numpy(arrays.optical),
            "sar": torch.from_numpy(arrays.sar),
            "label": torch.from_numpy(arrays.label.astype(np.int64)),
            "cloud_mask": torch.from_numpy(arrays.cloud_mask.astype(np.float32)),
            "optical_clear": torch.from_numpy(arrays.optical_clear),
            "has_clear": torch.tensor(True),
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def plot(self, sample, **kwargs):
        """Six panels (true colour, false colour, SAR, label with legend, cloud mask); returns the figure."""
        from edc_lab.viz.plots import plot_sample

        kwargs.setdefault("class_names", self.class_names)
        kwargs.setdefault("class_colors", self.class_colors)
        return plot_sample(sample, **kwargs)

    def __repr__(self) -> str:
        return (
            f"SyntheticScenes(n={self.n}, size={self.size}, seed={self.seed}, "
            f"cloud_cover={self.cloud_cover}, sar_channels={self.sar_channels}, "
            f"family={self.cloud_options['family']!r})"
        )
