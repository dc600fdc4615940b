"""Training evidence: the loader's two layouts and its errors, paired differences by hand, plots read back."""

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from edc_lab.viz.evidence import (  # noqa: E402
    cover_sweep,
    load_evidence,
    paired_difference,
    paired_differences,
    plot_cover_sweep,
    plot_paired_differences,
)

REAL_EVIDENCE = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "train_evidence.json"

# per run, per seed: (miou, miou_cloudy, miou_clear) of the test, and the sweep miou at covers 0, 0.5
RUNS = {
    "edc": {0: ((0.70, 0.60, 0.80), (0.80, 0.70)), 1: ((0.74, 0.66, 0.82), (0.82, 0.74)),
            2: ((0.72, 0.61, 0.83), (0.78, 0.69))},
    "plain": {0: ((0.68, 0.59, 0.79), (0.79, 0.65)), 1: ((0.71, 0.60, 0.84), (0.81, 0.70)),
              2: ((0.73, 0.64, 0.80), (0.80, 0.66))},
}


def seed_entry(seed, test, sweep):
    miou, cloudy, clear = test
    return {
        "seed": seed,
        "metrics": {"miou": miou, "miou_cloudy": cloudy, "miou_clear": clear, "auroc": [0.5, 0.5, 0.5, 0.5]},
        "sweep": [
            {"cloud_cover": 0.0, "miou": sweep[0], "miou_cloudy": math.nan, "miou_clear": sweep[0]},
            {"cloud_cover": 0.5, "miou": sweep[1], "miou_cloudy": sweep[1] - 0.05, "miou_clear": sweep[1] + 0.05},
        ],
    }


def flat_layout():
    runs = {name: [seed_entry(s, *values) for s, values in seeds.items()] for name, seeds in RUNS.items()}
    runs["teacher (cloud-free input)"] = [{"seed": 0, "metrics": {"miou": 0.9}}]  # no sweep, like the real file
    return {**runs, "_meta": [{"elapsed_seconds": 1.0}]}


@pytest.fixture
def flat_file(tmp_path):
    path = tmp_path / "evidence.json"
    path.write_text(json.dumps(flat_layout()))
    return path


@pytest.fixture
def results(flat_file):
    return load_evidence(flat_file)


# ---- loader -------------------------------------------------------------------------------------


def test_flat_layout_is_read_and_meta_dropped(flat_file):
    results = load_evidence(flat_file)
    assert set(results) == {"edc", "plain", "teacher (cloud-free input)"}
    assert [entry["seed"] for entry in results["edc"]] == [0, 1, 2]
    assert results["edc"][1]["metrics"]["miou"] == 0.74
    assert math.isnan(results["edc"][0]["sweep"][0]["miou_cloudy"])  # NaN survives the round trip


def test_family_layout_selects_one_family(tmp_path):
    flat = flat_layout()
    context = {"edc": [seed_entry(0, (0.5, 0.4, 0.6), (0.6, 0.5))]}
    path = tmp_path / "families.json"
    path.write_text(json.dumps({"default": {k: v for k, v in flat.items() if k != "_meta"},
                                "context": context, "_meta": {"elapsed_seconds": 2.0}}))
    assert load_evidence(path, family="context")["edc"][0]["metrics"]["miou"] == 0.5
    assert set(load_evidence(path, family="default")) == {"edc", "plain", "teacher (cloud-free input)"}
    # no family given, or an unknown one: the error names the file and the families found
    for family in (None, "urban"):
        with pytest.raises(ValueError, match="families") as error:
            load_evidence(path, family=family)
        assert str(path) in str(error.value) and "'context'" in str(error.value) and "'default'" in str(error.value)
    with pytest.raises(ValueError, match="'urban'"):
        load_evidence(path, family="urban")


def test_family_asked_of_a_flat_file_is_an_error(flat_file):
    with pytest.raises(ValueError, match="no families") as error:
        load_evidence(flat_file, family="default")
    assert str(flat_file) in str(error.value)


def test_missing_and_malformed_files_are_named(tmp_path):
    missing = tmp_path / "nowhere.json"
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        load_evidence(missing)
    broken = tmp_path / "broken.json"
    broken.write_text('{"edc": [ {"seed": 0, ')
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        load_evidence(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ValueError, match="list.json.*expected a JSON object.*found a list"):
        load_evidence(listed)
    no_metrics = tmp_path / "no_metrics.json"
    no_metrics.write_text(json.dumps({"edc": [{"seed": 0}]}))
    with pytest.raises(ValueError, match="no_metrics.json.*'edc'.*lacks \\['metrics'\\]"):
        load_evidence(no_metrics)


