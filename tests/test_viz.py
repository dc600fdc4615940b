"""Plots: percentile stretch, band order, label colours with ignore, legends, the six-panel figure."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from edc_lab.data.sample import WHU_CLASSES, WHU_COLORS  # noqa: E402
from edc_lab.data.synthetic import SyntheticScenes, synthetic_scene  # noqa: E402
from edc_lab.viz import false_color, label_rgb, legend_handles, plot_sample, rgb, stretch  # noqa: E402


def test_stretch_maps_percentiles_to_zero_and_one():
    values = np.arange(101, dtype=np.float32).reshape(1, 101)
    out = stretch(values, (10, 90))
    assert out.dtype == np.float32
    assert out[0, 10] == 0 and out[0, 90] == 1 and out[0, 50] == pytest.approx(0.5)
    assert out[0, :10].max() == 0 and out[0, 90:].min() == 1  # clipped
    # A constant channel becomes 0; non-finite values are ignored and shown as 0.
    assert not stretch(np.full((2, 3, 3), 4.0)).any()
    with_nan = values.copy()
    with_nan[0, 0] = np.nan
    assert stretch(with_nan)[0, 0] == 0 and np.isfinite(stretch(with_nan)).all()
    with pytest.raises(ValueError, match="percentiles"):
        stretch(values, (90, 10))


def test_joint_stretch_keeps_hue_and_reference_supplies_the_range():
    image = np.stack([np.linspace(0, 1, 50), np.linspace(0, 0.5, 50)]).reshape(2, 5, 10).astype(np.float32)
    per_channel = stretch(image, (0, 100), per_channel=True)
    joint = stretch(image, (0, 100), per_channel=False)
    assert per_channel[1].max() == 1  # each channel filled to 1
    assert joint[1].max() == pytest.approx(0.5)  # ratio between channels kept
    reference = image * 0.5
    assert stretch(image, (0, 100), reference=reference).max() == 1  # saturates beyond the reference range
    with pytest.raises(ValueError, match="reference"):
        stretch(image, reference=reference[:1])


def _banded_optical(size=8):
    """Each band bright in its own region: blue left, green top, red right, nir bottom."""
    optical = np.full((4, size, size), 0.1, dtype=np.float32)
    half = size // 2
    optical[0, :, :half] = 0.5
    optical[1, :half, :] = 0.5
    optical[2, :, half:] = 0.5
    optical[3, half:, :] = 0.5
    return optical


def test_rgb_and_false_colour_pick_the_right_bands_from_any_array_type():
    optical = _banded_optical()
    image = rgb(optical, percentiles=(0, 100))
    assert image.shape == (8, 8, 3)
    np.testing.assert_array_equal(image[..., 0] > 0.5, optical[2] > 0.3)  # red channel = red band
    np.testing.assert_array_equal(image[..., 2] > 0.5, optical[0] > 0.3)  # blue channel = blue band
    composite = false_color(optical, percentiles=(0, 100))
    np.testing.assert_array_equal(composite[..., 0] > 0.5, optical[3] > 0.3)  # red shows NIR
    np.testing.assert_array_equal(composite[..., 1] > 0.5, optical[2] > 0.3)  # green shows red
    assert np.array_equal(rgb(torch.from_numpy(optical)), rgb(optical))
    ds = synthetic_scene(0, 32)
    assert np.array_equal(rgb(ds.optical), rgb(ds.optical.values))
    with pytest.raises(ValueError, match=r"\(4, H, W\)"):
        rgb(optical[:3])
    with pytest.raises(ValueError, match="swir"):
        rgb(optical, bands=("swir", "red", "green"))


def test_label_colours_match_the_palette_and_ignore_is_transparent():
    label = np.array([[0, 1, 2, 3], [4, 5, 6, 255]], dtype=np.uint8)
    image = label_rgb(label, WHU_COLORS)
    assert image.shape == (2, 4, 4)
    for index in range(7):
        row, col = np.argwhere(label == index)[0]
        np.testing.assert_allclose(image[row, col, :3], to_rgb(WHU_COLORS[index]), atol=1e-6)
        assert image[row, col, 3] == 1
    np.testing.assert_array_equal(image[1, 3], [0, 0, 0, 0])
    assert np.array_equal(label_rgb(torch.from_numpy(label.astype(np.int64)), WHU_COLORS), image)
    black = label_rgb(label, WHU_COLORS, ignore_color=(0, 0, 0, 1))
    np.testing.assert_array_equal(black[1, 3], [0, 0, 0, 1])
    with pytest.raises(ValueError, match=r"0\.\.6 or 255.*\[9\]"):
        label_rgb(np.array([[0, 9]]), WHU_COLORS)


def test_legend_handles_name_and_colour_each_class():
    handles = legend_handles(WHU_CLASSES, WHU_COLORS)
    assert [h.get_label() for h in handles] == list(WHU_CLASSES)
    for handle, color in zip(handles, WHU_COLORS):
        np.testing.assert_allclose(handle.get_facecolor()[:3], to_rgb(color))
    with pytest.raises(ValueError, match="one colour per class"):
        legend_handles(WHU_CLASSES, WHU_COLORS[:3])


def test_plot_sample_draws_six_small_panels_from_a_dataset_or_a_torch_sample():
    ds = synthetic_scene(1, 48, cloud_cover=0.3)
    figure = plot_sample(ds)
    width, height = figure.get_size_inches()
    assert width <= 10 and height <= 5
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:5] == ["true colour", "false colour (NIR R G)", "label", "SAR VV", "SAR VH"]
    assert titles[5].startswith("cloud mask (30%")
    # at most three panels a row: two rows of three
    assert figure.axes[0].get_subplotspec().get_gridspec().get_geometry() == (2, 3)
    assert [t.get_text() for t in figure.axes[2].get_legend().get_texts()] == list(WHU_CLASSES)
    # SAR in the data's unit: VV and VH come back to dB on their colourbars
    assert [ax.get_ylabel() for ax in figure.axes[6:]] == ["backscatter (dB)", "backscatter (dB)"]
    vv = figure.axes[3].images[0].get_array()
    assert -25.0 <= float(vv.min()) and float(vv.max()) <= 0.0
    dataset = SyntheticScenes(2, size=48, sar_channels=1)
    figure = dataset.plot(dataset[0])
    assert figure.axes[4].get_title() == "SAR VH: n/a" and len(figure.axes[4].images) == 0
    assert len(figure.axes[0].images) == 1 and len(figure.axes[2].images) == 1


def test_sar_display_says_db_only_where_the_scaling_is_known():
    from edc_lab.viz.plots import SAR_DB_RANGE, sar_display

    plane = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    values, kwargs, label = sar_display(plane, "VH")
    assert label == "backscatter (dB)"
    np.testing.assert_allclose([values.min(), values.max()], SAR_DB_RANGE["VH"], atol=1e-5)
    assert kwargs["vmin"] < kwargs["vmax"]
    values, _, label = sar_display(plane, "GF-3")
    assert label == "normalised backscatter (0–1)" and np.array_equal(values, plane)
    with pytest.raises(ValueError, match="one plane"):
        sar_display(np.zeros((2, 4, 4)), "VV")


def test_one_stretch_takes_its_range_from_the_clear_pixels():
    ds = synthetic_scene(5, 64, cloud_cover=0.5, thickness=1.0, haze=0.5)
    cloudy, clear, mask = ds["optical"].values, ds["optical_clear"].values, ds["cloud_mask"].values
    shown = rgb(cloudy, cloud_mask=mask)
    # the range of the clear pixels: the clear ground spans the whole grey scale, the clouds saturate
    ground = shown[~mask]
    assert ground.min() == 0.0 and ground.max() == 1.0
    assert shown[mask].mean() > ground.mean() + 0.2
    # the same as passing the cloudy image with its clouds blanked out as the reference
    blanked = np.where(mask[None], np.nan, cloudy)
    np.testing.assert_array_equal(shown, rgb(cloudy, reference=blanked))
    # hazy ground on the cloud-free image's range is brighter than on its own clear pixels' range
    assert rgb(cloudy, reference=clear)[~mask].mean() > ground.mean()
    # (almost) all cloud: the image's own range
    np.testing.assert_array_equal(rgb(cloudy, cloud_mask=np.ones_like(mask)), rgb(cloudy))
    with pytest.raises(ValueError, match="reference or cloud_mask"):
        rgb(cloudy, reference=clear, cloud_mask=mask)
    with pytest.raises(ValueError, match="cloud_mask: expected shape"):
        rgb(cloudy, cloud_mask=mask[:10])


def test_plot_sample_into_given_axes():
    figure, axes = plt.subplots(2, 3, figsize=(6, 3))
    returned = plot_sample(synthetic_scene(2, 32), axes=axes)
    assert returned is figure and all(len(ax.images) == 1 for ax in axes.ravel())
    with pytest.raises(ValueError, match="6 axes"):
        plot_sample(synthetic_scene(2, 32), axes=axes.ravel()[:4])
    with pytest.raises(ValueError, match="xarray.Dataset or a dict"):
        plot_sample(np.zeros((4, 8, 8)))


def test_stage_aurocs_and_the_stage_figure_report_what_the_maps_say():
    import matplotlib

    matplotlib.use("Agg")
    import torch

    from edc_lab.models import build_model
    from edc_lab.models.discrepancy import discrepancy_auroc
    from edc_lab.viz.model_plots import plot_discrepancy_stages, stage_aurocs

    torch.manual_seed(0)
    model = build_model("edc_tiny")
    optical, sar = torch.rand(3, 4, 64, 64), torch.rand(3, 2, 64, 64)
    mask = torch.zeros(3, 64, 64)
    mask[:, :, :32] = 1
    aurocs = stage_aurocs(model, optical, sar, mask, batch_size=2)
    model.eval()
    with torch.no_grad():
        maps = model(optical, sar)["discrepancy"]
    assert aurocs == [discrepancy_auroc(d, mask) for d in maps] and len(aurocs) == 4
    assert model.training is False
    assert stage_aurocs(build_model("edc_no_dchf"), optical, sar, mask) == []
    # a map equal to the mask is a perfect detector, its negation a perfectly inverted one
    perfect = [mask[:1, None, ::s, ::s] for s in (4, 8, 16, 32)]
    fig = plot_discrepancy_stages(optical[0], mask[0], perfect, title="perfect")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("D stage")]
    assert len(titles) == 4 and all("AUROC 1.00" in t and "finds clouds" in t for t in titles)
    fig = plot_discrepancy_stages(optical[0], mask[0], [1 - m for m in perfect])
    assert all("AUROC 0.00" in ax.get_title() and "inverted" in ax.get_title()
               for ax in fig.axes if ax.get_title().startswith("D stage"))
    assert fig.dpi >= 100 and any("disagree" in ax.get_ylabel() for ax in fig.axes)
