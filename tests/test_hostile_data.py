"""Hostile data and arguments, second round: each ends in one clear message naming the culprit.

The rule (STYLE.md, "errors at the boundary"; the catalogue in ``test_hostile_inputs.py``):
a ``DataError`` for files, a ``ValueError`` for other API arguments, exit code 2 with one
line on stderr in the CLI; the message names the file, argument or option, what was
expected and what was found. Cases here:

* ``edc-lab lab --port`` outside 0..65535;
* text files (M3M-CR CSV, WHU-OPT-SAR split, TOML config) that are not UTF-8, and a
  CSV with a byte-order mark, which must read like the same file without it;
* ``add_clouds`` on an image that is not reflectance in [0, 1] (it used to return white);
* attribution arguments: probability maps as masks, counts <= 0, NaN/Inf inputs;
* an optical GeoTIFF whose reflectance is mostly negative (a few negatives still read);
* south-up or rotated rasters, refused when read, naming the file that has them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from edc_lab.cli import main
from edc_lab.data import M3MCR, DataError, WHUOptSAR, add_clouds, official_split, open_lazy
from edc_lab.explain import (
    RegionScore,
    class_on_both_sides,
    layer_contributions,
    modality_feature_masks,
    modality_shares,
    pixel_attributions,
    region_for,
)
from edc_lab.models import build_model
from edc_lab.predict import read_inputs
from edc_lab.train.config import load_toml, make_config

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_fake_datasets import WHU_TRAIN_NAMES, make_fake_m3mcr, make_fake_whu, read, rewrite  # noqa: E402

SIZE = 40


# --------------------------------------------------------------------------- helpers
def make_south_up(path: Path) -> Affine:
    """Rewrite ``path`` south-up over the same footprint (rows flipped, e > 0); returns the new transform."""
    with rasterio.open(path) as source:
        t, height, values = source.transform, source.height, source.read()
    south_up = Affine(t.a, 0.0, t.c, 0.0, -t.e, t.f + t.e * height)
    rewrite(path, np.ascontiguousarray(values[:, ::-1, :]), transform=south_up)
    return south_up


def make_rotated(path: Path) -> None:
    with rasterio.open(path) as source:
        t = source.transform
    rewrite(path, transform=t * Affine.rotation(10.0))


def expect(call, error_type, fragments) -> str:
    """Run ``call``; it must raise ``error_type`` whose message holds every fragment."""
    with pytest.raises(error_type) as caught:
        call()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def run_cli(argv: list, capsys) -> tuple[int, str]:
    """(exit code, stderr) of ``edc-lab argv`` run in-process; argparse's SystemExit counts as an exit."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


@pytest.fixture
def m3mcr(tmp_path) -> M3MCR:
    return M3MCR(make_fake_m3mcr(tmp_path / "m3mcr", count=1, size=SIZE))


# --------------------------------------------------------------------------- 1. edc-lab lab --port
@pytest.mark.parametrize("port", ["-1", "99999", "65536", "http"])
def test_lab_refuses_a_port_outside_0_to_65535(port, capsys):
    code, err = run_cli(["lab", "--port", port], capsys)
    assert code == 2 and "Traceback" not in err
    for fragment in ["--port", "[0, 65535]", repr(port)]:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def test_lab_passes_port_0_any_free_port_and_65535_to_jupyterlab(monkeypatch, tmp_path):
    """JupyterLab (jupyter_server) binds port 0 to a free port and prints the one it got."""
    commands = []
    monkeypatch.setattr(subprocess, "call", lambda command: commands.append(command) or 0)
    for port in ("0", "65535"):
        assert main(["lab", "--dir", str(tmp_path), "--port", port]) == 0
        assert f"--ServerApp.port={port}" in commands[-1]


# --------------------------------------------------------------------------- 2. text encodings
def test_latin1_m3mcr_csv_names_the_file_and_the_byte(m3mcr):
    (m3mcr.root / "train.csv").write_bytes("planet_cloudy/caf\xe9.tif,b,c,d,e\n".encode("latin-1"))
    expect(lambda: M3MCR(m3mcr.root), DataError, ["train.csv", "M3M-CR file list", "UTF-8", "0xe9", "line 1"])


def test_m3mcr_csv_with_a_byte_order_mark_reads_like_without(m3mcr):
    csv = m3mcr.root / "train.csv"
    plain = M3MCR(m3mcr.root).files
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert M3MCR(m3mcr.root).files == plain


def test_latin1_whu_split_file_names_the_file(tmp_path):
    split = tmp_path / "my_split.txt"
    split.write_bytes("train:\nNH49E004021.tif\ntest:\nsc\xe8ne.tif\n".encode("latin-1"))
    expect(lambda: official_split(split), DataError, ["my_split.txt", "WHU-OPT-SAR split file", "UTF-8", "0xe8"])
    root = make_fake_whu(tmp_path / "whu", names=WHU_TRAIN_NAMES[:1], height=SIZE, width=SIZE)
    expect(lambda: WHUOptSAR(root, patch_size=32, split_file=split), DataError, ["my_split.txt", "line 4"])


