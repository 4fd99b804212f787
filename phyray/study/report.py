"""The study's answer, rebuilt from MLflow alone: scaling curves, a results table and a verdict.

    report = publish_report(uri, "phyray-study-mini", "runs/reports/mini", parent_run_id=None)

reads the grid of one study run (its parent run's `phyray.grid` tag: trial key -> trial
identity; the newest study run of the experiment unless one is named), finds the finished run of
each of those trial identities (tag `phyray.trial_id`, `phyray.trial_done`), and writes, then
logs onto that parent run (a cell with no finished run is left out and listed as missing, never
filled from another config's run):

- `results.csv`: one row per trial (one per seed of each cell), every `eval/...` metric as a
  column;
- `results.md`: the protocol; the headline table, one row per cell (mean ± sd over seeds, the
  95% interval, the GT and VAE floors, the error above the VAE floor, OOD / ID with its
  interval); the paper-comparable metric beside the paper's Fig. 3 value where the cell matches
  its grid; the paper's claims as checks that answer yes, no or undecided at the intervals
  (`phyray.study.verdict`); each seed's numbers when cells have several;
- `scaling_curves.png`: error vs training videos on log axes, a line per model (mean over
  seeds, its interval as a band), ID solid and OOD dashed, GT and VAE floors as horizontal
  lines, one panel per scenario (the paper's Fig. 3).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phyray.artifacts import write_files
from phyray.config import (
    COMBINATORIAL,
    COMPOSE_PREFIX,
    FLIP_PREFIX,
    GAP_PREFIX,
    HULL_PREFIX,
    PROBE_PREFIX,
    ConfigError,
    TrainDiffusion,
)
from phyray.eval.physics import PAPER_METRIC
from phyray.study.plan import nominal_videos
from phyray.study.verdict import (
    FAR_BELOW,
    ORDER_OF_MAGNITUDE,
    Estimate,
    check_grid,
    combine_seeds,
    model_size,
    paper_floor,
    paper_value,
    ratio,
)

# MLflow and matplotlib are imported where a report is read or drawn: the tables and checks
# are plain functions of records.


# ---------------------------------------------------------------------------------------------
# Reading MLflow
# ---------------------------------------------------------------------------------------------


def _experiment_id(client, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"--experiment: no MLflow experiment {experiment!r} in {client.tracking_uri}")
    return found.experiment_id


def find_study_run(client, experiment: str, run_id: str | None = None):
    """A study's parent run: `run_id` (checked to be one of the experiment's study runs), else
    the newest study run of the experiment, else None."""
    from phyray.tracking import newest_run

    experiment_id = _experiment_id(client, experiment)
    if run_id is None:
        return newest_run(client, experiment_id, "tags.`phyray.role` = 'study'")
    try:
        run = client.get_run(run_id)
    except Exception:  # MLflow raises its own exception types per store
        run = None
    if run is None or run.info.experiment_id != experiment_id or run.data.tags.get("phyray.role") != "study":
        raise ConfigError(f"--run-id: {run_id} is not a study run of experiment {experiment!r}")
    return run


def study_runs(uri: str, experiment: str) -> list[dict[str, str]]:
    """The experiment's study runs, newest first: run id, start time, status, study, study id."""
    import time

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs(
        [_experiment_id(client, experiment)], "tags.`phyray.role` = 'study'", order_by=["attributes.start_time DESC"]
    )
    return [
        {
            "run_id": run.info.run_id,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(run.info.start_time / 1000)),
            "status": run.info.status,
            "study": run.data.tags.get("phyray.study", "?"),
            "study_id": run.data.tags.get("phyray.study_id", "?"),
        }
        for run in runs
    ]


def collect_results(uri: str, experiment: str, parent) -> tuple[list[dict[str, Any]], list[str]]:
    """One record per trial of the parent run's grid that has a finished run, and the keys of
    the trials that have none yet."""
    from mlflow.tracking import MlflowClient

    from phyray.study.trial import find_trial_run, is_done

    client = MlflowClient(uri)
    experiment_id = _experiment_id(client, experiment)
    grid = json.loads(parent.data.tags.get("phyray.grid", "{}"))
    records, missing = [], []
    for key, trial_id in grid.items():
        run = find_trial_run(client, experiment_id, trial_id)
        if not is_done(run):
            missing.append(key)
            continue
        tags, params = run.data.tags, run.data.params
        records.append({
            "trial": key,
            "scenario": tags["phyray.scenario"],
            "model": tags["phyray.model"],
            "data_size": tags["phyray.data_size"],
            "seed": int(tags.get("phyray.seed", 0)),
            "templates": tags.get("phyray.templates"),
            "num_videos": int(params["trial.num_videos"]),
            "run_id": run.info.run_id,
            **{k: v for k, v in run.data.metrics.items() if k.startswith(
                ("eval/", "probe/", "probe_floor/", "gap/", "gap_floor/", "flip/", "flip_floor/", "compose/", "compose_floor/",
                 "compose_gt/"))},
        })
    records.sort(key=lambda r: (r["scenario"], _model_order(r["model"]), r["num_videos"], r["seed"]))
    return records, missing


