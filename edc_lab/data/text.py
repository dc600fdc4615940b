"""Reading the small text files a user hands us (CSV file lists, scene lists, splits, TOML configs).

One rule for all of them: UTF-8, with or without the byte-order mark that spreadsheet programs
write at the start of a CSV (``utf-8-sig``); anything else is one ``DataError`` that names the
file, says what was expected and where the first bad byte is.
"""

from __future__ import annotations

from pathlib import Path

from edc_lab.data.sample import DataError


def read_text_file(path: str | Path, what: str) -> str:
    """The text of ``path`` decoded as UTF-8 (a leading byte-order mark is dropped).

    ``what`` names the file's role in the message, e.g. ``"an M3M-CR file list (CSV)"``.
    Raises ``DataError`` when the file is missing, is a directory, cannot be read or is not UTF-8.
    Newlines are kept as written (``\\r\\n`` included), so ``csv`` parses quoted fields correctly.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: expected {what}, found a directory")
    if not path.is_file():
        raise DataError(f"{path}: expected {what}, found no such file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: expected {what} that can be read, found: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path}: expected {what} encoded as UTF-8, found the byte 0x{data[error.start]:02x} at line {line} "
            f"(byte {error.start}) that UTF-8 cannot decode; save the file as UTF-8"
        ) from None
