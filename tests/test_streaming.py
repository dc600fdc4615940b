"""Streaming prediction and many scenes (edc_lab.predict, edc_lab.data.writer.RowWriter, edc_lab.predict.scenes).

The promises checked here: a streamed scene equals the in-memory one bit for bit
(sizes that are not multiples of the window, SAR on another grid, any batch
size); each input row is read once and memory holds a few window-heights of
rows; outputs are tiled, compressed, optionally with overviews, and never
half-written; a scene list gives each process its share, reports failures with
their paths, skips finished scenes, and two processes write what one writes.
"""

import csv
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from edc_lab.data.sample import DataError
from edc_lab.data.writer import TILE, RowWriter, overview_factors, write_geotiff
from edc_lab.predict import Predictor, RollingRows, blend_rows, predict_geotiff, sliding_window_predict
from edc_lab.predict.scenes import Scene, predict_scenes, read_scene_list, shard

CRS = "EPSG:32649"


@pytest.fixture
def checkpoint(m3mcr_checkpoint):
    return m3mcr_checkpoint


def m3mcr_pair(root, seed=3, size=150):
    """A synthetic scene in the M3M-CR layout: 3 m optical, 10 m SAR on a shifted grid (alignment needed)."""
    from edc_lab.data.synthetic import synthetic_scene
    from edc_lab.data.writer import write_m3mcr_sample

    relative = write_m3mcr_sample(synthetic_scene(seed, size=size, cloud_cover=0.3), root)
    return root / "train" / relative[1], root / "train" / relative[2]


def unit_pair(root, height, width, seed=0, nodata_rows=0):
    """Optical and SAR floats in [0, 1] on one grid ('unit' convention); the first rows optionally nodata."""
    rng = np.random.default_rng(seed)
    transform = Affine(5.0, 0, 500000.0, 0, -5.0, 3400000.0)
    optical = rng.random((4, height, width), dtype=np.float32)
    optical[:, :nodata_rows] = -1.0
    sar = rng.random((2, height, width), dtype=np.float32)
    root.mkdir(parents=True, exist_ok=True)
    write_geotiff(root / "optical.tif", optical, crs=CRS, transform=transform, nodata=-1.0)
    write_geotiff(root / "sar.tif", sar, crs=CRS, transform=transform)
    return root / "optical.tif", root / "sar.tif"


def read_all(path):
    with rasterio.open(path) as source:
        return source.read()


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- streamed == in memory
@pytest.mark.parametrize("size,window,overlap,batch_size", [(150, 64, 16, 3), (61, 64, 16, 4), (133, 32, 0, 1),
                                                            (97, 48, 20, 7)])
def test_streamed_scene_equals_the_in_memory_scene_bit_for_bit(checkpoint, tmp_path, size, window, overlap, batch_size):
    optical, sar = m3mcr_pair(tmp_path, size=size)  # SAR resampled by georeference, as on real tiles
    outputs = {}
    for stream in (False, True):
        paths = {key: tmp_path / f"{key}-{stream}.tif" for key in ("out", "p", "cf")}
        summary = predict_geotiff(checkpoint, optical, sar, paths["out"], window, overlap, batch_size=batch_size,
                                  probabilities_path=paths["p"], cloudfree_path=paths["cf"], stream=stream)
        assert summary["streamed"] is stream
        outputs[stream] = (summary, {key: read_all(path) for key, path in paths.items()})
    (summary_memory, memory), (summary_stream, streamed) = outputs[False], outputs[True]
    for key in memory:
        assert memory[key].dtype == streamed[key].dtype
        np.testing.assert_array_equal(memory[key], streamed[key], err_msg=key)
    assert summary_memory["class_counts"] == summary_stream["class_counts"]
    assert summary_memory["nodata_pixels"] == summary_stream["nodata_pixels"]


def test_nodata_rows_are_marked_the_same_when_streamed(checkpoint, tmp_path):
    optical, sar = unit_pair(tmp_path, 90, 70, nodata_rows=37)
    maps = {}
    for stream in (False, True):
        summary = predict_geotiff(checkpoint, optical, sar, tmp_path / f"{stream}.tif", 32, 8, convention="unit",
                                  stream=stream)
        maps[stream] = read_all(tmp_path / f"{stream}.tif")[0]
        assert summary["nodata_pixels"] == 37 * 70
    np.testing.assert_array_equal(maps[False], maps[True])
    assert (maps[True][:37] == 255).all() and (maps[True][37:] != 255).all()