def test_the_committed_evidence_loads():
    results = load_evidence(REAL_EVIDENCE)
    assert "_meta" not in results
    for run in ("student_no_kd", "student_d_supervised", "edc_no_dchf", "dense_edc", "early_fusion"):
        assert [entry["seed"] for entry in results[run]] == [0, 1, 2]
        assert 0 < results[run][0]["metrics"]["miou"] < 1
        covers = [point["cloud_cover"] for point in results[run][0]["sweep"]]
        assert covers == pytest.approx([0, 0.2, 0.4, 0.6, 0.8])
    mean, std = paired_difference(results, "student_no_kd", "early_fusion")
    assert mean > 0 and std > 0


# ---- paired differences ------------------------------------------------------------------------


def test_paired_difference_equals_a_hand_computation(results):
    # edc − plain per seed, in points: 70−68 = 2, 74−71 = 3, 72−73 = −1 → mean 4/3, std (ddof 1) of (2, 3, −1)
    mean, std = paired_difference(results, "edc", "plain")
    assert mean == pytest.approx(4 / 3)
    deviations = np.array([2, 3, -1]) - 4 / 3
    assert std == pytest.approx(math.sqrt((deviations**2).sum() / 2))
    # cloudy pixels: 1, 6, −3 → mean 4/3, std sqrt(((1−4/3)² + (6−4/3)² + (−3−4/3)²) / 2)
    mean, std = paired_difference(results, "edc", "plain", "miou_cloudy")
    assert mean == pytest.approx(4 / 3) and std == pytest.approx(np.std([1, 6, -3], ddof=1))
    # antisymmetric, and zero against itself
    assert paired_difference(results, "plain", "edc")[0] == pytest.approx(-4 / 3)
    assert paired_difference(results, "edc", "edc") == (0.0, 0.0)
    # on the sweep at cover 0.5: 70−65, 74−70, 69−66 = 5, 4, 3 → mean 4, std 1
    assert paired_difference(results, "edc", "plain", cover=0.5) == pytest.approx((4.0, 1.0))


def test_pairing_is_by_seed_not_by_position(results):
    shuffled = {**results, "plain": list(reversed(results["plain"]))}
    assert paired_difference(shuffled, "edc", "plain") == pytest.approx(paired_difference(results, "edc", "plain"))
    # one shared seed: a mean but no std
    single = {**results, "plain": [results["plain"][1]]}
    mean, std = paired_difference(single, "edc", "plain")
    assert mean == pytest.approx(3.0) and math.isnan(std)


def test_paired_difference_errors_name_the_runs(results):
    with pytest.raises(ValueError, match="'dense'.*available.*'edc'.*'plain'"):
        paired_difference(results, "edc", "dense")
    with pytest.raises(ValueError, match="'edc'.*no 'oa'"):
        paired_difference(results, "edc", "plain", key="oa")
    no_overlap = {**results, "plain": [{**results["plain"][0], "seed": 7}]}
    with pytest.raises(ValueError, match="share no seed"):
        paired_difference(no_overlap, "edc", "plain")


def test_paired_differences_cover_the_three_pixel_subsets(results):
    table = paired_differences(results, [("edc", "plain", "EDC − plain")])
    assert set(table["EDC − plain"]) == {"all", "cloudy", "clear"}
    assert table["EDC − plain"]["clear"] == pytest.approx(paired_difference(results, "edc", "plain", "miou_clear"))


# ---- plots -------------------------------------------------------------------------------------


def test_cover_sweep_summarises_over_seeds(results):
    covers, mean, std = cover_sweep(results, "edc")
    assert covers.tolist() == [0.0, 0.5]
    assert mean == pytest.approx([80.0, 71.0])
    assert std == pytest.approx([np.std([80, 82, 78], ddof=1), np.std([70, 74, 69], ddof=1)])
    # no cloudy pixel at cover 0: that level is nan, not a fake number
    _, cloudy, _ = cover_sweep(results, "edc", "miou_cloudy")
    assert math.isnan(cloudy[0]) and cloudy[1] == pytest.approx(66.0)
    with pytest.raises(ValueError, match="'teacher \\(cloud-free input\\)' has no cloud-cover sweep"):
        cover_sweep(results, "teacher (cloud-free input)")