def test_whu_split_with_a_byte_order_mark_reads_like_without(tmp_path):
    split = tmp_path / "split.txt"
    split.write_bytes(b"\xef\xbb\xbftrain:\r\nNH49E004021.tif\r\ntest:\r\nNH49E001014.tif\r\n")
    assert official_split(split) == {"train": ["NH49E004021.tif"], "test": ["NH49E001014.tif"]}
    assert len(official_split()["train"]) == 80  # the shipped file still reads


def test_latin1_toml_names_the_file_in_the_api_and_the_cli(tmp_path, capsys):
    config = tmp_path / "config.toml"
    config.write_bytes("# r\xe9glages\nsteps = 3\n".encode("latin-1"))
    expect(lambda: make_config(toml=config), ValueError, ["config.toml", "TOML config file", "UTF-8", "0xe9"])
    code, err = run_cli(["train", "--config", config, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "Traceback" not in err and "config.toml" in err and "UTF-8" in err
    assert not (tmp_path / "run").exists()
    config.write_bytes(b"\xef\xbb\xbf[train]\nsteps = 3\n")  # a BOM is fine
    assert load_toml(config) == {"steps": 3}


# --------------------------------------------------------------------------- 3. add_clouds on another scale
def _ground(dtype=np.float32, scale=1.0) -> np.ndarray:
    return (np.random.default_rng(0).uniform(0.02, 0.4, (4, 32, 32)) * scale).astype(dtype)


def _nan_ground():
    optical = _ground()
    optical[2, 5, 5] = np.nan
    return optical


ADD_CLOUDS_CASES = [
    pytest.param(lambda: _ground(np.uint16, 10000), ["add_clouds", "[0, 1]", "data type uint16", "values in ["],
                 id="uint16-reflectance-x10000"),
    pytest.param(lambda: _ground(np.uint8, 255), ["add_clouds", "uint8", "/ 255"], id="uint8"),
    pytest.param(lambda: _ground(np.float32, 1e6),
                 ["add_clouds", "[0, 1]", "float32", "min 2.007e+04", "max 3.998e+05"], id="scaled-x1e6"),
    pytest.param(lambda: _ground() - 0.5, ["add_clouds", "min -0.4", "max -0.1"], id="negative"),
    pytest.param(_nan_ground, ["add_clouds", "1 NaN/Inf", "float32"], id="nan"),
]


@pytest.mark.parametrize("make_optical,fragments", ADD_CLOUDS_CASES)
def test_add_clouds_refuses_an_image_that_is_not_reflectance_in_0_1(make_optical, fragments):
    expect(lambda: add_clouds(make_optical(), 0.5, 0), ValueError, fragments)


def test_add_clouds_tolerates_rounding_just_outside_0_1():
    optical = _ground()
    optical[0, 0, 0], optical[1, 1, 1] = -0.005, 1.005
    assert add_clouds(optical, 0.5, 0).cloudy.shape == (4, 32, 32)
    assert add_clouds(_ground(np.float64), 0.5, 0).cloudy.dtype == np.float32  # float64 is fine


# --------------------------------------------------------------------------- 4. attribution arguments
@pytest.fixture(scope="module")
def explain():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    cloud = torch.zeros(1, SIZE, SIZE)
    cloud[:, :20] = 1.0
    return SimpleNamespace(
        model=build_model("edc_tiny", num_classes=6).eval(),
        optical=torch.rand(1, 4, SIZE, SIZE, generator=generator),
        sar=torch.rand(1, 2, SIZE, SIZE, generator=generator),
        cloud=cloud,
        probability=torch.rand(1, SIZE, SIZE, generator=generator) * 0.98 + 0.01,  # strictly inside (0, 1)
    )


def _with_nan(image: torch.Tensor, value=float("nan")) -> torch.Tensor:
    image = image.clone()
    image[0, 1, 3, 4] = value
    return image


EXPLAIN_CASES = [
    # probability maps where a mask is expected
    pytest.param(lambda e: modality_shares(e.model, e.optical, e.sar, e.probability, 1),
                 ["modality_shares", "cloud_mask", "boolean or 0/1", "strictly between 0 and 1", "> 0.5"],
                 id="modality-shares-probability-cloud-mask"),
    pytest.param(lambda e: pixel_attributions(e.model, e.optical, e.sar, 1, e.probability[0]),
                 ["RegionScore", "region", "strictly between 0 and 1"], id="pixel-probability-region"),
    pytest.param(lambda e: RegionScore(e.model, 1, e.probability.numpy()), ["region", "probability map"],
                 id="region-score-probability-region-numpy"),
    pytest.param(lambda e: modality_feature_masks(e.probability), ["cloud_mask", "strictly between 0 and 1"],
                 id="feature-masks-probability"),
    pytest.param(lambda e: region_for("cloudy", e.probability[0]), ["region_for", "cloud_mask", "probability map"],
                 id="widget-region-probability"),
    pytest.param(lambda e: class_on_both_sides(torch.zeros(SIZE, SIZE), e.probability[0], 6),
                 ["class_on_both_sides", "cloud_mask"], id="class-on-both-sides-probability"),
    pytest.param(lambda e: modality_shares(e.model, e.optical, e.sar, e.cloud * float("nan"), 1),
                 ["cloud_mask", "NaN"], id="nan-cloud-mask"),
    pytest.param(lambda e: pixel_attributions(e.model, e.optical, e.sar, 1, e.cloud[0] * 3),
                 ["region", "other than 0 and 1", "[3, 3]"], id="region-mask-of-3s"),
    # counts
    pytest.param(lambda e: modality_shares(e.model, e.optical, e.sar, e.cloud, 1, method="shapley_sampling",
                                           n_samples=0),
                 ["modality_shares", "n_samples", "integer >= 1", "found 0"], id="shares-n-samples-0"),
    pytest.param(lambda e: pixel_attributions(e.model, e.optical, e.sar, 1, method="gradient_shap", n_samples=-3),
                 ["pixel_attributions", "n_samples", "found -3"], id="gradient-shap-n-samples-negative"),
    pytest.param(lambda e: pixel_attributions(e.model, e.optical, e.sar, 1, n_steps=0),
                 ["pixel_attributions", "n_steps", "integer >= 1", "found 0"], id="pixel-n-steps-0"),
    pytest.param(lambda e: layer_contributions(e.model, e.optical, e.sar, 1, n_steps=-1),
                 ["layer_contributions", "n_steps", "found -1"], id="layer-n-steps-negative"),
    pytest.param(lambda e: pixel_attributions(e.model, e.optical, e.sar, 1, n_steps=2.5),
                 ["n_steps", "found 2.5"], id="n-steps-not-an-integer"),
    pytest.param(lambda e: layer_contributions(e.model, e.optical, e.sar, 1, internal_batch_size=0),
                 ["internal_batch_size", "or None", "found 0"], id="internal-batch-size-0"),
    pytest.param(lambda e: modality_shares(e.model, e.optical, e.sar, e.cloud, 1, perturbations_per_eval=0),
                 ["modality_shares", "perturbations_per_eval", "found 0"], id="perturbations-per-eval-0"),
    pytest.param(lambda e: pixel_attributions(e.model, e.optical, e.sar, 1, method="gradient_shap",
                                              stdevs=float("nan")),
                 ["stdevs", "finite number >= 0", "nan"], id="stdevs-nan"),
    pytest.param(lambda e: modality_shares(e.model, e.optical, e.sar, e.cloud, 1, blur_sigma=float("inf")),
                 ["blur_sigma", "inf"], id="blur-sigma-inf"),
    # non-finite inputs
    pytest.param(lambda e: pixel_attributions(e.model, _with_nan(e.optical), e.sar, 1),
                 ["pixel_attributions", "optical", "finite", "found 1 NaN/Inf"], id="pixel-nan-optical"),
    pytest.param(lambda e: modality_shares(e.model, e.optical, _with_nan(e.sar, float("inf")), e.cloud, 1),
                 ["modality_shares", "sar", "1 NaN/Inf"], id="shares-inf-sar"),
    pytest.param(lambda e: layer_contributions(e.model, _with_nan(e.optical), e.sar, 1),
                 ["layer_contributions", "optical", "NaN/Inf"], id="layer-nan-optical"),
    pytest.param(lambda e: pixel_attributions(e.model, e.optical, e.sar, 1, baseline="cloudfree",
                                              optical_clear=_with_nan(e.optical)),
                 ["optical_clear", "NaN/Inf"], id="nan-optical-clear"),
    pytest.param(lambda e: pixel_attributions(e.model, e.optical, e.sar, 1,
                                              baseline=(torch.zeros(4, 1, 1), torch.full((2, 1, 1), float("nan")))),
                 ["sar baseline", "NaN/Inf"], id="nan-custom-baseline"),
]


@pytest.mark.parametrize("call,fragments", EXPLAIN_CASES)
def test_attribution_functions_refuse(call, fragments, explain):
    expect(lambda: call(explain), ValueError, fragments)


def test_a_0_1_float_cloud_mask_is_still_a_mask(explain):
    """The torch samples carry the cloud mask as 0./1. floats: that is a mask, not a probability map."""
    optical_groups, _ = modality_feature_masks(explain.cloud)
    assert optical_groups[0, 0, 0, 0] == 0 and optical_groups[0, 0, -1, -1] == 1
    assert torch.equal(region_for("cloudy", explain.cloud[0]), explain.cloud[0].bool())


# --------------------------------------------------------------------------- 5. mostly negative reflectance
def _negative_int16(path: Path, fraction: float) -> None:
    """Rewrite the optical as int16; ``fraction`` of the pixels (first rows) negated."""
    values = read(path).astype(np.int16)
    rows = int(round(fraction * values.shape[1]))
    values[:, :rows] = -np.maximum(values[:, :rows], 1)
    rewrite(values=values, path=path, nodata=None)


def test_m3mcr_refuses_an_all_negative_int16_optical(m3mcr):
    _negative_int16(m3mcr.files[0].optical, 1.0)
    expect(lambda: m3mcr.read_scene(0), DataError,
           ["planet_cloudy", "reflectance x10000 in [0, 10000]", "int16", "100% of the valid values below 0"])


def test_predict_reader_refuses_a_mostly_negative_optical(m3mcr):
    files = m3mcr.files[0]
    _negative_int16(files.optical, 0.6)
    expect(lambda: read_inputs(files.optical, files.sar), DataError,
           ["planet_cloudy", "int16", "60% of the valid values"])


def test_a_few_slightly_negative_reflectances_still_read(m3mcr):
    """Atmospheric correction leaves some small negatives: they are clipped to 0, not refused."""
    path = m3mcr.files[0].optical
    values = read(path).astype(np.int16)
    values[:, :4] = -7  # 10 % of the rows
    rewrite(path, values, nodata=None)
    scene = m3mcr.read_scene(0)
    assert float(scene["optical"].values[:, :4].max()) == 0.0 and float(scene["optical"].values.min()) == 0.0


def test_the_real_m3mcr_tile_still_reads(m3mcr_sample_root):
    scene = M3MCR(m3mcr_sample_root, csv="one_train_sample.csv").read_scene(0)
    assert scene["optical"].shape == (4, 300, 300) and np.isfinite(scene["optical"].values).all()


# --------------------------------------------------------------------------- 6. south-up and rotated rasters
def _file(m3mcr, kind):
    return getattr(m3mcr.files[0], kind)


NORTH_UP_CASES = [  # (file made south-up, how it is read, its pixel height e as the message prints it)
    pytest.param("optical", lambda m: m.read_scene(0), "e=3", id="m3mcr-south-up-optical"),
    pytest.param("sar", lambda m: m.read_scene(0), "e=10", id="m3mcr-south-up-sar"),
    pytest.param("optical", lambda m: read_inputs(_file(m, "optical"), _file(m, "sar")), "e=3",
                 id="predict-south-up-optical"),
    pytest.param("sar", lambda m: read_inputs(_file(m, "optical"), _file(m, "sar")), "e=10",
                 id="predict-south-up-sar"),
    pytest.param("optical", lambda m: open_lazy(_file(m, "optical"), "optical"), "e=3", id="lazy-south-up-optical"),
]


@pytest.mark.parametrize("kind,read_it,pixel_height", NORTH_UP_CASES)
def test_a_south_up_raster_is_refused_naming_that_file(kind, read_it, pixel_height, m3mcr):
    path = _file(m3mcr, kind)
    make_south_up(path)
    message = expect(lambda: read_it(m3mcr), DataError,
                     [str(path), "expected a north-up raster", "e < 0", "south-up (e > 0)", pixel_height])
    other = _file(m3mcr, "sar" if kind == "optical" else "optical")
    assert str(other) not in message and "overlap" not in message  # the other file is not blamed


def test_a_rotated_sar_is_refused(m3mcr):
    make_rotated(m3mcr.files[0].sar)
    expect(lambda: m3mcr.read_scene(0), DataError, ["S1_synthetic", "north-up", "rotated or sheared", "b="])


def test_whu_south_up_sar_is_refused_before_any_patch(tmp_path):
    root = make_fake_whu(tmp_path / "whu", names=WHU_TRAIN_NAMES[:1], height=SIZE, width=SIZE)
    make_south_up(root / "sar" / WHU_TRAIN_NAMES[0])
    expect(lambda: WHUOptSAR(root, patch_size=32), DataError, ["sar/NH49E004021.tif", "south-up (e > 0)"])


def test_predict_cli_refuses_a_south_up_optical(m3mcr, m3mcr_checkpoint, tmp_path, capsys):
    files = m3mcr.files[0]
    make_south_up(files.optical)
    out = tmp_path / "map.tif"
    code, err = run_cli(["predict", "--checkpoint", m3mcr_checkpoint, "--optical", files.optical, "--sar", files.sar,
                         "--out", out, "--window", "32", "--overlap", "8"], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "planet_cloudy" in err and "north-up" in err and not out.exists()
