"""The paper's Fig. 3 claims as checks with uncertainty: their answers on the paper's own
numbers (worked out by hand below), the interval logic, and the seed combination's coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from phyray.study.verdict import (
    ORDER_OF_MAGNITUDE,
    Estimate,
    check_grid,
    combine_seeds,
    combine_trials,
    falls,
    ood_not_helped,
    order_of_magnitude_above,
    paper_cells,
    paper_fig3,
    paper_floor,
    paper_value,
    ratio,
    relative_gain,
)

SIZES = (30_000, 300_000, 3_000_000)

# OOD not helped, by hand: G = 1 - error(3M) / error(30K); "yes" iff G_ood < 0.5 * G_id.
#   uniform   S: G_id 1-.0149/.0221 = .326, G_ood 1-.288/.435 =  .338 > .163 -> no
#             B:      1-.0138/.0166 = .169,       1-.358/.433 =  .173 > .084 -> no
#             L:      1-.0124/.0150 = .173,       1-.427/.378 = -.130 < .087 -> yes
#   collision S:      1-.0227/.0267 = .150,       1-.153/.187 =  .182 > .075 -> no
#             B:      1-.0181/.0302 = .401,       1-.211/.241 =  .124 < .200 -> yes
#             L:      1-.0153/.0240 = .363,       1-.161/.270 =  .404 > .181 -> no
#   parabola  S:      1-.0472/.0509 = .073,       1-.307/.307 =  0    < .036 -> yes
#             B:      1-.0358/.0430 = .167,       1-.288/.317 =  .091 > .084 -> no (narrowly)
#             L:      1-.0331/.0379 = .127,       1-.338/.314 = -.076 < .063 -> yes
OOD_NOT_HELPED = {
    ("uniform_motion", "DiT-S"): "no",
    ("uniform_motion", "DiT-B"): "no",
    ("uniform_motion", "DiT-L"): "yes",
    ("collision", "DiT-S"): "no",
    ("collision", "DiT-B"): "yes",
    ("collision", "DiT-L"): "no",
    ("parabola", "DiT-S"): "yes",
    ("parabola", "DiT-B"): "no",
    ("parabola", "DiT-L"): "yes",
}
# Smallest OOD / ID ratio per row (all 27 are above sqrt(10) = 3.16; the lowest is parabola
# DiT-S 300K, .285 / .0493 = 5.78).
MIN_RATIO = {
    ("uniform_motion", "DiT-S"): 0.293 / 0.0184,
    ("uniform_motion", "DiT-B"): 0.328 / 0.0148,
    ("uniform_motion", "DiT-L"): 0.378 / 0.0150,
    ("collision", "DiT-S"): 0.153 / 0.0227,
    ("collision", "DiT-B"): 0.241 / 0.0302,
    ("collision", "DiT-L"): 0.161 / 0.0153,
    ("parabola", "DiT-S"): 0.285 / 0.0493,
    ("parabola", "DiT-B"): 0.317 / 0.0430,
    ("parabola", "DiT-L"): 0.314 / 0.0379,
}


def test_the_paper_file_holds_fig3_and_its_quoted_numbers():
    cells = paper_cells()
    assert len(cells) == 27
    assert {n for _, _, n in cells} == set(SIZES)
    assert paper_value("uniform_motion", "DiT-S", 30_000, "id") == 0.0221
    assert paper_value("parabola", "DiT-L", 3_000_000, "ood") == 0.338
    assert paper_value("parabola", "DiT-XL", 3_000_000, "ood") is None
    assert paper_value("collision", "DiT-S", 1_000, "id") is None
    assert paper_value("collision", "DiT-S", 30_000, "gt") is None
    floors = [paper_floor(s) for s in ("uniform_motion", "collision", "parabola")]
    assert floors == [0.0099, 0.0117, 0.0210]
    assert paper_floor("combinatorial") is None
    # The text's numbers agree with the figure's to the text's precision.
    fig = paper_fig3()
    for q in fig["quoted"]:
        figure = paper_value(q["scenario"], q["model"], fig["sizes"][q["size"]], q["split"])
        assert figure == pytest.approx(q["value"], abs=0.0005), q


def test_checks_on_the_papers_numbers():
    grid = check_grid(paper_cells())
    rows = {(r.scenario, r.model): r for r in grid["data"]}
    assert list(rows) == list(OOD_NOT_HELPED)  # scenarios in the file's order, models by size
    for key, row in rows.items():
        assert row.sizes == SIZES
        # ID falls from 30K to 3M in every row.
        assert row.id_falls_with_data == "yes", key
        # OOD is about 10x ID in all 27 cells.
        assert row.ood_id_ratio_checks == ("yes", "yes", "yes"), key
        assert row.ood_far_above_id == "yes", key
        assert row.min_ood_id_ratio.value == pytest.approx(MIN_RATIO[key]), key
        assert row.ood_not_helped == OOD_NOT_HELPED[key], key
    assert rows[("uniform_motion", "DiT-S")].id_gain.value == pytest.approx(1 - 0.0149 / 0.0221)
    assert rows[("uniform_motion", "DiT-L")].ood_gain.value == pytest.approx(1 - 0.427 / 0.378)
    # DiT-S vs DiT-L at every scenario and size: ID falls in all 9 (collision 30K too, though
    # DiT-B there, .0302, is above DiT-S, .0267).
    by_size = {(r.scenario, r.num_videos): r for r in grid["model_size"]}
    scenarios = ("uniform_motion", "collision", "parabola")
    assert list(by_size) == [(s, n) for s in scenarios for n in SIZES]
    for key, row in by_size.items():
        assert (row.smallest, row.largest) == ("DiT-S", "DiT-L"), key
        assert row.id_falls_with_model_size == "yes", key


def test_grid_rows_need_two_sizes_or_two_models():
    point = {"id": Estimate.point(0.02), "ood": Estimate.point(0.2)}
    grid = check_grid({("parabola", "DiT-S", 30_000): point, ("parabola", "DiT-B", 300_000): point})
    assert grid == {"data": [], "model_size": []}


def test_separation_decides_and_overlap_does_not():
    before = Estimate(0.020, 0.018, 0.022)
    assert falls(before, Estimate(0.015, 0.013, 0.017)) == "yes"
    assert falls(before, Estimate(0.025, 0.023, 0.027)) == "no"
    assert falls(before, Estimate(0.017, 0.015, 0.0185)) == "undecided"  # lower, but overlaps
    assert falls(before, Estimate(0.021, 0.0215, 0.0225)) == "undecided"
    assert falls(Estimate.point(0.02), Estimate.point(0.02)) == "undecided"

    assert order_of_magnitude_above(Estimate(8.0, ORDER_OF_MAGNITUDE, 12.0)) == "yes"
    assert order_of_magnitude_above(Estimate(2.0, 1.5, 3.0)) == "no"
    assert order_of_magnitude_above(Estimate(4.0, 2.5, 6.0)) == "undecided"

    id_gain = Estimate(0.4, 0.3, 0.5)  # half of it: [0.15, 0.25]
    assert ood_not_helped(id_gain, Estimate(0.0, -0.1, 0.1)) == "yes"
    assert ood_not_helped(id_gain, Estimate(0.4, 0.3, 0.5)) == "no"
    assert ood_not_helped(id_gain, Estimate(0.2, 0.1, 0.3)) == "undecided"


def test_ratio_and_gain_use_interval_arithmetic():
    r = ratio(Estimate(0.30, 0.24, 0.36), Estimate(0.020, 0.016, 0.024))
    assert (r.value, r.low, r.high) == pytest.approx((15.0, 10.0, 22.5))
    g = relative_gain(Estimate(0.020, 0.016, 0.025), Estimate(0.010, 0.008, 0.012))
    assert (g.value, g.low, g.high) == pytest.approx((0.5, 0.25, 0.68))
    # A denominator whose interval reaches 0 leaves the ratio unbounded above.
    assert ratio(Estimate.point(0.3), Estimate(0.01, 0.0, 0.02)).high == math.inf
    with pytest.raises(ValueError):
        ratio(Estimate.point(0.3), Estimate.point(0.0))


def test_one_seed_keeps_its_bootstrap_interval():
    assert combine_seeds([0.02], [0.017], [0.024]) == Estimate(0.02, 0.017, 0.024)
    with pytest.raises(ValueError):
        combine_seeds([0.02, 0.03], [0.01], [0.04, 0.05])


def test_seeds_combine_seed_spread_and_the_shared_eval_noise():
    est = combine_seeds([0.010, 0.014], [0.008, 0.012], [0.012, 0.016])
    t1 = 12.706204736  # t_{0.975, 1}
    half = math.sqrt((t1 * math.sqrt(8e-6) / math.sqrt(2)) ** 2 + 0.002**2)
    # The interval of a non-negative error is cut at 0 (0.012 - half < 0 here).
    expected = (0.012, 0.0, 0.012 + half, 2)
    assert (est.value, est.low, est.high, est.seeds) == pytest.approx(expected)
    assert 0.012 - half < 0
    assert est.sd == pytest.approx(math.sqrt(8e-6))



def test_a_cells_trials_combine_by_name_and_a_missing_seed_gives_none():
    trials = [{"gap/pull": -0.010, "gap/pull_ci_low": -0.012, "gap/pull_ci_high": -0.008},
              {"gap/pull": -0.014, "gap/pull_ci_low": -0.016, "gap/pull_ci_high": -0.012}]
    signed = combine_trials(trials, "gap/pull", signed=True)
    expected = combine_seeds([-0.010, -0.014], [-0.012, -0.016], [-0.008, -0.012], nonnegative=False)
    assert (signed.value, signed.low, signed.high) == (expected.value, expected.low, expected.high)
    # A signed estimate keeps its interval below 0; an error's is cut there.
    assert signed.low < -0.02 and combine_trials(trials, "gap/pull").low == 0.0
    assert combine_trials([*trials, {"gap/pull": float("nan")}], "gap/pull") is None
    assert combine_trials(trials, "gap/span") is None

def test_combined_interval_covers_the_true_mean_at_the_nominal_rate():
    # Per-video error = mu + seed effect + video difficulty (the same videos score every seed)
    # + seed-by-video noise; a seed's CI is the normal-approximation stand-in for its bootstrap.
    rng = np.random.default_rng(0)
    reps, seeds, videos, mu = 2000, 5, 100, 0.05
    y = (mu + rng.normal(0, 0.01, (reps, seeds, 1)) + rng.normal(0, 0.1, (reps, 1, videos))
         + rng.normal(0, 0.02, (reps, seeds, videos)))
    values = y.mean(axis=2)
    half = 1.96 * y.std(axis=2, ddof=1) / math.sqrt(videos)
    covered = naive = 0
    for v, h in zip(values, half):
        est = combine_seeds(list(v), list(v - h), list(v + h))
        covered += est.low <= mu <= est.high
        # The t-interval over seeds alone misses the shared evaluation noise.
        t_half = 2.776445105 * v.std(ddof=1) / math.sqrt(seeds)  # t_{0.975, 4}
        naive += abs(v.mean() - mu) <= t_half
    assert 0.92 <= covered / reps <= 0.98
    assert naive / reps < 0.85
