"""What the trained models say: the committed training evidence, read and plotted without training.

``benchmarks/train_evidence.py`` trains EDC, its ablations and the baselines on
synthetic scenes for several seeds, evaluates every model on held-out scenes with
heavy clouds and on a cloud-cover sweep, and writes one JSON file
(``benchmarks/results/train_evidence.json``). Training all of it takes about an
hour on a CPU; reading it takes a moment. This module reads that file and draws
the two pictures an ablation lesson needs: how the mIoU of each model falls as
the cloud cover grows, and how large the difference between two models is once
the seed-to-seed noise is taken into account.

What is computed:

* the file holds, per run, one dict per training seed:
  ``{"seed", "metrics": {"miou", "miou_cloudy", "miou_clear", "auroc", ...},
  "sweep": [{"cloud_cover", "miou", "miou_cloudy", "miou_clear", ...}, ...]}``
  (metrics as fractions in [0, 1]). A file may group the runs one level deeper
  by scene family, ``{"default": {run: [...]}, "context": {run: [...]}}``;
  ``load_evidence(path, family=...)`` picks one family. Keys starting with ``_``
  (``_meta``) are bookkeeping and are dropped;
* a paired difference compares two runs trained with the same seed on the same
  data: ``d_s = 100 · (m_first,s − m_second,s)`` for every seed s of both runs,
  reported as the mean and the standard deviation (ddof = 1) of ``d_s`` in mIoU
  points. Pairing removes what the two runs share (the seed's data order and
  initialisation), so its std is the honest noise of the comparison;
* a cover sweep gives, per cloud-cover level, the mean and std (ddof = 1) over
  seeds of ``100 · m`` in %.

Whose idea: the evaluation protocol and these plots are edc_lab's, not the
paper's (EDC, arXiv 2603.20811, reports single runs on real data).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from edc_lab.stats import PairedInterval

__all__ = [
    "PIXEL_SUBSETS",
    "load_evidence",
    "paired_difference",
    "paired_differences",
    "paired_by_seed",
    "cover_sweep",
    "plot_cover_sweep",
    "plot_paired_differences",
    "paired_intervals",
    "plot_paired_intervals",
    "stage_values",
    "plot_stage_values",
]

#: metric key → the pixels it is measured on
PIXEL_SUBSETS = {"miou": "all", "miou_cloudy": "cloudy", "miou_clear": "clear"}

#: the smallest dpi a figure made here gets (readable at 100 % zoom)
MIN_DPI = 100


def _runs_of(mapping: dict, path: Path, where: str) -> dict[str, list[dict]]:
    """Check that ``mapping`` is ``{run: [per-seed dict, ...]}`` (``_`` keys dropped) and return it."""
    runs = {name: seeds for name, seeds in mapping.items() if not str(name).startswith("_")}
    if not runs:
        raise ValueError(f"{path}: {where} holds no runs; expected {{run_name: [per-seed dict, ...]}}, "
                         f"found only the keys {sorted(mapping)}")
    for name, seeds in runs.items():
        if not isinstance(seeds, list) or not all(isinstance(s, dict) for s in seeds):
            raise ValueError(f"{path}: run {name!r} in {where} should be a list of per-seed dicts, "
                             f"found {type(seeds).__name__}")
        for entry in seeds:
            missing = {"seed", "metrics"} - set(entry)
            if missing:
                raise ValueError(f"{path}: a seed of run {name!r} in {where} lacks {sorted(missing)}; "
                                 f"expected the keys 'seed' and 'metrics', found {sorted(entry)}")
    return runs


def load_evidence(path: str | Path, family: str | None = None) -> dict[str, list[dict]]:
    """Read a training-evidence JSON file into ``{run_name: [per-seed dict, ...]}``.

    Two layouts are accepted:

    * flat (``benchmarks/results/train_evidence.json``): ``{run_name: [...], "_meta": [...]}``;
      then ``family`` must be None;
    * by scene family: ``{family_name: {run_name: [...]}, "_meta": ...}``; then ``family``
      names the one to return.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not
    such JSON, or a ``family`` that does not fit the file; every message names the file,
    what was expected and what was found. Reads with ``json`` only (no pickle).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training evidence not found: {path} (expected the JSON written by "
                                f"benchmarks/train_evidence.py, e.g. benchmarks/results/train_evidence.json)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: expected training evidence as JSON, found a file that is not valid JSON "
                         f"({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{run_name: [per-seed dict, ...]}}, "
                         f"found a {type(data).__name__}")
    entries = {key: value for key, value in data.items() if not str(key).startswith("_")}
    by_family = bool(entries) and all(isinstance(value, dict) for value in entries.values())

    if not by_family:
        if family is not None:
            raise ValueError(f"{path}: asked for the family {family!r}, but the file has no families "
                             f"(flat layout {{run_name: [...]}}, runs {sorted(entries)}); pass family=None")
        return _runs_of(data, path, "the file")

    families = sorted(entries)
    if family is None:
        raise ValueError(f"{path}: the file groups its runs by scene family {families}; "
                         f"pass family= one of them")
    if family not in entries:
        raise ValueError(f"{path}: no family {family!r}; the families found are {families}")
    return _runs_of(entries[family], path, f"family {family!r}")


