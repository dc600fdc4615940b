"""What the pixel values of a file mean: :func:`check_convention` refuses values whose data type or range
betrays another scaling, and the nodata helpers find, refuse or blank the pixels a file declares missing.

A wrong convention does not crash, it mis-scales silently (float reflectance
already in [0, 1], 8-bit SAR read as dB, reflectance that is mostly negative),
so the readers and ``predict`` check it before the values are used. The
conventions are the datasets' (M3M-CR: reflectance x10000 and backscatter in
dB; WHU-OPT-SAR: 8-bit); checking them, and the thresholds, are our choice.
"""

from __future__ import annotations

import numpy as np

from edc_lab.data.raster import Raster
from edc_lab.data.sample import DataError

#: the largest fraction of valid optical pixels that may be negative (reflectance after
#: atmospheric correction has a few slightly negative values; a negative median is wrong data)
MAX_NEGATIVE_FRACTION = 0.5

#: value conventions :func:`check_convention` knows (what the pixel values of a file mean)
CONVENTION_NAMES = ("reflectance", "db", "uint8", "unit")


def check_convention(raster: Raster, what: str, convention: str) -> None:
    """Refuse pixel values whose data type or range betrays another scaling than ``convention``.

    A wrong convention does not crash, it mis-scales silently (float reflectance
    already in [0, 1] divided by 10000 is 0 everywhere; 8-bit SAR read as dB
    clips to 1 everywhere), so the readers and ``predict`` check first:

    * ``"reflectance"`` (M3M-CR optical: reflectance x10000, uint16, valid range
      [0, 10000]): refuse 8-bit files, float files whose values all lie in [0, 2]
      (already scaled) and files whose valid pixels are *mostly* negative. Real
      reflectance may hold a few slightly negative values after atmospheric
      correction (the readers clip them to 0), so single negatives are kept; but
      when more than half the values of all bands together
      (:data:`MAX_NEGATIVE_FRACTION`) are below 0, i.e. the median is negative,
      the file is wrong data (a signed/unsigned mix-up, an offset, another
      product), which clipping would turn into a black image. (Deep water can have
      a slightly negative NIR band, never four negative bands.);
    * ``"db"`` (M3M-CR SAR: backscatter in dB, float): refuse integer files (8-bit
      or digital numbers), values mostly above 0 dB (linear power or [0, 1] scaled)
      and values above 100 (not dB);
    * ``"uint8"`` (WHU-OPT-SAR: 8-bit optical and SAR): refuse any other data type;
    * ``"unit"`` (floats already in [0, 1]): refuse integer files, values outside [-0.5, 1.5]
      and, as for reflectance, mostly negative values.

    Pixels equal to the file's nodata and non-finite pixels are not looked at.
    """
    if convention not in CONVENTION_NAMES:
        raise ValueError(f"convention: expected one of {CONVENTION_NAMES}, found {convention!r}")
    values, dtype = raster.values, raster.values.dtype
    where = f"{raster.path}: expected {what}"
    is_float = np.issubdtype(dtype, np.floating)
    valid = values[np.isfinite(values)] if is_float else values.ravel()
    if raster.nodata is not None and np.isfinite(raster.nodata):
        valid = valid[valid != raster.nodata]
    low, high = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 0.0)
    if convention == "uint8":
        if dtype != np.uint8:
            raise DataError(f"{where} as 8-bit values (uint8, WHU-OPT-SAR convention), found data type {dtype}")
    elif convention == "reflectance":
        if dtype == np.uint8 or dtype == np.int8:
            raise DataError(f"{where} as reflectance x10000 (uint16, M3M-CR convention), found 8-bit data ({dtype}); "
                            f"8-bit images follow the WHU-OPT-SAR convention")
        if is_float and valid.size and high <= 2.0:
            raise DataError(f"{where} as reflectance x10000 (M3M-CR convention), found {dtype} values in "
                            f"[{low:.4g}, {high:.4g}], i.e. already scaled to [0, 1] (the 'unit' convention)")
        _refuse_mostly_negative(valid, f"{where} as reflectance x10000 in [0, 10000] (M3M-CR convention)", dtype)
    elif convention == "db":
        if not is_float:
            raise DataError(f"{where} as backscatter in dB (float, M3M-CR convention), found integer data ({dtype}), "
                            f"which is 8-bit or digital numbers, not dB")
        positive = float((valid > 0).mean()) if valid.size else 0.0
        if valid.size and (positive > 0.5 or high > 100.0):
            raise DataError(f"{where} as backscatter in dB (mostly negative, M3M-CR convention), found values in "
                            f"[{low:.4g}, {high:.4g}] with {positive:.0%} above 0 (linear power or values scaled "
                            f"to [0, 1] / 8-bit, not dB)")
    else:  # unit
        if not is_float:
            raise DataError(f"{where} as floats already scaled to [0, 1], found integer data ({dtype})")
        if valid.size and (low < -0.5 or high > 1.5):
            raise DataError(f"{where} as floats already scaled to [0, 1], found values in [{low:.4g}, {high:.4g}]")
        _refuse_mostly_negative(valid, f"{where} as floats already scaled to [0, 1]", dtype)