class Pointwise(torch.nn.Module):
    """Logits = a function of each pixel alone: every window agrees on every pixel."""

    def forward(self, optical, sar):
        return {"logits": 5 * optical + sar[:, :1], "cloudfree": optical.clamp(0, 1)}


def test_blend_rows_reads_each_row_once_and_holds_a_few_window_heights():
    height, width, window, overlap = 301, 40, 32, 8
    optical, sar = torch.rand(4, height, width), torch.rand(2, height, width)
    reads, yielded = [], []

    def read_rows(row0, row1):
        reads.append((row0, row1))
        return optical[:, row0:row1], sar[:, row0:row1]

    held = 0
    for row0, probabilities, cloudfree in blend_rows(Pointwise(), height, width, read_rows, window=window,
                                                     overlap=overlap, batch_size=2):
        yielded.append((row0, row0 + probabilities.shape[1]))
        held = max(held, max(hi for _, hi in reads) - row0)  # rows read but not yet yielded, plus this band
        expected = torch.softmax(5 * optical[:, row0:row0 + probabilities.shape[1]] + sar[:1, row0:row0 + probabilities.shape[1]], 0)
        assert torch.allclose(probabilities, expected, atol=1e-6)
        assert torch.allclose(cloudfree, optical[:, row0:row0 + probabilities.shape[1]], atol=1e-6)
    rows_read = np.zeros(height, dtype=int)
    for row0, row1 in reads:
        rows_read[row0:row1] += 1
    assert (rows_read == 1).all()  # every row read exactly once
    assert [start for start, _ in yielded] == [0] + [end for _, end in yielded[:-1]] and yielded[-1][1] == height
    assert len(yielded) > 5  # rows leave as soon as they are final, not at the end
    assert held <= window  # one window-height of rows: batches never straddle two rows of windows


def test_rolling_rows_keep_the_live_rows_through_moves_and_growth():
    rng = np.random.default_rng(0)
    rolling, reference, lo, most = RollingRows(2, 3, torch.float64), [], 0, 0
    for _ in range(300):
        if rng.random() < 0.5:
            count = int(rng.integers(1, 9))
            if rng.random() < 0.3:
                rolling.append(count)  # zeros
                rows = [np.zeros((2, 3)) for _ in range(count)]
            else:
                block = torch.from_numpy(rng.random((2, count, 3)))
                rolling.append(block)
                rows = [block[:, i].numpy() for i in range(count)]
            reference += rows
        else:
            lo = min(lo + int(rng.integers(0, 6)), lo + len(reference))
            rolling.forget(lo)
            reference = reference[len(reference) - (rolling.hi - lo):] if rolling.hi > lo else []
        assert (rolling.lo, rolling.hi) == (lo, lo + len(reference))
        most = max(most, len(reference))
        expected = np.stack(reference, axis=1) if reference else np.zeros((2, 0, 3))
        np.testing.assert_array_equal(rolling.rows().numpy(), expected)
    assert rolling.buffer.shape[1] == most  # grown only to the most rows ever live at once


def test_sliding_window_predict_is_blend_rows_collected():
    optical, sar = torch.rand(4, 45, 77), torch.rand(2, 45, 77)
    whole = sliding_window_predict(Pointwise(), optical, sar, window=16, overlap=5, batch_size=4)
    bands = list(blend_rows(Pointwise(), 45, 77, lambda a, b: (optical[:, a:b], sar[:, a:b]), window=16, overlap=5,
                            batch_size=4))
    assert torch.equal(whole["probabilities"], torch.cat([band[1] for band in bands], dim=1))


# --------------------------------------------------------------------------- the writer
def test_row_writer_writes_tiled_compressed_files_with_overviews(tmp_path):
    values = np.random.default_rng(0).integers(0, 6, (1, 700, 530)).astype(np.uint8)
    path = tmp_path / "map.tif"
    with RowWriter(path, 1, "uint8", crs=CRS, transform=Affine(3, 0, 0, 0, -3, 0), height=700, width=530,
                   nodata=255, overviews="nearest") as writer:
        for start, stop in [(0, 100), (100, 101), (101, 400), (400, 700)]:  # bands of any height
            writer.write(values[:, start:stop])
    with rasterio.open(path) as result:
        assert result.profile["tiled"] and result.block_shapes[0] == (TILE, TILE)
        assert result.compression.name.lower() == "deflate"
        assert result.overviews(1) == overview_factors(700, 530) == [2]
        np.testing.assert_array_equal(result.read(), values)
    assert not list(tmp_path.glob(".*.tmp"))


