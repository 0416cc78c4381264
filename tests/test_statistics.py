"""The statistics behind claims with their uncertainty, on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval_policies.common.statistics import bootstrap_ci, paired_bootstrap_ci, sign_test


def test_the_paired_bootstrap_interval():
    assert paired_bootstrap_ci(np.full(20, 0.25)) == [0.25, 0.25]  # no spread: the interval is the point
    low, high = paired_bootstrap_ci([1.0, -1.0] * 50, seed=1)
    assert low < 0 < high and high - low == pytest.approx(2 * 1.96 * 0.1, abs=0.05)  # ±1.96 × sd/√n, sd 1, n 100
    assert paired_bootstrap_ci([0.1] * 30 + [0.3] * 30)[0] > 0.15  # a mean of 0.2, clearly above 0
    with pytest.raises(ValueError, match="non-empty"):
        paired_bootstrap_ci([])


def test_the_sign_test():
    # 26 better, 18 worse (a tie left out): P(X <= 18 or X >= 26) for X ~ Binomial(44, 1/2) = 0.291
    result = sign_test([1.0] * 26 + [-1.0] * 18 + [0.0])
    assert result["better"] == 26 and result["worse"] == 18 and result["p_value"] == pytest.approx(0.2912, abs=1e-4)
    assert sign_test([1.0] * 10)["p_value"] == pytest.approx(2 / 2**10)  # all better: 2 × (1/2)^10
    assert sign_test([0.0, 0.0])["p_value"] == 1.0


def test_the_bootstrap_of_any_statistic():
    values = np.array([1.0, -1.0] * 50)
    # of the mean, it is the paired interval (the same resamples for the same seed)
    assert bootstrap_ci(lambda idx: values[idx].mean(), 100, resamples=2000, seed=3) == pytest.approx(
        paired_bootstrap_ci(values, resamples=2000, seed=3)
    )
    assert bootstrap_ci(lambda idx: 0.5, 10, resamples=50) == [0.5, 0.5]
    with pytest.raises(ValueError, match="at least one item"):
        bootstrap_ci(lambda idx: 0.0, 0)
