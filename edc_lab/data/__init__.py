"""Data layer: the canonical sample, synthetic scenes, clouds, readers, torch datasets, transforms.

Every source returns the canonical ``xarray.Dataset`` (``edc_lab.data.sample``)
and, through a torch ``Dataset``, a dict of tensors with the same keys:

* ``synthetic_scene`` / ``SyntheticScenes``: the embedded default (no files);
* ``add_clouds``: fractal clouds and shadows on any clear optical image;
* ``M3MCR``: the real M3M-CR layout, SAR and labels aligned by georeference;
* ``WHUOptSAR``: WHU-OPT-SAR scenes read patch by patch, with synthetic clouds;
* ``build_dataset``: one name -> one dataset (training, CLI, notebooks);
* ``write_m3mcr`` / ``write_whu_sample``: save samples in the real layouts;
* ``Compose``, ``RandomCrop``, ... : paired transforms on sample dicts;
* ``open_lazy`` / ``open_scene_lazy`` / ``open_prediction``: scenes and predictions
  larger than memory opened as dask-backed xarray (read only when computed).

Bad input raises ``DataError`` (a ``ValueError``) naming the file, what was
expected and what was found.
"""

from edc_lab.data.sample import (
    IGNORE_INDEX,
    M3MCR_CLASSES,
    M3MCR_COLORS,
    OPTICAL_BANDS,
    WHU_CLASSES,
    WHU_COLORS,
    DataError,
    check_finite,
    from_torch,
    make_sample,
    to_torch,
)
from edc_lab.data.paths import SAMPLE_DATA, m3mcr_sample_dir, shared_data_dir
from edc_lab.data.clouds import CloudResult, add_clouds, cloud_statistics, fractal_noise
from edc_lab.data.synthetic import SyntheticScenes, synthetic_scene
from edc_lab.data.transforms import CenterCrop, Compose, RandomCrop, RandomFlip, RandomRotate90
from edc_lab.data.io import Raster, align_to, read_cloud_mask, read_geotiff
from edc_lab.data.lazy import open_lazy, open_prediction, open_scene_lazy
from edc_lab.data.m3mcr import WORLDCOVER_TO_LEVEL1, M3MCR, normalize_optical, normalize_sar, worldcover_to_level1
from edc_lab.data.whu import WHU_CODE_TO_INDEX, WHUOptSAR, official_split, whu_labels
from edc_lab.data.writer import write_geotiff, write_m3mcr, write_m3mcr_sample, write_whu_sample
from edc_lab.data.datasets import DATASET_NAMES, build_dataset
from edc_lab.data.make_data import make_data

__all__ = [
    "IGNORE_INDEX",
    "M3MCR_CLASSES",
    "M3MCR_COLORS",
    "OPTICAL_BANDS",
    "WHU_CLASSES",
    "WHU_COLORS",
    "DataError",
    "check_finite",
    "from_torch",
    "make_sample",
    "to_torch",
    "SAMPLE_DATA",
    "m3mcr_sample_dir",
    "shared_data_dir",
    "CloudResult",
    "add_clouds",
    "cloud_statistics",
    "fractal_noise",
    "SyntheticScenes",
    "synthetic_scene",
    "CenterCrop",
    "Compose",
    "RandomCrop",
    "RandomFlip",
    "RandomRotate90",
    "Raster",
    "align_to",
    "read_cloud_mask",
    "read_geotiff",
    "open_lazy",
    "open_prediction",
    "open_scene_lazy",
    "WORLDCOVER_TO_LEVEL1",
    "M3MCR",
    "normalize_optical",
    "normalize_sar",
    "worldcover_to_level1",
    "WHU_CODE_TO_INDEX",
    "WHUOptSAR",
    "official_split",
    "whu_labels",
    "write_geotiff",
    "write_m3mcr",
    "write_m3mcr_sample",
    "write_whu_sample",
    "DATASET_NAMES",
    "build_dataset",
    "make_data",
]
