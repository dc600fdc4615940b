"""Plots of optical–SAR samples: true colour, false colour, SAR, labels, cloud masks.

The idea in plain words
-----------------------
Reflectance and backscatter are small numbers with long tails, so showing them
raw gives dark, washed-out pictures. The usual remedy (our choice here, common
remote-sensing practice) is a *percentile stretch*: map the 2nd percentile to
black and the 98th to white, clip the rest. True colour shows red, green, blue;
*false colour* shows NIR, red, green as RGB, so vegetation (bright in NIR)
turns red and water (dark in NIR) black. Labels are coloured with one fixed
palette for the whole series (``label_rgb``, legend from ``legend_handles``),
with the ignore index shown transparent.

The one stretch for optical images
----------------------------------
Every optical picture of edc_lab (the notebooks, ``plot_sample``,
``edc_lab.viz.model_plots``) goes through ``rgb``: the 2nd–98th percentile,
**one range for the three bands** (a range per band would tint the picture:
a hazy scene would lose its blue cast). Where the cloud mask is known the
range is taken from the **clear pixels** only (``cloud_mask=``): clouds
saturate to white and the ground that shows through — hazy or not — keeps its
full contrast. Why not the alternatives: the image's own range lets the clouds
take the top percentiles, so the ground turns dark; the cloud-free image's
range (``reference=optical_clear``) shows a hazy scene almost white, since haze
brightens every pixel (M3M-CR's real tile: blue 0.16 outside its mask against
0.06 cloud-free). Notebook 01 shows the three side by side. One deliberate
exception: images compared with the truth (the cloud-free reconstruction in
notebook 05) all take the truth's range, so equal colours mean equal reflectance.

SAR is shown in the unit of the data: the canonical sample scales VV and VH
linearly from a fixed dB range (``SAR_DB_RANGE``: M3M-CR's convention, also
used by the synthetic scenes), so ``plot_sample`` converts them back and puts
a colourbar in **dB**; any other SAR plane (e.g. WHU-OPT-SAR's 8-bit GF-3 image)
is labelled "normalised backscatter (0–1)".

Every function accepts numpy arrays, torch tensors or ``xarray`` objects and
never changes its input. Figures stay small (width <= 10 in, at most three
panels a row) for notebooks that are executed in CI and read on the web.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from edc_lab.data.m3mcr import SAR_CLIP_DB as SAR_DB_RANGE  # dB range mapped linearly to [0, 1] per polarization
from edc_lab.data.sample import IGNORE_INDEX, OPTICAL_BANDS, WHU_CLASSES, WHU_COLORS

__all__ = [
    "SAR_DB_RANGE", "MIN_CLEAR_SHARE", "to_numpy", "stretch", "rgb", "false_color", "label_rgb", "legend_handles", "sar_display",
    "plot_sample",
]


def to_numpy(array) -> np.ndarray:
    """numpy view of a numpy array, torch tensor (any device) or xarray object."""
    if hasattr(array, "detach"):  # torch.Tensor
        return array.detach().cpu().numpy()
    if hasattr(array, "values") and not isinstance(array, np.ndarray):  # xarray.DataArray
        return np.asarray(array.values)
    return np.asarray(array)


def stretch(
    image: np.ndarray,
    percentiles: tuple[float, float] = (2, 98),
    *,
    per_channel: bool = True,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """Percentile stretch of a (C, H, W) or (H, W) array to [0, 1] (float32).

    Args:
        image: the values to show.
        percentiles: (low, high) percentiles mapped to 0 and 1; values beyond are clipped.
        per_channel: one range per channel (True) or one range for all
            channels (False, keeps the hue of a colour composite).
        reference: take the percentiles from this array (same shape) instead,
            e.g. the clear image, so that clouds saturate and the ground keeps
            its clear-sky contrast.

    Non-finite values are ignored for the percentiles and shown as 0. A
    constant channel becomes 0.
    """
    low_q, high_q = percentiles
    if not 0 <= low_q < high_q <= 100:
        raise ValueError(f"stretch: expected percentiles (low, high) with 0 <= low < high <= 100, found {percentiles}")
    image = np.asarray(image, dtype=np.float32)
    reference = image if reference is None else np.asarray(reference, dtype=np.float32)
    if reference.shape != image.shape:
        raise ValueError(f"stretch: expected a reference of shape {image.shape}, found {reference.shape}")
    planes = image[None] if image.ndim == 2 else image
    reference_planes = reference[None] if reference.ndim == 2 else reference
    groups = [[index] for index in range(len(planes))] if per_channel else [list(range(len(planes)))]
    out = np.zeros_like(planes)
    for group in groups:
        finite = reference_planes[group][np.isfinite(reference_planes[group])]
        if finite.size == 0:
            continue
        low, high = np.percentile(finite, [low_q, high_q])
        if high > low:
            out[group] = np.clip((planes[group] - low) / (high - low), 0.0, 1.0)
    out[~np.isfinite(out)] = 0.0
    return out[0] if image.ndim == 2 else out


def _bands(optical, bands: Sequence[str]) -> np.ndarray:
    optical = to_numpy(optical)
    if optical.ndim != 3 or optical.shape[0] != len(OPTICAL_BANDS):
        raise ValueError(f"optical: expected shape (4, H, W) with bands {OPTICAL_BANDS}, found {optical.shape}")
    unknown = [band for band in bands if band not in OPTICAL_BANDS]
    if unknown:
        raise ValueError(f"optical: expected bands from {OPTICAL_BANDS}, found {unknown}")
    return optical[[OPTICAL_BANDS.index(band) for band in bands]]


#: below this share of clear pixels, ``rgb(cloud_mask=...)`` falls back to the image's own range
MIN_CLEAR_SHARE = 0.02


def _clear_reference(image: np.ndarray, cloud_mask) -> np.ndarray | None:
    """``image (C, H, W)`` with its cloudy pixels set to NaN (ignored by the percentiles), or None if too few are clear."""
    mask = np.asarray(to_numpy(cloud_mask)) != 0
    if mask.shape != image.shape[-2:]:
        raise ValueError(f"cloud_mask: expected shape {image.shape[-2:]}, found {mask.shape}")
    if (~mask).mean() < MIN_CLEAR_SHARE:
        return None
    return np.where(mask[None], np.nan, image).astype(np.float32)


def rgb(
    optical,
    bands: Sequence[str] = ("red", "green", "blue"),
    percentiles: tuple[float, float] = (2, 98),
    *,
    reference=None,
    cloud_mask=None,
    per_channel: bool = False,
) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: the chosen ``bands`` of a (4, H, W) optical image, stretched.

    The series' one stretch (see the module docstring): one range for the three bands
    (``per_channel=False``) keeps colours natural. The range comes from ``cloud_mask``'s clear
    pixels when a ``cloud_mask (H, W)`` is given (and at least 2 % of the pixels are clear),
    from ``reference`` (another (4, H, W) image, e.g. ``optical_clear``) when that is given,
    else from the image itself. Not both.
    """
    if reference is not None and cloud_mask is not None:
        raise ValueError("rgb: expected reference or cloud_mask, found both")
    image = _bands(optical, bands)
    if cloud_mask is not None:
        reference = _clear_reference(image, cloud_mask)
    elif reference is not None:
        reference = _bands(reference, bands)
    stretched = stretch(image, percentiles, per_channel=per_channel, reference=reference)
    return np.moveaxis(stretched, 0, -1)


