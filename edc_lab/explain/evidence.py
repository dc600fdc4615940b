"""Reading the committed attribution evidence: intervals over seeds and the protocol's decisions.

The idea in plain words: ``benchmarks/attribution_evidence.py`` trains notebook 07's models
over several seeds and stores, per model, seed and baseline, the SAR share of the decision
on cloudy and on clear pixels, the same for a copy of the model with randomised weights, and
the rank correlations of the Integrated-Gradients maps (trained against randomised). One seed
is one run of the notebook; the unit of evidence is the seed. This module turns the stored
JSON into the numbers the protocol (``benchmarks/RESULTS.md``, *Attributions (issue 20)*)
decides on, so the script's report and the notebook read them the same way:

* ``level``: a model's mean over seeds of one stored number, with its 95 % t interval;
* ``rise``: cloudy minus clear share per seed, with its interval (trained, or the randomised copy);
* ``paired``: a difference between two models (or trained minus randomised) per seed, with its
  interval (``edc_lab.stats.paired_interval``, t-based, pairs matched by seed);
* ``verdict``: the protocol's three-way reading of an interval against a threshold.

Whose idea: t intervals over seeds are standard statistics (scipy, through ``edc_lab.stats``);
the quantities and decision rules are the protocol's (edc_lab's).
"""

from __future__ import annotations

import json
from pathlib import Path

from edc_lab.stats import PairedInterval, mean_interval, paired_interval

__all__ = ["SECTION", "load_attribution_evidence", "level", "rise", "paired", "verdict"]

#: the JSON section of the issue-20 run (the notebook's setting over seeds)
SECTION = "notebook_setting"


def load_attribution_evidence(path: str | Path, section: str = SECTION) -> dict:
    """One section of ``benchmarks/results/attribution_evidence.json``; ``ValueError`` naming the file and
    the sections found when it is missing."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"load_attribution_evidence: {path} does not exist; run benchmarks/attribution_evidence.py "
                         "or read the committed file from the repository root") from None
    if section not in data:
        raise ValueError(f"load_attribution_evidence: {path} has no section {section!r}, found {sorted(data)}")
    return data[section]


def _runs(evidence: dict, model: str) -> list[dict]:
    runs = evidence["runs"]
    if model not in runs:
        raise ValueError(f"attribution evidence: no model {model!r}, found {sorted(runs)}")
    return sorted(runs[model], key=lambda row: row["seed"])


def _per_seed(evidence: dict, model: str, baseline: str, key: str) -> dict[int, float]:
    if key == "rise":
        return {row["seed"]: row[baseline]["cloudy"] - row[baseline]["clear"] for row in _runs(evidence, model)}
    if key == "random_rise":
        return {row["seed"]: row[baseline]["random_cloudy"] - row[baseline]["random_clear"]
                for row in _runs(evidence, model)}
    return {row["seed"]: row[baseline][key] for row in _runs(evidence, model)}


def level(evidence: dict, model: str, baseline: str, key: str) -> PairedInterval:
    """Mean over seeds (95 % t interval) of ``key`` (``"cloudy"``, ``"random_clear"``, ``"rho_sar"``, ...,
    or ``"rise"`` / ``"random_rise"``) for ``model`` with ``baseline``."""
    return mean_interval(list(_per_seed(evidence, model, baseline, key).values()))


def rise(evidence: dict, model: str, baseline: str, randomised: bool = False) -> PairedInterval:
    """Cloudy minus clear SAR share, mean over seeds with its 95 % t interval (a fraction)."""
    return level(evidence, model, baseline, "random_rise" if randomised else "rise")


def paired(evidence: dict, first: tuple[str, str], second: tuple[str, str], baseline: str) -> PairedInterval:
    """``first - second`` matched by seed, each a ``(model, key)`` pair: e.g.
    ``paired(e, ("early fusion", "rise"), ("EDC student", "rise"), "blur")`` or
    ``paired(e, ("EDC student", "rise"), ("EDC student", "random_rise"), "mean")``."""
    one, two = (_per_seed(evidence, model, baseline, key) for model, key in (first, second))
    seeds = sorted(set(one) & set(two))
    return paired_interval([one[s] for s in seeds], [two[s] for s in seeds])


def verdict(interval: PairedInterval, threshold: float = 0.0) -> str:
    """``"above"`` (the whole interval above ``threshold``), ``"below"`` or ``"contains"``."""
    if interval.low > threshold:
        return "above"
    if interval.high < threshold:
        return "below"
    return "contains"
