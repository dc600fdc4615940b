"""The evidence's statistics (edc_lab.stats) against scipy's own tests and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from edc_lab.stats import (
    detectable_difference,
    equivalence_test,
    mean_interval,
    paired_interval,
    paired_power,
    seeds_for_power,
)


def test_paired_interval_is_the_t_interval_of_the_differences():
    first, second = [3.0, 4.5, 2.0, 5.0, 4.0], [2.0, 3.0, 2.5, 3.5, 2.0]
    difference = np.subtract(first, second)
    result = paired_interval(first, second)
    half = stats.t.ppf(0.975, 4) * difference.std(ddof=1) / math.sqrt(5)
    assert result.n == 5 and result.mean == pytest.approx(difference.mean(), abs=1e-12)
    assert (result.low, result.high) == pytest.approx((difference.mean() - half, difference.mean() + half), abs=1e-12)
    assert result.p_value == pytest.approx(stats.ttest_1samp(difference, 0).pvalue, abs=1e-12)
    assert result.text(100) == f"{100 * difference.mean():+.1f} [{100 * result.low:+.1f}, {100 * result.high:+.1f}]"


def test_paired_interval_drops_nan_pairs_and_handles_tiny_samples():
    result = paired_interval([1.0, float("nan"), 3.0], [0.0, 1.0, 1.0])
    assert result.n == 2 and result.mean == 1.5
    single = paired_interval([2.0], [1.0])
    assert single.n == 1 and math.isnan(single.low) and single.text() == "+1.0"
    assert paired_interval([], []).text() == "–"
    constant = paired_interval([2.0, 3.0], [1.0, 2.0])
    assert (constant.low, constant.high) == (1.0, 1.0)
    assert mean_interval([1.0, 2.0, 3.0]).mean == 2.0
    with pytest.raises(ValueError, match="one length"):
        paired_interval([1.0, 2.0], [1.0])


def test_equivalence_test_is_two_one_sided_tests_and_its_ninety_percent_interval():
    rng = np.random.default_rng(0)
    second = rng.normal(70, 2, 12)
    near = second + rng.normal(0.1, 0.3, 12)
    far = second + rng.normal(-2.0, 0.3, 12)
    close = equivalence_test(near, second, margin=1.0)
    assert close["equivalent"] and close["non_inferior"]
    assert close["interval"].low > -1.0 and close["interval"].high < 1.0 and close["interval"].confidence == 0.9
    worse = equivalence_test(far, second, margin=1.0)
    assert not worse["non_inferior"] and not worse["equivalent"]
    better = equivalence_test(second + 3.0 + rng.normal(0, 0.3, 12), second, margin=1.0)
    assert better["non_inferior"] and not better["equivalent"]
    with pytest.raises(ValueError, match="positive margin"):
        equivalence_test(near, second, margin=0)


def test_power_matches_a_simulation_and_the_seed_count_reaches_it():
    n, delta, sd = 8, 1.0, 1.5
    rng = np.random.default_rng(1)
    samples = rng.normal(delta, sd, size=(20000, n))
    simulated = np.mean(stats.ttest_1samp(samples, 0, axis=1).pvalue < 0.05)
    assert paired_power(n, delta, sd) == pytest.approx(simulated, abs=0.015)
    needed = seeds_for_power(1.0, 1.5)
    assert paired_power(needed, 1.0, 1.5) >= 0.8 > paired_power(needed - 1, 1.0, 1.5)
    assert needed == 20  # the figure the DCHF protocol quotes
    assert paired_power(10, detectable_difference(10, 1.5), 1.5) == pytest.approx(0.8, abs=1e-6)
