"""A catalogue of hostile inputs: each ends in one clear message, never a traceback, a wrong result or a lost file.

The rule (STYLE.md, "errors at the boundary"): whatever a user passes through
the Python API or a CLI option, the answer is one message naming the file or
option, what was expected and what was found — a ``DataError`` / ``ValueError``
in the API; in the CLI one line on stderr and a non-zero exit. Inputs are never
overwritten and outputs are never half-written.

* CLI cases run the real entry point in-process (``edc_lab.cli.main([...])``)
  and check the exit code, the message fragments and that no input changed;
* API cases check the exception type and the fragments of its message.

Everything is tiny (40x40 rasters, ``edc_tiny``) so the module runs in seconds.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from edc_lab.cli import main
from edc_lab.data import M3MCR, DataError, WHUOptSAR, read_cloud_mask, read_geotiff
from edc_lab.data.writer import write_geotiff
from edc_lab.models import build_model
from edc_lab.predict import predict_geotiff
from edc_lab.train.checkpoint import save_checkpoint
from edc_lab.train.config import make_config

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_fake_datasets import WHU_TEST_NAMES, WHU_TRAIN_NAMES, make_fake_m3mcr, make_fake_whu, read, rewrite  # noqa: E402

SIZE = 40
M3MCR_CLASS_NAMES = ["forest", "rangeland", "agriculture", "urban", "barren", "water"]

class Payload:
    """An arbitrary pickled object: ``torch.load(weights_only=True)`` must refuse it."""


# --------------------------------------------------------------------------- fixtures and helpers
def _save_model(path: Path, name: str = "edc_tiny", build_args: object | None = None, state: dict | None = None,
                num_classes: int = 6, **extra) -> Path:
    torch.manual_seed(0)
    model = build_model(name, num_classes=num_classes)
    save_checkpoint(path, {
        "model": model.state_dict() if state is None else state,
        "build_args": model.build_args if build_args is None else build_args,
        "step": 0, "data": {"name": "m3mcr", "class_names": M3MCR_CLASS_NAMES, "in_sar": 2}, **extra,
    })
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> SimpleNamespace:
    """Shared read-only material: a fake M3M-CR sample, fake WHU scenes, two checkpoints."""
    root = tmp_path_factory.mktemp("hostile")
    m3mcr_root = make_fake_m3mcr(root / "m3mcr", count=1, size=SIZE)
    whu_root = make_fake_whu(root / "whu", names=WHU_TRAIN_NAMES[:1] + WHU_TEST_NAMES[:1], height=SIZE, width=SIZE)
    return SimpleNamespace(
        m3mcr_root=m3mcr_root, files=M3MCR(m3mcr_root).files[0], whu_root=whu_root,
        checkpoint=_save_model(root / "model.pt"), checkpoint_no_cr=_save_model(root / "no_cr.pt", "edc_no_cr"),
        checkpoint7=_save_model(root / "model7.pt", num_classes=7, data={"name": "synthetic", "size": 32}),
    )


@pytest.fixture
def ctx(base, tmp_path) -> SimpleNamespace:
    """Per-test copies (so a case may break them): optical, SAR, checkpoint; an output path; a dataset copy."""
    def copy(source: Path, name: str) -> Path:
        target = tmp_path / name
        target.write_bytes(source.read_bytes())
        return target

    return SimpleNamespace(
        tmp=tmp_path, base=base,
        optical=copy(base.files.optical, "optical.tif"), sar=copy(base.files.sar, "sar.tif"),
        checkpoint=copy(base.checkpoint, "model.pt"), checkpoint7=copy(base.checkpoint7, "model7.pt"),
        out=tmp_path / "map.tif",
    )


def huge_sparse_geotiff(path: Path, like: Path, bands: int = 4, dtype: str = "uint16", side: int = 100_000) -> Path:
    """A few-MB GeoTIFF whose header declares side² pixels (no tile written), on ``like``'s CRS and origin."""
    with rasterio.open(like) as source:
        crs, transform = source.crs, source.transform
    path.unlink(missing_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=bands, dtype=dtype, crs=crs,
                       transform=transform, tiled=True, blockxsize=4096, blockysize=4096, sparse_ok=True,
                       nodata=0):
        pass
    return path


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of ``edc-lab argv`` run in-process; argparse's SystemExit counts as an exit."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def expect_cli_error(argv: list[str], fragments: list[str], capsys) -> str:
    code, err = run_cli(argv, capsys)
    assert code not in (0, None), f"exit code {code}, stderr: {err}"
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in stderr: {err}"
    return err


# --------------------------------------------------------------------------- predict: the CLI
def predict_argv(c, *extra, **paths) -> list:
    values = {"checkpoint": c.checkpoint, "optical": c.optical, "sar": c.sar, "out": c.out, **paths}
    argv = ["predict", "--window", "32", "--overlap", "8"]
    for option, value in values.items():
        argv += [f"--{option}", value]
    return argv + list(extra)


def _symlink(c, target, name="link.tif"):
    os.symlink(target, c.tmp / name)
    return c.tmp / name


def _hardlink(c, target, name="hard.tif"):
    os.link(target, c.tmp / name)
    return c.tmp / name


def _text(c, name, text="this is not what you think it is\n"):
    (c.tmp / name).write_text(text)
    return c.tmp / name


def _reflectance(c):
    return read(c.optical)


def _float_unit_optical(c):  # float32 reflectance already in [0, 1]
    rewrite(c.optical, (_reflectance(c) / 10000.0).astype(np.float32))
    return c.optical


