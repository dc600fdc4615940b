"""Hostile outputs: an output path never destroys what it names, and an interrupted run leaves no temporary file.

The companion of ``test_hostile_inputs.py``, for what a command *writes*
(``edc_lab.data.outputs``, ``edc_lab.predict`` (with ``edc_lab.predict.scenes``), ``edc_lab.bench``):

* an output that is a device, a FIFO, a socket or a folder is refused before
  any work, naming the option and what was found (as root, ``--out /dev/null``
  used to replace the machine's ``/dev/null`` by a regular file);
* an existing file is replaced only by the same kind of output (``bench --out``
  used to overwrite a checkpoint with JSON);
* the outputs of a scene list are checked against every input and output of
  the list before the first scene runs (a scene named after another one's
  optical image used to overwrite it); one bad row fails alone, also under
  torchrun, where a failing process used to make torchrun kill the others;
* SIGTERM and SIGINT remove the temporary files and end in one line; what a
  SIGKILL leaves is removed by the next run.

Each case checks the exit code or the exception, the message fragments, and
that inputs are unchanged (hashes) and nothing else was written (listings).
Signals are real (a ``python -m edc_lab.cli predict`` child process).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from edc_lab.cli import main
from edc_lab.data.outputs import check_output_file, stale_temporaries
from edc_lab.data.sample import DataError
from edc_lab.data.writer import write_geotiff
from edc_lab.predict import Predictor
from edc_lab.predict.scenes import read_scene_list, refused_scenes

CRS = "EPSG:32649"
#: a scene big enough (with 16-pixel windows, one per batch) that a child process is still predicting when signalled
BIG = 512


# --------------------------------------------------------------------------- helpers
def unit_scene(folder: Path, name: str = "", size: int = 40, seed: int = 0) -> tuple[Path, Path]:
    """Optical (4 bands) and SAR (2 bands) floats in [0, 1] on one grid ('unit' convention): ``{name}optical.tif``…"""
    rng = np.random.default_rng(seed)
    transform = Affine(5.0, 0, 500000.0, 0, -5.0, 3400000.0)
    folder.mkdir(parents=True, exist_ok=True)
    optical, sar = folder / f"{name}optical.tif", folder / f"{name}sar.tif"
    write_geotiff(optical, rng.random((4, size, size), dtype=np.float32), crs=CRS, transform=transform)
    write_geotiff(sar, rng.random((2, size, size), dtype=np.float32), crs=CRS, transform=transform)
    return optical, sar


def scene_list(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([["optical", "sar", "name"], *[[str(cell) for cell in row] for row in rows]])
    return path


def digests(*paths: Path) -> dict[Path, str]:
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


def listing(folder: Path) -> list[str]:
    """Every entry under ``folder`` (relative, sorted), hidden temporary files included."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def run_cli(argv: list, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``edc-lab argv`` run in-process."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def predict_argv(checkpoint, optical, sar, *extra) -> list:
    return ["predict", "--checkpoint", checkpoint, "--optical", optical, "--sar", sar, "--window", "32",
            "--overlap", "8", "--convention", "unit", "--device", "cpu", *extra]


def scenes_argv(checkpoint, listing_path, out_dir, *extra) -> list:
    return ["predict", "--checkpoint", checkpoint, "--scenes", listing_path, "--out-dir", out_dir, "--window", "32",
            "--overlap", "8", "--convention", "unit", "--device", "cpu", *extra]


@pytest.fixture
def scene(tmp_path):
    """A 40x40 scene pair in ``tmp_path/in``."""
    return unit_scene(tmp_path / "in")


