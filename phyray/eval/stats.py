"""Uncertainty of a mean over evaluation videos: the percentile bootstrap.

    low, high = bootstrap_ci(per_video_errors, resamples=1000, seed=0)

The interval is of the mean over videos (what every report cell is), resampling videos with
replacement. Seeded, so the same values give the same interval.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

CI_LEVEL = 0.95
# Resampled indices held at once (resamples x videos): bounds memory for large evaluation sets.
_INDEX_BUDGET = 2**22


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, resamples: int = 1000, seed: int = 0, level: float = CI_LEVEL
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the mean of `values` (NaNs dropped); None if empty."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, _INDEX_BUDGET // values.size)
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        means[start : start + count] = values[rng.integers(0, values.size, size=(count, values.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def mean_with_interval(values: Sequence[float] | np.ndarray, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """A report cell of per-video values: the mean over those that are defined (not NaN) with
    its bootstrap interval and median, how many counted and how many were excluded as NaN."""
    values = np.asarray(values, dtype=np.float64)
    counted = values[~np.isnan(values)]
    low, high = bootstrap_ci(counted, resamples, seed) or (None, None)
    return {
        "value": float(counted.mean()) if counted.size else None, "ci_low": low, "ci_high": high,
        "median": float(np.median(counted)) if counted.size else None,
        "n": int(counted.size), "n_excluded": int(values.size - counted.size),
    }