def false_color(optical, percentiles: tuple[float, float] = (2, 98), *, reference=None, cloud_mask=None) -> np.ndarray:
    """(H, W, 3) NIR-red-green false colour: vegetation red, water black, cities grey-cyan (stretch as ``rgb``)."""
    return rgb(optical, ("nir", "red", "green"), percentiles, reference=reference, cloud_mask=cloud_mask)


def _hex_to_rgb(color) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(color)


def label_rgb(
    label, colors: Sequence = WHU_COLORS, ignore: int = IGNORE_INDEX, ignore_color=(0.0, 0.0, 0.0, 0.0)
) -> np.ndarray:
    """(H, W, 4) float32 RGBA image of a (H, W) label map.

    Args:
        label: (H, W) integer class indices.
        colors: one matplotlib colour per class (hex strings as in ``WHU_COLORS``).
        ignore: the ignore index; its pixels get ``ignore_color`` (transparent
            black by default, so the axes background shows through).

    Raises:
        ValueError: a label value that is neither a class index nor ``ignore``.
    """
    label = to_numpy(label)
    if label.ndim != 2:
        raise ValueError(f"label: expected shape (H, W), found {label.shape}")
    label = label.astype(np.int64)
    ignored = label == ignore
    valid = label[~ignored]
    bad = valid[(valid < 0) | (valid >= len(colors))]
    if bad.size:
        raise ValueError(
            f"label: expected class indices 0..{len(colors) - 1} or {ignore} (ignore), "
            f"found {sorted(set(bad.tolist()))[:10]}"
        )
    palette = np.array([(*_hex_to_rgb(c), 1.0) for c in colors] + [tuple(ignore_color)], dtype=np.float32)
    return palette[np.where(ignored, len(colors), label)]


