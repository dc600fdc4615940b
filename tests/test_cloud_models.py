"""Named cloud models (edc_lab.data.cloud_models) and their path into scenes and datasets."""

from __future__ import annotations

import numpy as np
import pytest

from edc_lab.data.cloud_models import CLOUD_MODELS, cloud_model
from edc_lab.data.datasets import build_dataset
from edc_lab.data.synthetic import SyntheticScenes, synthetic_scene


def test_realistic_is_the_default_everywhere():
    options = cloud_model()
    default = synthetic_scene(4, size=64, cloud_cover=0.5)
    named = synthetic_scene(4, size=64, cloud_cover=0.5, **options)
    np.testing.assert_array_equal(default["optical"].values, named["optical"].values)


def test_opaque_clouds_hide_the_ground_and_leave_clear_pixels_alone():
    opacity_inside, untouched = [], []
    for seed in range(6):
        scene = synthetic_scene(seed, size=96, cloud_cover=0.5, **cloud_model("opaque", shadows=False))
        mask = scene["cloud_mask"].values
        opacity_inside.append(scene["cloud_opacity"].values[mask])
        outside = ~mask
        untouched.append(np.array_equal(scene["optical"].values[:, outside], scene["optical_clear"].values[:, outside]))
    opacity = np.concatenate(opacity_inside)
    assert np.mean(opacity > 0.95) > 0.85 and opacity.mean() > 0.9  # realistic: mean about 0.4
    assert all(untouched)  # no haze, no shadows: outside the mask nothing changed
    realistic = synthetic_scene(0, size=96, cloud_cover=0.5)
    assert realistic["cloud_opacity"].values[realistic["cloud_mask"].values].mean() < 0.6


def test_the_same_seed_gives_the_same_mask_under_every_cloud_model():
    masks = [synthetic_scene(7, size=64, cloud_cover=0.4, **cloud_model(name))["cloud_mask"].values
             for name in CLOUD_MODELS]
    assert all(np.array_equal(masks[0], mask) for mask in masks[1:])


def test_cloud_options_reach_datasets_and_are_refused_for_real_data(tmp_path):
    opaque = build_dataset("synthetic", size=64, count=2, cloud_cover=0.5, clouds=cloud_model("opaque"))
    plain = SyntheticScenes(2, size=64, seed=0, cloud_cover=0.5, **cloud_model("opaque"))
    np.testing.assert_array_equal(opaque[1]["optical"].numpy(), plain[1]["optical"].numpy())
    assert opaque.cloud_options["thin_fraction"] == 0.1
    with pytest.raises(ValueError, match="clouds=.* concern synthetic scenes only"):
        build_dataset("m3mcr", root=tmp_path, clouds=cloud_model("opaque"))


@pytest.mark.parametrize("overrides, message", [
    ({"name": "fluffy"}, r"expected a name in \('realistic', 'opaque'\), found 'fluffy'"),
    ({"haze": 1.5}, "expected haze in"),
    ({"thickness": (0.9, 0.2)}, r"expected thickness as \(lo, hi\)"),
    ({"thin_fraction": -0.1}, r"expected thin_fraction in \[0, 1\], found -0.1"),
    ({"shadows": "yes"}, "expected shadows True or False"),
    ({"colour": "grey"}, r"unknown option\(s\) \['colour'\]"),
])
def test_bad_cloud_options_name_the_option(overrides, message):
    name = overrides.pop("name", "opaque")
    with pytest.raises(ValueError, match=message):
        cloud_model(name, **overrides)


def test_training_config_and_cli_carry_the_cloud_model_to_the_training_scenes(tmp_path):
    import argparse

    from edc_lab.train.cli import add_arguments, config_from_args
    from edc_lab.train.config import make_config
    from edc_lab.train.run_data import build_datasets

    config = make_config(profile="cpu-quick", size=32, train_count=2, val_count=1, cloud_model="opaque",
                         cloud_options={"shadows": False}, out=str(tmp_path / "run"))
    assert config.clouds() == {"thickness": 1.0, "thin_fraction": 0.1, "haze": 0.0, "shadows": False}
    train_set, _ = build_datasets(config)
    assert train_set.dataset.cloud_options["thin_fraction"] == 0.1 and train_set.dataset.cloud_options["haze"] == 0.0
    assert config.to_dict()["cloud_options"] == {"shadows": False}
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--cloud-model", "opaque", "--cloud-haze", "0.1", "0.2", "--no-cloud-shadows",
                              "--out", str(tmp_path / "cli")])
    assert config_from_args(args).clouds() == {"thickness": 1.0, "thin_fraction": 0.1, "haze": (0.1, 0.2),
                                               "shadows": False}
    with pytest.raises(ValueError, match=r"cloud_model / cloud_options: .*expected thin_fraction in \[0, 1\], found 2"):
        make_config(cloud_options={"thin_fraction": 2.0})
    with pytest.raises(ValueError, match="cloud_model/cloud_options concern synthetic scenes only"):
        make_config(data="m3mcr", root=str(tmp_path), cloud_model="opaque")