def _model_order(model: str) -> tuple[int, str]:
    return (model_size(model), model)


# ---------------------------------------------------------------------------------------------
# Cells: a grid cell's seeds combined
# ---------------------------------------------------------------------------------------------


# Paired differences (a rollout's score minus a reference's on the same videos, e.g. the
# combinatorial report's PSNR over nothing moving): signed, so combined over seeds without cutting
# their interval at 0 as errors, floors, PSNR and rates are.
SIGNED_METRICS = ("psnr_over_frozen",)


@dataclass
class Cell:
    """One (scenario, model, data size) of the grid: its trials (one per seed) and every
    `eval/...` metric of theirs combined over seeds (`phyray.study.verdict.combine_seeds`)."""

    scenario: str
    model: str
    data_size: str
    num_videos: int
    trials: list[dict[str, Any]]
    metrics: dict[str, Estimate]
    templates: str | None = None  # a combinatorial cell's training template set

    def get(self, name: str) -> Estimate | None:
        return self.metrics.get(name)


def grid_cells(records: list[dict[str, Any]]) -> list[Cell]:
    """The trials of `collect_results` grouped into cells, in the records' order."""
    groups: dict[tuple[str, str, str, str | None], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["scenario"], record["model"], record["data_size"], record.get("templates"))].append(record)
    cells = []
    for (scenario, model, size, templates), trials in groups.items():
        names = sorted({k for t in trials for k in t if k.startswith("eval/") and not k.endswith(("_ci_low", "_ci_high"))})
        metrics = {}
        for name in names:
            have = [t for t in trials if t.get(name) is not None and not math.isnan(t[name])]
            if len(have) < len(trials):
                continue  # a seed without this number: no combined value rather than a biased one
            values = [t[name] for t in have]
            lows = [t.get(f"{name}_ci_low", t[name]) for t in have]
            highs = [t.get(f"{name}_ci_high", t[name]) for t in have]
            metrics[name] = combine_seeds(values, lows, highs, nonnegative=name.rsplit("/", 1)[-1] not in SIGNED_METRICS)
        cells.append(Cell(scenario, model, size, trials[0]["num_videos"], trials, metrics, templates))
    return cells


def grid_checks(cells: list[Cell], metric: str) -> dict[str, list]:
    """The paper's checks (`phyray.study.verdict.check_grid`) on the cells' headline metric;
    sizes are ordered by their nominal videos."""
    usable = {
        (c.scenario, c.model, nominal_videos(c.data_size)): {"id": c.get(f"eval/id/{metric}"), "ood": c.get(f"eval/ood/{metric}")}
        for c in cells
    }
    return check_grid({key: pair for key, pair in usable.items() if None not in pair.values()})


# ---------------------------------------------------------------------------------------------
# Tables, plot
# ---------------------------------------------------------------------------------------------


def results_csv(records: list[dict[str, Any]]) -> str:
    metrics = sorted({k for r in records for k in r if k.startswith("eval/")})
    fields = ["trial", "scenario", "model", "data_size", "seed", "num_videos", "run_id", *metrics]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _mean(estimate: Estimate | None, digits: int = 4) -> str:
    """A cell's value; mean ± sd across seeds when it has several."""
    if estimate is None:
        return "-"
    # Products every seed shares (the floors of one VAE) have no spread to show.
    spread = f" ± {estimate.sd:.{digits}f}" if estimate.seeds > 1 and estimate.sd else ""
    return f"{estimate.value:.{digits}f}{spread}"


def _interval(estimate: Estimate | None, digits: int = 4) -> str:
    return "-" if estimate is None else f"[{estimate.low:.{digits}f}, {estimate.high:.{digits}f}]"


