"""M3M-CR: real cloudy PlanetScope optical, Sentinel-1 SAR and land cover, read by georeference.

M3M-CR (a.k.a. M3R-CR; Xu et al., "Multimodal and Multiresolution Data Fusion
for High-Resolution Cloud Removal", IEEE TGRS 62, 2024; github.com/zhu-xlab/M3R-CR)
is the benchmark the EDC paper (arXiv 2603.20811) and its predecessor CloudSeg
evaluate on. Facts used here:

* one sample = five files listed on one CSV row (no header), paths relative to
  ``<root>/<split>/``: cloud-free optical, cloudy optical, S1 SAR, land cover,
  cloud mask, e.g.
  ``planet_cloudy_fall/planet_cloudy_fall_1/planet_cloudy_fall_1_p_457.tif``;
* optical: PlanetScope, 4 bands (blue, green, red, NIR), uint16 reflectance ×10000,
  3 m pixels, 300×300, nodata 0;
* SAR: Sentinel-1, 2 bands (VV, VH) in dB, float64, 10 m pixels, 90×90, on a grid
  whose origin is shifted from the optical one (real tile: 1 m east, 2 m south);
* land cover: ESA WorldCover codes, uint8, on the 10 m SAR grid;
* cloud mask: boolean ``.npy`` on the optical grid.

What this reader does (the parts marked *published* follow the dataset
authors' loader; the rest is our choice):

1. optical: clip to [0, 10000], divide by 10000 (*published*); pixels equal to
   the file's nodata in every band get label 255 (ignore);
2. SAR: resampled onto the 3 m optical grid **by georeference** (bilinear, in dB;
   rioxarray ``reproject_match``) — the authors' loader instead resizes the
   90×90 array to 300×300, which ignores the 1 m / 2 m shift. Optical pixels
   outside the SAR footprint (the first row on the real tile) take the nearest
   SAR value; then VV is clipped to [-25, 0] dB and VH to [-32.5, 0] dB and each
   scaled to [0, 1] (*published*);
3. labels: WorldCover codes mapped to the 6 "level 1" classes (*published*:
   forest ← 10; rangeland ← 20, 30; agriculture ← 40; urban ← 50; barren ← 60;
   water ← 80, 90), codes 70, 95, 100 and WorldCover's nodata 0 → 255 (ignore;
   the published loader calls them "unknown"), then resampled onto the optical
   grid by georeference with nearest neighbour; any other code is a DataError;
4. cloud mask: ``np.load(allow_pickle=False)`` (the published loader uses
   ``allow_pickle=True``, which runs arbitrary code from a malicious file).

Non-finite SAR values: refused by default; ``fill_nonfinite=value`` fills them
(in dB, before alignment) and warns with the count.

Example::

    ds = M3MCR("../shared/data/m3mcr_sample", csv="one_train_sample.csv").read_scene(0)
    ds.optical.shape, ds.sar.shape   # (4, 300, 300), (2, 300, 300)
"""

from __future__ import annotations

import csv as csv_module
import io
import os
from pathlib import Path
from typing import Callable, Mapping, NamedTuple

import numpy as np
import torch
import xarray as xr
from rasterio.enums import Resampling

from edc_lab.data.io import (
    align_to,
    check_convention,
    check_some_data,
    fill_from_nearest,
    nodata_as_nan,
    read_cloud_mask,
    read_covering,
    read_geotiff,
    same_grid,
)
from edc_lab.data.sample import (
    IGNORE_INDEX,
    M3MCR_CLASSES,
    M3MCR_COLORS,
    DataError,
    make_sample,
    to_torch,
)
from edc_lab.data.text import read_text_file

#: optical reflectance scale and clip range (published)
OPTICAL_SCALE = 10000.0
#: per-polarization dB clip range before scaling to [0, 1] (published)
SAR_CLIP_DB: dict[str, tuple[float, float]] = {"VV": (-25.0, 0.0), "VH": (-32.5, 0.0)}
SAR_POLARIZATIONS: tuple[str, ...] = ("VV", "VH")

