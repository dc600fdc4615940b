"""Many scenes at once: scene lists, a share per process under torchrun, skip what is done, report what failed.

Mapping a region means predicting many optical + SAR scene pairs. ``edc-lab
predict --scenes LIST --out-dir DIR`` takes them from

* **a CSV with a header** naming the columns ``optical`` and ``sar`` (and
  optionally ``name``, the output's file name without ``.tif``; default: the
  optical file's stem). Paths are absolute or relative to the CSV's folder;
* **an M3M-CR folder** (``<root>/<split>.csv`` or ``one_<split>_sample.csv``,
  five headerless columns relative to ``<root>/<split>``; the *cloudy* optical
  and the SAR are predicted), or such a CSV file itself;
* **a WHU-OPT-SAR folder** (``<root>/optical/NAME.tif`` with ``<root>/sar/NAME.tif``).

A pair listed more than once is predicted once; one name for two different
pairs is refused. Each scene writes ``DIR/NAME.tif`` (classes) and, when asked,
``DIR/NAME.probabilities.tif`` and ``DIR/NAME.cloudfree.tif``.

**Outputs checked for the whole list first** (:func:`refused_scenes`). Before
the first scene runs, every output path of the list is resolved (links and
``..`` followed, hard links by inode) and compared with every input of every
row, the checkpoint and every other row's outputs. A scene whose output would
be one of those files, or whose name the file system cannot take (too long;
a device or a FIFO in its place), is refused with both rows named; the other
scenes run. Without this, a scene named after another scene's optical image
overwrote it (``--overwrite``), and a scene whose outputs another one had
written was skipped as "done".

**Many processes.** Under ``torchrun --nproc-per-node N -m edc_lab.cli predict
--scenes ...`` process ``RANK`` of ``WORLD_SIZE`` takes the scenes
``RANK, RANK + N, …`` of the list (the environment variables torchrun sets; no
scheduler). The processes do not talk while they predict; at the end each
waits for the others (:func:`finish_together`), because torchrun stops every
process as soon as one exits with a failure. Each file is written under a
temporary name and renamed when complete, so a scene whose outputs all exist is
done: a re-run skips it (``overwrite=True`` redoes it) and removes the
temporary files that a killed run left for its scenes' outputs
(:func:`edc_lab.data.outputs.remove_stale_temporaries`). A scene that fails — a missing or unreadable
file, rasters that do not overlap, a refused output, any error while it is
predicted — is reported with its row, its paths and the error, and the others
still finish; the exit status is 1 when any scene of the process failed.
SIGINT or SIGTERM (torchrun stopping the processes) stops the run, after the
temporary files are removed.

Our choice throughout (common practice for batch inference); nothing here is
from the paper (arXiv 2603.20811).
"""

from __future__ import annotations

import csv
import os
import signal
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import torch

from edc_lab.data.outputs import check_output_file, describe_file, is_tiff, remove_stale_temporaries
from edc_lab.data.sample import DataError

#: the CSV columns of a scene list (``name`` optional)
LIST_COLUMNS = ("optical", "sar")
#: what each written file is called, after the scene's name
OUTPUT_SUFFIXES = {"out": ".tif", "probabilities": ".probabilities.tif", "cloudfree": ".cloudfree.tif"}
#: what predict_scenes reports, in this order
REPORT_KEYS = ("done", "skipped", "failed")
#: how long a process that finished its share waits for the others under torchrun (the slowest share's head start)
WAIT_FOR_OTHERS = timedelta(days=7)


@dataclass(frozen=True)
class Scene:
    """One optical + SAR pair to predict; ``source`` says where it was listed (for messages)."""

    name: str
    optical: Path
    sar: Path
    source: str

    def outputs(self, out_dir: str | Path, probabilities: bool = False, cloudfree: bool = False) -> dict[str, Path]:
        """{"out": …, "probabilities": …, "cloudfree": …} (the asked-for ones) under ``out_dir``."""
        wanted = {"out": True, "probabilities": probabilities, "cloudfree": cloudfree}
        return {key: Path(out_dir) / f"{self.name}{suffix}" for key, suffix in OUTPUT_SUFFIXES.items() if wanted[key]}


