"""Memory release while a scene streams: young reference cycles collected, then the C heap's free pages
handed back to the operating system through libc's ``malloc_trim``.

Our choice (measured in ``benchmarks/RESULTS.md``); glibc only, elsewhere the
second step does nothing.
"""

from __future__ import annotations

import gc


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