#: ESA WorldCover code -> M3M-CR level-1 class index (published); 255 = ignore
WORLDCOVER_TO_LEVEL1: dict[int, int] = {
    10: 0,  # trees -> forest
    20: 1,  # shrubland -> rangeland
    30: 1,  # grassland -> rangeland
    40: 2,  # cropland -> agriculture
    50: 3,  # built-up -> urban
    60: 4,  # bare / sparse vegetation -> barren
    80: 5,  # open water -> water
    90: 5,  # herbaceous wetland -> water
    70: IGNORE_INDEX,  # snow and ice
    95: IGNORE_INDEX,  # mangroves
    100: IGNORE_INDEX,  # moss and lichen
    0: IGNORE_INDEX,  # WorldCover nodata
}

#: the five CSV columns, in order
CSV_COLUMNS: tuple[str, ...] = ("optical_clear", "optical", "sar", "label", "cloud_mask")


class M3MCRFiles(NamedTuple):
    """The five files of one M3M-CR sample (absolute paths)."""

    optical_clear: Path
    optical: Path
    sar: Path
    label: Path
    cloud_mask: Path


def normalize_optical(reflectance: np.ndarray) -> np.ndarray:
    """(4, H, W) reflectance ×10000 -> float32 in [0, 1]: clip to [0, 10000], divide by 10000."""
    return (np.clip(reflectance.astype(np.float32), 0.0, OPTICAL_SCALE) / OPTICAL_SCALE).astype(np.float32)


def normalize_sar(backscatter_db: np.ndarray, polarizations=SAR_POLARIZATIONS) -> np.ndarray:
    """(C, H, W) backscatter in dB -> float32 in [0, 1]: clip per polarization, scale linearly."""
    scaled = np.empty(backscatter_db.shape, dtype=np.float32)
    for channel, polarization in enumerate(polarizations):
        low, high = SAR_CLIP_DB[polarization]
        scaled[channel] = (np.clip(backscatter_db[channel], low, high) - low) / (high - low)
    return scaled


def denormalize_sar(scaled: np.ndarray, polarizations=SAR_POLARIZATIONS) -> np.ndarray:
    """Inverse of :func:`normalize_sar` on [0, 1] values: (C, H, W) -> dB (used by the writer)."""
    backscatter = np.empty(scaled.shape, dtype=np.float64)
    for channel, polarization in enumerate(polarizations):
        low, high = SAR_CLIP_DB[polarization]
        backscatter[channel] = low + np.clip(scaled[channel], 0.0, 1.0) * (high - low)
    return backscatter


