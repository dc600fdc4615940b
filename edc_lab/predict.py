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
   the cloud-free image (float32 reflectance in [0, 1], 4 bands); tiled
   (256²), DEFLATE-compressed, with overviews on request (``--overviews``), so
   GIS tools open a zoom fast.

**Streaming** (the default). Steps 1–5 run a band of rows at a time: the
windows are visited row by row, the inputs are read with rasterio windowed
reads as the windows reach them (each row once; the SAR of those rows aligned
onto them), and as soon as no later window touches a row, its blended values
are final and go to the output files (:func:`blend_rows`,
:class:`edc_lab.data.writer.RowWriter`). Memory is then set by ``window``,
``batch_size`` and the scene's *width*, not its height: about two
window-heights of rows are held. ``--in-memory`` reads and blends the whole
scene first (the earlier behaviour, kept for comparison); both write the same
files, bit for bit (tested at sizes that are not multiples of the window, with
the SAR on another grid). Many scenes, and many processes under ``torchrun``:
:mod:`edc_lab.scenes`.

Inputs are checked before any work (numeric options, headers, band counts,
the overlap of optical and SAR, the scene's size against memory) and as they are
read (the data type and value range of each band of rows against
``convention``; a failure then names the rows), and outputs never clobber
(:func:`check_prediction_outputs`): an output path must be a regular file or
new (a device such as ``/dev/null``, a FIFO or a folder is refused), must not
resolve to an input or to another output (symbolic or hard link included), and
an existing one must be a TIFF (an earlier prediction). Every file is written
to a temporary name in its folder, then renamed (``os.replace``); SIGINT and
SIGTERM remove the temporary files before the command exits (130 / 143), and
the next write of an output removes those a SIGKILL left
(:mod:`edc_lab.data.outputs`).

All of this is our choice (standard practice in remote-sensing inference); the
paper (arXiv 2603.20811) evaluates on fixed-size patches.

Example::

    edc-lab predict --checkpoint runs/student/last.pt --optical cloudy.tif --sar s1.tif --out classes.tif
    torchrun --nproc-per-node 2 -m edc_lab.cli predict --checkpoint runs/student/last.pt \\
        --scenes scenes.csv --out-dir maps/
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from edc_lab.data.io import (
    MIN_OVERLAP,
    Grid,
    Raster,
    align_to,
    check_alignable,
    check_convention,
    check_declared_size,
    check_header,
    check_output_paths,
    check_some_data,
    fill_from_nearest,
    nodata_as_nan,
    nodata_mask,
    open_raster,
    read_covering,
    read_grid,
    read_geotiff,
    same_grid,
)
from edc_lab.data.outputs import Interrupted, check_output_file, check_replaceable, interruptible, is_tiff
from edc_lab.data.sample import IGNORE_INDEX, OPTICAL_BANDS, DataError

CONVENTIONS = ("m3mcr", "whu", "unit")
#: value convention (:func:`edc_lab.data.io.check_convention`) of (optical, SAR) per input convention
CONVENTION_CHECKS = {"m3mcr": ("reflectance", "db"), "whu": ("uint8", "uint8"), "unit": ("unit", "unit")}
#: accepted ranges of the numeric options (inclusive)
WINDOW_RANGE = (16, 8192)
BATCH_SIZE_RANGE = (1, 1024)
#: the normalisation a checkpoint's training data implies (synthetic scenes are written in the M3M-CR layout)
DEFAULT_CONVENTION = {"m3mcr": "m3mcr", "whu": "whu", "synthetic": "m3mcr"}
#: what the optical file is, in messages
OPTICAL_WHAT = "optical (blue, green, red, NIR)"
#: the largest scene streamed (pixels): 2^31, e.g. 46340² or four Sentinel-2 tiles; a larger header is refused
MAX_STREAM_PIXELS = 2**31


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


class RollingRows:
    """Rows ``[lo, hi)`` of a (C, rows, W) array, in one buffer reused as rows come and go.

    :meth:`append` adds rows below (data, or zeros), :meth:`forget` drops rows
    above; the live rows are moved to the top of the buffer when it runs out of
    room, and the buffer grows only when the live rows need more. So a scene
    streamed top to bottom reuses one allocation of about the largest span of
    rows in use, instead of a new one per band (which would hold the old one
    until freed: twice the memory).
    """

    def __init__(self, channels: int, width: int, dtype: torch.dtype) -> None:
        self.buffer = torch.zeros(channels, 0, width, dtype=dtype)
        self.lo = self.hi = 0
        self.start = 0  # buffer row of scene row `lo`

    def rows(self) -> torch.Tensor:
        """The live rows ``lo..hi-1`` (a view)."""
        return self.buffer[:, self.start:self.start + self.hi - self.lo]

    def forget(self, row: int) -> None:
        """Drop the rows above ``row``."""
        if row >= self.hi:
            self.lo = self.hi = row
            self.start = 0
        elif row > self.lo:
            self.start += row - self.lo
            self.lo = row

    def append(self, rows: torch.Tensor | int) -> None:
        """Add rows below ``hi``: a (C, n, W) tensor, or ``n`` rows of zeros."""
        count = rows if isinstance(rows, int) else rows.shape[1]
        live = self.hi - self.lo
        if self.start + live + count > self.buffer.shape[1]:
            if live + count > self.buffer.shape[1]:  # grow: a new buffer holding the live rows
                grown = self.buffer.new_empty(self.buffer.shape[0], live + count, self.buffer.shape[2])
                grown[:, :live] = self.rows()
                self.buffer = grown
            else:  # move the live rows to the top, in pieces that never overlap their destination
                step = max(1, self.start)
                for first in range(0, live, step):
                    last = min(live, first + step)
                    self.buffer[:, first:last] = self.buffer[:, self.start + first:self.start + last]
            self.start = 0
        target = self.buffer[:, self.start + live:self.start + live + count]
        if isinstance(rows, int):
            target.zero_()
        else:
            target.copy_(rows)
        self.hi += count


@torch.no_grad()
def blend_rows(
    model: torch.nn.Module,
    height: int,
    width: int,
    read_rows: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
    *,
    window: int = 256,
    overlap: int = 64,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    cloudfree: bool = True,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """Blend a model's predictions over overlapping windows, yielding rows as soon as they are final.

    The windows are visited row by row (``window_starts`` of the rows, then of
    the columns), up to ``batch_size`` windows of one row at a time. After the
    last batch of a row of windows, the rows above the next row of windows are
    touched by no later window: they are divided by their summed weights and
    yielded as ``(first_row, probabilities (K, n, W) float32, cloudfree (4, n,
    W) float32 or None)``, top to bottom, then forgotten. So memory holds one
    window-height of rows (inputs and float64 sums) whatever the scene's
    height, and :func:`sliding_window_predict` (the whole scene in
    memory) is this generator collected: both give the same numbers, bit for bit.

    Args:
        read_rows: ``(row0, row1) -> (optical (4, n, W), SAR (Cs, n, W))`` in
            [0, 1], rows ``row0..row1-1`` of the scene, each row asked for once.
        cloudfree: blend the cloud-free estimate too (when the model returns one);
            False yields None for it and saves its buffers.
    """
    model.eval()
    device = torch.device(device)
    window_h, window_w = min(window, height), min(window, width)
    weight = blend_weights(window_h, window_w)
    columns = window_starts(width, window, overlap)
    chunks = [[(row, col) for col in columns[first:first + batch_size]]  # one row of windows at a time
              for row in window_starts(height, window, overlap) for first in range(0, len(columns), batch_size)]
    inputs: list[RollingRows] | None = None
    sums: list[RollingRows] | None = None  # weights, probabilities[, cloud-free], rows done .. done + n
    done = 0  # rows above `done` have been yielded
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else torch.autocast(device.type, enabled=False)
    for index, chunk in enumerate(chunks):
        low, high = chunk[0][0], chunk[-1][0] + window_h
        if inputs is not None:
            for buffer in inputs:
                buffer.forget(low)
        if inputs is None or high > inputs[0].hi:
            start = low if inputs is None else max(low, inputs[0].hi)
            parts = read_rows(start, high)
            if inputs is None:
                inputs = [RollingRows(part.shape[0], part.shape[2], part.dtype) for part in parts]
                for buffer in inputs:
                    buffer.forget(start)
            for buffer, part in zip(inputs, parts):
                buffer.append(part)
        optical, sar = (buffer.rows() for buffer in inputs)
        if optical.dim() != 3 or sar.dim() != 3 or optical.shape[-2:] != sar.shape[-2:]:
            raise ValueError(f"blend_rows: expected (4, H, W) optical and (Cs, H, W) SAR on one grid, "
                             f"found {tuple(optical.shape)} and {tuple(sar.shape)}")
        offset = inputs[0].lo
        optical_batch = torch.stack([optical[:, r - offset:r - offset + window_h, c:c + window_w] for r, c in chunk])
        sar_batch = torch.stack([sar[:, r - offset:r - offset + window_h, c:c + window_w] for r, c in chunk])
        with autocast:
            outputs = model(optical_batch.to(device), sar_batch.to(device))
        probabilities = torch.softmax(outputs["logits"].double(), dim=1).cpu()
        estimate = outputs.get("cloudfree") if cloudfree else None
        if sums is None:
            channels = [1, probabilities.shape[1]] + ([estimate.shape[1]] if estimate is not None else [])
            sums = [RollingRows(c, width, torch.float64) for c in channels]
        if high > sums[0].hi:  # new rows start at zero, as in a whole-scene buffer
            for buffer in sums:
                buffer.append(high - buffer.hi)
        weight_sum, probability_sum, *cloudfree_sum = (buffer.rows() for buffer in sums)
        for i, (row, col) in enumerate(chunk):
            rows, cols = slice(row - done, row - done + window_h), slice(col, col + window_w)
            probability_sum[:, rows, cols] += probabilities[i] * weight
            weight_sum[0, rows, cols] += weight
            if cloudfree_sum:
                cloudfree_sum[0][:, rows, cols] += estimate[i].double().cpu() * weight
        final = chunks[index + 1][0][0] if index + 1 < len(chunks) else height
        if final > done:
            n = final - done
            finished = _divide(probability_sum[:, :n], weight_sum[:, :n])
            finished_cloudfree = _divide(cloudfree_sum[0][:, :n], weight_sum[:, :n]) if cloudfree_sum else None
            yield done, finished, finished_cloudfree
            for buffer in sums:
                buffer.forget(final)
            done = final
            release_free_memory()


def _divide(total: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(total / weight).float()`` without the float64 quotient in memory (computed in float64, stored as float32)."""
    return torch.div(total, weight, out=torch.empty(total.shape, dtype=torch.float32))


def release_free_memory() -> None:
    """Free what a band of rows left behind: young reference cycles, then the C heap's free memory.

    Reading a band makes xarray / rioxarray objects that refer to each other
    and hold arrays of the band's size; Python frees such cycles only when its
    collector runs, which it schedules by object counts, not bytes, so a few
    bands' worth could pile up. ``gc.collect(1)`` (young generations, about
    0.1 ms) frees them. glibc then keeps freed blocks for reuse, scattered
    between live ones; ``malloc_trim`` returns them (glibc only; elsewhere
    nothing). Called after every band read and written, it keeps the
    process's size at what is live (measured in ``benchmarks/RESULTS.md``).
    """
    gc.collect(1)
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()


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
    cloudfree: bool = True,
) -> dict[str, torch.Tensor | None]:
    """Blend a model's predictions over overlapping windows of one scene held in memory.

    Args:
        model: forward contract of :func:`edc_lab.models.build_model`.
        optical: (4, H, W) in [0, 1]; sar: (Cs, H, W) in [0, 1], same grid.

    Returns ``probabilities`` (K, H, W) float32 (softmax, blended) and
    ``cloudfree`` (4, H, W) float32 or None for models without the head.
    (:func:`blend_rows` over the in-memory tensors, collected.)
    """
    if optical.dim() != 3 or sar.dim() != 3 or optical.shape[-2:] != sar.shape[-2:]:
        raise ValueError(f"sliding_window_predict: expected (4, H, W) optical and (Cs, H, W) SAR on one grid, "
                         f"found {tuple(optical.shape)} and {tuple(sar.shape)}")
    height, width = optical.shape[-2:]
    bands = list(blend_rows(model, height, width, lambda lo, hi: (optical[:, lo:hi], sar[:, lo:hi]), window=window,
                            overlap=overlap, batch_size=batch_size, device=device, amp_dtype=amp_dtype,
                            cloudfree=cloudfree))
    cloudfree = [band[2] for band in bands]
    return {"probabilities": torch.cat([band[1] for band in bands], dim=1),
            "cloudfree": torch.cat(cloudfree, dim=1) if cloudfree[0] is not None else None}


# --------------------------------------------------------------------------- reading the inputs
class SceneReader:
    """One optical + SAR scene, checked once, read by bands of rows (the whole scene is one band).

    The optical GeoTIFF defines the grid. Its header and the SAR's (band count,
    CRS, overlap of at least :data:`edc_lab.data.io.MIN_OVERLAP` of the optical
    footprint) are checked when the reader is made, before any pixel is read.
    :meth:`read` then reads rows ``row0..row1-1`` of the optical (a rasterio
    windowed read), the part of the SAR file covering them, aligns that onto the
    optical rows by georeference (bilinear), checks both against the value
    ``convention`` and normalises them (see the module docstring).

    Pixels of the band just outside the SAR footprint take the nearest SAR value
    *within the band* read. For a scene read whole that is the nearest in the
    scene; streamed bands give the same values wherever the SAR covers the
    optical grid up to thin edge strips (M3M-CR: one row), which is the case
    the readers accept. A band of rows with no SAR pixel at all is refused with
    a message naming the rows.
    """

    def __init__(self, optical_path: str | Path, sar_path: str | Path, *, convention: str = "m3mcr",
                 sar_channels: int | None = None, fill_nonfinite: float | None = None) -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"convention: expected one of {CONVENTIONS}, found {convention!r}")
        self.optical_path, self.sar_path = Path(optical_path), Path(sar_path)
        self.convention, self.sar_channels, self.fill_nonfinite = convention, sar_channels, fill_nonfinite
        with open_raster(self.optical_path, OPTICAL_WHAT) as source:
            check_header(source, OPTICAL_WHAT, bands=len(OPTICAL_BANDS), require_crs=True)
            self.grid = Grid(self.optical_path, source.crs, source.transform, source.height, source.width)
            self.nodata = source.nodata
        with open_raster(self.sar_path, "SAR") as source:
            check_header(source, "SAR", bands=sar_channels, require_crs=True)
            sar_grid = Grid(self.sar_path, source.crs, source.transform, source.height, source.width)
        check_alignable(sar_grid, self.grid, "SAR")
        self.valid_pixels = 0  # optical pixels with data, counted over the rows read

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape

    def read(self, row0: int, row1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Raster]:
        """Rows ``row0..row1-1``: (optical (4, n, W), SAR (Cs, n, W)) in [0, 1], nodata (n, W), optical raster."""
        height, width = self.grid.shape
        whole = (row0, row1) == (0, height)
        window = None if whole else Window(0, row0, width, row1 - row0)
        optical = read_geotiff(self.optical_path, OPTICAL_WHAT, bands=len(OPTICAL_BANDS), require_crs=True,
                               window=window, fill_nonfinite=self.fill_nonfinite)
        rows = "" if whole else f", rows {row0}..{row1 - 1}"
        sar = read_covering(self.sar_path, "SAR", optical, bands=self.sar_channels, fill_nonfinite=self.fill_nonfinite,
                            min_overlap=MIN_OVERLAP if whole else 0.0)
        optical_convention, sar_convention = CONVENTION_CHECKS[self.convention]
        check_convention(optical, f"optical ('{self.convention}' convention{rows})", optical_convention)
        check_convention(sar, f"SAR ('{self.convention}' convention{rows})", sar_convention)
        sar = nodata_as_nan(sar, "SAR" if whole else f"SAR (for optical rows {row0}..{row1 - 1})")
        if same_grid(sar, optical):
            sar_on_grid = sar.values
        else:
            sar_on_grid = align_to(sar, optical, resampling=_bilinear(), nodata=np.nan, what="SAR",
                                   min_overlap=MIN_OVERLAP if whole else 0.0)
        missing_sar = np.isnan(sar_on_grid).any(axis=0)
        if missing_sar.all():
            raise DataError(f"{self.sar_path}: expected SAR pixels over optical rows {row0}..{row1 - 1} of "
                            f"{self.optical_path}, found none (the SAR footprint misses those rows)")
        sar_on_grid = fill_from_nearest(sar_on_grid, missing_sar)
        nodata = nodata_mask(optical)
        if whole:
            check_some_data(optical, "optical")
        self.valid_pixels += int(nodata.size - nodata.sum())
        optical_scaled, sar_scaled = self.normalize(optical.values, sar_on_grid, sar)
        return optical_scaled, sar_scaled, nodata, optical

    def normalize(self, optical: np.ndarray, sar: np.ndarray, sar_raster: Raster) -> tuple[np.ndarray, np.ndarray]:
        """Scale optical and SAR (on the optical grid) to [0, 1] by the reader's convention."""
        if self.convention == "m3mcr":
            from edc_lab.data.m3mcr import SAR_POLARIZATIONS, normalize_optical, normalize_sar

            if sar.shape[0] != len(SAR_POLARIZATIONS):
                raise DataError(f"{sar_raster.path}: expected {len(SAR_POLARIZATIONS)} SAR bands {SAR_POLARIZATIONS} "
                                f"in dB (M3M-CR convention), found {sar.shape[0]}")
            return normalize_optical(optical), normalize_sar(sar)
        if self.convention == "whu":
            return optical.astype(np.float32) / 255.0, np.clip(sar / 255.0, 0.0, 1.0).astype(np.float32)
        return np.clip(optical.astype(np.float32), 0.0, 1.0), np.clip(sar.astype(np.float32), 0.0, 1.0)

    def check_some_data(self) -> None:
        """After streaming every row: refuse an optical scene that was nodata everywhere (as a whole read does)."""
        if self.valid_pixels == 0:
            height, width = self.grid.shape
            raise DataError(
                f"{self.optical_path}: expected some valid optical pixels, found every one of {height}x{width} equal "
                f"to the file's nodata value {self.nodata} (is the nodata value right?)"
            )


def read_inputs(
    optical_path: str | Path,
    sar_path: str | Path,
    *,
    convention: str = "m3mcr",
    sar_channels: int | None = None,
    fill_nonfinite: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Raster]:
    """Optical + SAR GeoTIFFs -> (optical (4, H, W), sar (Cs, H, W), nodata (H, W) bool, optical raster).

    The whole scene read at once by :class:`SceneReader`: the SAR is aligned to
    the optical grid by georeference (bilinear), pixels just outside its
    footprint take the nearest SAR value; values are normalised by
    ``convention`` (see the module docstring).
    """
    reader = SceneReader(optical_path, sar_path, convention=convention, sar_channels=sar_channels,
                         fill_nonfinite=fill_nonfinite)
    return reader.read(0, reader.shape[0])


def _bilinear():
    from rasterio.enums import Resampling

    return Resampling.bilinear


# --------------------------------------------------------------------------- the whole job
class Predictor:
    """A checkpoint loaded once, predicting any number of scenes (:meth:`predict`).

    ``stream=True`` (the default) reads, predicts and writes a band of rows at a
    time (:class:`SceneReader`, :func:`blend_rows`,
    :class:`edc_lab.data.writer.RowWriter`): memory is set by ``window``,
    ``batch_size`` and the scene's width, not its height. ``stream=False`` reads
    the whole scene and blends it in memory first (refused when the buffers
    would pass :data:`edc_lab.data.io.MAX_RASTER_BYTES`). Both write the same
    files, pixel for pixel.
    """

    def __init__(self, checkpoint: str | Path, *, window: int = 256, overlap: int = 64, convention: str | None = None,
                 device: str | torch.device = "auto", batch_size: int = 4, fill_nonfinite: float | None = None,
                 stream: bool = True, overviews: bool = False) -> None:
        from edc_lab.train.checkpoint import load_checkpoint
        from edc_lab.train.distributed import resolve_device
        from edc_lab.train.loop import resolve_amp

        check_predict_options(window, overlap, batch_size, fill_nonfinite)
        if convention is not None and convention not in CONVENTIONS:
            raise ValueError(f"--convention: expected one of {CONVENTIONS}, found {convention!r}")
        self.checkpoint = Path(checkpoint)
        self.window, self.overlap, self.batch_size = window, overlap, batch_size
        self.fill_nonfinite, self.stream, self.overviews = fill_nonfinite, bool(stream), bool(overviews)
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model, meta = load_checkpoint(checkpoint, map_location=self.device)
        self.amp_dtype = resolve_amp("auto", self.device)
        data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
        self.convention = convention or DEFAULT_CONVENTION.get(data.get("name"), "m3mcr")
        self.in_sar = int(self.model.build_args.get("in_sar", data.get("in_sar", 2)))
        self.num_classes = int(self.model.build_args.get("num_classes", 1))
        class_names = list(data.get("class_names") or [])
        if len(class_names) != self.num_classes:  # missing or inconsistent metadata: number the classes
            class_names = [f"class {k}" for k in range(self.num_classes)]
        self.class_names = class_names

    def _no_cloudfree(self, what: str) -> ValueError:
        return ValueError(f"--cloudfree: expected a model with a cloud-removal head, found {self.checkpoint} holding "
                          f"{self.model.build_args.get('name')}, which {what}")

    def predict(self, optical_path: str | Path, sar_path: str | Path, out_path: str | Path, *,
                probabilities_path: str | Path | None = None, cloudfree_path: str | Path | None = None) -> dict:
        """Predict one scene and write its class map (and optionally probabilities / cloud-free image).

        Returns a summary dict: ``shape`` (H, W), ``crs``, ``transform`` (6 numbers),
        ``windows`` (how many), ``class_counts`` ({class name: pixels}) and the paths written.
        """
        from edc_lab.data.writer import GDAL_CACHE_MB, RowWriter

        check_prediction_outputs(
            {"--out": out_path, "--probabilities": probabilities_path, "--cloudfree": cloudfree_path},
            {"--checkpoint": self.checkpoint, "--optical": optical_path, "--sar": sar_path},
        )
        if cloudfree_path is not None and not getattr(self.model, "has_cloud_removal", True):
            raise self._no_cloudfree("has none")
        header = read_grid(optical_path, OPTICAL_WHAT)  # sizes are checked before anything else is opened
        height, width = header.shape
        if self.stream and height * width > MAX_STREAM_PIXELS:
            raise DataError(
                f"{header.path}: expected a scene of at most {MAX_STREAM_PIXELS} pixels, found a header declaring "
                f"{height}x{width} = {height * width} pixels ({4 * height * width * 2 / 2**30:.1f} GiB of uint16 "
                f"optical); refused before reading (cut it into parts, e.g. with gdal_translate -srcwin)")
        if not self.stream:  # the whole scene's blended probabilities live in memory (float64)
            check_declared_size(header.path, "optical scene: blended class probabilities and weights in float64",
                                self.num_classes + (len(OPTICAL_BANDS) if cloudfree_path else 0) + 1, height, width,
                                "float64")
        reader = SceneReader(optical_path, sar_path, convention=self.convention, sar_channels=self.in_sar,
                             fill_nonfinite=self.fill_nonfinite)
        grid = reader.grid
        if self.stream:
            bands, nodata_rows = self._stream(reader, cloudfree_path is not None)
        else:
            optical, sar, nodata, _ = reader.read(0, height)
            outputs = sliding_window_predict(self.model, torch.from_numpy(optical), torch.from_numpy(sar),
                                             window=self.window, overlap=self.overlap, batch_size=self.batch_size,
                                             device=self.device, amp_dtype=self.amp_dtype,
                                             cloudfree=cloudfree_path is not None)
            bands = iter([(0, outputs["probabilities"], outputs["cloudfree"])])
            nodata_rows = lambda row0, row1: nodata[row0:row1]  # noqa: E731
        common = dict(crs=grid.crs, transform=grid.transform, height=height, width=width)
        counts = np.zeros(self.num_classes, dtype=np.int64)
        nodata_pixels = 0
        writers: list[RowWriter] = []
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):  # tiles are flushed as written, not cached
            try:
                classes_out = RowWriter(out_path, 1, "uint8", nodata=IGNORE_INDEX, **common,
                                        overviews="nearest" if self.overviews else None)
                writers.append(classes_out)
                probabilities_out = cloudfree_out = None
                if probabilities_path is not None:
                    probabilities_out = RowWriter(probabilities_path, self.num_classes, "float32",
                                                  descriptions=self.class_names, **common,
                                                  overviews="average" if self.overviews else None)
                    writers.append(probabilities_out)
                if cloudfree_path is not None:
                    cloudfree_out = RowWriter(cloudfree_path, len(OPTICAL_BANDS), "float32", descriptions=OPTICAL_BANDS,
                                              **common, overviews="average" if self.overviews else None)
                    writers.append(cloudfree_out)
                for row0, probabilities, cloudfree in bands:
                    if cloudfree_out is not None and cloudfree is None:  # found at the first band, before any write
                        raise self._no_cloudfree("returns none")
                    nodata = nodata_rows(row0, row0 + probabilities.shape[1])
                    classes = probabilities.argmax(dim=0).numpy().astype(np.uint8)
                    classes[nodata] = IGNORE_INDEX
                    counts += np.bincount(classes[~nodata].ravel(), minlength=self.num_classes)[:self.num_classes]
                    nodata_pixels += int(nodata.sum())
                    classes_out.write(classes[None])
                    if probabilities_out is not None:
                        probabilities_out.write(probabilities.numpy())
                    if cloudfree_out is not None:
                        cloudfree_out.write(cloudfree.clamp(0, 1).numpy())
                if self.stream:
                    reader.check_some_data()
                for writer in writers:  # every file complete: rename them into place
                    writer.close()
            except BaseException:
                for writer in writers:
                    writer.abort()
                raise
        written = {"out": str(out_path)}
        if probabilities_path is not None:
            written["probabilities"] = str(probabilities_path)
        if cloudfree_path is not None:
            written["cloudfree"] = str(cloudfree_path)
        windows = len(window_starts(height, self.window, self.overlap)) * len(window_starts(width, self.window, self.overlap))
        return {
            "shape": (height, width),
            "crs": str(grid.crs),
            "transform": list(grid.transform)[:6],
            "windows": windows,
            "convention": self.convention,
            "streamed": self.stream,
            "class_counts": {name: int(count) for name, count in zip(self.class_names, counts)},
            "nodata_pixels": nodata_pixels,
            **written,
        }

    def _stream(self, reader: SceneReader, cloudfree: bool):
        """(the bands of :func:`blend_rows` over the reader, nodata lookup by rows) for one streamed scene."""
        height, width = reader.shape
        nodata_parts: dict[int, np.ndarray] = {}  # first row -> nodata of the rows read there, until written

        def read_rows(row0: int, row1: int) -> tuple[torch.Tensor, torch.Tensor]:
            optical, sar, nodata, _ = reader.read(row0, row1)
            nodata_parts[row0] = nodata
            release_free_memory()
            return torch.from_numpy(optical), torch.from_numpy(sar)

        def nodata_rows(row0: int, row1: int) -> np.ndarray:
            rows = np.concatenate([nodata_parts[start] for start in sorted(nodata_parts)])
            first = min(nodata_parts)
            wanted = rows[row0 - first:row1 - first]
            for start in [start for start in nodata_parts if start + len(nodata_parts[start]) <= row1]:
                del nodata_parts[start]  # every row of this part is written
            return wanted

        bands = blend_rows(self.model, height, width, read_rows, window=self.window, overlap=self.overlap,
                           batch_size=self.batch_size, device=self.device, amp_dtype=self.amp_dtype,
                           cloudfree=cloudfree)
        return bands, nodata_rows


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
    stream: bool = True,
    overviews: bool = False,
) -> dict:
    """Predict a class map for one optical + SAR scene and write it as a GeoTIFF (:class:`Predictor`).

    Returns a summary dict: ``shape`` (H, W), ``crs``, ``transform`` (6 numbers),
    ``windows`` (how many), ``class_counts`` ({class name: pixels}) and the paths written.
    """
    check_prediction_outputs(  # before the checkpoint is loaded (Predictor checks the numeric options first)
        {"--out": out_path, "--probabilities": probabilities_path, "--cloudfree": cloudfree_path},
        {"--checkpoint": checkpoint, "--optical": optical_path, "--sar": sar_path},
    )
    predictor = Predictor(checkpoint, window=window, overlap=overlap, convention=convention, device=device,
                          batch_size=batch_size, fill_nonfinite=fill_nonfinite, stream=stream, overviews=overviews)
    return predictor.predict(optical_path, sar_path, out_path, probabilities_path=probabilities_path,
                             cloudfree_path=cloudfree_path)


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


