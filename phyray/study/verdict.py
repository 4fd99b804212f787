"""The paper's Fig. 3 claims as checks that respect uncertainty (docs/paper.md §10).

Plain functions of estimates; no MLflow, no torch. Every check answers "yes" (the claim holds
beyond the noise), "no" (the opposite holds beyond the noise) or "undecided" (the intervals do
not separate).

Estimates
    An `Estimate` is a value with a 95% interval [low, high]. The paper's numbers have no
    interval: low == high == value, so every check on them reduces to a plain comparison, and
    an exact tie is "undecided".

Seeds (`combine_seeds`)
    One seed: its value and its bootstrap CI (over evaluation videos), unchanged.
    k >= 2 seeds with values v_i and bootstrap CIs [low_i, high_i]: value = mean(v_i),
    sd = sd(v_i) with ddof = 1, h_i = (high_i - low_i) / 2, and the interval
        mean ± sqrt((t_{0.975, k-1} · sd / √k)² + mean_i(h_i²)), cut at 0 below (every metric
    combined is non-negative).
    The first term is the t-interval of the mean over model seeds: that variation averages out
    over seeds. The second is the evaluation set's sampling noise, which does not: every seed
    is scored on the same evaluation videos, so that noise is common to all seeds and the
    seeds' mean carries all of it (one seed's half-width, as a root mean square over seeds).
    Where both sources are of similar size the sum runs a little wide (about 96-98% coverage
    in tests/test_verdict.py's simulation, against about 68% for the t-interval alone).

Derived estimates (interval arithmetic, conservative; every error is positive)
    ratio(num, den) = num / den on [num.low / den.high, num.high / den.low] (unbounded above
        when den.low is 0).
    relative_gain(before, after) = 1 - after / before on
        [1 - after.high / before.low, 1 - after.low / before.high].

Checks
    falls(before, after): "yes" if after.high < before.low, "no" if after.low > before.high,
        else "undecided".
    ID error falls with data: falls(ID at the smallest data size, ID at the largest), per
        (scenario, model) with >= 2 sizes.
    ID error falls with model size: falls(ID of the smallest model, ID of the largest), per
        (scenario, data size) with >= 2 models; size = depth · hidden_size² of its DiT preset.
    OOD about an order of magnitude above ID, per cell, on r = ratio(OOD, ID): "yes" if
        r.low >= ORDER_OF_MAGNITUDE, "no" if r.high < ORDER_OF_MAGNITUDE, else "undecided".
        ORDER_OF_MAGNITUDE = √10: "about 10x" means nearer 10 than 1 on a log scale. A
        (scenario, model) row's answer: "yes" if every cell's is yes, "no" if any is no, else
        "undecided".
    Scaling does not help OOD, per (scenario, model): with G_id = relative_gain(ID smallest data,
        ID largest data) and G_ood likewise, "yes" if G_ood.high < FAR_BELOW · G_id.low, "no" if
        G_ood.low > FAR_BELOW · G_id.high, else "undecided" (FAR_BELOW = 0.5). "OOD does not
        improve" and "OOD improves far less than ID" are one rule: OOD's relative gain is
        decidedly below half of ID's; an OOD error that grows (negative gain) passes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from phyray.presets import DIT_PRESETS

ORDER_OF_MAGNITUDE = math.sqrt(10.0)
FAR_BELOW = 0.5
SPLITS = ("id", "ood")
PAPER_FILE = "paper_fig3.yaml"

CellKey = tuple[str, str, int]  # (scenario, model, num_videos)


@dataclass(frozen=True)
class Estimate:
    """A value with its 95% interval; `seeds` and `sd` (across seeds) when combined."""

    value: float
    low: float
    high: float
    seeds: int = 1
    sd: float | None = None

    @classmethod
    def point(cls, value: float) -> Estimate:
        return cls(value, value, value)

    def __str__(self) -> str:
        if self.low == self.high:
            return f"{self.value:.4g}"
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}]"


def combine_seeds(
    values: Sequence[float], lows: Sequence[float], highs: Sequence[float], nonnegative: bool = True
) -> Estimate:
    """One estimate from k seeds' values and bootstrap CIs (rule in the module docstring).

    nonnegative: cut the interval at 0 (errors, floors, PSNR, rates); False for signed numbers
    (a probe's margin, a drift)."""
    k = len(values)
    if k == 0 or len(lows) != k or len(highs) != k:
        raise ValueError(f"combine_seeds: need >= 1 value and a low and high per value, got "
                         f"{k}, {len(lows)}, {len(highs)}")
    if k == 1:
        return Estimate(values[0], lows[0], highs[0])
    # scipy comes with mlflow, a dependency; imported here so the checks import light.
    from scipy.stats import t

    mean = math.fsum(values) / k
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (k - 1))
    eval_var = math.fsum(((high - low) / 2) ** 2 for low, high in zip(lows, highs)) / k
    half = math.sqrt((t.ppf(0.975, k - 1) * sd / math.sqrt(k)) ** 2 + eval_var)
    # Errors, floors, PSNR and rates are non-negative: an interval reaching below 0 (few,
    # spread seeds) is cut there.
    return Estimate(mean, max(mean - half, 0.0) if nonnegative else mean - half, mean + half, seeds=k, sd=sd)