def worldcover_to_level1(codes: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """Map WorldCover codes to level-1 class indices (uint8, 255 = ignore); unknown codes -> DataError."""
    known = np.array(sorted(WORLDCOVER_TO_LEVEL1), dtype=np.int64)
    found = np.unique(codes)
    unknown = found[~np.isin(found, known)]
    if unknown.size:
        counts = {int(code): int((codes == code).sum()) for code in unknown[:8]}
        raise DataError(
            f"{path}: expected ESA WorldCover codes {known.tolist()} (land cover), found other codes "
            f"{counts} (code: pixel count)"
        )
    lookup = np.full(int(known.max()) + 1, IGNORE_INDEX, dtype=np.uint8)
    for code, index in WORLDCOVER_TO_LEVEL1.items():
        lookup[code] = index
    return lookup[codes.astype(np.int64)]


def find_csv(root: Path, split: str) -> Path:
    """The file list of ``split``: ``<root>/<split>.csv`` or the authors' ``one_<split>_sample.csv``."""
    candidates = [root / f"{split}.csv", root / f"one_{split}_sample.csv"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{root}: expected an M3M-CR file list ({' or '.join(c.name for c in candidates)}), found none; "
        f"pass csv=<path> to name it"
    )


def read_file_list(csv_path: Path, base: Path) -> list[M3MCRFiles]:
    """Parse the headerless 5-column CSV and check that every listed file exists.

    The file is read with :func:`edc_lab.data.text.read_text_file`: UTF-8, with or
    without the byte-order mark spreadsheet programs write (it would otherwise stick
    to the first path); any other encoding is one DataError naming the file and byte.
    """
    text = read_text_file(csv_path, "an M3M-CR file list (CSV)")
    rows: list[M3MCRFiles] = []
    for line_number, row in enumerate(csv_module.reader(io.StringIO(text, newline="")), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(CSV_COLUMNS):
            raise DataError(
                f"{csv_path}, line {line_number}: expected {len(CSV_COLUMNS)} columns "
                f"({', '.join(CSV_COLUMNS)}), found {len(row)}"
            )
        files = M3MCRFiles(*(base / cell.strip() for cell in row))
        for column, cell, file in zip(CSV_COLUMNS, row, files):
            inside = os.path.normpath(os.path.abspath(file)).startswith(os.path.normpath(os.path.abspath(base)) + os.sep)
            if not cell.strip() or not inside:
                raise DataError(
                    f"{csv_path}, line {line_number}: expected the {column} file as a path relative to {base} "
                    f"and inside it, found {cell.strip()!r}"
                )
            if not file.is_file():
                raise DataError(
                    f"{csv_path}, line {line_number}: expected the {column} file {file} "
                    f"(relative to {base}), found no such file"
                )
        rows.append(files)
    if not rows:
        raise DataError(f"{csv_path}: expected at least one row of {len(CSV_COLUMNS)} paths, found an empty list")
    return rows


class M3MCR(torch.utils.data.Dataset):
    """M3M-CR samples on the 3 m optical grid, as canonical Datasets or torch dicts.

    Args:
        root: dataset root holding ``<split>/`` and the CSV (None when ``csv`` is given:
            the CSV's folder is the root).
        split: "train" or "test" (folder the CSV paths are relative to).
        csv: the file list, absolute or relative to ``root``; default: ``<root>/<split>.csv``
            or ``<root>/one_<split>_sample.csv``.
        transforms: callable on the torch sample dict (e.g. ``edc_lab.data.transforms``).
        fill_nonfinite: None refuses NaN/Inf SAR pixels; a value (in dB) fills them and warns.

    Items: ``to_torch`` dicts — optical (4, H, W) cloudy, optical_clear (4, H, W),
    sar (2, H, W) VV/VH, label (H, W) int64 in 0..5 or 255, cloud_mask (H, W) float.
    """

    num_classes = len(M3MCR_CLASSES)
    class_names = M3MCR_CLASSES
    class_colors = M3MCR_COLORS
    in_sar = len(SAR_POLARIZATIONS)

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        *,
        csv: str | Path | None = None,
        transforms: Callable[[dict], dict] | None = None,
        fill_nonfinite: float | None = None,
    ) -> None:
        if root is None and csv is None:
            raise DataError("M3MCR: expected root=<dataset folder> or csv=<file list>, found neither")
        if not isinstance(split, str) or split in ("", ".", "..") or "/" in split or "\\" in split:
            raise DataError(f"M3MCR: expected split to be a folder name such as 'train' or 'test', found {split!r}")
        if root is None:
            csv_path = Path(csv)
            root = csv_path.parent
        else:
            root = Path(root)
            if not root.is_dir():
                raise DataError(f"{root}: expected an M3M-CR dataset folder, found no such folder")
            csv_path = root / csv if csv is not None else find_csv(root, split)
        self.root = Path(root)
        self.split = split
        self.csv_path = csv_path
        self.files = read_file_list(csv_path, self.root / split)
        self.transforms = transforms
        self.fill_nonfinite = fill_nonfinite

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = to_torch(self.read_scene(index))
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def read_scene(self, index: int) -> xr.Dataset:
        """The canonical Dataset of sample ``index`` on its 3 m optical grid.

        ``attrs`` also record the source grids (``sar_transform``,
        ``label_transform``) and ``sar_filled_pixels``: optical pixels outside
        the SAR footprint that took the nearest SAR value.
        """
        files = self.files[index]

        # 1. the two optical images define the grid everything lands on
        clear = read_geotiff(files.optical_clear, "cloud-free optical", bands=4, require_crs=True)
        cloudy = read_geotiff(files.optical, "cloudy optical", bands=4, require_crs=True)
        if not same_grid(clear, cloudy):
            raise DataError(
                f"{files.optical}: expected the grid of {files.optical_clear} (CRS {clear.crs}, "
                f"{clear.shape[0]}x{clear.shape[1]}, transform {tuple(clear.transform)[:6]}), found CRS {cloudy.crs}, "
                f"{cloudy.shape[0]}x{cloudy.shape[1]}, transform {tuple(cloudy.transform)[:6]}"
            )
        for raster, what in ((clear, "cloud-free optical"), (cloudy, "cloudy optical")):
            check_convention(raster, what, "reflectance")
        no_optical = check_some_data(clear, "cloud-free optical") | check_some_data(cloudy, "cloudy optical")

        # 2. SAR: read in dB on its 10 m grid, resample onto the optical grid by map coordinates
        sar = read_covering(files.sar, "Sentinel-1 SAR (VV, VH)", cloudy, bands=2, fill_nonfinite=self.fill_nonfinite,
                            role="SAR")
        check_convention(sar, "Sentinel-1 SAR (VV, VH)", "db")
        sar_db = align_to(
            nodata_as_nan(sar, "Sentinel-1 SAR (VV, VH)"),
            cloudy,
            resampling=Resampling.bilinear,
            nodata=np.nan,
            what="SAR",
        )
        outside_sar = np.isnan(sar_db).any(axis=0)
        sar_db = fill_from_nearest(sar_db, outside_sar)

        # 3. labels: WorldCover codes -> level-1 classes on the 10 m grid, then nearest onto 3 m
        landcover = read_covering(
            files.label, "land cover (WorldCover codes)", cloudy, bands=1, dtypes=("uint8", "uint16", "int16", "int32"),
            role="land cover",
        )
        classes = landcover.with_values(worldcover_to_level1(landcover.values, files.label), nodata=IGNORE_INDEX)
        label = align_to(classes, cloudy, resampling=Resampling.nearest, nodata=IGNORE_INDEX, what="land cover")[0]
        label = np.where(no_optical, IGNORE_INDEX, label).astype(np.uint8)

        # 4. the cloud mask is already on the optical grid
        cloud_mask = read_cloud_mask(files.cloud_mask, cloudy.shape)

        return make_sample(
            normalize_optical(cloudy.values),
            normalize_sar(sar_db),
            label,
            cloud_mask,
            normalize_optical(clear.values),
            polarizations=SAR_POLARIZATIONS,
            crs=cloudy.crs,
            transform=cloudy.transform,
            dataset="m3mcr",
            class_names=M3MCR_CLASSES,
            class_colors=M3MCR_COLORS,
            attrs={
                "files": [str(path) for path in files],
                "sar_transform": list(sar.transform)[:6],
                "label_transform": list(landcover.transform)[:6],
                "sar_filled_pixels": int(outside_sar.sum()),
                "optical_nodata_pixels": int(no_optical.sum()),
            },
        )

    def plot(self, sample: Mapping | xr.Dataset, **kwargs):
        """True colour, false colour, SAR VV/VH, labels and cloud mask (``edc_lab.viz.plots``)."""
        from edc_lab.viz.plots import plot_sample

        return plot_sample(sample, class_names=self.class_names, class_colors=self.class_colors, **kwargs)