def _run(results: dict[str, list[dict]], name: str) -> list[dict]:
    if name not in results:
        raise ValueError(f"no run {name!r} in the evidence; the runs available are {sorted(results)}")
    return results[name]


def _value(entry: dict, key: str, run: str, cover: float | None) -> float:
    """``entry["metrics"][key]``, or the sweep point at ``cover``, as a float."""
    if cover is None:
        values, where = entry["metrics"], "metrics"
    else:
        points = [point for point in entry.get("sweep", []) if math.isclose(point["cloud_cover"], cover)]
        if not points:
            covers = [point["cloud_cover"] for point in entry.get("sweep", [])]
            raise ValueError(f"run {run!r} seed {entry['seed']} has no sweep point at cloud cover {cover}; "
                             f"found covers {covers}")
        values, where = points[0], f"sweep at cover {cover}"
    if key not in values:
        raise ValueError(f"run {run!r} seed {entry['seed']} has no {key!r} in its {where}; "
                         f"found {sorted(values)}")
    value = values[key]
    return math.nan if value is None else float(value)


def paired_difference(results: dict[str, list[dict]], first: str, second: str, key: str = "miou",
                      *, cover: float | None = None) -> tuple[float, float]:
    """Mean and std over seeds of ``100 · (first − second)`` in ``key``, paired by seed, in mIoU points.

    ``key`` is a metric of the heavy-cloud test (``"miou"``, ``"miou_cloudy"``,
    ``"miou_clear"``); with ``cover`` the value of the cloud-cover sweep at that
    cover is used instead. Only seeds present in both runs are paired. The std has
    ddof = 1, so it is nan for a single seed. Raises ValueError if a run is missing
    (naming the runs available) or the two runs share no seed.
    """
    first_values, second_values = paired_by_seed(results, first, second,
                                                 lambda entry, run: 100.0 * _value(entry, key, run, cover))
    differences = first_values - second_values
    std = float(np.std(differences, ddof=1)) if len(differences) > 1 else math.nan
    return float(np.mean(differences)), std


def paired_by_seed(results: dict[str, list[dict]], first: str, second: str, value) -> tuple[np.ndarray, np.ndarray]:
    """``value(entry, run)`` of ``first`` and of ``second`` for every seed both runs have, in seed order.

    Raises ValueError if a run is missing (naming the runs available) or the two share no seed.
    """
    first_seeds = {entry["seed"]: entry for entry in _run(results, first)}
    second_seeds = {entry["seed"]: entry for entry in _run(results, second)}
    seeds = sorted(set(first_seeds) & set(second_seeds))
    if not seeds:
        raise ValueError(f"runs {first!r} (seeds {sorted(first_seeds)}) and {second!r} "
                         f"(seeds {sorted(second_seeds)}) share no seed to pair")
    return (np.array([value(first_seeds[s], first) for s in seeds], dtype=float),
            np.array([value(second_seeds[s], second) for s in seeds], dtype=float))