def test_row_writer_leaves_nothing_when_rows_are_missing_or_wrong(tmp_path):
    path = tmp_path / "map.tif"
    with pytest.raises(ValueError, match="expected 50 rows, found 20"):
        with RowWriter(path, 2, "float32", crs=CRS, transform=Affine(3, 0, 0, 0, -3, 0), height=50, width=10) as writer:
            writer.write(np.zeros((2, 20, 10), np.float32))
    with pytest.raises(ValueError, match=r"expected \(2, rows, 10\) values, found \(2, 5, 11\)"):
        with RowWriter(path, 2, "float32", crs=CRS, transform=Affine(3, 0, 0, 0, -3, 0), height=50, width=10) as writer:
            writer.write(np.zeros((2, 5, 11), np.float32))
    assert not path.exists() and not list(tmp_path.iterdir())


def test_a_failed_stream_leaves_the_previous_outputs_untouched(checkpoint, tmp_path):
    optical, sar = unit_pair(tmp_path, 80, 60)
    out = tmp_path / "map.tif"
    out.write_bytes(b"II*\x00previous map")
    with rasterio.open(sar, "r+") as source:  # the SAR turns bad below row 40: found mid-stream
        source.write(np.full((2, 40, 60), 7.0, np.float32), window=rasterio.windows.Window(0, 40, 60, 40))
    with pytest.raises(DataError, match=r"sar.tif: expected SAR \('unit' convention, rows"):
        predict_geotiff(checkpoint, optical, sar, out, 32, 8, convention="unit", probabilities_path=tmp_path / "p.tif")
    assert out.read_bytes() == b"II*\x00previous map" and not (tmp_path / "p.tif").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_streaming_refuses_a_scene_beyond_its_limit_before_reading(checkpoint, tmp_path, monkeypatch):
    import edc_lab.predict.predictor as predict

    optical, sar = unit_pair(tmp_path, 40, 30)
    monkeypatch.setattr(predict, "MAX_STREAM_PIXELS", 1000)
    with pytest.raises(DataError, match=r"optical.tif: expected a scene of at most 1000 pixels, found .*40x30"):
        predict_geotiff(checkpoint, optical, sar, tmp_path / "map.tif", 32, 8, convention="unit")


