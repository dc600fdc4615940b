"""GeoTIFF in, georeferenced class map out: sliding-window prediction over scenes of any size.

A trained model sees patches of a few hundred pixels; a real scene (WHU-OPT-SAR:
5556×3704) is far larger, and a tiny one may be smaller than a patch. So:

1. **read and align**: the optical GeoTIFF defines the output grid; the SAR
   GeoTIFF is resampled onto it *by georeference* (its own CRS, resolution and
   origin may differ; M3M-CR: 10 m SAR under 3 m optical, shifted 1 m / 2 m),
   with the data layer's readers (:mod:`edc_lab.data.io`);
2. **normalise** as the training data was (``convention``): ``"m3mcr"`` —
   optical reflectance ×10000 → [0, 1], SAR in dB clipped per polarization →
   [0, 1] (M3M-CR's published convention, also what ``edc-lab make-data``
   writes for synthetic scenes); ``"whu"`` — 8-bit values / 255; ``"unit"`` —
   float rasters already in [0, 1];
3. **slide** a window of ``window`` pixels with ``overlap`` pixels of overlap
   (the last window of a row / column is moved inwards to end at the border, so
   every pixel is covered; a scene smaller than the window is one window of
   its own size);
4. **blend**: each window's class probabilities (and cloud-free estimate) are
   weighted by a 2-D Hann taper sampled at pixel centres — near 1 in the
   centre, small but never zero at the edge, where a convolutional network sees
   the least context — and the weighted sum is divided by the summed weights.
   A model that outputs a constant everywhere therefore yields that constant;
5. **write** the arg-max class map as a single-band uint8 GeoTIFF with the
   optical image's CRS and transform (255 = no data where the optical has
   none), plus optionally the probabilities (float32, one band per class) and
   the cloud-free image (float32 reflectance in [0, 1], 4 bands).

Inputs are checked before any work (numeric options, the data type and value
range of each raster against ``convention``, the scene's size against memory)
and outputs never clobber: an output path that resolves to an input or to
another output (symbolic or hard link included) is refused, and every file is
written to a temporary name in its folder, then renamed (``os.replace``).

All of this is our choice (standard practice in remote-sensing inference); the
paper (arXiv 2603.20811) evaluates on fixed-size patches.

Example::

    edc-lab predict --checkpoint runs/student/last.pt --optical cloudy.tif --sar s1.tif --out classes.tif
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

from edc_lab.data.io import (
    Raster,
    align_to,
    check_convention,
    check_declared_size,
    check_output_paths,
    check_some_data,
    fill_from_nearest,
    nodata_as_nan,
    read_covering,
    read_geotiff,
    read_grid,
    same_grid,
)
from edc_lab.data.sample import IGNORE_INDEX, OPTICAL_BANDS, DataError

CONVENTIONS = ("m3mcr", "whu", "unit")
#: value convention (:func:`edc_lab.data.io.check_convention`) of (optical, SAR) per input convention
CONVENTION_CHECKS = {"m3mcr": ("reflectance", "db"), "whu": ("uint8", "uint8"), "unit": ("unit", "unit")}
#: accepted ranges of the numeric options (inclusive)
WINDOW_RANGE = (16, 8192)
BATCH_SIZE_RANGE = (1, 1024)
#: the normalisation a checkpoint's training data implies (synthetic scenes are written in the M3M-CR layout)
DEFAULT_CONVENTION = {"m3mcr": "m3mcr", "whu": "whu", "synthetic": "m3mcr"}


# --------------------------------------------------------------------------- windows and blending
def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Start offsets of windows of ``min(window, length)`` pixels covering ``range(length)``.

    Consecutive windows overlap by at least ``overlap`` pixels; the last one is
    moved inwards so that it ends exactly at ``length``.

    >>> window_starts(300, 256, 64)
    [0, 44]
    >>> window_starts(600, 256, 64)
    [0, 192, 344]
    """
    if window <= 0 or not 0 <= overlap < window:
        raise ValueError(f"window / overlap: expected window > 0 and 0 <= overlap < window, found {window} / {overlap}")
    if length <= window:
        return [0]
    stride = window - overlap
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def blend_weights(height: int, width: int) -> torch.Tensor:
    """(height, width) float64 Hann taper ``sin^2(pi (i + 1/2) / n)`` per axis, strictly positive."""

    def taper(n: int) -> torch.Tensor:
        return torch.sin(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n) ** 2

    return torch.outer(taper(height), taper(width))