def combine_trials(trials: Sequence[dict], name: str, signed: bool = False) -> Estimate | None:
    """A metric of one cell's trials (records with `<name>`, `<name>_ci_low`, `<name>_ci_high`)
    combined over their seeds; None if any seed lacks it. signed: as combine_seeds' nonnegative=False."""
    have = [t for t in trials if t.get(name) is not None and not math.isnan(t[name])]
    if not have or len(have) < len(trials):
        return None
    return combine_seeds([t[name] for t in have], [t.get(f"{name}_ci_low", t[name]) for t in have],
                         [t.get(f"{name}_ci_high", t[name]) for t in have], nonnegative=not signed)

def falls(before: Estimate, after: Estimate) -> str:
    if after.high < before.low:
        return "yes"
    if after.low > before.high:
        return "no"
    return "undecided"


def ratio(num: Estimate, den: Estimate) -> Estimate:
    if den.value <= 0 or num.low < 0:
        raise ValueError(f"ratio needs a positive denominator and a non-negative numerator, got {num} / {den}")
    # A denominator whose interval reaches 0 leaves the ratio unbounded above.
    return Estimate(num.value / den.value, num.low / den.high, num.high / den.low if den.low > 0 else math.inf)


def relative_gain(before: Estimate, after: Estimate) -> Estimate:
    kept = ratio(after, before)
    return Estimate(1 - kept.value, 1 - kept.high, 1 - kept.low)


def order_of_magnitude_above(r: Estimate) -> str:
    if r.low >= ORDER_OF_MAGNITUDE:
        return "yes"
    if r.high < ORDER_OF_MAGNITUDE:
        return "no"
    return "undecided"


def ood_not_helped(id_gain: Estimate, ood_gain: Estimate) -> str:
    if ood_gain.high < FAR_BELOW * id_gain.low:
        return "yes"
    if ood_gain.low > FAR_BELOW * id_gain.high:
        return "no"
    return "undecided"


def model_size(model: str) -> int:
    """The order of DiT sizes: depth · hidden_size², about 1/12 of its parameter count."""
    spec = DIT_PRESETS[model]
    return spec["depth"] * spec["hidden_size"] ** 2


@dataclass(frozen=True)
class DataRow:
    """The data-scaling checks of one (scenario, model); per-size tuples follow `sizes`."""

    scenario: str
    model: str
    sizes: tuple[int, ...]
    id_falls_with_data: str
    id_gain: Estimate
    ood_id_ratios: tuple[Estimate, ...]
    ood_id_ratio_checks: tuple[str, ...]
    ood_far_above_id: str
    min_ood_id_ratio: Estimate
    ood_gain: Estimate
    ood_not_helped: str


@dataclass(frozen=True)
class ModelRow:
    """The model-size check of one (scenario, data size): smallest vs largest model."""

    scenario: str
    num_videos: int
    smallest: str
    largest: str
    id_falls_with_model_size: str


