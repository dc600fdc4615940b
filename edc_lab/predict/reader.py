"""Reading a scene in bands of rows: the optical GeoTIFF defines the grid, the SAR is aligned onto it
by georeference, and both are checked and normalised (:class:`SceneReader`, :func:`read_inputs`).

The SAR GeoTIFF may have its own CRS, resolution and origin (M3M-CR: 10 m
SAR under 3 m optical, shifted 1 m / 2 m); it is resampled onto the optical
rows with the data layer's readers (:mod:`edc_lab.data.io`). Values are
normalised as the training data was (``convention``): ``"m3mcr"`` — optical
reflectance ×10000 → [0, 1], SAR in dB clipped per polarization → [0, 1]
(M3M-CR's published convention, also what ``edc-lab make-data`` writes for
synthetic scenes); ``"whu"`` — 8-bit values / 255; ``"unit"`` — float rasters
already in [0, 1]. Each band of rows is checked against the convention as it
is read (data type and value range; a failure names the rows).

Our choice (standard practice in remote-sensing inference); nothing here is from the paper.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.windows import Window

from edc_lab.data.io import (
    MIN_OVERLAP,
    Grid,
    Raster,
    align_to,
    check_alignable,
    check_convention,
    check_header,
    check_some_data,
    fill_from_nearest,
    nodata_as_nan,
    nodata_mask,
    open_raster,
    read_covering,
    read_geotiff,
    same_grid,
)
from edc_lab.data.sample import OPTICAL_BANDS, DataError

CONVENTIONS = ("m3mcr", "whu", "unit")
#: value convention (:func:`edc_lab.data.io.check_convention`) of (optical, SAR) per input convention
CONVENTION_CHECKS = {"m3mcr": ("reflectance", "db"), "whu": ("uint8", "uint8"), "unit": ("unit", "unit")}
#: what the optical file is, in messages
OPTICAL_WHAT = "optical (blue, green, red, NIR)"


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
        band = None if whole else Window(0, row0, width, row1 - row0)  # rasterio's read window of these rows
        optical = read_geotiff(self.optical_path, OPTICAL_WHAT, bands=len(OPTICAL_BANDS), require_crs=True,
                               window=band, fill_nonfinite=self.fill_nonfinite)
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
