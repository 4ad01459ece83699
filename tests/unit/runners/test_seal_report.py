"""The report's intervals: percentile bootstrap over tasks, paired differences, reproducible by seed."""

from __future__ import annotations

from runners.seal_report import bootstrap_ci, paired_ci


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible() -> None:
    values = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.5]
    lo, hi = bootstrap_ci(values, seed=3)  # type: ignore[misc]
    assert 0.0 <= lo < sum(values) / len(values) < hi <= 1.0
    assert bootstrap_ci(values, seed=3) == (lo, hi)
    assert bootstrap_ci([0.25] * 5) == (0.25, 0.25)
    assert bootstrap_ci([1.0]) is None  # one task: no interval, not a fake zero-width one


def test_paired_interval_is_over_per_task_differences() -> None:
    a, b = [1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]
    lo, hi = paired_ci(a, b)  # type: ignore[misc]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    assert paired_ci([0.5, 0.2], [0.5, 0.2]) == (0.0, 0.0)
