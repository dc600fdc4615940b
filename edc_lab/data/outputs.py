"""Output paths: what a command may write over, its temporary files, and signals that must not leave them behind.

Every file a command writes (``predict``'s maps, ``bench --out``, ``evaluate
--out``) goes through three rules, our choice (common practice for tools that
write atomically):

1. **A regular file or nothing.** An output path must name a regular file or
   nothing yet (:func:`check_output_file`). A directory, a character or block
   device (``/dev/null``), a FIFO or a socket is refused before any work:
   writing to a temporary file and renaming it over such a path would *replace*
   it with a regular file (run as root, ``--out /dev/null`` would remove the
   machine's ``/dev/null``). The file name must leave room for the temporary
   name (:data:`TEMPORARY_EXTRA` bytes more), so "File name too long" is
   said up front, naming the option, not by the operating system mid-run.
2. **Only its own kind is replaced.** An existing file is overwritten only
   when it is an earlier output of the same kind — a TIFF for ``predict``
   (:func:`is_tiff`), a result of ``edc-lab bench`` for ``bench`` — or empty
   (:func:`check_replaceable`): a checkpoint or a scene list given by mistake
   as ``--out`` is refused, not destroyed.
3. **Temporary name, then rename.** A file is written to
   ``.NAME.PID-XXXXXXXX.tmp`` in its own folder and renamed over ``NAME`` when
   complete (:func:`atomic_output`): never a half-written output. A write that
   fails removes its temporary file; so does one interrupted by SIGINT or
   SIGTERM inside :func:`interruptible` (the signal becomes an
   :class:`Interrupted` exception, so every ``finally`` runs). SIGKILL cannot
   be caught: the next write of the same output removes the temporary files
   whose process (the PID in the name) is gone (:func:`stale_temporaries`).
   PIDs are those of this machine: a folder shared by several machines
   writing the *same* output at once is not supported (nor meaningful).
"""

from __future__ import annotations

import os
import re
import signal
import stat
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from edc_lab.data.sample import DataError

#: bytes a temporary name adds to the output's: "." + "." + PID (at most 7 digits) + "-" + 8 random + ".tmp"
TEMPORARY_EXTRA = 22
#: the longest file name most file systems accept (bytes), when ``os.pathconf`` cannot say
DEFAULT_NAME_MAX = 255
#: what a file that is not a regular file is, in messages
FILE_KINDS = [
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
]
#: the first bytes of a TIFF or BigTIFF file, little- and big-endian
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

# temporary files this process has open (atomic_output), removed when a signal interrupts it
_LIVE_TEMPORARIES: set[Path] = set()


# --------------------------------------------------------------------------- what a path is
def describe_file(mode: int) -> str:
    """What ``os.stat(...).st_mode`` is, in words: "a directory", "a FIFO (named pipe)", … or "a file"."""
    return next((name for is_kind, name in FILE_KINDS if is_kind(mode)), "a file")


def _label(option: str | None, path: Path) -> str:
    return f"{option} {path}" if option else str(path)


def _name_limit(path: Path) -> int:
    """The file-name limit (bytes) of the file system ``path`` would be written to (its first existing folder)."""
    folder = path.parent
    while not os.path.isdir(folder) and folder != folder.parent:  # isdir: False on any OSError (a name too long)
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX


def check_output_file(option: str | None, path: str | Path) -> Path:
    """Refuse an output path that is not a regular file or a new path (one DataError naming ``option``).

    Checked, before anything is written: the file name leaves room for its
    temporary name (the operating system would otherwise say "File name too
    long" mid-run), the path can be looked at (a parent that is a file, a
    symbolic-link loop), and what it names (symbolic links followed) is a
    regular file or nothing: a directory, a device, a FIFO or a socket would
    be replaced by the rename. A dangling symbolic link counts as new (the
    rename replaces the link, not its target).
    """
    path = Path(path)
    label = _label(option, path)
    size, limit = len(os.fsencode(path.name)), _name_limit(path) - TEMPORARY_EXTRA
    if size > limit:
        raise DataError(f"{label}: expected a file name of at most {limit} bytes (the file system's "
                        f"{limit + TEMPORARY_EXTRA}, less {TEMPORARY_EXTRA} for its temporary name), found {size}")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    except NotADirectoryError:
        raise DataError(f"{label}: expected a writable output folder {path.parent}, found a file on that path "
                        f"(not a folder)") from None
    except OSError as error:
        raise DataError(f"{label}: expected an output file path that can be looked at, found: "
                        f"{error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{label}: expected a regular file or a path that does not exist yet, found "
                        f"{describe_file(mode)}; refusing to replace it with a file")
    return path