@torch.no_grad()
def sliding_window_predict(
    model: torch.nn.Module,
    optical: torch.Tensor,
    sar: torch.Tensor,
    *,
    window: int = 256,
    overlap: int = 64,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor | None]:
    """Blend a model's predictions over overlapping windows of one scene.

    Args:
        model: forward contract of :func:`edc_lab.models.build_model`.
        optical: (4, H, W) in [0, 1]; sar: (Cs, H, W) in [0, 1], same grid.

    Returns ``probabilities`` (K, H, W) float32 (softmax, blended) and
    ``cloudfree`` (4, H, W) float32 or None for models without the head.
    """
    if optical.dim() != 3 or sar.dim() != 3 or optical.shape[-2:] != sar.shape[-2:]:
        raise ValueError(f"sliding_window_predict: expected (4, H, W) optical and (Cs, H, W) SAR on one grid, "
                         f"found {tuple(optical.shape)} and {tuple(sar.shape)}")
    model.eval()
    device = torch.device(device)
    height, width = optical.shape[-2:]
    window_h, window_w = min(window, height), min(window, width)
    weight = blend_weights(window_h, window_w)
    corners = [(row, col) for row in window_starts(height, window, overlap) for col in window_starts(width, window, overlap)]
    probability_sum = None
    cloudfree_sum = None
    weight_sum = torch.zeros(height, width, dtype=torch.float64)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else torch.autocast(device.type, enabled=False)
    for first in range(0, len(corners), batch_size):
        chunk = corners[first:first + batch_size]
        optical_batch = torch.stack([optical[:, r:r + window_h, c:c + window_w] for r, c in chunk]).to(device)
        sar_batch = torch.stack([sar[:, r:r + window_h, c:c + window_w] for r, c in chunk]).to(device)
        with autocast:
            outputs = model(optical_batch, sar_batch)
        probabilities = torch.softmax(outputs["logits"].double(), dim=1).cpu()
        cloudfree = outputs.get("cloudfree")
        if probability_sum is None:
            probability_sum = torch.zeros(probabilities.shape[1], height, width, dtype=torch.float64)
            if cloudfree is not None:
                cloudfree_sum = torch.zeros(cloudfree.shape[1], height, width, dtype=torch.float64)
        for i, (row, col) in enumerate(chunk):
            rows, cols = slice(row, row + window_h), slice(col, col + window_w)
            probability_sum[:, rows, cols] += probabilities[i] * weight
            weight_sum[rows, cols] += weight
            if cloudfree_sum is not None:
                cloudfree_sum[:, rows, cols] += cloudfree[i].double().cpu() * weight
    result = {"probabilities": (probability_sum / weight_sum).float(), "cloudfree": None}
    if cloudfree_sum is not None:
        result["cloudfree"] = (cloudfree_sum / weight_sum).float()
    return result