def legend_handles(class_names: Sequence[str] = WHU_CLASSES, colors: Sequence = WHU_COLORS) -> list:
    """One coloured ``matplotlib.patches.Patch`` per class, for ``ax.legend(handles=...)``."""
    from matplotlib.patches import Patch

    if len(class_names) != len(colors):
        raise ValueError(f"legend_handles: expected one colour per class ({len(class_names)}), found {len(colors)}")
    return [Patch(facecolor=color, edgecolor="none", label=name) for name, color in zip(class_names, colors)]


def _sample_arrays(sample) -> dict[str, np.ndarray]:
    """optical, sar, label, cloud_mask (+ polarization names) from a Dataset or a torch sample dict."""
    if hasattr(sample, "data_vars"):  # xarray.Dataset
        names = ("optical", "optical_clear", "sar", "label", "cloud_mask")
        arrays = {name: np.asarray(sample[name].values) for name in names if name in sample}
        arrays["polarizations"] = [str(p) for p in sample["polarization"].values] if "sar" in sample else []
        return arrays
    if isinstance(sample, Mapping):
        names = ("optical", "optical_clear", "sar", "label", "cloud_mask")
        arrays = {name: to_numpy(sample[name]) for name in names if name in sample}
        if "sar" in arrays:  # a dict does not name its polarizations: VV (, VH) by convention
            channels = arrays["sar"].shape[0]
            arrays["polarizations"] = ["VV", "VH"][:channels] if channels <= 2 else [str(i) for i in range(channels)]
        return arrays
    raise ValueError(f"plot_sample: expected an xarray.Dataset or a dict of tensors, found {type(sample).__name__}")


def sar_display(plane, polarization: str) -> tuple[np.ndarray, dict, str]:
    """One SAR plane ready for ``imshow``: (values, imshow kwargs, colourbar label).

    A VV or VH plane of the canonical sample (scaled from ``SAR_DB_RANGE``) is converted
    back to dB; any other plane keeps its 0–1 scale. The grey range is the 2nd–98th
    percentile either way, so the picture is the same; only the colourbar's unit differs.
    """
    values = np.asarray(to_numpy(plane), dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"sar_display: expected one plane (H, W), found {values.shape}")
    if polarization in SAR_DB_RANGE:
        low, high = SAR_DB_RANGE[polarization]
        values = low + values * (high - low)
        label = "backscatter (dB)"
    else:
        label = "normalised backscatter (0–1)"
    finite = values[np.isfinite(values)]
    vmin, vmax = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
    return values, {"cmap": "gray", "vmin": float(vmin), "vmax": float(max(vmax, vmin + 1e-6))}, label