def _minus(a: Estimate | None, b: Estimate | None) -> str:
    return "-" if a is None or b is None else f"{a.value - b.value:.4f}"


def _ratio(ood: Estimate | None, id_: Estimate | None) -> str:
    if ood is None or id_ is None or id_.value <= 0:
        return "-"
    return _ratio_of(ratio(ood, id_))


# What a trial conditions on when its study's `dit` overrides leave it unset.
COND_FRAMES = str(TrainDiffusion.model_fields["cond_frames"].default)


def param(params: dict[str, str], name: str, default: str = "?") -> str:
    """A study run's logged setting as text, `default` where it is unset (MLflow logs None as "None")."""
    value = params.get(name)
    return default if value in (None, "None", "") else value


def sampler_text(params: dict[str, str]) -> str:
    """A study's rollout sampler as its reports state it: "50 sampling steps", and the networks'
    precision where it is not fp32 (e.g. "50 sampling steps in bf16")."""
    precision = param(params, "eval.precision", "fp32")
    return f"{param(params, 'eval.sample_steps')} sampling steps" + ("" if precision == "fp32" else f" in {precision}")


def protocol_line(params: dict[str, str]) -> str:
    """What every number below was measured on, from the study run's params."""
    split = param(params, "eval.split", "test")
    prefix = "eval" if split == "test" else "dev"
    return (
        f"Protocol: the {split} split ({prefix}_id: {param(params, 'data.eval_id', 'default')} videos, {prefix}_ood: "
        f"{param(params, 'data.eval_ood', 'default')} videos, data seed {param(params, 'data.seed', '0')}); "
        f"{param(params, 'data.resolution')}² frames (overrides {param(params, 'data.overrides', '[]')}); "
        f"{param(params, 'dit.diffusion.cond_frames', COND_FRAMES)} conditioning frames; parser "
        f"`{param(params, 'eval.parser', 'subpixel')}`; {sampler_text(params)}; training seeds "
        f"{param(params, 'seeds', '[0]')}; paper filter {param(params, 'eval.paper_filter', 'False')}; 95% percentile "
        f"bootstrap over videos, {param(params, 'eval.bootstrap_resamples', '1000')} resamples."
    )


def estimate_cell(estimate: Estimate | None, fmt: str = "{:.3f}", scale: float = 1, unit: str = "") -> str:
    """A probe report's cell: a mean and its 95 % interval, each number through `fmt`, e.g.
    "0.123 [0.100, 0.150]"; the value alone where the interval is a point (a product every seed
    shares), "–" where there is no estimate."""
    if estimate is None:
        return "–"
    text = fmt.format(scale * estimate.value) + unit
    if estimate.low == estimate.high:
        return text
    return text + f" [{fmt.format(scale * estimate.low)}, {fmt.format(scale * estimate.high)}]"


def percent_cell(estimate: Estimate | None) -> str:
    """A fraction's cell in whole per cent: "45% [30, 60]"."""
    return estimate_cell(estimate, "{:.0f}", 100, "%")


def run_settings(params: dict[str, str], parser: bool = True) -> str:
    """The settings a probe report's numbers share, from the study run's params: which split and
    seeds, the frames and sampler, the parser (`parser=False` where attributes are read without
    it), and the intervals."""
    reads = f", parser `{param(params, 'eval.parser', 'subpixel')}`" if parser else ""
    return (
        f"the {param(params, 'eval.split', 'test')} split, data seed {param(params, 'data.seed', '0')}; "
        f"{param(params, 'data.resolution')}² frames, {param(params, 'dit.diffusion.cond_frames', COND_FRAMES)} "
        f"conditioning frames, {sampler_text(params)}{reads}; training seeds "
        f"{param(params, 'seeds', '[0]')}; 95 % percentile bootstrap intervals over videos "
        f"({param(params, 'eval.bootstrap_resamples', '1000')} resamples), combined over seeds"
    )


def dev_split_note(params: dict[str, str]) -> list[str]:
    """The lines that open a report's checks when its study scored the dev split: settings are
    chosen there, and only the test split's checks are a verdict."""
    if param(params, "eval.split", "test") != "dev":
        return []
    return ["**Dev split**: these checks are for choosing settings; the verdict is the test split's.", ""]