def check_prediction_outputs(outputs: dict[str, str | Path | None], inputs: dict[str, str | Path | None]) -> None:
    """Refuse outputs that could not be written safely (one DataError naming the option), before any work.

    Three checks, in this order: each output is a regular file or a new path
    with a usable name (:func:`edc_lab.data.outputs.check_output_file`: no
    device, FIFO, socket or directory, which the final rename would replace);
    no output is an input or another output, links resolved
    (:func:`edc_lab.data.io.check_output_paths`); an existing output is a TIFF
    (an earlier prediction), not a checkpoint or a list passed by mistake
    (:func:`edc_lab.data.outputs.check_replaceable`).
    """
    given = {option: path for option, path in outputs.items() if path is not None}
    for option, path in given.items():
        check_output_file(option, path)
    check_output_paths(given, inputs)
    for option, path in given.items():
        check_replaceable(option, path, is_tiff, "a TIFF (an earlier prediction)")


# --------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from edc_lab.cli import device_name, float_in, int_in

    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint written by edc-lab train")
    one = parser.add_argument_group("one scene")
    one.add_argument("--optical", metavar="OPT.tif", help="optical GeoTIFF (4 bands: B, G, R, NIR)")
    one.add_argument("--sar", metavar="SAR.tif", help="SAR GeoTIFF (any grid overlapping the optical)")
    one.add_argument("--out", metavar="MAP.tif", help="output class map (uint8, optical grid)")
    one.add_argument("--probabilities", metavar="P.tif", help="also write the class probabilities (float32)")
    one.add_argument("--cloudfree", metavar="CF.tif", help="also write the cloud-free estimate (float32, [0, 1])")
    many = parser.add_argument_group("many scenes (also under torchrun: each process takes its share)")
    many.add_argument("--scenes", metavar="LIST", help="a CSV (header: optical,sar[,name]), an M3M-CR folder or "
                                                      "a WHU-OPT-SAR folder")
    many.add_argument("--out-dir", metavar="DIR", help="where NAME.tif (and NAME.probabilities.tif, "
                                                       "NAME.cloudfree.tif) are written")
    many.add_argument("--split", default="test", help="M3M-CR folder: the split to predict (default test)")
    many.add_argument("--save-probabilities", action="store_true", help="also write NAME.probabilities.tif")
    many.add_argument("--save-cloudfree", action="store_true", help="also write NAME.cloudfree.tif")
    many.add_argument("--overwrite", action="store_true", help="predict scenes whose outputs exist (default: skip)")
    parser.add_argument("--window", type=int_in(*WINDOW_RANGE), default=256, help="window size in pixels (default 256)")
    parser.add_argument("--overlap", type=int_in(0), default=64, help="overlap between windows, < --window (default 64)")
    parser.add_argument("--convention", choices=CONVENTIONS,
                        help="input scaling (default: the checkpoint's dataset; synthetic -> m3mcr)")
    parser.add_argument("--batch-size", type=int_in(*BATCH_SIZE_RANGE), default=4,
                        help="windows per forward pass (default 4)")
    parser.add_argument("--device", type=device_name, default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--fill-nonfinite", type=float_in(), metavar="VALUE", help="fill NaN/Inf input pixels with VALUE")
    parser.add_argument("--in-memory", action="store_true",
                        help="read and blend the whole scene in memory instead of streaming bands of rows")
    parser.add_argument("--overviews", action="store_true", help="add overviews (2x, 4x, ...) to every output")


def _check_modes(args: argparse.Namespace) -> None:
    single = {"--optical": args.optical, "--sar": args.sar, "--out": args.out}
    if args.scenes is None:
        missing = [option for option, value in single.items() if value is None]
        if missing:
            raise ValueError(f"{', '.join(missing)}: expected --optical, --sar and --out (one scene) or --scenes and "
                             f"--out-dir (many scenes), found {' and '.join(missing)} missing")
        extra = [option for option, value in {"--out-dir": args.out_dir, "--save-probabilities": args.save_probabilities,
                                              "--save-cloudfree": args.save_cloudfree}.items() if value]
        if extra:
            raise ValueError(f"{', '.join(extra)}: expected only with --scenes, found with one scene (--optical)")
        return
    given = [option for option, value in {**single, "--probabilities": args.probabilities,
                                          "--cloudfree": args.cloudfree}.items() if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: expected none with --scenes (outputs are named DIR/NAME.tif; use "
                         f"--save-probabilities / --save-cloudfree), found {', '.join(given)}")
    if args.out_dir is None:
        raise ValueError("--out-dir: expected an output folder with --scenes, found none")


def run(args: argparse.Namespace) -> int:
    """``edc-lab predict``: one scene or a scene list. A bad input, a failed scene or a signal each ends in one line.

    Exit status: 0; 1 when a scene of a list failed (the others are done); 2 for
    a bad input (nothing written); 128 + the signal for SIGINT (130) or SIGTERM
    (143), after the temporary files are removed (:func:`edc_lab.data.outputs.interruptible`).
    """
    from edc_lab.train.checkpoint import CheckpointError

    try:
        with interruptible():
            _check_modes(args)
            return _run_scenes(args) if args.scenes is not None else _run_one(args)
    except (ValueError, DataError, CheckpointError, OSError) as error:
        print(f"edc-lab predict: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"edc-lab predict: interrupted by {stop.signal_name}; removed temporary files", file=sys.stderr)
        return stop.exit_code


def _run_one(args: argparse.Namespace) -> int:
    """One scene (``--optical --sar --out``): predict, then print the map's size and class shares."""
    summary = predict_geotiff(
        args.checkpoint, args.optical, args.sar, args.out, args.window, args.overlap,
        probabilities_path=args.probabilities, cloudfree_path=args.cloudfree, convention=args.convention,
        device=args.device, batch_size=args.batch_size, fill_nonfinite=args.fill_nonfinite,
        stream=not args.in_memory, overviews=args.overviews,
    )
    height, width = summary["shape"]
    print(f"wrote {summary['out']}: {height}x{width} px, {summary['windows']} window(s), CRS {summary['crs']}")
    total = max(1, sum(summary["class_counts"].values()))
    print("classes: " + ", ".join(f"{name} {100 * count / total:.1f}%" for name, count in summary["class_counts"].items()))
    return 0


def _run_scenes(args: argparse.Namespace) -> int:
    """A scene list (``--scenes --out-dir``), this process's share under torchrun; 1 when one of its scenes failed.

    Under torchrun every process waits for the others before it exits
    (:func:`edc_lab.scenes.finish_together`): torchrun stops all processes as
    soon as one exits with a failure, which would cut the others' scenes short.
    """
    from edc_lab.scenes import finish_together, predict_scenes, process_rank, read_scene_list
    from edc_lab.train.distributed import resolve_device

    rank, world_size, local_rank = process_rank()
    scenes = read_scene_list(args.scenes, args.split)
    predictor = Predictor(args.checkpoint, window=args.window, overlap=args.overlap,
                          convention=args.convention, device=resolve_device(args.device, local_rank, world_size),
                          batch_size=args.batch_size, fill_nonfinite=args.fill_nonfinite,
                          stream=not args.in_memory, overviews=args.overviews)
    report = predict_scenes(predictor, scenes, args.out_dir, probabilities=args.save_probabilities,
                            cloudfree=args.save_cloudfree, overwrite=args.overwrite, rank=rank,
                            world_size=world_size)
    tag = f"process {rank} of {world_size}: " if world_size > 1 else ""
    print(f"{tag}{len(report['done'])} predicted, {len(report['skipped'])} skipped (done before), "
          f"{len(report['failed'])} failed, of {len(scenes)} scenes in {args.scenes}", flush=True)
    for failure in report["failed"]:
        print(f"edc-lab predict: failed: {failure['name']} ({failure['source']}: {failure['optical']}, "
              f"{failure['sar']}): {failure['error']}", file=sys.stderr, flush=True)
    totals = finish_together(report, world_size)
    if world_size > 1 and rank == 0:
        print(f"all {world_size} processes: {totals['done']} predicted, {totals['skipped']} skipped, "
              f"{totals['failed']} failed, of {len(scenes)} scenes", flush=True)
    return 1 if report["failed"] else 0