# --------------------------------------------------------------------------- scene lists
def write_list(path, rows, header=("optical", "sar", "name")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def test_scene_lists_in_three_layouts(tmp_path):
    listed = read_scene_list(write_list(tmp_path / "list.csv", [["a/o.tif", "a/s.tif", "one"], ["/x/o.tif", "/x/s.tif", "two"]]))
    assert [(s.name, s.optical, s.sar) for s in listed] == [
        ("one", tmp_path / "a/o.tif", tmp_path / "a/s.tif"), ("two", tmp_path.parent / "/x/o.tif", tmp_path.parent / "/x/s.tif")]
    whu = tmp_path / "whu"
    (whu / "optical").mkdir(parents=True)
    for name in ("B.tif", "A.tif"):
        (whu / "optical" / name).write_bytes(b"x")
    assert [(s.name, s.sar) for s in read_scene_list(whu)] == [("A", whu / "sar/A.tif"), ("B", whu / "sar/B.tif")]
    m3mcr = tmp_path / "m3mcr"
    m3mcr.mkdir()
    write_list(m3mcr / "test.csv", [["c/1.tif", "o/1.tif", "s/1.tif", "l/1.tif", "m/1.npy"]], header=None)
    write_list(m3mcr / "test.csv", [["c/1.tif", "o/1.tif", "s/1.tif", "l/1.tif", "m/1.npy"]] * 3, header=None)
    (scene,) = read_scene_list(m3mcr)  # a row listed three times is one scene
    assert (scene.name, scene.optical, scene.sar) == ("1", m3mcr / "test/o/1.tif", m3mcr / "test/s/1.tif")


@pytest.mark.parametrize("rows,header,fragments", [
    ([["a.tif", "b.tif"]], ("optical", "radar"), ["list.csv", "columns optical, sar"]),
    ([["a.tif", "b.tif", "x"], ["c.tif", "d.tif", "x"]], ("optical", "sar", "name"), ["line 3", "unique", "'x'",
                                                                                          "other files"]),
    ([["a.tif"]], ("optical", "sar"), ["line 2", "expected 2 columns"]),
    ([], ("optical", "sar"), ["list.csv", "at least one scene"]),
    ([["a.tif", "b.tif", "../up"]], ("optical", "sar", "name"), ["line 2", "file name", "'../up'"]),
])
def test_bad_scene_lists_are_refused_with_the_file_and_line(tmp_path, rows, header, fragments):
    with pytest.raises(DataError) as error:
        read_scene_list(write_list(tmp_path / "list.csv", rows, header))
    for fragment in fragments:
        assert fragment in str(error.value)


def test_missing_list_and_unknown_folder(tmp_path):
    with pytest.raises(DataError, match="nothing.csv: expected a scene list"):
        read_scene_list(tmp_path / "nothing.csv")
    with pytest.raises(DataError, match="WHU-OPT-SAR folder .* or an M3M-CR folder"):
        read_scene_list(tmp_path)


def test_shards_cover_the_list_once():
    scenes = [Scene(str(i), None, None, "") for i in range(7)]
    shares = [shard(scenes, rank, 3) for rank in range(3)]
    assert sorted(s.name for share in shares for s in share) == sorted(s.name for s in scenes)
    with pytest.raises(ValueError, match="rank 3 of 3"):
        shard(scenes, 3, 3)


def scene_folder(root, count=3):
    """``count`` small unit-convention scene pairs and a CSV listing them."""
    rows = []
    for index in range(count):
        optical, sar = unit_pair(root / f"s{index}", 40 + 7 * index, 50, seed=index)
        rows.append([str(optical), str(sar), f"scene{index}"])
    return write_list(root / "scenes.csv", rows), rows


def test_a_failed_scene_is_reported_and_the_others_finish_then_reruns_skip(checkpoint, tmp_path):
    listing, rows = scene_folder(tmp_path, 4)
    (tmp_path / "s1" / "sar.tif").unlink()  # scene1 cannot be read
    with rasterio.open(tmp_path / "s3" / "sar.tif", "r+") as sar:  # scene3's SAR lies 100 km away
        sar.transform = sar.transform * Affine.translation(20000, 0)
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / ".scene0.tif.abc123.tmp").write_bytes(b"left by a killed run")
    predictor = Predictor(checkpoint, window=32, overlap=8, convention="unit", device="cpu")
    out = tmp_path / "maps"
    messages = []
    report = predict_scenes(predictor, read_scene_list(listing), out, probabilities=True,
                            log=lambda text, **_: messages.append(text))
    assert report["done"] == ["scene0", "scene2"] and report["skipped"] == []
    failure, far_away = report["failed"]
    assert failure["name"] == "scene1" and "s1/sar.tif" in failure["error"] and "no such file" in failure["error"]
    assert "line 3" in failure["source"]
    assert far_away["name"] == "scene3" and "s3/sar.tif" in far_away["error"] and "0.0% overlap" in far_away["error"]
    assert sorted(p.name for p in out.iterdir()) == ["scene0.probabilities.tif", "scene0.tif",
                                                     "scene2.probabilities.tif", "scene2.tif"]  # nothing half-written
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    report = predict_scenes(predictor, read_scene_list(listing), out, probabilities=True, log=lambda *a, **k: None)
    assert report["skipped"] == ["scene0", "scene2"] and report["done"] == []  # complete outputs are not redone
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    report = predict_scenes(predictor, read_scene_list(listing), out, probabilities=False, overwrite=True,
                            log=lambda *a, **k: None)
    assert report["done"] == ["scene0", "scene2"]


def test_an_output_that_is_an_input_fails_that_scene_only(checkpoint, tmp_path):
    optical, sar = unit_pair(tmp_path / "a", 40, 40)
    listing = write_list(tmp_path / "scenes.csv", [[str(optical), str(sar), "optical"]])
    predictor = Predictor(checkpoint, window=32, overlap=8, convention="unit", device="cpu")
    before = digest(optical)
    report = predict_scenes(predictor, read_scene_list(listing), tmp_path / "a", overwrite=True,
                            log=lambda *a, **k: None)
    assert "same file as --optical" in report["failed"][0]["error"] and digest(optical) == before