def _check_names(scenes: list[Scene], where: Path) -> list[Scene]:
    if not scenes:
        raise DataError(f"{where}: expected at least one scene pair, found none")
    seen: dict[str, Scene] = {}
    for scene in scenes:
        if not scene.name or scene.name in (".", "..") or "/" in scene.name or "\\" in scene.name:
            raise DataError(f"{scene.source}: expected a scene name usable as a file name, found {scene.name!r}")
        first = seen.get(scene.name)
        if first is not None and (first.optical, first.sar) != (scene.optical, scene.sar):
            raise DataError(f"{scene.source}: expected scene names to be unique (they name the outputs), found "
                            f"{scene.name!r} again (first at {first.source}) for other files; give a 'name' column")
        seen.setdefault(scene.name, scene)
    return list(seen.values())  # a pair listed twice (M3M-CR's sample lists its one row 8 times) is predicted once


def _read_rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="") as handle:
            return [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path}: expected a readable CSV scene list, found: {error}") from None


def _m3mcr_scenes(csv_path: Path, base: Path) -> list[Scene]:
    from edc_lab.data.m3mcr import CSV_COLUMNS

    optical_column, sar_column = CSV_COLUMNS.index("optical"), CSV_COLUMNS.index("sar")
    scenes = []
    for number, row in enumerate(_read_rows(csv_path), start=1):
        if len(row) != len(CSV_COLUMNS):
            raise DataError(f"{csv_path}, line {number}: expected {len(CSV_COLUMNS)} columns "
                            f"({', '.join(CSV_COLUMNS)}), found {len(row)}")
        optical = base / row[optical_column].strip()
        scenes.append(Scene(optical.stem, optical, base / row[sar_column].strip(), f"{csv_path}, line {number}"))
    return _check_names(scenes, csv_path)


def _list_scenes(csv_path: Path, rows: list[list[str]]) -> list[Scene]:
    header = [cell.strip().lower() for cell in rows[0]]
    missing = [column for column in LIST_COLUMNS if column not in header]
    if missing:
        raise DataError(f"{csv_path}: expected a header row with the columns {', '.join(LIST_COLUMNS)} (and "
                        f"optionally name), found {rows[0]}")
    where = {column: header.index(column) for column in (*LIST_COLUMNS, "name") if column in header}
    scenes = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise DataError(f"{csv_path}, line {number}: expected {len(header)} columns ({', '.join(header)}), "
                            f"found {len(row)}")
        optical, sar = (csv_path.parent / row[where[column]].strip() for column in LIST_COLUMNS)
        name = row[where["name"]].strip() if "name" in where else optical.stem
        scenes.append(Scene(name, optical, sar, f"{csv_path}, line {number}"))
    return _check_names(scenes, csv_path)


def read_scene_list(path: str | Path, split: str = "test") -> list[Scene]:
    """The scene pairs listed by a CSV, an M3M-CR folder (``split``) or a WHU-OPT-SAR folder (module docstring).

    Only the list is checked here (its format, unique names); a listed file
    that is missing or unreadable fails its own scene when it is predicted.
    """
    path = Path(path)
    if path.is_file():
        rows = _read_rows(path)
        if not rows:
            raise DataError(f"{path}: expected a scene list (a header with {', '.join(LIST_COLUMNS)}, or M3M-CR's "
                            f"five columns), found an empty file")
        if any(cell.strip().lower() in LIST_COLUMNS for cell in rows[0]):
            return _list_scenes(path, rows)
        return _m3mcr_scenes(path, path.parent / split)
    if not path.is_dir():
        raise DataError(f"{path}: expected a scene list (CSV) or a dataset folder, found no such file or folder")
    if (path / "optical").is_dir():
        opticals = sorted((path / "optical").glob("*.tif"))
        scenes = [Scene(o.stem, o, path / "sar" / o.name, str(o)) for o in opticals]
        if not scenes:
            raise DataError(f"{path / 'optical'}: expected WHU-OPT-SAR optical scenes (*.tif), found none")
        return _check_names(scenes, path)
    for candidate in (path / f"{split}.csv", path / f"one_{split}_sample.csv"):
        if candidate.is_file():
            return _m3mcr_scenes(candidate, path / split)
    raise DataError(f"{path}: expected a WHU-OPT-SAR folder (optical/ and sar/) or an M3M-CR folder with "
                    f"{split}.csv or one_{split}_sample.csv (split {split!r}), found neither")