def plot_sample(sample, axes=None, class_names: Sequence[str] | None = None, class_colors: Sequence | None = None):
    """Six panels of one sample in two rows: true colour, false colour, label (with legend);
    SAR VV, SAR VH (colourbars in dB, see ``sar_display``), cloud mask.

    Args:
        sample: a canonical ``xarray.Dataset`` or a torch sample dict (tensors
            (C, H, W) / (H, W), batch dimension removed).
        axes: six matplotlib axes to draw into (in the order above); a new
            (8.4 x 5 in) figure when None.
        class_names, class_colors: the class set; taken from the Dataset's
            attrs when it has them, WHU-OPT-SAR's seven classes otherwise.

    Returns:
        The matplotlib figure. A single-polarization sample shows "VH: n/a".
        Optical panels use the module's one stretch (``rgb``), its range taken
        from the clear pixels when the sample has a cloud mask.
    """
    import matplotlib.pyplot as plt

    arrays = _sample_arrays(sample)
    attrs = getattr(sample, "attrs", {}) or {}
    class_names = list(class_names or attrs.get("class_names", WHU_CLASSES))
    class_colors = list(class_colors or attrs.get("class_colors", WHU_COLORS))
    if axes is None:
        figure, axes = plt.subplots(2, 3, figsize=(8.4, 5), layout="constrained")
    else:
        axes = list(np.ravel(axes))
        if len(axes) != 6:
            raise ValueError(f"plot_sample: expected 6 axes, found {len(axes)}")
        figure = axes[0].figure
    axes = list(np.ravel(axes))

    panels = []  # (title, image, imshow kwargs, colourbar label or None)
    if "optical" in arrays:
        # The range of the clear pixels where the mask is known: clouds saturate, the ground stays readable.
        mask = arrays.get("cloud_mask")
        panels += [
            ("true colour", rgb(arrays["optical"], cloud_mask=mask), {}, None),
            ("false colour (NIR R G)", false_color(arrays["optical"], cloud_mask=mask), {}, None),
        ]
    else:
        panels += [("optical: n/a", None, {}, None), ("false colour: n/a", None, {}, None)]
    if "label" in arrays:
        panels.append(("label", label_rgb(arrays["label"], class_colors), {"interpolation": "nearest"}, None))
    else:
        panels.append(("label: n/a", None, {}, None))
    sar = arrays.get("sar")
    names = arrays.get("polarizations", [])
    for channel in range(2):
        if sar is not None and channel < sar.shape[0]:
            values, kwargs, unit = sar_display(sar[channel], names[channel])
            panels.append((f"SAR {names[channel]}", values, kwargs, unit))
        else:
            panels.append((f"SAR {('VV', 'VH')[channel]}: n/a", None, {}, None))
    if "cloud_mask" in arrays:
        mask = np.asarray(arrays["cloud_mask"], dtype=np.float32)
        panels.append((f"cloud mask ({mask.mean():.0%})", mask,
                       {"cmap": "gray", "vmin": 0, "vmax": 1, "interpolation": "nearest"}, None))
    else:
        panels.append(("cloud mask: n/a", None, {}, None))

    for ax, (title, image, kwargs, unit) in zip(axes, panels):
        if image is not None:
            shown = ax.imshow(image, **kwargs)
            if unit is not None:
                figure.colorbar(shown, ax=ax, shrink=0.8, label=unit)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if image is None:  # nothing to show: no empty frame
            ax.set_frame_on(False)
    if "cloud_mask" in arrays:
        axes[5].set_xlabel("white = cloud", fontsize=9)
    if "label" in arrays:
        axes[2].legend(
            handles=legend_handles(class_names, class_colors),
            loc="center left",
            bbox_to_anchor=(1.02, 0.5),
            fontsize=8,
            frameon=False,
            handlelength=1.0,
        )
    return figure