def paired_differences(results: dict[str, list[dict]],
                       pairs: Sequence[tuple[str, str, str]]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{label: {"all" | "cloudy" | "clear": (mean, std)}}`` for each ``(first, second, label)``.

    The three pixel subsets are those of ``PIXEL_SUBSETS``; values as in ``paired_difference``.
    """
    return {
        label: {subset: paired_difference(results, first, second, key) for key, subset in PIXEL_SUBSETS.items()}
        for first, second, label in pairs
    }


def cover_sweep(results: dict[str, list[dict]], run: str,
                key: str = "miou") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(covers, mean, std)`` of ``100 · key`` over the seeds of ``run`` at every cloud cover of its sweep.

    Non-finite values (the cloudy-pixel mIoU at cover 0, where no pixel is cloudy) are left
    out of a level; a level with no finite value is nan, a std from one value is nan.
    Raises ValueError if the run is missing or has no sweep.
    """
    seeds = _run(results, run)
    if not any(entry.get("sweep") for entry in seeds):
        with_sweep = sorted(name for name, entries in results.items() if any(e.get("sweep") for e in entries))
        raise ValueError(f"run {run!r} has no cloud-cover sweep (only trained runs have one); "
                         f"runs with a sweep: {with_sweep}")
    covers = sorted({point["cloud_cover"] for entry in seeds for point in entry.get("sweep", [])})
    mean, std = [], []
    for cover in covers:
        values = np.array([100.0 * _value(entry, key, run, cover) for entry in seeds if entry.get("sweep")])
        values = values[np.isfinite(values)]
        mean.append(values.mean() if len(values) else math.nan)
        std.append(values.std(ddof=1) if len(values) > 1 else math.nan)
    return np.array(covers, dtype=float), np.array(mean), np.array(std)


def _axes(ax, figsize: tuple[float, float]):
    """The given axes, or new ones on a figure of at least ``MIN_DPI``."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, dpi=MIN_DPI, layout="constrained")
    return ax


def plot_cover_sweep(results: dict[str, list[dict]], runs: Sequence[str], key: str = "miou", ax=None):
    """mIoU (%) against cloud cover, mean ± std over seeds as error bars, one line per run.

    ``key`` picks the pixels (see ``PIXEL_SUBSETS``). Draws on ``ax`` if given (its figure's
    dpi is the caller's), else on a new figure at dpi ``MIN_DPI``. Returns the axes; the
    error-bar containers are ``ax.containers`` in the order of ``runs``.
    """
    ax = _axes(ax, (6.4, 4.0))
    seeds = set()
    for run in runs:
        covers, mean, std = cover_sweep(results, run, key)
        seeds |= {entry["seed"] for entry in results[run]}
        ax.errorbar(covers, mean, yerr=std, marker="o", markersize=4, capsize=3, linewidth=1.5, label=run)
    ax.set_xlabel("cloud cover (fraction of pixels)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(f"mIoU on {PIXEL_SUBSETS.get(key, key)} pixels against cloud cover "
                 f"(mean ± std over {len(seeds)} seeds)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_paired_differences(results: dict[str, list[dict]], pairs: Sequence[tuple[str, str, str]], ax=None):
    """Horizontal bars of paired differences (all / cloudy / clear pixels) with std-over-seeds error bars.

    ``pairs`` is a list of ``(first, second, label)``; each bar is ``first − second`` in mIoU
    points (``paired_difference``), a vertical line marks 0. Pairs run top to bottom in the
    given order. Draws on ``ax`` if given, else on a new figure at dpi ``MIN_DPI``. Returns
    the axes; ``ax.containers`` holds, per pixel subset, its bars then its error bars.
    """
    differences = paired_differences(results, pairs)
    labels = [label for *_, label in pairs]
    ax = _axes(ax, (8.0, 1.4 + 0.9 * len(pairs)))
    height = 0.8 / len(PIXEL_SUBSETS)
    rows = np.arange(len(pairs))
    for offset, subset in enumerate(PIXEL_SUBSETS.values()):
        mean = [differences[label][subset][0] for label in labels]
        std = [differences[label][subset][1] for label in labels]
        y = rows - 0.4 + height * (offset + 0.5)
        ax.barh(y, mean, height=height, label=f"{subset} pixels")
        ax.errorbar(mean, y, xerr=std, fmt="none", ecolor="black", capsize=3, linewidth=1)
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_yticks(rows, labels)
    ax.invert_yaxis()
    ax.set_xlabel("mIoU difference (points)")
    ax.set_title("paired by seed: mean ± std over seeds", fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="small")
    return ax


# ---------------------------------------------------------------------- intervals (the DCHF experiment)
def paired_intervals(results: dict[str, list[dict]], pairs: Sequence[tuple[str, str, str]], key: str = "miou",
                     confidence: float = 0.95) -> dict[str, "PairedInterval"]:
    """``{label: PairedInterval}`` of ``100 · (first − second)`` in ``key``, paired by seed, with a
    t-based confidence interval (``edc_lab.stats.paired_interval``, scipy.stats)."""
    from edc_lab.stats import paired_interval

    points = lambda entry, run: 100.0 * _value(entry, key, run, None)  # noqa: E731
    return {label: paired_interval(*paired_by_seed(results, first, second, points), confidence)
            for first, second, label in pairs}


def plot_paired_intervals(results: dict[str, list[dict]], pairs: Sequence[tuple[str, str, str]],
                          keys: Sequence[str] = ("miou_cloudy", "miou"), gate: float | None = None, ax=None):
    """Paired differences as points with their 95 % t intervals, one row per pair, one marker per key.

    ``gate`` draws a dashed vertical line (the positive control's threshold). Returns the axes.
    """
    ax = _axes(ax, (8.0, 1.4 + 0.7 * len(pairs)))
    rows = np.arange(len(pairs))
    offsets = np.linspace(-0.15, 0.15, len(keys)) if len(keys) > 1 else [0.0]
    seeds = 0
    for offset, key, marker in zip(offsets, keys, "osD^"):
        intervals = paired_intervals(results, pairs, key)
        means = np.array([intervals[label].mean for *_, label in pairs])
        low = np.array([intervals[label].low for *_, label in pairs])
        high = np.array([intervals[label].high for *_, label in pairs])
        seeds = max(seeds, max(interval.n for interval in intervals.values()))
        ax.errorbar(means, rows + offset, xerr=[means - low, high - means], fmt=marker, capsize=3,
                    label=f"{PIXEL_SUBSETS.get(key, key)} pixels")
    ax.axvline(0.0, color="black", linewidth=1)
    if gate is not None:
        ax.axvline(gate, color="tab:red", linestyle="--", linewidth=1, label=f"positive-control gate (+{gate:g})")
    ax.set_yticks(rows, [label for *_, label in pairs])
    ax.invert_yaxis()
    ax.set_xlabel("mIoU difference (points)")
    ax.set_title(f"paired by seed: mean and 95 % t interval over {seeds} seeds", fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def stage_values(results: dict[str, list[dict]], run: str, key: str = "noise") -> np.ndarray:
    """``(seeds, stages)`` array of a per-stage contamination value (``context``, ``tokens``,
    ``noise``) of ``run``'s entries (``entry["contamination"][stage][key]``)."""
    seeds = _run(results, run)
    missing = [entry["seed"] for entry in seeds if not entry.get("contamination")]
    if missing:
        raise ValueError(f"run {run!r} has no contamination measure for seeds {missing} (DCHF arms only)")
    return np.array([[stage[key] for stage in entry["contamination"]] for entry in seeds], dtype=float)


def plot_stage_values(results: dict[str, list[dict]], runs: Sequence[str], key: str = "noise",
                      ylabel: str = "relative change of G in clear cells", ax=None):
    """Per-stage mean over seeds with 95 % t intervals, one line per run (log scale). Returns the axes."""
    from edc_lab.stats import mean_interval

    ax = _axes(ax, (6.4, 4.0))
    for offset, run in zip(np.linspace(-0.12, 0.12, len(runs)), runs):
        values = stage_values(results, run, key)
        intervals = [mean_interval(values[:, stage]) for stage in range(values.shape[1])]
        means = np.array([i.mean for i in intervals])
        errors = np.array([[i.mean - i.low, i.high - i.mean] for i in intervals]).T
        ax.errorbar(np.arange(1, values.shape[1] + 1) + offset, means, yerr=errors, marker="o", capsize=3,
                    label=f"{run} ({len(values)} seeds)")
    ax.set_yscale("log")
    ax.set_xticks(range(1, 5))
    ax.set_xlabel("encoder stage")
    ax.set_ylabel(ylabel)
    ax.set_title("mean and 95 % t interval over seeds (each seed: mean over scenes)", fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return ax
