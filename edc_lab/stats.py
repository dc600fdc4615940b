"""The statistics of the evidence: paired differences with t intervals, equivalence tests, power.

Every experiment in ``benchmarks/`` compares models trained with the same seeds on the same data,
so the unit of evidence is the *paired* difference per seed. These helpers wrap ``scipy.stats``
(a maintained implementation, not hand formulas) in the three questions the protocols ask:

* ``paired_interval``: the mean paired difference and its t-based confidence interval
  (``scipy.stats.ttest_rel(...).confidence_interval``);
* ``equivalence_test``: two one-sided t-tests (TOST) against a margin written in the protocol:
  the difference is *equivalent* to 0 when both ``diff > -margin`` and ``diff < +margin`` are
  significant, *non-inferior* when the first one is;
* ``paired_power`` / ``seeds_for_power``: the power of a two-sided paired t-test to detect a
  difference ``delta`` when the per-seed differences have standard deviation ``sd``
  (noncentral t, ``scipy.stats.nct``), and the smallest number of seeds that reaches a target
  power; ``detectable_difference`` inverts it for a given number of seeds.

Whose idea: standard statistics; the choice of tests is the protocols' (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import optimize, stats

__all__ = ["PairedInterval", "paired_interval", "equivalence_test", "paired_power", "seeds_for_power",
           "detectable_difference", "mean_interval"]


@dataclass(frozen=True)
class PairedInterval:
    """``mean`` of ``first - second`` over ``n`` pairs, its ``low``/``high`` confidence bounds and
    the two-sided p-value of "mean = 0" (NaN bounds and p with fewer than 2 pairs)."""

    mean: float
    low: float
    high: float
    n: int
    p_value: float
    confidence: float

    def text(self, scale: float = 1.0, digits: int = 1, signed: bool = True) -> str:
        """``+1.2 [+0.3, +2.1]`` (``scale`` multiplies, e.g. 100 for percentage points; ``signed=False``
        for a level rather than a difference: ``71.2 [70.3, 72.1]``)."""
        if self.n == 0:
            return "–"
        form = f"{'+' if signed else ''}.{digits}f"
        if self.n < 2:
            return f"{scale * self.mean:{form}}"
        return f"{scale * self.mean:{form}} [{scale * self.low:{form}}, {scale * self.high:{form}}]"


def _pairs(first: Sequence[float], second: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"paired samples must be two 1-D sequences of one length, found {first.shape} and "
                         f"{second.shape}")
    keep = np.isfinite(first) & np.isfinite(second)
    return first[keep], second[keep]


def paired_interval(first: Sequence[float], second: Sequence[float], confidence: float = 0.95) -> PairedInterval:
    """Mean of ``first - second`` (pairs with a NaN dropped) and its t confidence interval."""
    first, second = _pairs(first, second)
    n = len(first)
    if n == 0:
        return PairedInterval(math.nan, math.nan, math.nan, 0, math.nan, confidence)
    mean = float(np.mean(first - second))
    if n < 2:
        return PairedInterval(mean, math.nan, math.nan, n, math.nan, confidence)
    if np.all(first - second == first[0] - second[0]):  # no spread: the interval is the point
        return PairedInterval(mean, mean, mean, n, 0.0 if mean != 0 else 1.0, confidence)
    result = stats.ttest_rel(first, second)
    interval = result.confidence_interval(confidence_level=confidence)
    return PairedInterval(mean, float(interval.low), float(interval.high), n, float(result.pvalue), confidence)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> PairedInterval:
    """Mean of ``values`` and its t confidence interval (a paired interval against zeros)."""
    values = np.asarray(values, dtype=np.float64)
    return paired_interval(values, np.zeros_like(values), confidence)


def equivalence_test(first: Sequence[float], second: Sequence[float], margin: float,
                     alpha: float = 0.05) -> dict:
    """Two one-sided paired t-tests (TOST) of ``first - second`` against ``(-margin, +margin)``.

    Returns ``p_lower`` (H0: diff <= -margin), ``p_upper`` (H0: diff >= +margin),
    ``non_inferior`` (p_lower < alpha), ``equivalent`` (both < alpha) and the ``1 - 2 alpha``
    interval (``interval``: the interval TOST's decision is read from).
    """
    if not margin > 0:
        raise ValueError(f"equivalence_test: expected a positive margin, found {margin!r}")
    first, second = _pairs(first, second)
    difference = first - second
    if len(difference) < 2:
        raise ValueError(f"equivalence_test: expected at least 2 pairs, found {len(difference)}")
    p_lower = float(stats.ttest_1samp(difference, -margin, alternative="greater").pvalue)
    p_upper = float(stats.ttest_1samp(difference, margin, alternative="less").pvalue)
    return {"margin": margin, "alpha": alpha, "p_lower": p_lower, "p_upper": p_upper,
            "non_inferior": p_lower < alpha, "equivalent": p_lower < alpha and p_upper < alpha,
            "interval": paired_interval(first, second, confidence=1 - 2 * alpha)}


def paired_power(n: int, delta: float, sd: float, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t-test with ``n`` pairs to detect a mean difference ``delta``
    when the per-pair differences have standard deviation ``sd`` (noncentral t)."""
    if n < 2:
        return math.nan
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = delta / sd * math.sqrt(n)
    power = float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))
    return 1.0 if math.isnan(power) and abs(shift) > critical else power  # far in the tail: certain


def seeds_for_power(delta: float, sd: float, power: float = 0.8, alpha: float = 0.05, most: int = 1000) -> int:
    """The smallest number of seeds whose paired t-test reaches ``power`` for ``delta``."""
    for n in range(2, most + 1):
        if paired_power(n, delta, sd, alpha) >= power:
            return n
    raise ValueError(f"seeds_for_power: more than {most} seeds for delta={delta}, sd={sd}")


def detectable_difference(n: int, sd: float, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest difference a two-sided paired t-test with ``n`` seeds detects with ``power``."""
    return float(optimize.brentq(lambda delta: paired_power(n, delta, sd, alpha) - power, 1e-9, 20 * sd))