def shard(scenes: Sequence[Scene], rank: int, world_size: int) -> list[Scene]:
    """The scenes of process ``rank`` of ``world_size``: every ``world_size``-th, starting at ``rank``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"shard: expected 0 <= rank < world_size, found rank {rank} of {world_size}")
    return list(scenes[rank::world_size])


def process_rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment variables; (0, 1, 0) without them."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as error:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK: expected integers, found {error}") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK / WORLD_SIZE: expected 0 <= RANK < WORLD_SIZE, found {rank} / {world_size}")
    return rank, world_size, local_rank


def check_output_folder(out_dir: str | Path) -> Path:
    """Create ``out_dir`` when missing and prove it writable (one DataError naming it), before any scene."""
    out_dir = Path(out_dir)
    try:
        mode = os.stat(out_dir).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:
        raise DataError(f"{out_dir}: expected an output folder, found: {error.strerror or error}") from None
    if mode is not None and not stat.S_ISDIR(mode):
        raise DataError(f"{out_dir}: expected an output folder, found {describe_file(mode)}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".edc-lab-write-test."):
            pass
    except OSError as error:
        raise DataError(f"{out_dir}: expected a writable output folder, found: {error.strerror or error}") from None
    return out_dir


def _file_identity(path: Path) -> tuple:
    """What ``path`` is on disk: (device, inode) when it exists (hard links are one file), else its resolved path."""
    try:
        status = os.stat(path)
        return ("file", status.st_dev, status.st_ino)
    except OSError:
        return ("path", os.path.realpath(path))


def refused_scenes(scenes: Sequence[Scene], out_dir: str | Path, *, probabilities: bool = False,
                   cloudfree: bool = False, inputs: dict[str, Path] | None = None) -> dict[str, str]:
    """{scene name: why} for the scenes of the *whole* list whose outputs cannot be written safely.

    Computed before the first scene runs, the same in every process. A scene
    is refused when one of its outputs is not a usable path
    (:func:`edc_lab.data.outputs.check_output_file`: a name too long, a device,
    a FIFO, a folder) or is the same file — links and ``..`` resolved, hard
    links by inode — as an input of any row (its own included), as an
    ``inputs`` file (the checkpoint) or as an output of another row. Both rows
    are named. Without this, a scene named after another's input overwrote it
    (``--overwrite``), and one whose output another scene wrote first was
    skipped as done although never predicted. The other scenes still run.
    """
    owners: dict[tuple, list[tuple[str, Scene | None]]] = {}  # identity -> [(option, scene or None: the command line)]
    for option, path in (inputs or {}).items():
        owners.setdefault(_file_identity(Path(path)), []).append((option, None))
    for scene in scenes:
        for option, path in (("--optical", scene.optical), ("--sar", scene.sar)):
            owners.setdefault(_file_identity(path), []).append((option, scene))
    outputs = [(scene, f"--{key}", path) for scene in scenes
               for key, path in scene.outputs(out_dir, probabilities, cloudfree).items()]
    for scene, option, path in outputs:
        owners.setdefault(_file_identity(path), []).append((option, scene))
    refused: dict[str, str] = {}
    for scene, option, path in outputs:
        reason = _output_conflict(scene, option, path, owners[_file_identity(path)])
        if reason is not None:
            refused.setdefault(scene.name, f"{scene.source}: {reason}")
    return refused


def _output_conflict(scene: Scene, option: str, path: Path, owners: list[tuple[str, Scene | None]]) -> str | None:
    """Why output ``path`` (``option``) of ``scene`` cannot be written, or None; ``owners``: every use of that file."""
    try:
        check_output_file(option, path)
    except DataError as error:
        return str(error)
    for other_option, other in owners:
        if other is scene and other_option == option:
            continue  # this very output
        row = ("the command line" if other is None else "this row" if other is scene
               else f"{other.source} (scene {other.name})")
        return (f"expected outputs distinct from every input and output of the list, found {option} {path} the "
                f"same file as {other_option} of {row}; refusing to overwrite it")
    return None


def _outputs_done(outputs: dict[str, Path]) -> bool:
    """Whether every output exists as a TIFF (a complete earlier prediction: files are renamed only when whole)."""
    return all(path.is_file() and is_tiff(path) for path in outputs.values())


def predict_scenes(predictor, scenes: Sequence[Scene], out_dir: str | Path, *, probabilities: bool = False,
                   cloudfree: bool = False, overwrite: bool = False, rank: int = 0, world_size: int = 1,
                   log=print) -> dict:
    """Predict this process's share of ``scenes`` with a loaded :class:`edc_lab.predict.Predictor`.

    Returns ``{"done": [names], "skipped": [names], "failed": [{"name", "optical", "sar", "source", "error"}]}``.
    A scene is skipped when every output it would write exists as a TIFF (and
    ``overwrite`` is False). The outputs of the whole list are checked first
    (:func:`refused_scenes`); then a scene that fails for any reason — a
    refused output, a bad file, an error of the operating system or of torch —
    is reported and the next one runs. A signal (:class:`edc_lab.data.outputs.Interrupted`)
    still stops the run.
    """
    out_dir = check_output_folder(out_dir)
    refused = refused_scenes(scenes, out_dir, probabilities=probabilities, cloudfree=cloudfree,
                             inputs={"--checkpoint": predictor.checkpoint})
    mine = shard(scenes, rank, world_size)
    report: dict[str, list] = {"done": [], "skipped": [], "failed": []}
    tag = f"[{rank}/{world_size}] " if world_size > 1 else ""
    for index, scene in enumerate(mine, start=1):
        where = f"{tag}{index}/{len(mine)} {scene.name}"
        try:
            if scene.name in refused:
                raise DataError(refused[scene.name])
            outputs = scene.outputs(out_dir, probabilities, cloudfree)
            for path in outputs.values():  # left by a killed run (SIGKILL cannot clean up)
                remove_stale_temporaries(path)
            if not overwrite and _outputs_done(outputs):
                report["skipped"].append(scene.name)
                log(f"{where}: outputs exist, skipped")
                continue
            summary = predictor.predict(scene.optical, scene.sar, outputs["out"],
                                        probabilities_path=outputs.get("probabilities"),
                                        cloudfree_path=outputs.get("cloudfree"))
        except Exception as error:  # noqa: BLE001 (a scene's failure, whatever it is, must not stop the others)
            message = _failure_message(error)
            report["failed"].append({"name": scene.name, "optical": str(scene.optical), "sar": str(scene.sar),
                                     "source": scene.source, "error": message})
            log(f"{where}: FAILED ({scene.source}): {message}", file=sys.stderr)
            continue
        report["done"].append(scene.name)
        height, width = summary["shape"]
        log(f"{where}: wrote {outputs['out']} ({height}x{width} px)")
    return report


def _failure_message(error: Exception) -> str:
    """A failed scene's reason: the message of a bad input, the type too for anything else (torch, a bug)."""
    from edc_lab.train.checkpoint import CheckpointError

    if isinstance(error, (DataError, ValueError, CheckpointError, OSError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def finish_together(report: dict, world_size: int) -> dict[str, int]:
    """Wait until every process has finished its share; the counts (done, skipped, failed) summed over processes.

    Under torchrun, a process that exits with a failure makes torchrun stop
    the others (SIGTERM) at once, in the middle of their scenes. So no process
    exits before all are done: each joins a ``gloo`` process group (CPU
    tensors, whatever device predicts) only now, at the end, with a timeout
    (:data:`WAIT_FOR_OTHERS`) long enough for the slowest share, adds the
    counts, and leaves the group after a barrier. From here on SIGTERM is
    ignored: this process's scenes are done and its files complete, and a
    SIGTERM now only means that torchrun stops everyone because another
    process exited with a failure; this one then exits with its own status
    instead of being counted as killed. One process: its own counts.
    """
    counts = torch.tensor([len(report[key]) for key in REPORT_KEYS], dtype=torch.int64)
    if world_size > 1:
        import torch.distributed as dist

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        dist.init_process_group(backend="gloo", timeout=WAIT_FOR_OTHERS)
        try:
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
            dist.barrier()
        finally:
            dist.destroy_process_group()
    return dict(zip(REPORT_KEYS, counts.tolist()))