# --------------------------------------------------------------------------- 1. devices, FIFOs, sockets, folders
@pytest.fixture
def short_tmp():
    """A folder with a short path (a UNIX socket's path is limited to about 100 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="edc-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder)


def _socket(folder: Path) -> Path:
    path = folder / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()  # the socket file stays
    return path


@pytest.mark.parametrize("make_path,kind", [
    pytest.param(lambda folder: Path("/dev/null"), "a character device", id="dev-null"),
    pytest.param(lambda folder: (os.mkfifo(folder / "fifo"), folder / "fifo")[1], "a FIFO", id="fifo"),
    pytest.param(_socket, "a socket", id="socket"),
    pytest.param(lambda folder: folder, "a directory", id="directory"),
])
def test_an_output_must_be_a_regular_file_or_new(make_path, kind, short_tmp):
    """The one check every writer uses: only a regular file or a new path (a dangling link is new) passes."""
    path = make_path(short_tmp)
    before = path.lstat()
    with pytest.raises(DataError) as caught:
        check_output_file("--out", path)
    message = str(caught.value)
    assert message.startswith(f"--out {path}: expected a regular file or a path that does not exist yet, found {kind}")
    assert path.lstat().st_mode == before.st_mode and path.lstat().st_ino == before.st_ino  # untouched
    (short_tmp / "file.tif").write_bytes(b"x")
    os.symlink(short_tmp / "nowhere", short_tmp / "dangling.tif")
    for fine in (short_tmp / "new.tif", short_tmp / "file.tif", short_tmp / "dangling.tif"):
        assert check_output_file("--out", fine) == fine


@pytest.mark.parametrize("option,make_target,kind", [
    pytest.param("--out", lambda tmp: (os.mkfifo(tmp / "fifo.tif"), tmp / "fifo.tif")[1], "a FIFO", id="out-fifo"),
    pytest.param("--out", lambda tmp: (os.symlink("/dev/null", tmp / "null.tif"), tmp / "null.tif")[1],
                 "a character device", id="out-link-to-dev-null"),
    pytest.param("--probabilities", lambda tmp: (os.mkfifo(tmp / "p.tif"), tmp / "p.tif")[1], "a FIFO",
                 id="probabilities-fifo"),
])
def test_predict_refuses_a_device_or_fifo_output(option, make_target, kind, m3mcr_checkpoint, scene, tmp_path,
                                                 capsys):
    """``--out`` naming a FIFO or (through a link) /dev/null: exit 2, one line, the FIFO / device untouched."""
    optical, sar = scene
    target = make_target(tmp_path)
    outputs = {"--out": tmp_path / "map.tif", option: target}
    inputs, files = digests(optical, sar, m3mcr_checkpoint), listing(tmp_path)
    code, _, err = run_cli(predict_argv(m3mcr_checkpoint, optical, sar, *[x for item in outputs.items() for x in item]),
                           capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"{option} {target}: expected a regular file or a path that does not exist yet, found {kind}" in err
    assert digests(optical, sar, m3mcr_checkpoint) == inputs and listing(tmp_path) == files
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert stat.S_ISFIFO(target.stat().st_mode) or stat.S_ISCHR(target.stat().st_mode)


def test_predict_replaces_only_an_earlier_prediction(m3mcr_checkpoint, scene, tmp_path, capsys):
    """An existing ``--out`` that is not a TIFF (a checkpoint, a list) is refused; an earlier map is replaced."""
    optical, sar = scene
    other_checkpoint = tmp_path / "other.pt"
    shutil.copy(m3mcr_checkpoint, other_checkpoint)
    kept, files = digests(optical, sar, other_checkpoint), listing(tmp_path)
    code, _, err = run_cli(predict_argv(m3mcr_checkpoint, optical, sar, "--out", other_checkpoint), capsys)
    assert code == 2 and "Traceback" not in err
    assert f"--out {other_checkpoint}: expected a new file, or a TIFF (an earlier prediction) to replace" in err
    assert "refusing to overwrite it" in err
    assert digests(optical, sar, other_checkpoint) == kept and listing(tmp_path) == files
    out = tmp_path / "map.tif"
    assert run_cli(predict_argv(m3mcr_checkpoint, optical, sar, "--out", out), capsys)[0] == 0
    assert run_cli(predict_argv(m3mcr_checkpoint, optical, sar, "--out", out), capsys)[0] == 0  # its own output


# --------------------------------------------------------------------------- 2. bench --out
def test_bench_refuses_an_output_it_did_not_write(m3mcr_checkpoint, tmp_path, capsys):
    """``bench --out`` a checkpoint or a FIFO: refused before measuring; its own earlier result is replaced."""
    checkpoint = tmp_path / "model.pt"
    shutil.copy(m3mcr_checkpoint, checkpoint)
    os.mkfifo(tmp_path / "fifo.json")
    bench = ["bench", "--models", "edc_tiny", "--sizes", "32", "--repeats", "1", "--warmup", "0", "--no-memory"]
    kept, files = digests(checkpoint), listing(tmp_path)
    for target, fragment in [(checkpoint, "expected a new file, or a result of edc-lab bench (JSON) to replace"),
                             (tmp_path / "fifo.json", "found a FIFO")]:
        code, out, err = run_cli([*bench, "--out", target], capsys)
        assert code == 2 and "Traceback" not in err and f"--out {target}: " in err and fragment in err, err
        assert "edc_tiny" not in out, "refused before anything is measured"
    assert digests(checkpoint) == kept and listing(tmp_path) == files
    result = tmp_path / "bench.json"
    assert run_cli([*bench, "--out", result], capsys)[0] == 0
    assert run_cli([*bench, "--out", result], capsys)[0] == 0  # an earlier result of bench is replaced
    assert listing(tmp_path) == sorted([*files, "bench.json"])


def test_evaluate_refuses_a_fifo_output_before_evaluating(m3mcr_checkpoint, tmp_path, capsys):
    """``evaluate --out`` a FIFO: refused (exit 2, one line) before any scene is evaluated; the FIFO stays."""
    fifo = tmp_path / "metrics.json"
    os.mkfifo(fifo)
    code, out, err = run_cli(["evaluate", "--checkpoint", m3mcr_checkpoint, "--data", "synthetic", "--count", "1",
                              "--size", "32", "--out", fifo], capsys)
    assert code == 2 and "Traceback" not in err and f"--out {fifo}: " in err and "found a FIFO" in err, err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and listing(tmp_path) == ["metrics.json"]


# --------------------------------------------------------------------------- 3. a scene list's outputs
def _colliding_list(tmp_path: Path) -> tuple[Path, Path, dict]:
    """Rows: a, b, "a_optical" (its map = row a's optical), "b.probabilities" (its map = row b's probabilities).

    The output folder is a symbolic link to the input folder and row a's
    paths go through ``data/../data``: only resolved paths show the clashes.
    """
    data = tmp_path / "data"
    for name, seed in (("a_", 1), ("b_", 2), ("c_", 3)):
        unit_scene(data, name, seed=seed)
    os.symlink(data, tmp_path / "maps")
    listing_path = scene_list(tmp_path / "scenes.csv", [
        ["data/../data/a_optical.tif", "data/a_sar.tif", "a"],
        ["data/b_optical.tif", "data/b_sar.tif", "b"],
        ["data/c_optical.tif", "data/c_sar.tif", "a_optical"],
        ["data/c_optical.tif", "data/c_sar.tif", "b.probabilities"],
    ])
    return listing_path, tmp_path / "maps", digests(*sorted(data.iterdir()))


@pytest.mark.parametrize("overwrite", [False, True], ids=["skip-existing", "overwrite"])
def test_scene_outputs_that_are_other_rows_files_are_refused_before_the_first_scene(
        overwrite, m3mcr_checkpoint, tmp_path, capsys):
    """A row's output equal to another row's input or output: both rows named, nothing of theirs written.

    Before: with ``--overwrite`` row "a_optical" replaced row a's optical image;
    without it, the row was skipped as "outputs exist" although never predicted.
    """
    listing_path, maps, inputs = _colliding_list(tmp_path)
    extra = ["--save-probabilities"] + (["--overwrite"] if overwrite else [])
    code, out, err = run_cli(scenes_argv(m3mcr_checkpoint, listing_path, maps, *extra), capsys)
    assert code == 1 and "Traceback" not in err
    assert "1 predicted, 0 skipped (done before), 3 failed, of 4 scenes" in out
    clobber = next(line for line in err.splitlines() if line.startswith("edc-lab predict: failed: a_optical"))
    assert "line 4" in clobber and "same file as --optical of" in clobber and "line 2 (scene a)" in clobber
    twins = [line for line in err.splitlines() if line.startswith(("edc-lab predict: failed: b ",
                                                                   "edc-lab predict: failed: b.probabilities "))]
    assert len(twins) == 2 and "line 5 (scene b.probabilities)" in twins[0] and "line 3 (scene b)" in twins[1]
    assert digests(*inputs) == inputs, "no input was overwritten"
    assert listing(tmp_path / "data") == sorted([*(p.name for p in inputs), "a.tif", "a.probabilities.tif"])


def test_refused_scenes_names_both_rows(m3mcr_checkpoint, tmp_path):
    """The API behind it: {scene: why}, computed for the whole list (every process gets the same answer)."""
    listing_path, maps, _ = _colliding_list(tmp_path)
    refused = refused_scenes(read_scene_list(listing_path), maps, probabilities=True,
                             inputs={"--checkpoint": m3mcr_checkpoint})
    assert sorted(refused) == ["a_optical", "b", "b.probabilities"]
    assert refused["a_optical"].startswith(f"{listing_path}, line 4: expected outputs distinct from every input")
    assert "same file as --probabilities of" in refused["b.probabilities"]


# --------------------------------------------------------------------------- 4. one bad row, the others finish
def test_a_bad_row_fails_alone_and_the_others_finish(m3mcr_checkpoint, tmp_path, capsys):
    """A 300-character name ("File name too long") and a FIFO in a row's output place fail their rows only."""
    rows = []
    for index in range(4):
        optical, sar = unit_scene(tmp_path / f"s{index}", seed=index)
        rows.append([optical, sar, f"scene{index}"])
    rows[1][2] = "x" * 300
    maps = tmp_path / "maps"
    maps.mkdir()
    os.mkfifo(maps / "scene3.tif")
    inputs = digests(*(path for row in rows for path in row[:2]))
    code, out, err = run_cli(scenes_argv(m3mcr_checkpoint, scene_list(tmp_path / "scenes.csv", rows), maps), capsys)
    assert code == 1 and "Traceback" not in err
    assert "2 predicted, 0 skipped (done before), 2 failed, of 4 scenes" in out
    assert re.search(r"failed: x{300} \(.*line 3: .*expected a file name of at most \d+ bytes", err)
    assert re.search(r"failed: scene3 \(.*line 5: .*scene3.tif: expected a regular file .* found a FIFO", err)
    assert listing(maps) == ["scene0.tif", "scene2.tif", "scene3.tif"]
    assert stat.S_ISFIFO((maps / "scene3.tif").stat().st_mode), "the FIFO is still a FIFO"
    assert digests(*inputs) == inputs