def _aggregate(answers: Sequence[str]) -> str:
    if all(a == "yes" for a in answers):
        return "yes"
    return "no" if "no" in answers else "undecided"


def check_grid(cells: Mapping[CellKey, Mapping[str, Estimate]]) -> dict[str, list]:
    """The paper's checks on a grid of cells {(scenario, model, num_videos): {"id", "ood"}}.

    Returns {"data": [DataRow per (scenario, model) with >= 2 data sizes],
    "model_size": [ModelRow per (scenario, num_videos) with >= 2 models]}, in scenario, model
    size and data size order, scenarios as they first appear in `cells`.
    """
    rank = {scenario: i for i, scenario in enumerate(dict.fromkeys(s for s, _, _ in cells))}
    by_model: dict[tuple[str, str], list[int]] = defaultdict(list)
    by_size: dict[tuple[str, int], list[str]] = defaultdict(list)
    for scenario, model, num_videos in cells:
        by_model[(scenario, model)].append(num_videos)
        by_size[(scenario, num_videos)].append(model)

    data_rows = []
    for scenario, model in sorted(by_model, key=lambda k: (rank[k[0]], model_size(k[1]), k[1])):
        sizes = sorted(by_model[(scenario, model)])
        if len(sizes) < 2:
            continue
        ids = [cells[(scenario, model, n)]["id"] for n in sizes]
        oods = [cells[(scenario, model, n)]["ood"] for n in sizes]
        ratios = tuple(ratio(o, i) for o, i in zip(oods, ids))
        checks = tuple(order_of_magnitude_above(r) for r in ratios)
        id_gain, ood_gain = relative_gain(ids[0], ids[-1]), relative_gain(oods[0], oods[-1])
        data_rows.append(DataRow(
            scenario=scenario,
            model=model,
            sizes=tuple(sizes),
            id_falls_with_data=falls(ids[0], ids[-1]),
            id_gain=id_gain,
            ood_id_ratios=ratios,
            ood_id_ratio_checks=checks,
            ood_far_above_id=_aggregate(checks),
            min_ood_id_ratio=min(ratios, key=lambda r: r.value),
            ood_gain=ood_gain,
            ood_not_helped=ood_not_helped(id_gain, ood_gain),
        ))

    model_rows = []
    for scenario, num_videos in sorted(by_size, key=lambda k: (rank[k[0]], k[1])):
        models = by_size[(scenario, num_videos)]
        if len(models) < 2:
            continue
        smallest, largest = min(models, key=model_size), max(models, key=model_size)
        model_rows.append(ModelRow(
            scenario=scenario,
            num_videos=num_videos,
            smallest=smallest,
            largest=largest,
            id_falls_with_model_size=falls(cells[(scenario, smallest, num_videos)]["id"],
                                           cells[(scenario, largest, num_videos)]["id"]),
        ))
    return {"data": data_rows, "model_size": model_rows}


@cache
def paper_fig3() -> dict:
    """The parsed paper_fig3.yaml (the paper's Fig. 3 values, GT floors, quoted numbers)."""
    return yaml.safe_load(resources.files("phyray.study").joinpath(PAPER_FILE).read_text())


def paper_cells() -> dict[CellKey, dict[str, Estimate]]:
    """The paper's Fig. 3 as cells of point estimates, keyed as `check_grid` takes them."""
    fig = paper_fig3()
    return {
        (scenario, model, fig["sizes"][size]): {
            split: Estimate.point(splits[split][size]) for split in SPLITS
        }
        for scenario, models in fig["errors"].items()
        for model, splits in models.items()
        for size in splits["id"]
    }


def paper_value(scenario: str, model: str, num_videos: int, split: str) -> float | None:
    """The paper's error for this cell and split ("id" / "ood"), None where it has none."""
    cell = paper_cells().get((scenario, model, num_videos))
    return None if cell is None or split not in cell else cell[split].value


def paper_floor(scenario: str) -> float | None:
    """The paper's ground-truth floor (Fig. 3's GT line) for a scenario, None if not in it."""
    return paper_fig3()["gt_floor"].get(scenario)
