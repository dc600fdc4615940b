"""Reading rasters with validation: bad files stop here, with one clear error.

Every file a reader touches goes through the modules gathered here. They check
what a dataset promises — the band count, the data type, a CRS to align by,
finite values, the shape of a cloud mask — and turn every failure (a missing
file, a truncated GeoTIFF, a pickled ``.npy``, optical and SAR that do not
overlap) into one :class:`~edc_lab.data.sample.DataError` whose message names
the file, what was expected and what was found. Nothing deep inside torch
should be the first to notice bad data (STYLE.md, "errors at the boundary").

One idea per file; this module re-exports their names, so the readers,
``predict`` and the notebooks import them from ``edc_lab.data.io``:

* :mod:`edc_lab.data.path_checks`: an input is a non-empty file, an output is
  neither an input nor another output (``check_input_file``, ``check_output_paths``);
* :mod:`edc_lab.data.raster`: opening and reading a GeoTIFF, the checks of its
  header before a pixel is read — north-up, bands, data type, CRS, declared size
  (``Raster``, ``Grid``, ``open_raster``, ``read_geotiff``, ``read_grid``,
  ``check_north_up``, ``check_header``, ``check_declared_size``, ``MAX_RASTER_BYTES``);
* :mod:`edc_lab.data.pixel_values`: what the values mean — the scaling
  convention (reflectance, dB, 8-bit, unit) and nodata (``check_convention``,
  ``nodata_mask``, ``check_some_data``, ``nodata_as_nan``);
* :mod:`edc_lab.data.cloud_mask_file`: a ``.npy`` cloud mask read safely
  (``read_cloud_mask``, ``check_npy_header``);
* :mod:`edc_lab.data.alignment`: alignment by georeference — can two rasters be
  aligned, the part of a file covering a grid, resampling onto it
  (``check_alignable``, ``read_covering``, ``align_to``, ``same_grid``,
  ``fill_from_nearest``, ``MIN_OVERLAP``).

Whose idea: all of this is our choice (following TorchGeo's readers); the
paper (arXiv 2603.20811) and its predecessor CloudSeg upsample SAR by array
size instead.
"""

from edc_lab.data.alignment import (
    MIN_OVERLAP,
    align_to,
    check_alignable,
    fill_from_nearest,
    overlap_fraction,
    read_covering,
    same_grid,
    source_pixel_box,
)
from edc_lab.data.cloud_mask_file import check_npy_header, read_cloud_mask
from edc_lab.data.path_checks import check_input_file, check_output_paths
from edc_lab.data.pixel_values import (
    CONVENTION_NAMES,
    MAX_NEGATIVE_FRACTION,
    check_convention,
    check_some_data,
    nodata_as_nan,
    nodata_mask,
)
from edc_lab.data.raster import (
    MAX_RASTER_BYTES,
    Grid,
    Raster,
    check_declared_size,
    check_header,
    check_north_up,
    open_raster,
    read_geotiff,
    read_grid,
)

__all__ = [
    "check_input_file",
    "check_output_paths",
    "MAX_RASTER_BYTES",
    "Raster",
    "Grid",
    "open_raster",
    "read_geotiff",
    "read_grid",
    "check_north_up",
    "check_header",
    "check_declared_size",
    "CONVENTION_NAMES",
    "MAX_NEGATIVE_FRACTION",
    "check_convention",
    "nodata_mask",
    "check_some_data",
    "nodata_as_nan",
    "read_cloud_mask",
    "check_npy_header",
    "MIN_OVERLAP",
    "overlap_fraction",
    "check_alignable",
    "read_covering",
    "source_pixel_box",
    "align_to",
    "fill_from_nearest",
    "same_grid",
]