def results_markdown(
    records: list[dict[str, Any]], metric: str, experiment: str, study: dict[str, Any], missing: list[str],
    params: dict[str, str] | None = None,
) -> str:
    params = params or {}
    cells = grid_cells(records)
    lines = [
        f"# {experiment}",
        "",
        f"Study `{study['name']}` (study id `{study['id']}`, MLflow run `{study['run_id']}`): "
        f"{len(records)} of {len(records) + len(missing)} trials of its grid finished"
        + (f"; not yet: {', '.join(missing)}." if missing else "."),
        "",
        protocol_line(params),
        "",
        f"Headline metric: `{metric}` (world units / s). GT floor: the same metric on the ground-truth "
        "frames (the parser's floor); VAE floor: on the VAE's reconstruction of them (the floor of any "
        "DiT in its latents). A cell of several seeds shows mean ± sd across seeds; its 95% interval "
        "combines the seeds' spread with the evaluation videos' bootstrap (phyray/study/verdict.py).",
        "",
        "| scenario | model | data | videos | seeds | ID | ID 95% CI | ID GT floor | ID VAE floor "
        "| ID − VAE floor | OOD | OOD 95% CI | OOD GT floor | OOD VAE floor | OOD / ID [95% CI] |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        id_err, ood_err = c.get(f"eval/id/{metric}"), c.get(f"eval/ood/{metric}")
        id_vae, ood_vae = c.get(f"eval/id/vae_floor_{metric}"), c.get(f"eval/ood/vae_floor_{metric}")
        lines.append(
            f"| {c.scenario} | {c.model} | {c.data_size} | {c.num_videos:,} | {len(c.trials)} | {_mean(id_err)} "
            f"| {_interval(id_err)} | {_mean(c.get(f'eval/id/gt_floor_{metric}'))} | {_mean(id_vae)} "
            f"| {_minus(id_err, id_vae)} | {_mean(ood_err)} | {_interval(ood_err)} "
            f"| {_mean(c.get(f'eval/ood/gt_floor_{metric}'))} | {_mean(ood_vae)} | {_ratio(ood_err, id_err)} |"
        )
    lines += _paper_table(cells) + _verdict_tables(cells, metric, dev_split_note(params)) + _seed_table(cells, metric)
    return "\n".join(lines) + "\n"


def _paper_table(cells: list[Cell]) -> list[str]:
    """The paper-comparable metric beside the paper's own Fig. 3 value where the cell matches."""
    if not any(c.get(f"eval/id/{PAPER_METRIC}") for c in cells):
        return []
    lines = [
        "",
        f"## Paper-comparable (`{PAPER_METRIC}`)",
        "",
        "The metric the paper's Fig. 3 reports: the error of the mean x velocity, with the released "
        "evaluator's radius filter and collision window (phyray/eval/physics.py). The paper's values "
        "(phyray/study/paper_fig3.yaml) are printed where the scenario, model and data size match its grid. "
        "Its ground-truth floor is a unit bias of the released renderer and parser (v/256 at 256 px, "
        "docs/paper.md §13); phyray's renderer and parser agree on pixel centres, so phyray's floor sits "
        "about 0.0098 below the paper's in every ID cell: compare errors above each one's floor.",
        "",
        "| scenario | model | data | ID | ID 95% CI | ID GT floor | OOD | OOD 95% CI | paper ID | paper OOD | paper GT floor |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        size = nominal_videos(c.data_size)
        paper_id, paper_ood = (paper_value(c.scenario, c.model, size, split) for split in ("id", "ood"))
        lines.append(
            f"| {c.scenario} | {c.model} | {c.data_size} | {_mean(c.get(f'eval/id/{PAPER_METRIC}'))} "
            f"| {_interval(c.get(f'eval/id/{PAPER_METRIC}'))} | {_mean(c.get(f'eval/id/gt_floor_{PAPER_METRIC}'))} "
            f"| {_mean(c.get(f'eval/ood/{PAPER_METRIC}'))} | {_interval(c.get(f'eval/ood/{PAPER_METRIC}'))} "
            f"| {_fmt(paper_id)} | {_fmt(paper_ood)} | {_fmt(paper_floor(c.scenario) if paper_id is not None else None)} |"
        )
    return lines


def _verdict_tables(cells: list[Cell], metric: str, dev_note: list[str]) -> list[str]:
    checks = grid_checks(cells, metric)
    if not checks["data"] and not checks["model_size"]:
        return []
    lines = [
        "",
        "## Verdict (docs/paper.md §10; rules in phyray/study/verdict.py)",
        "",
        *dev_note,
        "Each check is yes or no only where the 95% intervals separate, else undecided. OOD ≥ ~10x ID: "
        f"every cell's OOD / ID interval at or above √10 ≈ {ORDER_OF_MAGNITUDE:.2f}. Scaling does not help "
        f"OOD: OOD's relative gain from the smallest to the largest data size is decidedly below {FAR_BELOW:g} x "
        "the ID's.",
    ]
    if checks["data"]:
        lines += [
            "",
            "| scenario | model | ID falls with data | ID gain [95% CI] | OOD ≥ ~10x ID | min OOD / ID [95% CI] "
            "| OOD gain [95% CI] | scaling does not help OOD |",
            "|---|---|---|---:|---|---:|---:|---|",
        ]
        for row in checks["data"]:
            lines.append(
                f"| {row.scenario} | {row.model} | {row.id_falls_with_data} | {_gain(row.id_gain)} | {row.ood_far_above_id} "
                f"| {_ratio_of(row.min_ood_id_ratio)} | {_gain(row.ood_gain)} | {row.ood_not_helped} |"
            )
    if checks["model_size"]:
        lines += ["", "| scenario | data (videos) | smallest → largest model | ID falls with model size |", "|---|---:|---|---|"]
        for row in checks["model_size"]:
            lines.append(f"| {row.scenario} | {row.num_videos:,} | {row.smallest} → {row.largest} | {row.id_falls_with_model_size} |")
    return lines


def _gain(gain: Estimate) -> str:
    return f"{100 * gain.value:.0f}% [{100 * gain.low:.0f}%, {100 * gain.high:.0f}%]"


def _ratio_of(r: Estimate) -> str:
    return f"{r.value:.1f} [{r.low:.1f}, {r.high:.1f}]"


def _seed_table(cells: list[Cell], metric: str) -> list[str]:
    """Every trial of the cells that have several seeds, with its own bootstrap CI."""
    many = [c for c in cells if len(c.trials) > 1]
    if not many:
        return []
    lines = ["", "## Per seed", "", "| scenario | model | data | seed | ID [95% CI] | OOD [95% CI] |", "|---|---|---|---:|---:|---:|"]
    for c in many:
        for t in sorted(c.trials, key=lambda t: t["seed"]):
            cols = []
            for split in ("id", "ood"):
                name = f"eval/{split}/{metric}"
                cols.append(f"{_fmt(t.get(name))} [{_fmt(t.get(name + '_ci_low'))}, {_fmt(t.get(name + '_ci_high'))}]")
            lines.append(f"| {c.scenario} | {c.model} | {c.data_size} | {t['seed']} | {cols[0]} | {cols[1]} |")
    return lines


def label_log_xticks(ax, labels: dict[float, str]) -> None:
    """Ticks of a log x axis at the grid's own values only, labelled `labels[value]`: the axis's
    own minor labels (2x10^1, 3x10^1, ... or 3x10^2, 4x10^2, ...) overlap at a figure's width."""
    from matplotlib.ticker import NullFormatter

    ticks = sorted(labels)
    ax.set_xticks(ticks, [labels[t] for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def scaling_curves_png(records: list[dict[str, Any]], metric: str) -> bytes:
    """The paper's Fig. 3 for this grid, as PNG bytes: per model the mean over seeds, its 95%
    interval as a band, and the GT and VAE floors as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = grid_cells(records)
    scenarios = list(dict.fromkeys(c.scenario for c in cells))
    fig, axes = plt.subplots(1, max(1, len(scenarios)), figsize=(5.2 * max(1, len(scenarios)), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, scenario in zip(axes[0], scenarios):
        members = [c for c in cells if c.scenario == scenario]
        models = sorted({c.model for c in members}, key=_model_order)
        for i, model in enumerate(models):
            rows = sorted((c for c in members if c.model == model), key=lambda c: c.num_videos)
            x = [c.num_videos for c in rows]
            color = colors[i % len(colors)]
            for split, style, marker in (("id", "-", "o"), ("ood", "--", "s")):
                found = [c.get(f"eval/{split}/{metric}") for c in rows]
                y = [math.nan if e is None else e.value for e in found]
                ax.plot(x, y, style, marker=marker, color=color, label=f"{model} {split.upper()}")
                low = [math.nan if e is None else e.low for e in found]
                high = [math.nan if e is None else e.high for e in found]
                ax.fill_between(x, low, high, color=color, alpha=0.15, linewidth=0)  # 95% interval
        for prefix, label, color in (("gt_floor_", "GT floor", "gray"), ("vae_floor_", "VAE floor", "black")):
            for split, style in (("id", ":"), ("ood", "-.")):
                floors = [e.value for c in members if (e := c.get(f"eval/{split}/{prefix}{metric}")) is not None]
                if floors:
                    ax.axhline(sum(floors) / len(floors), color=color, linestyle=style, linewidth=1,
                               label=f"{label} {split.upper()}")
        ax.set(xscale="log", yscale="log", title=scenario.replace("_", " "), xlabel="training videos",
               ylabel=f"velocity error ({metric})")
        label_log_xticks(ax, {c.num_videos: c.data_size for c in members})  # "300", "3K"
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------------------------


def publish_report(
    uri: str, experiment: str, out: str | Path, metric: str | None = None, parent_run_id: str | None = None,
    log_to_run: bool = True,
) -> dict[str, Any]:
    """Write results.csv/.md and scaling_curves.png of one study run's grid to `out` and log
    them onto that (parent) run.

    Args:
        uri: MLflow tracking URI.
        experiment: the study's experiment.
        out: directory for the files (created).
        metric: headline velocity-error variant; None = the study's own (`eval.headline_metric`
            param of its parent run), else vel_err_mean_velocity.
        parent_run_id: the study run whose grid to report; None = the experiment's newest.
        log_to_run: False writes `out` only and leaves the parent run's artifacts as they are
            (a copy rebuilt elsewhere, perhaps with another metric, is not the study's report).

    Returns:
        {"records" (one per trial), "cells" (seeds combined), "checks" (the paper's claims),
        "missing", "files": {name: path} (name: the artifact path on the parent run), "summary"
        (the markdown table's path), "parent_run_id", "study", "study_id"}. A combinatorial
        study's report is Table 2 instead (`phyray.study.table2`), a probe study's the attribute
        priority (`phyray.study.priority`), a gap, direction, convex-hull or composition study's
        its verdict (`phyray.study.cases`).
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = find_study_run(client, experiment, parent_run_id)
    if parent is None:
        raise ConfigError(f"--experiment: {experiment!r} has no study run in {uri}")
    metric = metric or parent.data.params.get("eval.headline_metric") or "vel_err_mean_velocity"
    records, missing = collect_results(uri, experiment, parent)
    study = {"name": parent.data.tags.get("phyray.study"), "id": parent.data.tags.get("phyray.study_id"),
             "run_id": parent.info.run_id}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    publish_case = _case_publisher(parent.data.params.get("scenarios", ""))
    if publish_case is not None:
        report = publish_case(client, parent, records, missing, study, out)
    else:
        report = _publish_grid(records, missing, metric, experiment, study, parent.data.params, out)
    if log_to_run:
        for name, path in report["files"].items():
            folder = Path(name).parent.as_posix()
            client.log_artifact(parent.info.run_id, str(path), artifact_path=None if folder == "." else folder)
    return report


def _case_publisher(scenarios: str):
    """The report writer of a study that is not a scaling grid (by its `scenarios` param), or None."""
    if COMBINATORIAL in scenarios:
        from phyray.study.table2 import publish_table2

        return publish_table2
    if PROBE_PREFIX in scenarios:
        from phyray.study.priority import publish_priority

        return publish_priority
    from phyray.study import cases

    for prefix, publish in ((GAP_PREFIX, cases.publish_gaps), (FLIP_PREFIX, cases.publish_flips),
                            (HULL_PREFIX, cases.publish_hulls), (COMPOSE_PREFIX, cases.publish_composition)):
        if prefix in scenarios:
            return publish
    return None


def _publish_grid(
    records: list[dict[str, Any]], missing: list[str], metric: str, experiment: str, study: dict[str, Any],
    params: dict[str, str], out: Path,
) -> dict[str, Any]:
    """Write the scaling grid's report (module docstring)."""
    contents = {
        "results.csv": results_csv(records).encode(),
        "results.md": results_markdown(records, metric, experiment, study, missing, params).encode(),
        "scaling_curves.png": scaling_curves_png(records, metric),
    }
    files = write_files(out, contents)
    cells = grid_cells(records)
    return {
        "records": records,
        "missing": missing,
        "cells": cells,
        "checks": grid_checks(cells, metric),
        "files": files,
        "summary": files["results.md"],
        "parent_run_id": study["run_id"],
        "study": study["name"],
        "study_id": study["id"],
    }