def run_torchrun_predict(args: list, processes: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "edc_lab.cli", "predict", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.slow
def test_under_torchrun_a_failing_process_lets_the_others_finish(m3mcr_checkpoint, tmp_path):
    """Process 0's two rows fail at once; process 1 still predicts its two scenes, and no temporary file stays.

    Before, process 0 exited with status 1 while process 1 was predicting, and
    torchrun stopped process 1 (SIGTERM) mid-scene, its temporary files left.
    Process 1's scenes are made slow (16-pixel windows, one per batch). Only
    process 0 fails in torchrun's summary: none is reported killed.
    """
    rows = []
    for index in range(4):
        optical, sar = unit_scene(tmp_path / f"s{index}", size=192 if index % 2 else 40, seed=index)
        rows.append([optical, sar, f"scene{index}"])
    rows[0][2] = "x" * 300  # process 0: rows 0 and 2
    rows[2][1] = tmp_path / "missing_sar.tif"
    maps = tmp_path / "maps"
    result = run_torchrun_predict(["--checkpoint", m3mcr_checkpoint, "--scenes", scene_list(tmp_path / "l.csv", rows),
                                   "--out-dir", maps, "--window", "16", "--overlap", "8", "--batch-size", "1",
                                   "--convention", "unit", "--device", "cpu"])
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "process 0 of 2: 0 predicted, 0 skipped (done before), 2 failed, of 4 scenes" in output, output[-3000:]
    assert "process 1 of 2: 2 predicted, 0 skipped (done before), 0 failed, of 4 scenes" in output, output[-3000:]
    assert "all 2 processes: 2 predicted, 0 skipped, 2 failed, of 4 scenes" in output
    assert re.search(r"failed: x{300} \(.*line 2: ", output) and "failed: scene2" in output
    assert "missing_sar.tif" in output
    assert listing(maps) == ["scene1.tif", "scene3.tif"], "every scene of process 1 done, no temporary file"
    assert re.search(r"exitcode\s*:\s*-15", output) is None, "torchrun killed no process (SIGTERM)"
    with rasterio.open(maps / "scene3.tif") as written:
        assert written.shape == (192, 192)


# --------------------------------------------------------------------------- 5. signals
def start_big_prediction(checkpoint, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A child ``python -m edc_lab.cli predict`` on a BIG² scene; returns once its temporary files exist."""
    optical, sar = unit_scene(tmp_path / "big", size=BIG)
    maps = tmp_path / "maps"
    argv = ["--checkpoint", checkpoint, "--optical", optical, "--sar", sar, "--out", maps / "map.tif",
            "--probabilities", maps / "p.tif", "--window", "16", "--overlap", "8", "--batch-size", "1",
            "--convention", "unit", "--device", "cpu"]
    child = subprocess.Popen([sys.executable, "-m", "edc_lab.cli", "predict", *map(str, argv)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 300
    while len(list(maps.glob(".*.tmp"))) < 2:
        assert child.poll() is None, f"the child ended before writing: {child.communicate()}"
        assert time.monotonic() < deadline, "no temporary file appeared"
        time.sleep(0.05)
    return child, maps


@pytest.mark.slow
@pytest.mark.parametrize("name,code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_sigterm_and_sigint_remove_the_temporary_files(name, code, m3mcr_checkpoint, tmp_path):
    """Signalled mid-scene: the temporary files go, one line is printed, the status is 128 + the signal."""
    child, maps = start_big_prediction(m3mcr_checkpoint, tmp_path)
    child.send_signal(getattr(signal, name))
    out, err = child.communicate(timeout=300)
    assert child.returncode == code, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines() == [f"edc-lab predict: interrupted by {name}; removed temporary files"], err
    assert listing(maps) == [], "no temporary file, no output"


@pytest.mark.slow
def test_a_rerun_removes_what_a_sigkill_left(m3mcr_checkpoint, scene, tmp_path):
    """SIGKILL cannot be caught: the next write of the same output removes the dead process's temporary files.

    A temporary file of a process that still runs (here: this test's) is kept:
    it may be a write in progress.
    """
    child, maps = start_big_prediction(m3mcr_checkpoint, tmp_path)
    child.kill()
    child.communicate(timeout=300)
    left = sorted(path.name for path in maps.glob(".*.tmp"))
    assert [re.fullmatch(rf"\.(map|p)\.tif\.{child.pid}-\w+\.tmp", name) is not None for name in left] == [True, True]
    live = maps / f".map.tif.{os.getpid()}-inflight.tmp"
    live.write_bytes(b"a write in progress")
    assert stale_temporaries(maps / "map.tif") == [maps / name for name in left if name.startswith(".map.tif.")]
    optical, sar = scene
    result = subprocess.run([sys.executable, "-m", "edc_lab.cli", *map(str, predict_argv(
        m3mcr_checkpoint, optical, sar, "--out", maps / "map.tif", "--probabilities", maps / "p.tif"))],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert listing(maps) == [live.name, "map.tif", "p.tif"]


def test_predictor_api_leaves_nothing_when_interrupted(m3mcr_checkpoint, scene, tmp_path, monkeypatch):
    """The API: a KeyboardInterrupt in the middle of writing leaves no temporary file and no output."""
    import edc_lab.data.writer as writer

    def interrupt(self, values):
        raise KeyboardInterrupt

    monkeypatch.setattr(writer.RowWriter, "write", interrupt)
    predictor = Predictor(m3mcr_checkpoint, window=32, overlap=8, convention="unit", device="cpu")
    optical, sar = scene
    with pytest.raises(KeyboardInterrupt):
        predictor.predict(optical, sar, tmp_path / "maps" / "map.tif", probabilities_path=tmp_path / "maps" / "p.tif")
    assert listing(tmp_path / "maps") == []