# --------------------------------------------------------------------------- reading the inputs
def read_inputs(
    optical_path: str | Path,
    sar_path: str | Path,
    *,
    convention: str = "m3mcr",
    sar_channels: int | None = None,
    fill_nonfinite: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Raster]:
    """Optical + SAR GeoTIFFs -> (optical (4, H, W), sar (Cs, H, W), nodata (H, W) bool, optical raster).

    The SAR is aligned to the optical grid by georeference (bilinear), pixels
    just outside its footprint take the nearest SAR value; values are
    normalised by ``convention`` (see the module docstring).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: expected one of {CONVENTIONS}, found {convention!r}")
    optical = read_geotiff(optical_path, "optical (blue, green, red, NIR)", bands=len(OPTICAL_BANDS),
                           require_crs=True, fill_nonfinite=fill_nonfinite)
    sar = read_covering(sar_path, "SAR", optical, bands=sar_channels, fill_nonfinite=fill_nonfinite)
    optical_convention, sar_convention = CONVENTION_CHECKS[convention]
    check_convention(optical, f"optical ('{convention}' convention)", optical_convention)
    check_convention(sar, f"SAR ('{convention}' convention)", sar_convention)
    sar = nodata_as_nan(sar, "SAR")
    if same_grid(sar, optical):
        sar_on_grid = sar.values
    else:
        sar_on_grid = align_to(sar, optical, resampling=_bilinear(), nodata=np.nan, what="SAR")
    sar_on_grid = fill_from_nearest(sar_on_grid, np.isnan(sar_on_grid).any(axis=0))
    nodata = check_some_data(optical, "optical")
    if convention == "m3mcr":
        from edc_lab.data.m3mcr import SAR_POLARIZATIONS, normalize_optical, normalize_sar

        if sar_on_grid.shape[0] != len(SAR_POLARIZATIONS):
            raise DataError(f"{sar.path}: expected {len(SAR_POLARIZATIONS)} SAR bands {SAR_POLARIZATIONS} in dB "
                            f"(M3M-CR convention), found {sar_on_grid.shape[0]}")
        optical_scaled = normalize_optical(optical.values)
        sar_scaled = normalize_sar(sar_on_grid)
    elif convention == "whu":
        optical_scaled = optical.values.astype(np.float32) / 255.0
        sar_scaled = np.clip(sar_on_grid / 255.0, 0.0, 1.0).astype(np.float32)
    else:
        optical_scaled = np.clip(optical.values.astype(np.float32), 0.0, 1.0)
        sar_scaled = np.clip(sar_on_grid.astype(np.float32), 0.0, 1.0)
    return optical_scaled, sar_scaled, nodata, optical


def _bilinear():
    from rasterio.enums import Resampling

    return Resampling.bilinear


# --------------------------------------------------------------------------- the whole job
def predict_geotiff(
    checkpoint: str | Path,
    optical_path: str | Path,
    sar_path: str | Path,
    out_path: str | Path,
    window: int = 256,
    overlap: int = 64,
    *,
    probabilities_path: str | Path | None = None,
    cloudfree_path: str | Path | None = None,
    convention: str | None = None,
    device: str = "auto",
    batch_size: int = 4,
    fill_nonfinite: float | None = None,
) -> dict:
    """Predict a class map for one optical + SAR scene and write it as a GeoTIFF.

    Returns a summary dict: ``shape`` (H, W), ``crs``, ``transform`` (6 numbers),
    ``windows`` (how many), ``class_counts`` ({class name: pixels}) and the paths written.
    """
    from edc_lab.data.writer import write_geotiff
    from edc_lab.train.checkpoint import load_checkpoint
    from edc_lab.train.distributed import resolve_device
    from edc_lab.train.loop import resolve_amp

    check_predict_options(window, overlap, batch_size, fill_nonfinite)
    if convention is not None and convention not in CONVENTIONS:
        raise ValueError(f"--convention: expected one of {CONVENTIONS}, found {convention!r}")
    check_output_paths(
        {"--out": out_path, "--probabilities": probabilities_path, "--cloudfree": cloudfree_path},
        {"--checkpoint": checkpoint, "--optical": optical_path, "--sar": sar_path},
    )
    torch_device = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, map_location=torch_device)
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    convention = convention or DEFAULT_CONVENTION.get(data.get("name"), "m3mcr")
    in_sar = int(model.build_args.get("in_sar", data.get("in_sar", 2)))
    num_classes = int(model.build_args.get("num_classes", 1))
    if cloudfree_path is not None and not getattr(model, "has_cloud_removal", True):
        raise ValueError(f"--cloudfree: expected a model with a cloud-removal head, found {checkpoint} holding "
                         f"{model.build_args.get('name')}, which has none")
    # the whole scene's blended probabilities live in memory (float64): refuse what cannot fit, before reading
    grid_header = read_grid(optical_path, "optical (blue, green, red, NIR)")
    check_declared_size(grid_header.path, "optical scene: blended class probabilities and weights in float64",
                        num_classes + (len(OPTICAL_BANDS) if cloudfree_path else 0) + 1, *grid_header.shape, "float64")
    optical, sar, nodata, grid = read_inputs(optical_path, sar_path, convention=convention, sar_channels=in_sar,
                                             fill_nonfinite=fill_nonfinite)
    outputs = sliding_window_predict(
        model, torch.from_numpy(optical), torch.from_numpy(sar), window=window, overlap=overlap,
        batch_size=batch_size, device=torch_device, amp_dtype=resolve_amp("auto", torch_device),
    )
    probabilities = outputs["probabilities"]
    if cloudfree_path is not None and outputs["cloudfree"] is None:  # check before writing anything
        raise ValueError(f"--cloudfree: expected a model with a cloud-removal head, found {checkpoint} holding "
                         f"{model.build_args.get('name')}, which returns none")
    classes = probabilities.argmax(dim=0).numpy().astype(np.uint8)
    classes[nodata] = IGNORE_INDEX
    write_geotiff(out_path, classes[None], crs=grid.crs, transform=grid.transform, nodata=IGNORE_INDEX)
    class_names = list(data.get("class_names") or [])
    if len(class_names) != probabilities.shape[0]:  # missing or inconsistent metadata: number the classes
        class_names = [f"class {k}" for k in range(probabilities.shape[0])]
    written = {"out": str(out_path)}
    if probabilities_path is not None:
        write_geotiff(probabilities_path, probabilities.numpy(), crs=grid.crs, transform=grid.transform,
                      descriptions=class_names)
        written["probabilities"] = str(probabilities_path)
    if cloudfree_path is not None:
        write_geotiff(cloudfree_path, outputs["cloudfree"].clamp(0, 1).numpy(), crs=grid.crs,
                      transform=grid.transform, descriptions=OPTICAL_BANDS)
        written["cloudfree"] = str(cloudfree_path)
    height, width = classes.shape
    counts = np.bincount(classes[classes != IGNORE_INDEX].ravel(), minlength=len(class_names))
    windows = len(window_starts(height, window, overlap)) * len(window_starts(width, window, overlap))
    return {
        "shape": (height, width),
        "crs": str(grid.crs),
        "transform": list(grid.transform)[:6],
        "windows": windows,
        "convention": convention,
        "class_counts": {name: int(count) for name, count in zip(class_names, counts)},
        "nodata_pixels": int(nodata.sum()),
        **written,
    }


def check_predict_options(window, overlap, batch_size, fill_nonfinite=None) -> None:
    """One ValueError naming the first bad numeric option (the API and the CLI share it)."""
    low, high = WINDOW_RANGE
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or not low <= window <= high:
        raise ValueError(f"--window: expected an integer in [{low}, {high}] pixels, found {window!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < window:
        raise ValueError(f"--overlap: expected an integer with 0 <= overlap < window ({window}) pixels, "
                         f"found {overlap!r}")
    low, high = BATCH_SIZE_RANGE
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or not low <= batch_size <= high:
        raise ValueError(f"--batch-size: expected an integer in [{low}, {high}], found {batch_size!r}")
    if fill_nonfinite is not None and not (isinstance(fill_nonfinite, (int, float)) and math.isfinite(fill_nonfinite)):
        raise ValueError(f"--fill-nonfinite: expected a finite number, found {fill_nonfinite!r}")


# --------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edc_lab.cli import device_name, float_in, int_in

    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint written by edc-lab train")
    parser.add_argument("--optical", required=True, metavar="OPT.tif", help="optical GeoTIFF (4 bands: B, G, R, NIR)")
    parser.add_argument("--sar", required=True, metavar="SAR.tif", help="SAR GeoTIFF (any grid overlapping the optical)")
    parser.add_argument("--out", required=True, metavar="MAP.tif", help="output class map (uint8, optical grid)")
    parser.add_argument("--window", type=int_in(*WINDOW_RANGE), default=256, help="window size in pixels (default 256)")
    parser.add_argument("--overlap", type=int_in(0), default=64, help="overlap between windows, < --window (default 64)")
    parser.add_argument("--probabilities", metavar="P.tif", help="also write the class probabilities (float32)")
    parser.add_argument("--cloudfree", metavar="CF.tif", help="also write the cloud-free estimate (float32, [0, 1])")
    parser.add_argument("--convention", choices=CONVENTIONS,
                        help="input scaling (default: the checkpoint's dataset; synthetic -> m3mcr)")
    parser.add_argument("--batch-size", type=int_in(*BATCH_SIZE_RANGE), default=4,
                        help="windows per forward pass (default 4)")
    parser.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--fill-nonfinite", type=float_in(), metavar="VALUE", help="fill NaN/Inf input pixels with VALUE")


def run(args: argparse.Namespace) -> int:
    from edc_lab.train.checkpoint import CheckpointError

    try:
        summary = predict_geotiff(
            args.checkpoint, args.optical, args.sar, args.out, args.window, args.overlap,
            probabilities_path=args.probabilities, cloudfree_path=args.cloudfree, convention=args.convention,
            device=args.device, batch_size=args.batch_size, fill_nonfinite=args.fill_nonfinite,
        )
    except (ValueError, DataError, CheckpointError, OSError) as error:
        print(f"edc-lab predict: error: {error}", file=sys.stderr)
        return 2
    height, width = summary["shape"]
    print(f"wrote {summary['out']}: {height}x{width} px, {summary['windows']} window(s), CRS {summary['crs']}")
    total = max(1, sum(summary["class_counts"].values()))
    print("classes: " + ", ".join(f"{name} {100 * count / total:.1f}%" for name, count in summary["class_counts"].items()))
    return 0