def test_an_output_folder_that_is_a_file_is_refused_before_any_scene(checkpoint, tmp_path):
    listing, _ = scene_folder(tmp_path, 1)
    (tmp_path / "taken").write_text("a file")
    predictor = Predictor(checkpoint, window=32, overlap=8, convention="unit", device="cpu")
    with pytest.raises(DataError, match="taken: expected an output folder, found a file"):
        predict_scenes(predictor, read_scene_list(listing), tmp_path / "taken")


def run_predict(args, env_extra=None, torchrun=0):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] if torchrun else [sys.executable]
    return subprocess.run([*prefix, "-m", "edc_lab.cli", "predict", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.slow
def test_two_processes_under_torchrun_write_what_one_process_writes(checkpoint, tmp_path):
    listing, _ = scene_folder(tmp_path, 5)
    common = ["--checkpoint", checkpoint, "--scenes", listing, "--window", "32", "--overlap", "8",
              "--convention", "unit", "--save-probabilities", "--device", "cpu"]
    one = run_predict([*common, "--out-dir", tmp_path / "one"])
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_predict([*common, "--out-dir", tmp_path / "two"], torchrun=2)
    output = two.stdout + two.stderr
    assert two.returncode == 0, output[-3000:]
    assert "process 0 of 2: 3 predicted" in output and "process 1 of 2: 2 predicted" in output
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len(files) == 10 and files == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in files:
        assert digest(tmp_path / "one" / name) == digest(tmp_path / "two" / name), name
    again = run_predict([*common, "--out-dir", tmp_path / "two"], torchrun=2)
    assert again.returncode == 0 and "0 predicted, 3 skipped" in again.stdout + again.stderr


def test_cli_many_scenes_reports_failures_with_exit_status_1(checkpoint, tmp_path, capsys):
    from edc_lab.cli import main

    listing, _ = scene_folder(tmp_path, 2)
    (tmp_path / "s0" / "optical.tif").write_bytes(b"not a tiff")
    code = main(["predict", "--checkpoint", str(checkpoint), "--scenes", str(listing), "--out-dir",
                 str(tmp_path / "maps"), "--window", "32", "--overlap", "8", "--convention", "unit", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1 and "1 predicted, 0 skipped (done before), 1 failed, of 2 scenes" in captured.out
    assert "failed: scene0" in captured.err and "s0/optical.tif" in captured.err and "cannot open" in captured.err


@pytest.mark.parametrize("argv,fragment", [
    (["--optical", "o.tif"], "--sar, --out: expected --optical, --sar and --out"),
    (["--scenes", "l.csv"], "--out-dir: expected an output folder with --scenes"),
    (["--scenes", "l.csv", "--out-dir", "d", "--out", "m.tif"], "--out: expected none with --scenes"),
    (["--optical", "o.tif", "--sar", "s.tif", "--out", "m.tif", "--save-cloudfree"], "--save-cloudfree: expected only with --scenes"),
])
def test_cli_modes_are_checked(checkpoint, argv, fragment, capsys):
    from edc_lab.cli import main

    assert main(["predict", "--checkpoint", str(checkpoint), *argv]) == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.real_data
def test_the_real_m3mcr_folder_as_a_scene_list(checkpoint, m3mcr_sample_root, tmp_path):
    """The real sample's file list repeats its one row 8 times: one scene, streamed equal to in memory."""
    (scene,) = read_scene_list(m3mcr_sample_root, split="train")
    assert scene.optical.name == "planet_cloudy_fall_1_p_457.tif" and scene.sar.parent.name == "S1_fall_1"
    maps = {}
    for stream in (True, False):
        predictor = Predictor(checkpoint, window=128, overlap=32, device="cpu", stream=stream)
        report = predict_scenes(predictor, [scene], tmp_path / str(stream), probabilities=True, log=lambda *a, **k: None)
        assert report["done"] == [scene.name]
        maps[stream] = [read_all(path) for path in scene.outputs(tmp_path / str(stream), probabilities=True).values()]
    for streamed, in_memory in zip(maps[True], maps[False]):
        np.testing.assert_array_equal(streamed, in_memory)
