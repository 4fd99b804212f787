"""Bootstrap intervals: nominal coverage on a known distribution, and in every report row."""

from __future__ import annotations

import numpy as np

from phyray.eval.report import report_metrics, summarize
from phyray.eval.stats import bootstrap_ci


def test_bootstrap_ci_covers_the_mean_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    trials, covered = 400, 0
    for trial in range(trials):
        sample = rng.normal(loc=1.0, scale=0.5, size=60)
        low, high = bootstrap_ci(sample, resamples=1000, seed=trial)
        assert low < sample.mean() < high
        covered += low <= 1.0 <= high
    # 95% nominal; the percentile bootstrap runs slightly narrow at n = 60 (binomial sd ~1.1%).
    assert 0.91 <= covered / trials <= 0.98


def test_bootstrap_ci_is_seeded_and_ignores_nan():
    values = np.random.default_rng(2).exponential(size=40)
    with_nan = np.insert(values, 5, np.nan)
    assert bootstrap_ci(with_nan, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)
    assert bootstrap_ci([np.nan]) is None
    assert bootstrap_ci([0.5]) == (0.5, 0.5)


def test_every_report_row_carries_its_interval():
    rng = np.random.default_rng(1)
    records = [
        {"scenario": "uniform_motion", "split": split, "resolution": 32, "ood_level": level,
         "vel_err_per_frame": float(rng.exponential(0.3)), "vel_err_mean_velocity": float(rng.exponential(0.2))}
        for split, level in [("eval_id", None)] * 30 + [("eval_ood", "radius")] * 20 + [("eval_ood", "velocity")] * 20
    ]
    rows = summarize(records, resamples=500, seed=7)
    assert rows == summarize(records, resamples=500, seed=7)
    for row in rows:
        assert row["ci_low"] < row["value"] < row["ci_high"]
    metrics = report_metrics(rows)
    assert metrics["eval/id/vel_err_per_frame_ci_low"] < metrics["eval/id/vel_err_per_frame"] < metrics["eval/id/vel_err_per_frame_ci_high"]
    assert "eval/ood/vel_err_mean_velocity_ci_high" in metrics and "eval/ood_radius/vel_err_per_frame_ci_low" in metrics
