"""Reading a ``.npy`` cloud mask safely: its header is checked before any data are loaded, and pickled data
are refused (unpickling can run code).

A ``.npy`` header can declare any size; checking it first turns a 300 GiB
allocation into one DataError naming the file and the shape found. Our choice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edc_lab.data.path_checks import check_input_file
from edc_lab.data.sample import DataError


def read_cloud_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Load a ``.npy`` cloud mask safely (``allow_pickle=False``) and check it.

    Args:
        path: the ``.npy`` file (a plain boolean or 0/1 array).
        shape: (H, W) the mask must have (the optical grid).

    Returns:
        (H, W) bool array. A pickled file is refused: unpickling runs code.
    """
    path = Path(path)
    check_input_file(path, "a .npy cloud mask")
    check_npy_header(path, tuple(shape))
    try:
        mask = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise DataError(
                f"{path}: expected a plain .npy array (cloud mask), found pickled (object) data, which "
                f"is refused because unpickling can run code (np.load(allow_pickle=False))"
            ) from None
        raise DataError(f"{path}: expected a .npy array (cloud mask), found an unreadable file: {error}") from None
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: expected a .npy array (cloud mask), found an unreadable file: {error}") from None
    if not isinstance(mask, np.ndarray):
        raise DataError(f"{path}: expected one .npy array (cloud mask), found {type(mask).__name__}")
    if mask.shape != tuple(shape):
        raise DataError(f"{path}: expected a cloud mask of shape {tuple(shape)} (the optical grid), found {mask.shape}")
    if mask.dtype != bool:
        values = np.unique(mask)
        if not np.isin(values, (0, 1)).all():
            raise DataError(
                f"{path}: expected a boolean or 0/1 cloud mask, found values {values[:8].tolist()} (dtype {mask.dtype})"
            )
    return mask.astype(bool)


def check_npy_header(path: Path, shape: tuple[int, int]) -> None:
    """Read a ``.npy`` header (no data) and refuse a shape or dtype that cannot be the cloud mask.

    A header can declare any size; checking it first turns a 300 GiB allocation
    into one DataError naming the file and the size found.
    """
    expected = f"a .npy cloud mask of shape {tuple(shape)} (the optical grid)"
    pickled = DataError(
        f"{path}: expected a plain .npy array (cloud mask), found pickled (object) data, which "
        f"is refused because unpickling can run code (np.load(allow_pickle=False))"
    )
    try:
        with open(path, "rb") as handle:
            if handle.read(1) == b"\x80":  # the first byte of a pickle (protocol 2+)
                raise pickled
            handle.seek(0)
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                declared, _, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                declared, _, dtype = np.lib.format.read_array_header_2_0(handle)
    except (ValueError, OSError, EOFError, SyntaxError) as error:
        raise DataError(f"{path}: expected {expected}, found a file that is not a .npy array: {error}") from None
    if dtype.hasobject:
        raise pickled
    if tuple(declared) != tuple(shape):
        raise DataError(f"{path}: expected a cloud mask of shape {tuple(shape)} (the optical grid), found "
                        f"{tuple(declared)} (declared in the .npy header; not loaded)")
    if dtype.kind not in "biuf":
        raise DataError(f"{path}: expected a boolean or 0/1 cloud mask, found dtype {dtype}")