def _refuse_mostly_negative(valid: np.ndarray, expected: str, dtype) -> None:
    """The reflectance rule of :func:`check_convention`: more than half the valid values below 0 is a DataError.

    ``valid``: the values looked at, all bands together (nodata and NaN removed);
    ``expected`` starts the message ("<file>: expected ..."). A few negatives are
    kept (noise of the atmospheric correction); a negative median is not reflectance.
    """
    if not valid.size:
        return
    negative = float((valid < 0).mean())
    if negative > MAX_NEGATIVE_FRACTION:
        raise DataError(
            f"{expected}, found {dtype} values in [{float(valid.min()):.4g}, {float(valid.max()):.4g}] with "
            f"{negative:.0%} of the valid values below 0 (median {float(np.median(valid)):.4g}); a few slightly "
            f"negative values are accepted (and clipped to 0), mostly negative ones are wrong data, not reflectance"
        )


def nodata_mask(raster: Raster) -> np.ndarray:
    """(H, W) mask of the pixels equal to the raster's nodata value in every band (all False without one)."""
    if raster.nodata is None:
        return np.zeros(raster.shape, dtype=bool)
    if np.isnan(raster.nodata):
        return np.isnan(raster.values).all(axis=0)
    return (raster.values == raster.nodata).all(axis=0)


def check_some_data(raster: Raster, what: str) -> np.ndarray:
    """(H, W) mask of pixels equal to nodata in every band; a raster that is nodata everywhere is a DataError.

    (A wrong nodata value — say 0 on a file whose zeros are data — is the usual cause.)
    """
    missing = nodata_mask(raster)
    if missing.all():
        raise DataError(
            f"{raster.path}: expected some valid {what} pixels, found every one of {raster.shape[0]}x{raster.shape[1]} "
            f"equal to the file's nodata value {raster.nodata} (is the nodata value right?)"
        )
    return missing


def nodata_as_nan(raster: Raster, what: str) -> Raster:
    """The raster as float32 with its nodata pixels set to NaN (so resampling never mixes them in).

    A raster without a single valid pixel (all nodata, e.g. a sparse file with no
    data written) is a DataError naming the file.
    """
    values = raster.values.astype(np.float32)
    if raster.nodata is not None and not np.isnan(raster.nodata):
        values[raster.values == raster.nodata] = np.nan
    if not np.isfinite(values).any():
        raise DataError(
            f"{raster.path}: expected valid {what} pixels over the area read, found only nodata "
            f"({raster.nodata}) in {raster.values.shape[0]}x{raster.shape[0]}x{raster.shape[1]} pixels"
        )
    return raster.with_values(values, nodata=np.nan)