def _uint8_optical(c):
    rewrite(c.optical, (_reflectance(c) // 40).astype(np.uint8))
    return c.optical


def _nan_optical(c):
    values = _reflectance(c).astype(np.float32)
    values[:, 3, 4] = np.nan
    rewrite(c.optical, values)
    return c.optical


def _three_band_optical(c):
    rewrite(c.optical, _reflectance(c)[:3])
    return c.optical


def _no_crs(path):
    values = read(path)
    with rasterio.open(path) as source:
        transform = source.transform
    path.unlink()
    with rasterio.open(path, "w", driver="GTiff", height=values.shape[1], width=values.shape[2],
                       count=values.shape[0], dtype=values.dtype.name, transform=transform) as target:
        target.write(values)
    return path


def _uint8_sar(c):
    rewrite(c.sar, np.clip((read(c.sar) + 25) * 10, 0, 255).astype(np.uint8))
    return c.sar


def _linear_sar(c):  # linear power instead of dB
    rewrite(c.sar, (10 ** (read(c.sar) / 10)).astype(np.float32))
    return c.sar


def _moved_sar(c, dx=100_000.0):
    with rasterio.open(c.sar) as source:
        transform = source.transform
    rewrite(c.sar, transform=transform * Affine.translation(0, 0) if dx == 0 else
            Affine(transform.a, 0, transform.c + dx, 0, transform.e, transform.f))
    return c.sar


def _sar_in_degrees_elsewhere(c):  # another CRS, and nowhere near the optical
    rewrite(c.sar, crs="EPSG:4326", transform=Affine(0.0001, 0, 10.0, 0, -0.0001, 50.0))
    return c.sar


def _sar_in_an_engineering_crs(c):  # a local CRS that cannot be related to any map projection
    from rasterio.crs import CRS

    rewrite(c.sar, crs=CRS.from_wkt('LOCAL_CS["site grid",UNIT["metre",1],AXIS["x",EAST],AXIS["y",NORTH]]'))
    return c.sar


def _optical_all_nodata(c):  # a wrong nodata value: every pixel of the file matches it
    values = _reflectance(c)
    values[:] = 1
    rewrite(c.optical, values, nodata=1)
    return c.optical


def _sar_all_nodata(c):
    values = read(c.sar)
    rewrite(c.sar, np.full_like(values, -9999.0), nodata=-9999.0)
    return c.sar


def _checkpoint(c, **kwargs):
    return _save_model(c.tmp / "other.pt", **kwargs)


def _truncated_checkpoint(c):
    data = c.checkpoint.read_bytes()
    (c.tmp / "half.pt").write_bytes(data[: len(data) // 2])
    return c.tmp / "half.pt"


def _pickled_checkpoint(c):
    torch.save({"model": {}, "build_args": {"name": "edc_tiny"}, "payload": Payload()}, c.tmp / "pickled.pt")
    return c.tmp / "pickled.pt"


def _mismatched_checkpoint(c):  # weights of another model under edc_tiny's build_args
    other = build_model("optical_only", num_classes=6)
    return _checkpoint(c, build_args=build_model("edc_tiny", num_classes=6).build_args, state=other.state_dict())


PREDICT_CASES = [
    # outputs that would overwrite an input or each other
    pytest.param(lambda c: predict_argv(c, out=c.optical), ["--out", "same file as --optical"], id="out-is-optical"),
    pytest.param(lambda c: predict_argv(c, out=c.sar), ["--out", "same file as --sar"], id="out-is-sar"),
    pytest.param(lambda c: predict_argv(c, out=c.checkpoint), ["--out", "same file as --checkpoint"],
                 id="out-is-checkpoint"),
    pytest.param(lambda c: predict_argv(c, probabilities=c.optical), ["--probabilities", "same file as --optical"],
                 id="probabilities-is-optical"),
    pytest.param(lambda c: predict_argv(c, probabilities=c.out), ["--probabilities", "same file as --out"],
                 id="probabilities-is-out"),
    pytest.param(lambda c: predict_argv(c, cloudfree=c.sar), ["--cloudfree", "same file as --sar"],
                 id="cloudfree-is-sar"),
    pytest.param(lambda c: predict_argv(c, out=_symlink(c, c.optical)), ["--out", "same file as --optical"],
                 id="out-symlink-to-optical"),
    pytest.param(lambda c: predict_argv(c, out=_hardlink(c, c.sar)), ["--out", "same file as --sar"],
                 id="out-hardlink-to-sar"),
    pytest.param(lambda c: predict_argv(c, out=c.tmp), ["--out", "found a directory"], id="out-is-a-directory"),
    pytest.param(lambda c: predict_argv(c, out=_text(c, "file.txt") / "map.tif"),
                 ["map.tif", "expected a writable output folder"], id="out-folder-is-a-file"),
    # numeric options
    pytest.param(lambda c: predict_argv(c, "--window", "0"), ["--window", "[16, 8192]", "'0'"], id="window-0"),
    pytest.param(lambda c: predict_argv(c, "--window", "-64"), ["--window", "'-64'"], id="window-negative"),
    pytest.param(lambda c: predict_argv(c, "--window", "1000000"), ["--window", "'1000000'"], id="window-huge"),
    pytest.param(lambda c: predict_argv(c, "--window", "abc"), ["--window", "'abc'"], id="window-text"),
    pytest.param(lambda c: predict_argv(c, "--overlap", "-1"), ["--overlap", "'-1'"], id="overlap-negative"),
    pytest.param(lambda c: predict_argv(c, "--overlap", "32"), ["--overlap", "0 <= overlap < window", "32"],
                 id="overlap-equals-window"),
    pytest.param(lambda c: predict_argv(c, "--batch-size", "0"), ["--batch-size", "'0'"], id="batch-size-0"),
    pytest.param(lambda c: predict_argv(c, "--fill-nonfinite", "nan"), ["--fill-nonfinite", "finite", "'nan'"],
                 id="fill-nonfinite-nan"),
    pytest.param(lambda c: predict_argv(c, "--fill-nonfinite", "inf"), ["--fill-nonfinite", "'inf'"],
                 id="fill-nonfinite-inf"),
    pytest.param(lambda c: predict_argv(c, "--device", "gpu"), ["--device", "'gpu'"], id="device-unknown"),
    pytest.param(lambda c: predict_argv(c, "--convention", "dn"), ["--convention", "'dn'"], id="convention-unknown"),
    # checkpoints
    pytest.param(lambda c: predict_argv(c, checkpoint=c.tmp / "missing.pt"), ["missing.pt", "no such file"],
                 id="checkpoint-missing"),
    pytest.param(lambda c: predict_argv(c, checkpoint=_text(c, "notes.pt")), ["notes.pt", "expected an edc_lab checkpoint"],
                 id="checkpoint-text-file"),
    pytest.param(lambda c: predict_argv(c, checkpoint=_truncated_checkpoint(c)), ["half.pt", "expected an edc_lab checkpoint"],
                 id="checkpoint-truncated"),
    pytest.param(lambda c: predict_argv(c, checkpoint=_pickled_checkpoint(c)), ["pickled.pt", "could not load"],
                 id="checkpoint-pickled-object"),
    pytest.param(lambda c: predict_argv(c, checkpoint=_mismatched_checkpoint(c)), ["other.pt", "do not fit"],
                 id="checkpoint-other-model-weights"),
    pytest.param(lambda c: predict_argv(c, checkpoint=_checkpoint(c, build_args={"name": "edc_tiny", "num_classes": 2 * 10**9})),
                 ["num_classes", "[1, 1000]", "2000000000"], id="checkpoint-2e9-classes"),
    pytest.param(lambda c: predict_argv(c, checkpoint=_checkpoint(c, build_args={"name": "edc_tiny", "in_sar": 10**6})),
                 ["in_sar", "[1, 64]", "1000000"], id="checkpoint-1e6-sar-channels"),
    pytest.param(lambda c: predict_argv(c, checkpoint=_checkpoint(c, build_args={"name": "resnet"})),
                 ["unknown model 'resnet'"], id="checkpoint-unknown-model"),
    pytest.param(lambda c: predict_argv(c, checkpoint=_checkpoint(c, build_args=[1, 2])), ["build_args"],
                 id="checkpoint-build-args-a-list"),
    pytest.param(lambda c: predict_argv(c, checkpoint=_checkpoint(c, build_args={"num_classes": 6})), ["name"],
                 id="checkpoint-build-args-without-name"),
    pytest.param(lambda c: predict_argv(c, cloudfree=c.tmp / "cf.tif", checkpoint=c.base.checkpoint_no_cr),
                 ["--cloudfree", "cloud-removal head"], id="cloudfree-without-a-head"),
    # the optical file
    pytest.param(lambda c: predict_argv(c, optical=c.tmp / "missing.tif"), ["missing.tif", "no such file"],
                 id="optical-missing"),
    pytest.param(lambda c: predict_argv(c, optical=_text(c, "empty.tif", "")), ["empty.tif", "empty file"],
                 id="optical-empty-file"),
    pytest.param(lambda c: predict_argv(c, optical=_text(c, "text.tif")), ["text.tif", "cannot open"],
                 id="optical-text-file-named-tif"),
    pytest.param(lambda c: predict_argv(c, optical=c.tmp), ["found a directory"], id="optical-is-a-directory"),
    pytest.param(lambda c: predict_argv(c, optical=_three_band_optical(c)), ["optical.tif", "4 band(s)", "found 3"],
                 id="optical-3-bands"),
    pytest.param(lambda c: predict_argv(c, optical=_float_unit_optical(c)),
                 ["optical.tif", "reflectance x10000", "already scaled"], id="optical-float-in-0-1"),
    pytest.param(lambda c: predict_argv(c, optical=_uint8_optical(c)), ["optical.tif", "8-bit"], id="optical-uint8"),
    pytest.param(lambda c: predict_argv(c, optical=_nan_optical(c)), ["optical.tif", "NaN/Inf"], id="optical-nan"),
    pytest.param(lambda c: predict_argv(c, optical=_no_crs(c.optical)), ["optical.tif", "expected a CRS"],
                 id="optical-without-crs"),
    pytest.param(lambda c: predict_argv(c, optical=huge_sparse_geotiff(c.optical, c.base.files.optical)),
                 ["optical.tif", "GiB", "refused before reading"], id="optical-declares-1e10-pixels"),
    # the SAR file
    pytest.param(lambda c: predict_argv(c, sar=_uint8_sar(c)), ["sar.tif", "backscatter in dB", "uint8"],
                 id="sar-uint8"),
    pytest.param(lambda c: predict_argv(c, sar=_linear_sar(c)), ["sar.tif", "not dB"], id="sar-linear-power"),
    pytest.param(lambda c: predict_argv(c, sar=_moved_sar(c)), ["sar.tif", "found 0.0% overlap"],
                 id="sar-moved-100-km"),
    pytest.param(lambda c: predict_argv(c, sar=_sar_in_degrees_elsewhere(c)), ["sar.tif", "overlap"],
                 id="sar-other-crs-elsewhere"),
    pytest.param(lambda c: predict_argv(c, sar=_no_crs(c.sar)), ["sar.tif", "expected a CRS"], id="sar-without-crs"),
    pytest.param(lambda c: predict_argv(c, sar=_sar_in_an_engineering_crs(c)),
                 ["sar.tif", "expected a CRS that can be reprojected", "site grid"], id="sar-crs-not-reprojectable"),
    pytest.param(lambda c: predict_argv(c, optical=_optical_all_nodata(c)), ["optical.tif", "nodata value 1"],
                 id="optical-all-nodata"),
    pytest.param(lambda c: predict_argv(c, sar=c.optical), ["optical.tif", "expected 2 band(s)", "found 4"],
                 id="sar-with-4-bands"),
    pytest.param(lambda c: predict_argv(c, sar=_sar_all_nodata(c)), ["sar.tif", "only nodata"], id="sar-all-nodata"),
    pytest.param(lambda c: predict_argv(c, sar=huge_sparse_geotiff(c.sar, c.base.files.sar, 2, "float32")),
                 ["sar.tif", "only nodata"], id="sar-declares-1e10-pixels"),
]


@pytest.mark.parametrize("make_argv,fragments", PREDICT_CASES)
def test_predict_cli_refuses(make_argv, fragments, ctx, capsys):
    argv = make_argv(ctx)
    inputs = {path: digest(path) for path in (ctx.optical, ctx.sar, ctx.checkpoint)}
    expect_cli_error(argv, fragments, capsys)
    for path, before in inputs.items():
        assert digest(path) == before, f"{path} was changed"
    assert not ctx.out.exists(), "nothing is written when the run is refused"
    assert not list(ctx.tmp.glob(".*.tmp")), "no temporary file is left behind"


def test_predict_cli_still_works_and_writes_atomically(ctx, capsys):
    out = ctx.tmp / "new" / "folder" / "map.tif"  # an output folder that does not exist is created
    assert run_cli(predict_argv(ctx, out=out, probabilities=ctx.tmp / "p.tif"), capsys)[0] == 0
    assert read(out).shape == (1, SIZE, SIZE) and read(ctx.tmp / "p.tif").shape == (6, SIZE, SIZE)
    assert not list(ctx.tmp.rglob(".*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # the usual permissions, not the temporary file's 0600


def test_predict_a_1x1_scene_is_one_window(ctx, capsys):
    """A scene smaller than the window (here one pixel) is predicted as one window of its own size."""
    with rasterio.open(ctx.optical) as source:
        transform = source.window_transform(rasterio.windows.Window(10, 10, 1, 1))
    rewrite(ctx.optical, _reflectance(ctx)[:, 10:11, 10:11], transform=transform)
    assert run_cli(predict_argv(ctx), capsys)[0] == 0
    assert read(ctx.out).shape == (1, 1, 1)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write into a read-only folder")
def test_predict_cli_refuses_a_read_only_output_folder(ctx, capsys):
    folder = ctx.tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        expect_cli_error(predict_argv(ctx, out=folder / "map.tif"), ["map.tif", "writable output folder"], capsys)
    finally:
        folder.chmod(0o700)


# --------------------------------------------------------------------------- train / evaluate / make-data / bench
def train_argv(c, *extra) -> list:
    return ["train", "--out", c.tmp / "run", "--steps", "1", "--size", "32", "--batch-size", "2", "--train-count", "2",
            "--val-count", "1", "--eval-every", "0", "--no-progress", *extra]


def _toml(c, text):
    path = c.tmp / "config.toml"
    path.write_text(text)
    return path


TRAIN_CASES = [
    pytest.param(["--lr", "inf"], ["lr", "finite", "inf"], id="lr-inf"),
    pytest.param(["--lr", "nan"], ["lr", "finite", "nan"], id="lr-nan"),
    pytest.param(["--lr", "0"], ["lr", "> 0", "0.0"], id="lr-0"),
    pytest.param(["--lr", "-1"], ["lr", "-1"], id="lr-negative"),
    pytest.param(["--steps", "0"], ["steps", "[1, ", "0"], id="steps-0"),
    pytest.param(["--batch-size", "0"], ["batch_size", "0"], id="batch-size-0"),
    pytest.param(["--size", "4"], ["size", "[16, 8192]", "4"], id="size-4"),
    pytest.param(["--size", "100000"], ["size", "100000"], id="size-huge"),
    pytest.param(["--batch-size", "1"], ["batch_size", "batch norm", "size 32"], id="batch-1-of-32-px"),
    pytest.param(["--lambda-kd", "-1"], ["lambda_kd", ">= 0", "-1"], id="lambda-kd-negative"),
    pytest.param(["--lambda-cr", "inf"], ["lambda_cr", "finite", "inf"], id="lambda-cr-inf"),
    pytest.param(["--lambda-cloud", "nan"], ["lambda_cloud", "nan"], id="lambda-cloud-nan"),
    pytest.param(["--temperature", "0"], ["temperature", "> 0"], id="temperature-0"),
    pytest.param(["--temperature", "inf"], ["temperature", "inf"], id="temperature-inf"),
    pytest.param(["--cloud-cover", "0.8", "0.2"], ["cloud_cover", "low <= high", "0.8"], id="cloud-cover-reversed"),
    pytest.param(["--cloud-cover", "0", "nan"], ["cloud_cover", "nan"], id="cloud-cover-nan"),
    pytest.param(["--cloud-cover", "-0.5", "0.5"], ["cloud_cover", "-0.5"], id="cloud-cover-negative"),
    pytest.param(["--seed", "-1"], ["seed", "-1"], id="seed-negative"),
    pytest.param(["--data-seed", "-3"], ["data_seed", "-3"], id="data-seed-negative"),
    pytest.param(["--train-count", "0"], ["train_count", "0"], id="train-count-0"),
    pytest.param(["--eval-every", "-1"], ["eval_every", "-1"], id="eval-every-negative"),
    pytest.param(["--checkpoint-every", "-5"], ["checkpoint_every", "-5"], id="checkpoint-every-negative"),
    pytest.param(["--num-workers", "-1"], ["num_workers", "-1"], id="num-workers-negative"),
    pytest.param(["--model", "resnet50"], ["model", "'resnet50'"], id="model-unknown"),
    pytest.param(["--data", "imagenet"], ["--data", "'imagenet'"], id="data-unknown"),
    pytest.param(["--data", "m3mcr"], ["root", "--root"], id="data-without-root"),
    pytest.param(["--profile", "fast"], ["--profile", "'fast'"], id="profile-unknown"),
    pytest.param(["--device", "gpu"], ["device", "'gpu'"], id="device-unknown"),
    pytest.param(["--steps", "1.5"], ["--steps", "'1.5'"], id="steps-not-an-integer"),
]


@pytest.mark.parametrize("extra,fragments", TRAIN_CASES)
def test_train_cli_refuses(extra, fragments, ctx, capsys):
    expect_cli_error(train_argv(ctx, *extra), fragments, capsys)
    assert not (ctx.tmp / "run" / "last.pt").exists()


TRAIN_FILE_CASES = [
    pytest.param(lambda c: ["--data", "m3mcr", "--root", c.tmp / "nowhere"], ["nowhere", "no such folder"],
                 id="root-missing"),
    pytest.param(lambda c: ["--config", c.tmp / "missing.toml"], ["missing.toml", "no such file"], id="config-missing"),
    pytest.param(lambda c: ["--config", _toml(c, "lr = = 3")], ["config.toml", "TOML"], id="config-bad-toml"),
    pytest.param(lambda c: ["--config", _toml(c, "learning_rate = 0.1")], ["config.toml", "'learning_rate'"],
                 id="config-unknown-key"),
    pytest.param(lambda c: ["--config", _toml(c, 'lr = "fast"')], ["config.toml", "lr", "'fast'"],
                 id="config-string-lr"),
    pytest.param(lambda c: ["--config", _toml(c, "lr = inf")], ["lr", "inf"], id="config-lr-inf"),
    pytest.param(lambda c: ["--out", _text(c, "run.txt")], ["out", "run.txt", "found a file"], id="out-is-a-file"),
    pytest.param(lambda c: ["--stage", "student", "--teacher", _text(c, "teacher.pt")],
                 ["teacher.pt", "expected an edc_lab checkpoint"], id="teacher-text-file"),
]


@pytest.mark.parametrize("make_extra,fragments", TRAIN_FILE_CASES)
def test_train_cli_refuses_bad_files(make_extra, fragments, ctx, capsys):
    expect_cli_error(train_argv(ctx, *make_extra(ctx)), fragments, capsys)


def evaluate_argv(c, *extra, checkpoint=None) -> list:
    return ["evaluate", "--checkpoint", checkpoint or c.checkpoint7, "--data", "synthetic", "--count", "1", "--size", "32",
            *extra]


EVALUATE_CASES = [
    pytest.param(lambda c: evaluate_argv(c, "--count", "0"), ["--count", "'0'"], id="count-0"),
    pytest.param(lambda c: evaluate_argv(c, "--batch-size", "0"), ["--batch-size", "'0'"], id="batch-size-0"),
    pytest.param(lambda c: evaluate_argv(c, "--size", "4"), ["--size", "[16, 8192]", "'4'"], id="size-4"),
    pytest.param(lambda c: evaluate_argv(c, "--size", "-32"), ["--size", "'-32'"], id="size-negative"),
    pytest.param(lambda c: evaluate_argv(c, "--cloud-cover", "0.9", "0.1"), ["--cloud-cover", "LOW <= HIGH"],
                 id="cloud-cover-reversed"),
    pytest.param(lambda c: evaluate_argv(c, "--cloud-cover", "nan", "0.5"), ["--cloud-cover", "finite", "'nan'"],
                 id="cloud-cover-nan"),
    pytest.param(lambda c: evaluate_argv(c, "--cloud-cover", "0", "2"), ["--cloud-cover", "<= 1", "'2'"],
                 id="cloud-cover-above-1"),
    pytest.param(lambda c: evaluate_argv(c, "--seed", "-1"), ["--seed", "'-1'"], id="seed-negative"),
    pytest.param(lambda c: evaluate_argv(c, "--device", "tpu"), ["--device", "'tpu'"], id="device-unknown"),
    pytest.param(lambda c: evaluate_argv(c, "--data", "imagenet"), ["--data", "'imagenet'"], id="data-unknown"),
    pytest.param(lambda c: evaluate_argv(c, "--data", "synthetic", "--split", "nope"), ["split", "'nope'"],
                 id="split-unknown"),
    pytest.param(lambda c: evaluate_argv(c, "--data", "whu"), ["root"], id="whu-without-root"),
    pytest.param(lambda c: evaluate_argv(c, "--data", "m3mcr", "--root", c.tmp / "nowhere"),
                 ["nowhere", "no such folder"], id="root-missing"),
    pytest.param(lambda c: evaluate_argv(c, "--data", "m3mcr", "--root", c.base.m3mcr_root, "--split", "train"),
                 ["7 classes", "6"], id="checkpoint-for-another-dataset"),
    pytest.param(lambda c: evaluate_argv(c, "--data", "whu", "--root", c.base.whu_root, "--split", "train"),
                 ["2 SAR", "found 1"], id="checkpoint-with-other-sar-channels"),
    pytest.param(lambda c: evaluate_argv(c, checkpoint=c.tmp / "missing.pt"), ["missing.pt", "no such file"],
                 id="checkpoint-missing"),
    pytest.param(lambda c: evaluate_argv(c, checkpoint=_text(c, "model.txt")), ["model.txt", "checkpoint"],
                 id="checkpoint-text-file"),
    pytest.param(lambda c: evaluate_argv(c, "--out", c.checkpoint7), ["--out", "same file as --checkpoint"],
                 id="out-is-checkpoint"),
    pytest.param(lambda c: evaluate_argv(c, "--out", c.tmp), ["--out", "found a directory"], id="out-is-a-directory"),
]


@pytest.mark.parametrize("make_argv,fragments", EVALUATE_CASES)
def test_evaluate_cli_refuses(make_argv, fragments, ctx, capsys):
    before = digest(ctx.checkpoint7)
    expect_cli_error(make_argv(ctx), fragments, capsys)
    assert digest(ctx.checkpoint7) == before


def make_data_argv(c, *extra) -> list:
    return ["make-data", "--layout", "m3mcr", "--count", "1", "--size", "16", "--out", c.tmp / "data", *extra]


MAKE_DATA_CASES = [
    pytest.param(["--count", "0"], ["--count", "'0'"], id="count-0"),
    pytest.param(["--size", "8"], ["--size", "[16, 4096]", "'8'"], id="size-8"),
    pytest.param(["--size", "200000"], ["--size", "'200000'"], id="size-huge"),
    pytest.param(["--seed", "-1"], ["--seed", "'-1'"], id="seed-negative"),
    pytest.param(["--cloud-cover", "2"], ["--cloud-cover", "'2'"], id="cloud-cover-2"),
    pytest.param(["--cloud-cover", "0.9", "0.1"], ["--cloud-cover", "LO <= HI"], id="cloud-cover-reversed"),
    pytest.param(["--cloud-cover", "0.1", "0.2", "0.3"], ["--cloud-cover", "one or two"], id="cloud-cover-3-values"),
    pytest.param(["--test-fraction", "1"], ["--test-fraction", "< 1", "'1'"], id="test-fraction-1"),
    pytest.param(["--test-fraction", "nan"], ["--test-fraction", "'nan'"], id="test-fraction-nan"),
    pytest.param(["--layout", "zarr"], ["--layout", "'zarr'"], id="layout-unknown"),
]


@pytest.mark.parametrize("extra,fragments", MAKE_DATA_CASES)
def test_make_data_cli_refuses(extra, fragments, ctx, capsys):
    expect_cli_error(make_data_argv(ctx, *extra), fragments, capsys)
    assert not (ctx.tmp / "data").exists()


def test_make_data_out_is_a_file(ctx, capsys):
    _text(ctx, "data")
    expect_cli_error(make_data_argv(ctx), ["--out", "data", "found a file"], capsys)


BENCH_CASES = [
    pytest.param(["--batch", "0"], ["--batch", "'0'"], id="batch-0"),
    pytest.param(["--repeats", "0"], ["--repeats", "'0'"], id="repeats-0"),
    pytest.param(["--warmup", "-1"], ["--warmup", "'-1'"], id="warmup-negative"),
    pytest.param(["--threads", "0"], ["--threads", "'0'"], id="threads-0"),
    pytest.param(["--sizes", "0"], ["--sizes", "'0'"], id="sizes-0"),
    pytest.param(["--sar-channels", "0"], ["--sar-channels", "'0'"], id="sar-channels-0"),
    pytest.param(["--models", "resnet"], ["unknown model", "resnet"], id="model-unknown"),
    pytest.param(["--attention", "--heads", "0"], ["--heads", "'0'"], id="heads-0"),
]


@pytest.mark.parametrize("extra,fragments", BENCH_CASES)
def test_bench_cli_refuses(extra, fragments, capsys):
    expect_cli_error(["bench", "--models", "edc_tiny", "--sizes", "32", *extra], fragments, capsys)


def test_unknown_sub_command(capsys):
    expect_cli_error(["predcit"], ["invalid choice", "'predcit'"], capsys)


# --------------------------------------------------------------------------- the Python API
def _raises(call, error_type, fragments):
    with pytest.raises(error_type) as caught:
        call()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


CONFIG_CASES = [
    pytest.param(dict(lr=float("inf")), ["lr", "finite", "inf"], id="lr-inf"),
    pytest.param(dict(lr=float("nan")), ["lr", "nan"], id="lr-nan"),
    pytest.param(dict(steps=0), ["steps", "0"], id="steps-0"),
    pytest.param(dict(size=4), ["size", "[16, 8192]", "4"], id="size-4"),
    pytest.param(dict(lambda_kd=float("nan")), ["lambda_kd", "nan"], id="lambda-kd-nan"),
    pytest.param(dict(weight_decay=-0.1), ["weight_decay", ">= 0", "-0.1"], id="weight-decay-negative"),
    pytest.param(dict(min_lr_ratio=2.0), ["min_lr_ratio", "<= 1", "2.0"], id="min-lr-ratio-2"),
    pytest.param(dict(cloud_cover=(0.5, 2.0)), ["cloud_cover", "2.0"], id="cloud-cover-above-1"),
    pytest.param(dict(model="resnet"), ["model", "'resnet'"], id="model-unknown"),
    pytest.param(dict(seed=-1), ["seed", "-1"], id="seed-negative"),
    pytest.param(dict(device="gpu"), ["device", "'gpu'"], id="device-unknown"),
    pytest.param(dict(lr="fast"), ["lr", "'fast'"], id="lr-a-string"),
]


@pytest.mark.parametrize("overrides,fragments", CONFIG_CASES)
def test_make_config_refuses(overrides, fragments):
    _raises(lambda: make_config(**overrides), ValueError, fragments)


MODEL_CASES = [
    pytest.param(dict(num_classes=2 * 10**9), ["num_classes", "[1, 1000]", "2000000000"], id="2e9-classes"),
    pytest.param(dict(num_classes=0), ["num_classes", "0"], id="0-classes"),
    pytest.param(dict(in_optical=100), ["in_optical", "[1, 64]", "100"], id="100-optical-bands"),
    pytest.param(dict(in_sar=0), ["in_sar", "0"], id="0-sar-channels"),
    pytest.param(dict(widths=[10**6, 64, 96, 128]), ["widths", "1000000"], id="huge-widths"),
    pytest.param(dict(mlp_ratio=float("nan")), ["mlp_ratio", "nan"], id="nan-mlp-ratio"),
]


@pytest.mark.parametrize("arguments,fragments", MODEL_CASES)
def test_build_model_refuses(arguments, fragments):
    _raises(lambda: build_model("edc_tiny", **arguments), ValueError, fragments)


# M3M-CR reader: wrong conventions, declared sizes, file lists
@pytest.fixture
def m3mcr(tmp_path) -> M3MCR:
    return M3MCR(make_fake_m3mcr(tmp_path / "m3mcr", count=1, size=SIZE))


def _csv(m3mcr, text):
    (m3mcr.root / "train.csv").write_text(text)
    return lambda: M3MCR(m3mcr.root)


def _scene_after(change):
    def call(m3mcr):
        change(m3mcr.files[0])
        return lambda: m3mcr.read_scene(0)
    return call


def _rewrite_optical_float(files):
    rewrite(files.optical, (read(files.optical) / 10000.0).astype(np.float32))


def _rewrite_sar_uint8(files):
    rewrite(files.sar, np.clip((read(files.sar) + 25) * 10, 0, 255).astype(np.uint8))


def _rewrite_sar_linear(files):
    rewrite(files.sar, 10 ** (read(files.sar) / 10))


def _rewrite_label_float(files):
    rewrite(files.label, read(files.label).astype(np.float32) + 0.5)


def _huge_npy(files):
    with open(files.cloud_mask, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "|b1", "fortran_order": False, "shape": (200000, 200000)})


def _text_npy(files):
    files.cloud_mask.write_text("0,1,0\n1,0,1\n")


M3MCR_CASES = [
    pytest.param(_scene_after(_rewrite_optical_float), ["planet_cloudy", "reflectance x10000", "already scaled"],
                 id="optical-float-in-0-1"),
    pytest.param(_scene_after(lambda f: rewrite(f.optical_clear, (read(f.optical_clear) // 40).astype(np.uint8))),
                 ["planet_cloudfree", "8-bit", "uint8"], id="optical-uint8"),
    pytest.param(_scene_after(_rewrite_sar_uint8), ["S1_synthetic", "backscatter in dB", "uint8"], id="sar-uint8"),
    pytest.param(_scene_after(_rewrite_sar_linear), ["S1_synthetic", "not dB"], id="sar-linear-power"),
    pytest.param(_scene_after(lambda f: huge_sparse_geotiff(f.optical, f.optical)),
                 ["planet_cloudy", "100000x100000", "GiB"], id="optical-declares-1e10-pixels"),
    pytest.param(_scene_after(_huge_npy), ["cloudmask", "(40, 40)", "(200000, 200000)"], id="npy-declares-4e10-values"),
    pytest.param(_scene_after(_text_npy), ["cloudmask", "not a .npy array"], id="npy-is-text"),
    pytest.param(_scene_after(lambda f: f.cloud_mask.write_bytes(b"")), ["cloudmask", "empty file"], id="npy-empty"),
    pytest.param(_scene_after(_rewrite_label_float), ["landcover", "data type", "float32"], id="label-float"),
    pytest.param(_scene_after(lambda f: rewrite(f.sar, np.full((2, *read(f.sar).shape[1:]), -1.0), nodata=-1.0)),
                 ["S1_synthetic", "only nodata"], id="sar-all-nodata"),
    pytest.param(_scene_after(lambda f: _no_crs(f.optical)), ["planet_cloudy", "expected a CRS"], id="optical-no-crs"),
    pytest.param(_scene_after(lambda f: rewrite(f.label, crs="EPSG:32633")), ["landcover", "overlap"],
                 id="label-in-another-utm-zone"),
    pytest.param(_scene_after(lambda f: f.optical.write_bytes(b"")), ["planet_cloudy", "empty file"],
                 id="optical-empty-file"),
    pytest.param(lambda m: _csv(m, "a.tif,b.tif,c.tif\n"), ["train.csv, line 1", "5 columns", "found 3"],
                 id="csv-missing-columns"),
    pytest.param(lambda m: _csv(m, "../../etc/passwd," * 4 + "x.npy\n"), ["train.csv, line 1", "inside", "../../etc/passwd"],
                 id="csv-points-outside-root"),
    pytest.param(lambda m: _csv(m, "/etc/hostname," * 4 + "x.npy\n"), ["train.csv, line 1", "relative", "/etc/hostname"],
                 id="csv-absolute-path"),
    pytest.param(lambda m: _csv(m, "\n\n"), ["train.csv", "empty list"], id="csv-empty"),
    pytest.param(lambda m: (lambda: M3MCR(m.root, csv=".")), ["expected an M3M-CR file list", "found a directory"],
                 id="csv-is-a-directory"),
    pytest.param(_scene_after(lambda f: rewrite(f.optical_clear, nodata=int(read(f.optical_clear).max()),
                                                values=np.full_like(read(f.optical_clear), read(f.optical_clear).max()))),
                 ["planet_cloudfree", "nodata value"], id="optical-all-nodata"),
    pytest.param(lambda m: (lambda: M3MCR(m.root, split="../..")), ["split", "'../..'"], id="split-escapes-root"),
]


@pytest.mark.parametrize("prepare,fragments", M3MCR_CASES)
def test_m3mcr_reader_refuses(prepare, fragments, m3mcr):
    _raises(prepare(m3mcr), DataError, fragments)


def test_m3mcr_sar_in_another_crs_is_reprojected(m3mcr):
    """Not hostile but the other side of the georeference check: a SAR in WGS 84 over the same place reads."""
    from rasterio.warp import calculate_default_transform, reproject

    files = m3mcr.files[0]
    reference = m3mcr.read_scene(0)
    with rasterio.open(files.sar) as source:
        transform, width, height = calculate_default_transform(source.crs, "EPSG:4326", source.width,
                                                               source.height, *source.bounds)
        values = np.full((2, height, width), np.nan)
        reproject(source.read(), values, src_transform=source.transform, src_crs=source.crs,
                  dst_transform=transform, dst_crs="EPSG:4326")
    rewrite(files.sar, values, crs="EPSG:4326", transform=transform, nodata=np.nan)
    moved = m3mcr.read_scene(0)
    assert np.abs(moved["sar"].values - reference["sar"].values).mean() < 0.05


# WHU-OPT-SAR reader: georeference is checked as for M3M-CR
@pytest.fixture
def whu(tmp_path) -> Path:
    return make_fake_whu(tmp_path / "whu", names=WHU_TRAIN_NAMES[:1], height=SIZE, width=SIZE)


def _whu_change(kind, **profile):
    def call(root):
        path = root / {"sar": "sar", "label": "lbl", "optical": "optical"}[kind] / WHU_TRAIN_NAMES[0]
        if profile.pop("no_crs", False):
            _no_crs(path)
        if "shift" in profile:
            dx = profile.pop("shift")
            with rasterio.open(path) as source:
                t = source.transform
            profile["transform"] = Affine(t.a, 0, t.c + dx, 0, t.e, t.f)
        if "dtype" in profile:
            rewrite(path, read(path).astype(profile.pop("dtype")) + 0.25)
        if profile:
            rewrite(path, **profile)
        return lambda: WHUOptSAR(root, patch_size=32)[0]
    return call


def _whu_label_codes(root):
    path = root / "lbl" / WHU_TRAIN_NAMES[0]
    codes = read(path)
    codes[0, 1, :3] = 99
    rewrite(path, codes)
    return lambda: WHUOptSAR(root, patch_size=32)[0]


WHU_CASES = [
    pytest.param(_whu_change("sar", shift=100_000.0), ["sar/NH49E004021.tif", "found 0.0% overlap"],
                 id="sar-moved-100-km"),
    pytest.param(_whu_change("label", shift=100_000.0), ["lbl/NH49E004021.tif", "overlap"], id="label-moved-100-km"),
    pytest.param(_whu_change("sar", crs="EPSG:4326", transform=Affine(0.0001, 0, 10, 0, -0.0001, 50)),
                 ["sar/NH49E004021.tif", "overlap"], id="sar-other-crs-elsewhere"),
    pytest.param(_whu_change("sar", no_crs=True), ["sar/NH49E004021.tif", "expected a CRS"], id="sar-without-crs"),
    pytest.param(_whu_change("label", dtype=np.float32), ["lbl/NH49E004021.tif", "data type", "float32"],
                 id="label-float"),
    pytest.param(_whu_change("sar", dtype=np.float32), ["sar/NH49E004021.tif", "uint8", "float32"], id="sar-float"),
    pytest.param(_whu_label_codes, ["lbl/NH49E004021.tif", "found other codes {99: 3}"], id="label-unknown-code"),
    pytest.param(lambda root: (lambda: WHUOptSAR(root, patch_size=0)), ["patch_size", "0"], id="patch-size-0"),
    pytest.param(lambda root: (lambda: WHUOptSAR(root, patch_size=64)), ["at least 64x64", "40x40"],
                 id="scene-smaller-than-patch"),
    pytest.param(lambda root: (lambda: WHUOptSAR(root, patch_size=32, value_scale=float("nan"))),
                 ["value_scale", "nan"], id="value-scale-nan"),
    pytest.param(lambda root: (lambda: WHUOptSAR(root, patch_size=32, seed=-1)), ["seed", "-1"], id="seed-negative"),
    pytest.param(lambda root: (lambda: WHUOptSAR(root, patch_size=32, cloud_cover=(0.2, float("nan")))),
                 ["cloud_cover", "nan"], id="cloud-cover-nan"),
    pytest.param(lambda root: (lambda: WHUOptSAR(root / "nowhere")), ["nowhere", "no such folder"], id="root-missing"),
]


@pytest.mark.parametrize("prepare,fragments", WHU_CASES)
def test_whu_reader_refuses(prepare, fragments, whu):
    error_type = ValueError  # DataError for files, ValueError for arguments (DataError is one)
    _raises(prepare(whu), error_type, fragments)


def test_whu_sar_on_another_grid_is_resampled_by_georeference(whu):
    """A SAR at twice the pixel size over the same place is aligned, not paired by index."""
    path = whu / "sar" / WHU_TRAIN_NAMES[0]
    reference = WHUOptSAR(whu, patch_size=32).read_patch(0)["sar"].values
    with rasterio.open(path) as source:
        t, values = source.transform, source.read()
    coarse = values[:, ::2, ::2]
    rewrite(path, np.ascontiguousarray(coarse), transform=Affine(t.a * 2, 0, t.c, 0, t.e * 2, t.f))
    dataset = WHUOptSAR(whu, patch_size=32)
    assert dataset.resampled[WHU_TRAIN_NAMES[0]] == {"sar"}
    assert np.abs(dataset.read_patch(0)["sar"].values - reference).mean() < 0.05


# single readers, the writer, predict's API
def test_read_geotiff_refuses_a_directory_and_an_empty_file(tmp_path):
    _raises(lambda: read_geotiff(tmp_path, "optical"), DataError, [str(tmp_path), "found a directory"])
    (tmp_path / "empty.tif").write_bytes(b"")
    _raises(lambda: read_geotiff(tmp_path / "empty.tif", "optical"), DataError, ["empty.tif", "empty file"])


def test_read_cloud_mask_checks_the_header_before_loading(tmp_path):
    path = tmp_path / "mask.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_2_0(handle, {"descr": "<f8", "fortran_order": False, "shape": (200000, 200000)})
    _raises(lambda: read_cloud_mask(path, (40, 40)), DataError, ["mask.npy", "(40, 40)", "(200000, 200000)"])


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "map.tif"
    write_geotiff(path, np.full((1, 4, 4), 7, np.uint8), crs="EPSG:32646", transform=Affine(3, 0, 500000, 0, -3, 3400000))
    before = digest(path)

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", fail)
    with pytest.raises(OSError, match="disk full"):
        write_geotiff(path, np.ones((1, 4, 4), np.uint8), crs="EPSG:32646", transform=Affine(3, 0, 500000, 0, -3, 3400000))
    assert digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]


PREDICT_API_CASES = [
    pytest.param(lambda c: dict(out_path=c.optical), ["--out", "same file as --optical"], id="out-is-optical"),
    pytest.param(lambda c: dict(window=0), ["--window", "0"], id="window-0"),
    pytest.param(lambda c: dict(overlap=40, window=32), ["--overlap", "40"], id="overlap-above-window"),
    pytest.param(lambda c: dict(batch_size=0), ["--batch-size", "0"], id="batch-size-0"),
    pytest.param(lambda c: dict(fill_nonfinite=float("nan")), ["--fill-nonfinite", "nan"], id="fill-nan"),
    pytest.param(lambda c: dict(convention="dn"), ["--convention", "'dn'"], id="convention-unknown"),
    pytest.param(lambda c: dict(optical_path=_float_unit_optical(c)), ["optical.tif", "already scaled"],
                 id="optical-float-in-0-1"),
    pytest.param(lambda c: dict(sar_path=_uint8_sar(c)), ["sar.tif", "uint8"], id="sar-uint8"),
    pytest.param(lambda c: dict(optical_path=_uint8_optical(c), convention="unit"), ["optical.tif", "integer"],
                 id="unit-convention-given-uint8"),
    pytest.param(lambda c: dict(convention="whu"), ["optical.tif", "uint8", "uint16"], id="whu-convention-given-uint16"),
]


@pytest.mark.parametrize("make_arguments,fragments", PREDICT_API_CASES)
def test_predict_api_refuses(make_arguments, fragments, ctx):
    arguments = dict(checkpoint=ctx.checkpoint, optical_path=ctx.optical, sar_path=ctx.sar, out_path=ctx.out,
                     window=32, overlap=8)
    arguments.update(make_arguments(ctx))
    before = digest(ctx.optical)
    _raises(lambda: predict_geotiff(**arguments), ValueError, fragments)
    assert digest(ctx.optical) == before


def test_read_covering_reads_a_window_of_the_same_grid_without_resampling(base):
    """The helper both readers use: a target on the file's own pixel lattice is a plain window read."""
    from rasterio.windows import Window

    from edc_lab.data.io import read_covering, same_grid

    whole = read_geotiff(base.files.optical, "optical")
    with rasterio.open(base.files.optical) as source:
        patch = read_geotiff(base.files.optical, "optical", window=Window(5, 7, 16, 12))
        assert patch.transform == source.window_transform(Window(5, 7, 16, 12))
    covering = read_covering(base.files.optical, "optical", patch)
    assert same_grid(covering, patch)
    np.testing.assert_array_equal(covering.values, whole.values[:, 7:19, 5:21])
