"""Checks of a path before anything is read or written: an input must be a non-empty file, and an output
must be neither an input nor another output.

Both say what is wrong up front, naming the path, before any work starts (STYLE.md, "errors at the
boundary"; our choice). What an existing output may be replaced by, and how it is written (a temporary
file, then a rename), is :mod:`edc_lab.data.outputs`.
"""

from __future__ import annotations

import os
from pathlib import Path

from edc_lab.data.sample import DataError


def check_input_file(path: Path, expected: str) -> None:
    """Refuse a path that is missing, a directory or an empty file, naming it."""
    if path.is_dir():
        raise DataError(f"{path}: expected {expected}, found a directory")
    if not path.is_file():
        raise DataError(f"{path}: expected {expected}, found no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: expected {expected}, found an empty file (0 bytes)")


def check_output_paths(outputs: dict[str, str | Path | None], inputs: dict[str, str | Path | None]) -> None:
    """Refuse an output that would overwrite an input or another output (one DataError naming both).

    Paths are compared after resolving symbolic links (``os.path.realpath``) and,
    for files that exist, by identity (``os.path.samefile``: hard links). An
    output that is an existing directory is refused too.
    """
    def same(a: Path, b: Path) -> bool:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        try:
            return a.exists() and b.exists() and os.path.samefile(a, b)
        except OSError:
            return False

    seen: list[tuple[str, Path]] = []
    for option, value in outputs.items():
        if value is None:
            continue
        path = Path(value)
        if path.is_dir():
            raise DataError(f"{option} {path}: expected an output file path, found a directory")
        for other_option, other in [*((o, Path(v)) for o, v in inputs.items() if v is not None), *seen]:
            if same(path, other):
                raise DataError(
                    f"{option} {path}: expected an output path distinct from every input and output, found the "
                    f"same file as {other_option} {other}; refusing to overwrite it"
                )
        seen.append((option, path))
