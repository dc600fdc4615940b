"""WHU-OPT-SAR: large GF-1 optical / GF-3 SAR scenes, read patch by patch, with synthetic clouds.

WHU-OPT-SAR (Li et al., "MCANet: A joint semantic segmentation framework of
optical and SAR images for land use classification", JAG 106, 2022;
github.com/AmberHen/WHU-OPT-SAR-dataset) is the second benchmark of the EDC
paper (arXiv 2603.20811). Facts used here:

* 100 scenes over Hubei, China, each 5556×3704 px at 5 m; one GeoTIFF per
  modality with the same name in three folders (release: ``optical/``,
  ``sar/``, ``lbl/``; configurable here);
* optical: GF-1, 4 bands, 8-bit; SAR: GF-3, 1 band, 8-bit; the two are
  co-registered on one pixel grid;
* labels: 0 background, 10 farmland, 20 city, 30 village, 40 water, 50 forest,
  60 road, 70 others;
* the authors' split: 80 train / 20 test scenes, shipped with this package
  (``edc_lab/data/splits/whu_opt_sar_split.txt``);
* it has **no cloudy images**: cloud-robustness studies (EDC, CloudSeg)
  synthesise clouds on its clear optical images.

What this reader does (our choices, documented):

1. **Windowed reads.** A scene is 5556×3704×4 bytes ≈ 82 MB of optical alone;
   it is never loaded whole. The dataset is a list of patches
   (scene, row, col) of ``patch_size``² pixels tiling each scene; the last row
   and column of patches are shifted inwards to end at the border (they
   overlap their neighbours) so every pixel is covered. Each item opens the
   three files and reads only its window (``rasterio`` ``read(window=...)``).
2. **Band order.** The release describes the optical as "RGB + NIR" without
   stating the order in the file. We assume GF-1's native order (blue, green,
   red, NIR), which is also the canonical order; if your copy is stored
   R, G, B, NIR, pass ``optical_bands=("red", "green", "blue", "nir")``.
   (A true-colour plot that looks blue-tinted is the tell.)
3. **Scaling.** 8-bit values are divided by 255 (optical and SAR), giving [0, 1];
   other data types are refused unless ``value_scale=`` says what to divide by.
4. **Labels.** 10..70 -> 0..6, 0 -> 255 (ignore); any other code is a DataError
   naming the file and window.
5. **Georeference.** The release is co-registered, so SAR and label on the
   optical grid (same CRS, transform and size) are read by the optical window.
   Anything else is checked as for M3M-CR (one helper,
   :func:`edc_lab.data.io.check_alignable`: a CRS on both, reprojectable,
   covering >= 90 % of the optical scene) and resampled onto each optical patch
   by georeference; a SAR moved 100 km or without a CRS is a DataError, never
   paired by array index.
6. **Clouds.** Each patch gets synthetic clouds from
   :func:`edc_lab.data.clouds.add_clouds`, seeded from ``(seed, patch index)``
   so a split is reproducible and patches differ; the cover is drawn uniformly
   from ``cloud_cover=(lo, hi)`` (or fixed with a float). The clear image is
   kept as ``optical_clear``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib.resources import as_file
from importlib.resources import files as package_files
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from rasterio.enums import Resampling
from rasterio.windows import Window

from edc_lab.data.clouds import DEFAULT_THICKNESS, add_clouds, unit_range
from edc_lab.data.io import (
    Grid,
    align_to,
    check_alignable,
    check_header,
    fill_from_nearest,
    nodata_as_nan,
    open_raster,
    read_covering,
    read_geotiff,
    same_grid,
)
from edc_lab.data.sample import (
    IGNORE_INDEX,
    OPTICAL_BANDS,
    WHU_CLASSES,
    WHU_COLORS,
    DataError,
    make_sample,
    to_torch,
)
from edc_lab.data.text import read_text_file

#: WHU-OPT-SAR label code -> class index (0 = background -> ignore)
WHU_CODE_TO_INDEX: dict[int, int] = {0: IGNORE_INDEX, **{10 * (i + 1): i for i in range(len(WHU_CLASSES))}}
#: the single SAR plane's name in the canonical sample: the sensor's, as the release does not
#: state the polarization
WHU_SAR_POLARIZATIONS: tuple[str, ...] = ("GF-3",)

SPLIT_FILE = "whu_opt_sar_split.txt"
#: smallest patch side accepted (the models downsample by 32)
MIN_PATCH_SIZE = 16
#: label files must hold integer codes (a float 10.5 would silently truncate to 10)
LABEL_DTYPES: tuple[str, ...] = ("uint8", "int8", "uint16", "int16", "uint32", "int32")
#: a patch of a scene whose SAR / label lies on another grid must be covered at least this much
PATCH_MIN_OVERLAP = 0.5


def official_split(split_file: str | Path | None = None) -> dict[str, list[str]]:
    """The authors' split: {"train": [80 names], "test": [20 names]} (file names like "NH49E004021.tif").

    ``split_file`` (default: the shipped one) is read with
    :func:`edc_lab.data.text.read_text_file`: UTF-8 with an optional byte-order mark;
    a missing file or another encoding is one DataError naming the file.
    """
    what = "a WHU-OPT-SAR split file ('train:' / 'test:' headers, one scene name per line)"
    if split_file is None:
        with as_file(package_files("edc_lab.data").joinpath("splits").joinpath(SPLIT_FILE)) as shipped:
            text = read_text_file(shipped, what)
        source = f"edc_lab/data/splits/{SPLIT_FILE}"
    else:
        text = read_text_file(split_file, what)
        source = str(split_file)
    splits: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.endswith(":"):
            current = splits.setdefault(line[:-1], [])
        elif current is None:
            raise DataError(f"{source}: expected a 'train:' or 'test:' header before names, found {line!r}")
        else:
            current.append(line)
    return splits


def patch_origins(length: int, patch_size: int) -> list[int]:
    """Start offsets of patches tiling ``length`` pixels; the last one ends at the border."""
    starts = list(range(0, length - patch_size + 1, patch_size))
    if starts[-1] + patch_size < length:
        starts.append(length - patch_size)
    return starts


def whu_labels(codes: np.ndarray, where: str) -> np.ndarray:
    """Map WHU codes (0, 10..70) to class indices (uint8, 255 = ignore); other codes -> DataError."""
    codes = codes.astype(np.int64)
    found = np.unique(codes)
    unknown = found[~np.isin(found, list(WHU_CODE_TO_INDEX))]
    if unknown.size:
        counts = {int(code): int((codes == code).sum()) for code in unknown[:8]}
        raise DataError(
            f"{where}: expected WHU-OPT-SAR label codes {sorted(WHU_CODE_TO_INDEX)}, found other codes {counts} "
            f"(code: pixel count)"
        )
    lookup = np.full(max(WHU_CODE_TO_INDEX) + 1, IGNORE_INDEX, dtype=np.uint8)
    for code, index in WHU_CODE_TO_INDEX.items():
        lookup[code] = index
    return lookup[codes]


@dataclass(frozen=True)
class Patch:
    """One item: a ``size``² window at (row, col) of scene ``scene``."""

    scene: str
    row: int
    col: int
    size: int

    @property
    def window(self) -> Window:
        return Window(self.col, self.row, self.size, self.size)


class WHUOptSAR(torch.utils.data.Dataset):
    """WHU-OPT-SAR patches with seeded synthetic clouds, as canonical Datasets or torch dicts.

    Args:
        root: folder holding ``optical_dir``, ``sar_dir`` and ``label_dir``.
        split: "train" or "test" (the authors' scene split).
        patch_size: side of the square patches, pixels.
        cloud_cover: fraction of cloudy pixels, a float or a (lo, hi) range drawn per patch.
        seed: seed of the clouds (patch i uses ``(seed, i)``).
        optical_dir, sar_dir, label_dir: folder names.
        transforms: callable on the torch sample dict.
        optical_bands: band order stored in the optical files (canonical names).
        value_scale: divide pixel values by this; None: 8-bit data, divided by 255.
        split_file: another split file (same format as the shipped one).
        thickness: cloud core opacity (or a (lo, hi) range drawn per patch) passed to ``add_clouds``.

    Items: ``to_torch`` dicts — optical (4, P, P) cloudy, optical_clear (4, P, P),
    sar (1, P, P), label (P, P) int64 in 0..6 or 255, cloud_mask (P, P).
    Scenes of the split that are not in ``root`` are skipped (listed in
    ``missing_scenes``); none present is a DataError.
    """

    num_classes = len(WHU_CLASSES)
    class_names = WHU_CLASSES
    class_colors = WHU_COLORS
    in_sar = len(WHU_SAR_POLARIZATIONS)

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        patch_size: int = 256,
        cloud_cover: float | tuple[float, float] = (0.2, 0.8),
        seed: int = 0,
        optical_dir: str = "optical",
        sar_dir: str = "sar",
        label_dir: str = "lbl",
        transforms: Callable[[dict], dict] | None = None,
        *,
        optical_bands: Sequence[str] = OPTICAL_BANDS,
        value_scale: float | None = None,
        split_file: str | Path | None = None,
        thickness: float | tuple[float, float] = DEFAULT_THICKNESS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: expected a WHU-OPT-SAR folder, found no such folder")
        splits = official_split(split_file)
        if split not in splits:
            raise DataError(f"WHUOptSAR: expected split in {sorted(splits)}, found {split!r}")
        if sorted(optical_bands) != sorted(OPTICAL_BANDS):
            raise DataError(
                f"WHUOptSAR: expected optical_bands a permutation of {OPTICAL_BANDS}, found {tuple(optical_bands)}"
            )
        if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < MIN_PATCH_SIZE:
            raise ValueError(f"WHUOptSAR: expected patch_size an integer >= {MIN_PATCH_SIZE}, found {patch_size!r}")
        if value_scale is not None and not (isinstance(value_scale, (int, float)) and math.isfinite(value_scale)
                                            and value_scale > 0):
            raise ValueError(f"WHUOptSAR: expected value_scale a finite number > 0 (or None), found {value_scale!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"WHUOptSAR: expected seed an integer >= 0, found {seed!r}")
        unit_range("thickness", thickness, owner="WHUOptSAR")
        low, high = (cloud_cover, cloud_cover) if np.isscalar(cloud_cover) else cloud_cover
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"WHUOptSAR: expected cloud_cover in [0, 1] (lo <= hi), found {cloud_cover}")
        self.split = split
        self.patch_size = int(patch_size)
        self.cloud_cover = (float(low), float(high))
        self.seed = int(seed)
        self.folders = {"optical": optical_dir, "sar": sar_dir, "label": label_dir}
        self.transforms = transforms
        self.band_order = [list(optical_bands).index(band) for band in OPTICAL_BANDS]  # file band per canonical band
        self.value_scale = value_scale
        self.thickness = thickness

        names = splits[split]
        present = [name for name in names if (self.root / optical_dir / name).is_file()]
        self.missing_scenes = [name for name in names if name not in present]
        if not present:
            raise DataError(
                f"{self.root / optical_dir}: expected scenes of the {split!r} split (e.g. {names[0]}), found none"
            )
        self.scenes = present
        #: scene -> the kinds ("sar", "label") not on the optical grid, resampled by georeference
        self.resampled: dict[str, set[str]] = {}
        self.patches: list[Patch] = []
        for name in present:
            height, width = self._check_scene(name)
            for row in patch_origins(height, self.patch_size):
                for col in patch_origins(width, self.patch_size):
                    self.patches.append(Patch(name, row, col, self.patch_size))

    def path(self, kind: str, scene: str) -> Path:
        """File of ``kind`` ("optical", "sar", "label") for ``scene``."""
        return self.root / self.folders[kind] / scene

    def _check_scene(self, scene: str) -> tuple[int, int]:
        """Check the headers of a triplet (bands, dtype, georeference); return (H, W). Reads no pixels.

        SAR and label on the optical grid (same CRS, transform and size) are read
        by the optical window; otherwise they must have a CRS, overlap the optical
        footprint (the same check as M3M-CR, :func:`edc_lab.data.io.check_alignable`)
        and are resampled onto each optical patch by georeference.
        """
        dtypes = ("uint8",) if self.value_scale is None else None
        expected = {"optical": 4, "sar": 1, "label": 1}
        grids = {}
        for kind, bands in expected.items():
            what = f"WHU-OPT-SAR {kind}"
            with open_raster(self.path(kind, scene), what) as source:
                kind_dtypes = LABEL_DTYPES if kind == "label" else dtypes
                check_header(source, what, bands=bands, dtypes=kind_dtypes)
                grids[kind] = Grid(self.path(kind, scene), source.crs, source.transform, source.height, source.width)
        optical = grids["optical"]
        for kind in ("sar", "label"):
            if same_grid(grids[kind], optical):
                continue
            if grids[kind].crs is None and optical.crs is None:
                raise DataError(
                    f"{grids[kind].path}: expected the WHU-OPT-SAR {kind} on the grid of {optical.path} "
                    f"(optical {optical.height}x{optical.width}, transform {tuple(optical.transform)[:6]}) or a CRS "
                    f"to align it by georeference, found {grids[kind].height}x{grids[kind].width}, transform "
                    f"{tuple(grids[kind].transform)[:6]} and no CRS"
                )
            check_alignable(grids[kind], optical, f"WHU-OPT-SAR {kind}")
            self.resampled.setdefault(scene, set()).add(kind)
        height, width = optical.shape
        if height < self.patch_size or width < self.patch_size:
            raise DataError(
                f"{self.path('optical', scene)}: expected a scene of at least {self.patch_size}x{self.patch_size} "
                f"pixels (patch_size), found {height}x{width}"
            )
        return height, width

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = to_torch(self.read_patch(index))
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def cloud_seed(self, index: int) -> int:
        """The seed of patch ``index``'s clouds: a hash of (seed, index), independent across patches."""
        return int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0])

    def read_patch(self, index: int) -> xr.Dataset:
        """The canonical Dataset of patch ``index`` (windowed reads; clouds added)."""
        patch = self.patches[index]
        scale = 255.0 if self.value_scale is None else float(self.value_scale)
        dtypes = ("uint8",) if self.value_scale is None else None

        optical = read_geotiff(self.path("optical", patch.scene), "WHU-OPT-SAR optical", bands=4, dtypes=dtypes,
                               window=patch.window)
        resampled = self.resampled.get(patch.scene, set())
        sar_path, label_path = self.path("sar", patch.scene), self.path("label", patch.scene)
        rows, cols = f"{patch.row}..{patch.row + patch.size}", f"{patch.col}..{patch.col + patch.size}"
        if "sar" in resampled:  # another grid: read what covers the patch, resample by map coordinates
            sar = read_covering(sar_path, "WHU-OPT-SAR SAR", optical, bands=1, dtypes=dtypes,
                                min_overlap=PATCH_MIN_OVERLAP, role="WHU-OPT-SAR SAR")
            sar_values = align_to(nodata_as_nan(sar, "WHU-OPT-SAR SAR"), optical,
                                  resampling=Resampling.bilinear, nodata=np.nan, what="WHU-OPT-SAR SAR")
            sar_values = fill_from_nearest(sar_values, np.isnan(sar_values).any(axis=0))
        else:
            sar_values = read_geotiff(sar_path, "WHU-OPT-SAR SAR", bands=1, dtypes=dtypes, window=patch.window).values
        if "label" in resampled:
            codes = read_covering(label_path, "WHU-OPT-SAR label", optical, bands=1, dtypes=LABEL_DTYPES,
                                  min_overlap=PATCH_MIN_OVERLAP, role="WHU-OPT-SAR label")
            classes = whu_labels(codes.values[0], f"{label_path} (part covering optical rows {rows}, cols {cols})")
            label = align_to(codes.with_values(classes[None], nodata=IGNORE_INDEX), optical,
                             resampling=Resampling.nearest, nodata=IGNORE_INDEX, what="WHU-OPT-SAR label")[0]
            label = label.astype(np.uint8)
        else:
            codes = read_geotiff(label_path, "WHU-OPT-SAR label", bands=1, dtypes=LABEL_DTYPES, window=patch.window)
            label = whu_labels(codes.values[0], f"{label_path} (window rows {rows}, cols {cols})")

        optical_clear = np.clip(optical.values[self.band_order].astype(np.float32) / scale, 0.0, 1.0)
        sar_scaled = np.clip(sar_values.astype(np.float32) / scale, 0.0, 1.0)

        seed = self.cloud_seed(index)
        cover = np.random.default_rng([self.seed, index, 1]).uniform(*self.cloud_cover)  # its own stream
        clouds = add_clouds(optical_clear, float(cover), seed, thickness=self.thickness)

        return make_sample(
            clouds.cloudy,
            sar_scaled,
            label,
            clouds.mask,
            optical_clear,
            polarizations=WHU_SAR_POLARIZATIONS,
            crs=optical.crs,
            transform=optical.transform,
            dataset="whu-opt-sar",
            class_names=WHU_CLASSES,
            class_colors=WHU_COLORS,
            extra={"cloud_opacity": (("y", "x"), clouds.opacity)},
            attrs={"scene": patch.scene, "window": [patch.row, patch.col, patch.size, patch.size],
                   "cloud_seed": seed, "requested_cloud_cover": float(cover)},
        )

    #: the same accessor name as :meth:`M3MCR.read_scene` (an item here is a patch)
    read_scene = read_patch

    def plot(self, sample: Mapping | xr.Dataset, **kwargs):
        """True colour, false colour, SAR, labels and cloud mask (``edc_lab.viz.plots``)."""
        from edc_lab.viz.plots import plot_sample

        return plot_sample(sample, class_names=self.class_names, class_colors=self.class_colors, **kwargs)
