"""The canonical sample: one optical–SAR scene as an ``xarray.Dataset``.

Every data source of edc_lab (synthetic scenes, M3M-CR, WHU-OPT-SAR) returns the
same structure (DESIGN §3), so notebooks, transforms and the training loop never
care where a scene came from:

=================  ======================  =======  =====================================
variable           dims                    dtype    meaning
=================  ======================  =======  =====================================
``optical``        (band, y, x)            float32  cloudy optical, [0, 1]; band =
                                                    blue, green, red, nir
``optical_clear``  (band, y, x)            float32  cloud-free optical where known
``sar``            (polarization, y, x)    float32  SAR scaled to [0, 1] (e.g. VV, VH)
``label``          (y, x)                  uint8    class index, 255 = ignore
``cloud_mask``     (y, x)                  bool     True where cloud covers the optical
=================  ======================  =======  =====================================

The CRS and affine transform are attached with rioxarray (``ds.rio.crs``,
``ds.rio.transform()``). ``attrs`` name the dataset, the class names and their
colours (hex strings).

A *torch sample* is the same content as a dict of tensors (TorchGeo's
convention): ``optical`` / ``optical_clear`` / ``sar`` float32 (C, H, W),
``label`` int64 (H, W), ``cloud_mask`` float32 (H, W) in {0, 1}.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr

OPTICAL_BANDS: tuple[str, ...] = ("blue", "green", "red", "nir")
IGNORE_INDEX: int = 255

#: WHU-OPT-SAR's seven classes (label codes 10..70 -> 0..6); also the synthetic set.
WHU_CLASSES: tuple[str, ...] = ("farmland", "city", "village", "water", "forest", "road", "others")
WHU_COLORS: tuple[str, ...] = ("#e6c35c", "#d7191c", "#f28e2b", "#2b83ba", "#1a9641", "#4d4d4d", "#b3b3b3")

#: M3M-CR land-cover "level 1" classes (from ESA WorldCover codes).
M3MCR_CLASSES: tuple[str, ...] = ("forest", "rangeland", "agriculture", "urban", "barren", "water")
M3MCR_COLORS: tuple[str, ...] = ("#1a9641", "#a6d96a", "#e6c35c", "#d7191c", "#c2a482", "#2b83ba")


class DataError(ValueError):
    """Bad input data: the message names the file, what was expected and what was found."""


def make_sample(
    optical: np.ndarray,
    sar: np.ndarray,
    label: np.ndarray,
    cloud_mask: np.ndarray,
    optical_clear: np.ndarray | None = None,
    *,
    polarizations: Sequence[str] = ("VV", "VH"),
    crs=None,
    transform=None,
    dataset: str = "unknown",
    class_names: Sequence[str] = WHU_CLASSES,
    class_colors: Sequence[str] = WHU_COLORS,
    extra: Mapping[str, xr.DataArray | tuple] | None = None,
    attrs: Mapping[str, object] | None = None,
) -> xr.Dataset:
    """Assemble a canonical sample from arrays already on one grid.

    Args:
        optical: (4, H, W) cloudy optical in [0, 1].
        sar: (Cs, H, W) SAR in [0, 1], one plane per entry of ``polarizations``.
        label: (H, W) class indices, 255 = ignore.
        cloud_mask: (H, W) boolean (or 0/1) cloud mask.
        optical_clear: (4, H, W) cloud-free optical, or None when unknown.
        crs, transform: georeference (anything rioxarray accepts; an
            ``affine.Affine``). Without a transform, pixel coordinates are used.
        extra: further variables, e.g. ``{"cloud_opacity": (("y", "x"), array)}``.
    """
    optical = np.asarray(optical, dtype=np.float32)
    sar = np.asarray(sar, dtype=np.float32)
    if optical.ndim != 3 or optical.shape[0] != len(OPTICAL_BANDS):
        raise DataError(f"optical: expected shape (4, H, W) (blue, green, red, nir), found {optical.shape}")
    height, width = optical.shape[1:]
    if sar.ndim != 3 or sar.shape[1:] != (height, width) or sar.shape[0] != len(polarizations):
        raise DataError(
            f"sar: expected shape ({len(polarizations)}, {height}, {width}) for polarizations "
            f"{tuple(polarizations)}, found {sar.shape}"
        )
    label = np.asarray(label)
    cloud_mask = np.asarray(cloud_mask)
    for name, array in (("label", label), ("cloud_mask", cloud_mask)):
        if array.shape != (height, width):
            raise DataError(f"{name}: expected shape ({height}, {width}) (the optical grid), found {array.shape}")

    if transform is not None:
        # Pixel-centre coordinates from the affine transform (north-up grids).
        xs = transform.c + transform.a * (np.arange(width) + 0.5)
        ys = transform.f + transform.e * (np.arange(height) + 0.5)
    else:
        xs = np.arange(width, dtype=np.float64) + 0.5
        ys = np.arange(height, dtype=np.float64) + 0.5

    data_vars: dict[str, tuple] = {
        "optical": (("band", "y", "x"), optical),
        "sar": (("polarization", "y", "x"), sar),
        "label": (("y", "x"), label.astype(np.uint8)),
        "cloud_mask": (("y", "x"), cloud_mask.astype(bool)),
    }
    if optical_clear is not None:
        optical_clear = np.asarray(optical_clear, dtype=np.float32)
        if optical_clear.shape != optical.shape:
            raise DataError(f"optical_clear: expected shape {optical.shape}, found {optical_clear.shape}")
        data_vars["optical_clear"] = (("band", "y", "x"), optical_clear)
    for name, value in (extra or {}).items():
        data_vars[name] = value

    ds = xr.Dataset(
        data_vars,
        coords={"band": list(OPTICAL_BANDS), "polarization": list(polarizations), "y": ys, "x": xs},
        attrs={
            "dataset": dataset,
            "class_names": list(class_names),
            "class_colors": list(class_colors),
            **(attrs or {}),
        },
    )
    if crs is not None:
        ds = ds.rio.write_crs(crs)
    if transform is not None:
        ds = ds.rio.write_transform(transform)
    return ds


def to_torch(ds: xr.Dataset) -> dict[str, torch.Tensor]:
    """Canonical ``xarray.Dataset`` -> dict of tensors (same keys).

    ``optical_clear`` falls back to ``optical`` when the dataset has none, so a
    batch always has the key; ``has_clear`` says whether it was real.
    """
    sample = {
        "optical": torch.from_numpy(np.ascontiguousarray(ds["optical"].values, dtype=np.float32)),
        "sar": torch.from_numpy(np.ascontiguousarray(ds["sar"].values, dtype=np.float32)),
        "label": torch.from_numpy(ds["label"].values.astype(np.int64)),
        "cloud_mask": torch.from_numpy(ds["cloud_mask"].values.astype(np.float32)),
    }
    has_clear = "optical_clear" in ds
    clear = ds["optical_clear"].values if has_clear else ds["optical"].values
    sample["optical_clear"] = torch.from_numpy(np.ascontiguousarray(clear, dtype=np.float32))
    sample["has_clear"] = torch.tensor(has_clear)
    return sample


def from_torch(sample: Mapping[str, torch.Tensor], like: xr.Dataset | None = None) -> xr.Dataset:
    """Dict of tensors -> canonical ``xarray.Dataset`` (georeference copied from ``like``)."""
    kwargs: dict[str, object] = {}
    if like is not None:
        kwargs = dict(
            polarizations=list(like["polarization"].values),
            crs=like.rio.crs,
            transform=like.rio.transform() if like.rio.crs is not None else None,
            dataset=like.attrs.get("dataset", "unknown"),
            class_names=like.attrs.get("class_names", WHU_CLASSES),
            class_colors=like.attrs.get("class_colors", WHU_COLORS),
        )
    elif sample["sar"].shape[0] != 2:
        kwargs["polarizations"] = [f"sar{i}" for i in range(sample["sar"].shape[0])]
    clear = sample.get("optical_clear")
    return make_sample(
        sample["optical"].numpy(),
        sample["sar"].numpy(),
        sample["label"].numpy(),
        sample["cloud_mask"].numpy() > 0.5,
        None if clear is None else clear.numpy(),
        **kwargs,
    )


def check_finite(array: np.ndarray, what: str, *, fill: float | None = None) -> np.ndarray:
    """Refuse (``fill=None``) or fill non-finite pixels, naming ``what`` and the count.

    Returns the (possibly filled) array; a filled array gets a warning that says
    how many pixels were replaced.
    """
    bad = ~np.isfinite(array)
    count = int(bad.sum())
    if count == 0:
        return array
    if fill is None:
        raise DataError(
            f"{what}: expected finite values, found {count} NaN/Inf pixel values "
            f"({count / array.size:.2%} of the array); pass fill_nonfinite=<value> to fill them"
        )
    import warnings

    warnings.warn(f"{what}: filled {count} NaN/Inf pixel values with {fill}", stacklevel=2)
    array = array.copy()
    array[bad] = fill
    return array
