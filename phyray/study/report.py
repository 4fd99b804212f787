"""The study's answer, rebuilt from MLflow alone: scaling curves, a results table and a verdict.

    report = publish_report(uri, "phyray-study-mini", "runs/reports/mini", parent_run_id=None)

reads the grid of one study run (its parent run's `phyray.grid` tag: trial key -> trial
identity; the newest study run of the experiment unless one is named), finds the finished run of
each of those trial identities (tag `phyray.trial_id`, `phyray.trial_done`), and writes, then
logs onto that parent run (a cell with no finished run is left out and listed as missing, never
filled from another config's run):

- `results.csv`: one row per trial, every `eval/...` metric as a column;
- `results.md`: the headline table (ID and OOD error beside their ground-truth floors, their
  ratio) and, per scenario and model, the paper's verdict checks (docs/paper.md §10: ID error
  falls with data; OOD error stays far above ID and does not improve);
- `scaling_curves.png`: error vs training videos on log axes, a line per model, ID solid and OOD
  dashed, the GT floor dotted, one panel per scenario (the paper's Fig. 3).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from phyray.artifacts import atomic_write_bytes
from phyray.config import ConfigError
from phyray.presets import DIT_PRESETS

# The verdict's thresholds: "OOD stays >= 5x ID" (the paper's is ~10x), and "OOD does not
# improve" = OOD error at the largest data size is at least this fraction of the smallest's.
OOD_ID_MIN_RATIO = 5.0
OOD_NO_IMPROVEMENT = 0.8
REPORT_FILES = ("results.csv", "results.md", "scaling_curves.png")
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
            "num_videos": int(params["trial.num_videos"]),
            "run_id": run.info.run_id,
            **{k: v for k, v in run.data.metrics.items() if k.startswith("eval/")},
        })
    records.sort(key=lambda r: (r["scenario"], _model_order(r["model"]), r["num_videos"]))
    return records, missing


def _model_order(model: str) -> tuple[int, str]:
    spec = DIT_PRESETS.get(model, {})
    return (spec.get("depth", 0) * spec.get("hidden_size", 0) ** 2, model)


# ---------------------------------------------------------------------------------------------
# Verdict, tables, plot
# ---------------------------------------------------------------------------------------------


def verdicts(records: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Per (scenario, model) with >= 2 data sizes: the paper's claims, checked on this grid."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["scenario"], record["model"])].append(record)
    out = []
    for (scenario, model), members in groups.items():
        members = sorted(members, key=lambda r: r["num_videos"])
        ids = [r.get(f"eval/id/{metric}") for r in members]
        oods = [r.get(f"eval/ood/{metric}") for r in members]
        if len(members) < 2 or any(v is None for v in ids + oods):
            continue
        out.append({
            "scenario": scenario,
            "model": model,
            "id_falls": ids[-1] < ids[0],
            "id_monotone": all(b <= a for a, b in zip(ids, ids[1:])),
            "id_gain": ids[0] / ids[-1],
            "min_ood_id_ratio": min(o / i for o, i in zip(oods, ids)),
            "ood_gain": oods[0] / oods[-1],
            "ood_does_not_improve": oods[-1] >= OOD_NO_IMPROVEMENT * oods[0],
        })
    return out


def results_csv(records: list[dict[str, Any]]) -> str:
    metrics = sorted({k for r in records for k in r if k.startswith("eval/")})
    fields = ["trial", "scenario", "model", "data_size", "num_videos", "run_id", *metrics]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _interval(record: dict[str, Any], name: str) -> str:
    low, high = record.get(f"{name}_ci_low"), record.get(f"{name}_ci_high")
    return "-" if low is None or high is None else f"[{low:.4f}, {high:.4f}]"


def results_markdown(
    records: list[dict[str, Any]], metric: str, experiment: str, study: dict[str, Any], missing: list[str]
) -> str:
    other = "vel_err_per_frame" if metric == "vel_err_mean_velocity" else "vel_err_mean_velocity"
    lines = [
        f"# {experiment}",
        "",
        f"Study `{study['name']}` (study id `{study['id']}`, MLflow run `{study['run_id']}`): "
        f"{len(records)} of {len(records) + len(missing)} trials of its grid finished"
        + (f"; not yet: {', '.join(missing)}." if missing else "."),
        "",
        f"Headline metric: `{metric}` (world units / s); `{other}` beside it. "
        "Floors (`gt_floor_*`) are the same metric on the ground-truth frames. "
        "The 95% CIs are percentile bootstraps of the mean over evaluation videos.",
        "",
        "| scenario | model | data | videos | ID | ID floor | OOD | OOD floor | OOD / ID "
        f"| ID 95% CI | OOD 95% CI | ID ({other}) | OOD ({other}) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        id_err, ood_err = r.get(f"eval/id/{metric}"), r.get(f"eval/ood/{metric}")
        ratio = ood_err / id_err if id_err and ood_err is not None else None
        lines.append(
            f"| {r['scenario']} | {r['model']} | {r['data_size']} | {r['num_videos']:,} | {_fmt(id_err)} "
            f"| {_fmt(r.get(f'eval/id/gt_floor_{metric}'))} | {_fmt(ood_err)} "
            f"| {_fmt(r.get(f'eval/ood/gt_floor_{metric}'))} | {_fmt(ratio, 1)} "
            f"| {_interval(r, f'eval/id/{metric}')} | {_interval(r, f'eval/ood/{metric}')} "
            f"| {_fmt(r.get(f'eval/id/{other}'))} | {_fmt(r.get(f'eval/ood/{other}'))} |"
        )
    checks = verdicts(records, metric)
    if checks:
        lines += [
            "",
            "## Verdict (docs/paper.md §10)",
            "",
            f"| scenario | model | ID falls with data | ID gain (smallest / largest) | min OOD / ID "
            f"(>= {OOD_ID_MIN_RATIO:g}) | OOD gain | OOD does not improve (largest >= "
            f"{OOD_NO_IMPROVEMENT:g} x smallest) |",
            "|---|---|---|---:|---:|---:|---|",
        ]
        for c in checks:
            falls = ("yes" if c["id_falls"] else "no") + ("" if c["id_monotone"] or not c["id_falls"] else " (not monotone)")
            lines.append(
                f"| {c['scenario']} | {c['model']} | {falls} | {c['id_gain']:.2f}x | {c['min_ood_id_ratio']:.1f} "
                f"| {c['ood_gain']:.2f}x | {'yes' if c['ood_does_not_improve'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def scaling_curves_png(records: list[dict[str, Any]], metric: str) -> bytes:
    """The paper's Fig. 3 for this grid, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r["scenario"] for r in records))
    fig, axes = plt.subplots(1, max(1, len(scenarios)), figsize=(5.2 * max(1, len(scenarios)), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, scenario in zip(axes[0], scenarios):
        members = [r for r in records if r["scenario"] == scenario]
        models = sorted({r["model"] for r in members}, key=_model_order)
        for i, model in enumerate(models):
            rows = sorted((r for r in members if r["model"] == model), key=lambda r: r["num_videos"])
            x = [r["num_videos"] for r in rows]
            color = colors[i % len(colors)]
            for split, style, marker in (("id", "-", "o"), ("ood", "--", "s")):
                y = [r.get(f"eval/{split}/{metric}", math.nan) for r in rows]
                ax.plot(x, y, style, marker=marker, color=color, label=f"{model} {split.upper()}")
                low = [r.get(f"eval/{split}/{metric}_ci_low", math.nan) for r in rows]
                high = [r.get(f"eval/{split}/{metric}_ci_high", math.nan) for r in rows]
                ax.fill_between(x, low, high, color=color, alpha=0.15, linewidth=0)  # 95% bootstrap CI
        for split, style in (("id", ":"), ("ood", "-.")):
            floors = [r[f"eval/{split}/gt_floor_{metric}"] for r in members if f"eval/{split}/gt_floor_{metric}" in r]
            if floors:
                ax.axhline(sum(floors) / len(floors), color="gray", linestyle=style, linewidth=1,
                           label=f"GT floor {split.upper()}")
        ax.set(xscale="log", yscale="log", title=scenario.replace("_", " "), xlabel="training videos",
               ylabel=f"velocity error ({metric})")
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
    uri: str, experiment: str, out: str | Path, metric: str | None = None, parent_run_id: str | None = None
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

    Returns:
        {"records", "missing", "verdicts", "files": {name: path}, "parent_run_id", "study",
        "study_id"}.
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
    contents = {
        "results.csv": results_csv(records).encode(),
        "results.md": results_markdown(records, metric, experiment, study, missing).encode(),
        "scaling_curves.png": scaling_curves_png(records, metric),
    }
    files = {}
    for name in REPORT_FILES:
        atomic_write_bytes(out / name, contents[name])
        files[name] = out / name
        client.log_artifact(parent.info.run_id, str(out / name))
    return {
        "records": records,
        "missing": missing,
        "verdicts": verdicts(records, metric),
        "files": files,
        "parent_run_id": parent.info.run_id,
        "study": study["name"],
        "study_id": study["id"],
    }