def check_replaceable(option: str | None, path: str | Path, is_kind: Callable[[Path], bool], kind: str) -> None:
    """Refuse to overwrite an existing, non-empty file unless ``is_kind(path)`` says it is an earlier ``kind``.

    An output replaces only what the same command wrote before (or an empty
    file, which holds nothing to lose): a checkpoint or a list passed by
    mistake as the output is left alone.
    """
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return
    except OSError:
        return  # check_output_file has said what is wrong with the path
    if not is_kind(path):
        raise DataError(f"{_label(option, path)}: expected a new file, or {kind} to replace, found an existing "
                        f"file that is not one; refusing to overwrite it (remove it or choose another path)")


def is_tiff(path: str | Path) -> bool:
    """Whether ``path`` starts like a TIFF or BigTIFF file (predict's outputs are GeoTIFFs)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) in TIFF_SIGNATURES
    except OSError:
        return False


# --------------------------------------------------------------------------- temporary files
def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (signal 0 probes without sending; POSIX only)."""
    if os.name != "posix":
        return True  # cannot tell: never remove
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except (OverflowError, ValueError):
        return False
    return True


def stale_temporaries(path: str | Path) -> list[Path]:
    """Temporary files that writes of ``path`` left behind when killed: ``.NAME.PID-XXXXXXXX.tmp``, PID gone.

    Only this very name's temporary files are looked at (``.NAME.`` then one
    dot-free part, then ``.tmp``). One whose process still runs is kept (it
    may be writing right now); a name without a PID (``.NAME.XXXXXXXX.tmp``,
    written by an earlier edc_lab) is stale.
    """
    path = Path(path)
    prefix, found = f".{path.name}.", []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return []
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        middle = entry.name[len(prefix):-len(".tmp")]
        with_pid = re.fullmatch(r"(\d+)-[A-Za-z0-9_]+", middle)
        if with_pid is not None and not _process_alive(int(with_pid.group(1))):
            found.append(Path(entry.path))
        elif with_pid is None and re.fullmatch(r"[A-Za-z0-9_]+", middle):
            found.append(Path(entry.path))
    return sorted(found)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove :func:`stale_temporaries` of ``path``; returns what was removed."""
    stale = stale_temporaries(path)
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale


def _new_file_mode(path: Path) -> int:
    """The mode ``path`` has (when it exists) or a new file would get under the current umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path`` (``os.replace``).

    ``path`` is checked first (:func:`check_output_file`: a regular file or
    nothing); the stale temporary files of killed writes of ``path`` are
    removed. A crash or an error mid-write leaves the old file (or none) and
    removes the temporary one: never a half-written output. The folder is
    created when missing; a folder that cannot be written raises one DataError
    naming it.
    """
    path = check_output_file(None, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise DataError(
            f"{path}: expected a writable output folder {path.parent}, found: {error.strerror or error}"
        ) from None
    temporary = Path(name)
    _LIVE_TEMPORARIES.add(temporary)
    try:
        os.close(handle)
        yield temporary
        os.chmod(temporary, _new_file_mode(path))  # mkstemp makes 0600; give the usual permissions
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    finally:
        _LIVE_TEMPORARIES.discard(temporary)


def remove_live_temporaries() -> None:
    """Remove every temporary file :func:`atomic_output` has open in this process (after an interruption)."""
    for temporary in list(_LIVE_TEMPORARIES):
        temporary.unlink(missing_ok=True)
        _LIVE_TEMPORARIES.discard(temporary)


# --------------------------------------------------------------------------- signals
class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived inside :func:`interruptible`; raised so that cleanup code runs.

    A ``KeyboardInterrupt``, so ``except Exception`` (a scene that failed) does
    not swallow it. ``exit_code`` is the shell's convention, 128 + the signal
    number: 130 for SIGINT, 143 for SIGTERM.
    """

    def __init__(self, signal_number: int) -> None:
        self.signal_number = int(signal_number)
        self.signal_name = signal.Signals(self.signal_number).name
        super().__init__(self.signal_name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number


@contextmanager
def interruptible(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Within the block, ``signals`` raise :class:`Interrupted`; leaving it by any exception removes temporaries.

    Python's default SIGTERM ends the process on the spot: no ``finally``
    runs, and the temporary files of the outputs being written stay (tens of
    MB each). Raised as an exception instead, the signal unwinds the stack,
    the writers remove their temporary files, and :func:`remove_live_temporaries`
    then removes any that a signal caught between two steps left. The previous
    handlers are restored on the way out (unless the block set its own). Outside the main thread (where
    Python cannot set handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(number: int, frame) -> None:
        raise Interrupted(number)

    previous = {number: signal.signal(number, handler) for number in signals}
    try:
        yield
    except BaseException:
        remove_live_temporaries()
        raise
    finally:
        for number, old in previous.items():
            if signal.getsignal(number) is handler:  # unless the block chose another handler (it knows why)
                signal.signal(number, old)