def test_sweep_plot_error_bars_carry_the_means_and_stds(results):
    ax = plot_cover_sweep(results, ["edc", "plain"])
    assert ax.figure.dpi >= 100
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["edc", "plain"]
    assert "cloud cover (fraction of pixels)" == ax.get_xlabel() and ax.get_ylabel() == "mIoU (%)"
    for container, run in zip(ax.containers, ["edc", "plain"], strict=True):
        covers, mean, std = cover_sweep(results, run)
        line, _, (bars,) = container.lines
        assert line.get_xdata() == pytest.approx(covers) and line.get_ydata() == pytest.approx(mean)
        # each error bar is a vertical segment from mean − std to mean + std
        segments = np.array(bars.get_segments())
        assert segments[:, 0, 0] == pytest.approx(covers)
        assert segments[:, 0, 1] == pytest.approx(mean - std) and segments[:, 1, 1] == pytest.approx(mean + std)
    # by hand, "edc" at cover 0.5: 70, 74, 69 % → the bar spans 2 · std(70, 74, 69)
    bars = np.array(ax.containers[0].lines[2][0].get_segments())
    assert bars[1, 1, 1] - bars[1, 0, 1] == pytest.approx(2 * np.std([70, 74, 69], ddof=1))


def test_sweep_plot_draws_on_given_axes(results):
    figure, ax = plt.subplots(dpi=120)
    assert plot_cover_sweep(results, ["plain"], key="miou_clear", ax=ax) is ax
    assert ax.figure is figure and "clear pixels" in ax.get_title()


def test_paired_difference_plot_bars_and_error_bars(results):
    pairs = [("edc", "plain", "EDC − plain"), ("plain", "edc", "plain − EDC")]
    ax = plot_paired_differences(results, pairs)
    assert ax.figure.dpi >= 100
    assert ax.get_xlabel() == "mIoU difference (points)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["EDC − plain", "plain − EDC"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["all pixels", "cloudy pixels", "clear pixels"]
    # a vertical line at 0
    assert any(np.allclose(line.get_xdata(), 0) and line.get_xdata()[0] == line.get_xdata()[-1] for line in ax.lines)
    table = paired_differences(results, pairs)
    bar_containers, error_containers = ax.containers[0::2], ax.containers[1::2]
    for subset, bars, errors in zip(["all", "cloudy", "clear"], bar_containers, error_containers, strict=True):
        expected_mean = [table[label][subset][0] for *_, label in pairs]
        expected_std = [table[label][subset][1] for *_, label in pairs]
        assert [patch.get_width() for patch in bars.patches] == pytest.approx(expected_mean)
        segments = np.array(errors.lines[2][0].get_segments())
        assert segments[:, 1, 0] - segments[:, 0, 0] == pytest.approx(2 * np.array(expected_std))
        assert segments[:, :, 0].mean(axis=1) == pytest.approx(expected_mean)
    # pairs run top to bottom in the order given
    assert ax.yaxis_inverted()


# ----------------------------------------------------------------------- intervals (DCHF experiment)
def test_paired_intervals_are_scipy_t_intervals_of_the_per_seed_differences():
    from scipy import stats

    from edc_lab.viz.evidence import paired_intervals

    runs = {name: [seed_entry(s, *values) for s, values in seeds.items()] for name, seeds in RUNS.items()}
    interval = paired_intervals(runs, [("edc", "plain", "edc − plain")], key="miou_cloudy")["edc − plain"]
    differences = 100 * (np.array([0.60, 0.66, 0.61]) - np.array([0.59, 0.60, 0.64]))
    expected = stats.ttest_1samp(differences, 0).confidence_interval(0.95)
    assert interval.n == 3 and interval.mean == pytest.approx(differences.mean())
    assert (interval.low, interval.high) == pytest.approx((expected.low, expected.high))


def test_interval_and_stage_plots_draw_one_errorbar_per_key_and_run():
    from edc_lab.viz.evidence import plot_paired_intervals, plot_stage_values, stage_values

    runs = {name: [seed_entry(s, *values) for s, values in seeds.items()] for name, seeds in RUNS.items()}
    for name, scale in (("edc", 0.01), ("plain", 0.1)):
        for entry in runs[name]:
            entry["contamination"] = [{"noise": scale * (stage + 1) * (1 + 0.1 * entry["seed"])} for stage in range(4)]
    ax = plot_paired_intervals(runs, [("edc", "plain", "edc − plain")], gate=2.0)
    assert len(ax.containers) == 2 and ax.figure.dpi >= 100
    assert any(line.get_linestyle() == "--" for line in ax.get_lines())  # the gate
    values = stage_values(runs, "plain")
    assert values.shape == (3, 4) and values[0, 3] == pytest.approx(0.4)
    ax = plot_stage_values(runs, ["edc", "plain"])
    assert len(ax.containers) == 2 and ax.get_yscale() == "log"
    del runs["edc"][0]["contamination"]
    with pytest.raises(ValueError, match=r"run 'edc' has no contamination measure for seeds \[0\]"):
        stage_values(runs, "edc")
    plt.close("all")
