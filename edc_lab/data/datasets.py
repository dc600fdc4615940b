"""One entry point from a dataset name to a torch Dataset: ``build_dataset("synthetic" | "m3mcr" | "whu")``.

The training loop, the CLI and the notebooks name a data source and get a
torch ``Dataset`` of canonical sample dicts with ``.num_classes``,
``.class_names`` and ``.in_sar`` (SAR channels), whatever the source:

* ``"synthetic"``: :class:`~edc_lab.data.synthetic.SyntheticScenes` — ``count``
  scenes of ``size``² px, no files needed (the default). Splits use disjoint
  seed ranges: scene ``i`` of split ``s`` is generated from
  ``seed + SPLIT_SEED_OFFSET[s]`` and never appears in another split
  (offsets are 10⁶ apart, far more than any ``count``);
* ``"m3mcr"``: :class:`~edc_lab.data.m3mcr.M3MCR` under ``root`` (300² scenes);
  when ``size`` is smaller than a scene, training samples are randomly cropped
  to ``size`` and other splits centre-cropped, unless ``transforms`` is given;
* ``"whu"``: :class:`~edc_lab.data.whu.WHUOptSAR` under ``root`` with
  ``patch_size=size`` and clouds drawn from ``cloud_cover``.

``count`` and ``sar_channels`` concern synthetic scenes only: the readers
return what the files hold (M3M-CR: 2 SAR channels, WHU-OPT-SAR: 1). Our
choice; the paper trains on M3M-CR and WHU-OPT-SAR.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from edc_lab.data.sample import DataError

DATASET_NAMES: tuple[str, ...] = ("synthetic", "m3mcr", "whu")
#: seed offset per split of the synthetic source (disjoint scene seeds)
SPLIT_SEED_OFFSET: dict[str, int] = {"train": 0, "val": 1_000_000, "test": 2_000_000}


def build_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    split: str = "train",
    size: int = 128,
    count: int = 64,
    seed: int = 0,
    cloud_cover: float | tuple[float, float] = (0.2, 0.8),
    sar_channels: int = 2,
    transforms: Callable[[dict], dict] | None = None,
    family: str = "default",
    clouds: Mapping[str, Any] | None = None,
) -> torch.utils.data.Dataset:
    """A torch Dataset of sample dicts for ``name`` (see the module docstring).

    Args:
        name: "synthetic", "m3mcr" or "whu".
        root: dataset folder (readers only).
        split: "train", "val" (synthetic only) or "test".
        size: synthetic scene size / M3M-CR crop size / WHU-OPT-SAR patch size (pixels).
        count: number of synthetic scenes.
        seed: base seed (synthetic scenes; WHU-OPT-SAR clouds).
        cloud_cover: cloud fraction, a float or a (lo, hi) range (synthetic and WHU-OPT-SAR;
            M3M-CR has real clouds).
        sar_channels: synthetic SAR channels (1 or 2).
        transforms: callable on the sample dict (replaces the default M3M-CR crop).
        family: synthetic scene family, "default" or "context" (see :mod:`edc_lab.data.synthetic`).
        clouds: synthetic clouds' options (``thickness``, ``thin_fraction``, ``haze``, ``shadows``), e.g.
            ``cloud_model("opaque")`` (:func:`edc_lab.data.clouds.cloud_model`); None: the realistic defaults.
            Synthetic scenes only (M3M-CR has real clouds; WHU-OPT-SAR's synthesised clouds keep their defaults).

    Returns:
        Dataset with ``num_classes``, ``class_names`` and ``in_sar``.
    """
    if name == "synthetic":
        from edc_lab.data.synthetic import SyntheticScenes

        if split not in SPLIT_SEED_OFFSET:
            raise ValueError(f"build_dataset: expected split in {sorted(SPLIT_SEED_OFFSET)}, found {split!r}")
        dataset = SyntheticScenes(
            count, size=size, seed=seed + SPLIT_SEED_OFFSET[split], cloud_cover=cloud_cover,
            sar_channels=sar_channels, transforms=transforms, family=family, **dict(clouds or {}),
        )
        if not hasattr(dataset, "in_sar"):
            dataset.in_sar = sar_channels
        return dataset

    if name not in DATASET_NAMES:
        raise ValueError(f"build_dataset: expected a name in {DATASET_NAMES}, found {name!r}")
    if family != "default":
        raise ValueError(f"build_dataset({name!r}): family={family!r} concerns synthetic scenes only; "
                         "expected family='default' for a real dataset")
    if clouds:
        raise ValueError(f"build_dataset({name!r}): clouds={dict(clouds)!r} concern synthetic scenes only; "
                         "expected clouds=None for a real dataset")
    if root is None:
        raise DataError(f"build_dataset({name!r}): expected root=<folder with the dataset>, found None")

    if name == "m3mcr":
        from edc_lab.data.m3mcr import M3MCR

        if transforms is None and size is not None:
            transforms = _m3mcr_crop(split, size)
        return M3MCR(root, split, transforms=transforms)

    from edc_lab.data.whu import WHUOptSAR

    return WHUOptSAR(root, split, patch_size=size, cloud_cover=cloud_cover, seed=seed, transforms=transforms)


def _m3mcr_crop(split: str, size: int) -> Callable[[dict], dict]:
    """Random crop for training, centre crop otherwise; samples smaller than ``size`` pass unchanged."""
    from edc_lab.data.transforms import CenterCrop, RandomCrop

    crop = RandomCrop(size) if split == "train" else CenterCrop(size)

    def crop_if_larger(sample: dict) -> dict:
        height, width = sample["label"].shape[-2:]
        fits = height >= size and width >= size and (height, width) != (size, size)
        return crop(sample) if fits else sample

    return crop_if_larger
