"""One trial of a study: train a DiT on its latents, roll it out on ID and OOD sets, score, log.

`plan_trial` names everything a trial makes by identity (`phyray.artifacts`), in the driver,
before any trial runs:

    <study_dir>/trials/<scenario>-<model>-<size>-s<seed>-<dit id>/   the DiT run (checkpoints, export)
        rollouts/<split>-<rollouts id>/                      rollouts of each evaluation set
        reports/<report id>/                                 report.json|csv and the GIFs

`run_trial` is the Ray Tune trainable (a driver function in Ray's Train-in-Tune pattern: it
builds and fits a TorchTrainer through `phyray.train.trainer.train`, then evaluates).
`execute_trial` is the same work as a plain function. Each trial owns one MLflow run, found
again by its identity, never by its name:

- tags `phyray.study`, `phyray.role=trial`, `phyray.trial=<scenario>-<model>-<size>-s<seed>`,
  `phyray.trial_id`, `phyray.dit_id`, `phyray.seed`, `phyray.eval_split` (test or dev),
  `mlflow.parentRunId` (the study run that started it);
  `phyray.trial_done=true` once its evaluation is logged;
- params: the DiT run's flat config plus `trial.*` (scenario, model, data size, videos);
- metrics: `train/*` from training, `eval/<split>/<metric>` from the physics report
  (`eval/id/...`, `eval/ood/...` pooled, `eval/ood_<level>/...`, `gt_floor_*` and
  `vae_floor_*` beside each); a combinatorial cell's from the scene report
  (`eval/in_template/...`, `eval/out_of_template/...`: psnr, ssim, lpips, fvd, abnormal and
  its checks, with `vae_floor_*`, `frozen_*`, `psnr_over_frozen` and `gt_floor_abnormal`; tag
  `phyray.templates`, and FVD's protocol as tags `phyray.fvd.<split>.fvd`);
- artifacts: `report/report.json|csv` (and `probe.json`, `gaps.json`, `flips.json`, `hulls.json`
  or `composition.json`: the per-video records by split),
  `rollouts/<split>_{best,worst}.gif` [ground truth | rollout].

A rerun skips a done trial (in any study run of the experiment: a trial is its identity),
resumes a trial whose training was checkpointed, and re-evaluates a trial killed during
evaluation (rollout shards already written are kept). A trial whose settings changed has
another identity: it is a new trial, in a new directory and a new run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phyray.artifacts import Identity
from phyray.config import (
    COMBINATORIAL,
    COMPOSE_PREFIX,
    EVAL_KIND,
    FLIP_PREFIX,
    GAP_PREFIX,
    HULL_PREFIX,
    PROBE_PREFIX,
    StudyConfig,
    TrainConfig,
    to_flat_dict,
)
from phyray.data.shards import dataset_id, decode_frames, iter_rows, read_manifest
from phyray.study.plan import Trial
from phyray.study.prepare import ScenarioInputs, scores_dir, train_or_resume
from phyray.study.settings import train_config

DONE_TAG = "phyray.trial_done"
# 2: vae_floor_* and paper_vel_err in every report.
REPORT_FORMAT_VERSION = 2
# The case-based probes: the scenario prefix of each family, and the artifact of its per-video records.
CASE_FAMILIES = {"gap": GAP_PREFIX, "flip": FLIP_PREFIX, "hull": HULL_PREFIX, "compose": COMPOSE_PREFIX}
CASE_ARTIFACTS = {"gap": "gaps.json", "flip": "flips.json", "hull": "hulls.json", "compose": "composition.json"}
# torch, Ray and MLflow, and the phyray modules that load them, are imported inside the functions
# that run a trial: the driver plans trials without them.


@dataclass(frozen=True)
class TrialSpec:
    """A trial with everything it makes named: its DiT run, rollouts and report, by identity."""

    trial: Trial
    run_cfg: TrainConfig  # the DiT run, named <key>-<dit id>
    dit: Identity
    rollouts: dict[str, str]  # split -> rollout directory
    report_dir: str
    identity: Identity  # the trial's: the DiT's and the report's identities


def plan_trial(study: StudyConfig, trial: Trial, inputs: ScenarioInputs, tracking_uri: str) -> TrialSpec:
    """Name a trial's products from its settings and its inputs' identities (nothing is run)."""
    from phyray.eval.rollouts import rollouts_identity
    from phyray.train.trainer import run_dir_of, training_identity

    latents = inputs.latents[trial.data_key][trial.seed]
    run_cfg = train_config(study, "dit", name="dit", train=latents, model=trial.model, tracking_uri=tracking_uri)
    run_cfg = run_cfg.model_copy(update={"seed": trial.seed})
    dit = training_identity(run_cfg, read_manifest(latents))
    run_cfg = run_cfg.model_copy(update={"name": dit.name(trial.key)})
    run_dir = run_dir_of(run_cfg)
    # Sampling noise is the trial's seed too: seeds replicate everything model-side.
    cond_frames = run_cfg.diffusion.cond_frames
    rollouts = {
        split: rollouts_identity(
            dit.id, dataset_id(inputs.eval[key]), study.eval.sample_steps, cond_frames, trial.seed,
            precision=study.eval.precision,
        )
        for split, key in inputs.eval_keys(trial).items()
    }
    # The VAE floor's reconstructions are named by the VAE and the reference sets, both already
    # inputs of the DiT and the rollouts; they need no entry of their own.
    if trial.scenario == COMBINATORIAL:
        from phyray.eval.scenes import FROZEN_VERSION
        from phyray.study.combinatorial import scene_scoring

        scoring = {"scenes": {split: scene_scoring(study, split, cond_frames).record() for split in rollouts},
                   "frozen": FROZEN_VERSION}
    else:
        scoring = {"parser": study.eval.parser, "ssim": study.eval.ssim, "paper_filter": study.eval.paper_filter}
        if trial.scenario.startswith(PROBE_PREFIX):
            from phyray.eval.probes import PROBE_VERSION

            scoring["probe"] = PROBE_VERSION
        if trial.scenario.startswith(GAP_PREFIX):
            from phyray.eval.cases import GAP_VERSION

            scoring["interpolation"] = GAP_VERSION
        if trial.scenario.startswith(FLIP_PREFIX):
            from phyray.eval.cases import FLIP_VERSION

            scoring["direction"] = {"version": FLIP_VERSION, "reversal_speed": study.eval.reversal_speed}
        if trial.scenario.startswith(HULL_PREFIX):
            from phyray.eval.cases import HULL_VERSION

            scoring["hull"] = {"version": HULL_VERSION, "metric": study.eval.headline_metric}
        if trial.scenario.startswith(COMPOSE_PREFIX):
            from phyray.eval.composition import COMPOSE_VERSION

            scoring["composition"] = {"version": COMPOSE_VERSION, "reversal_speed": study.eval.reversal_speed}
    report = Identity(
        "report",
        {"format_version": REPORT_FORMAT_VERSION, **scoring, "cond_frames": cond_frames,
         "bootstrap": {"resamples": study.eval.bootstrap_resamples, "seed": study.data.seed}},
        {split: identity.id for split, identity in rollouts.items()},
    )
    return TrialSpec(
        trial=trial,
        run_cfg=run_cfg,
        dit=dit,
        rollouts={split: str(run_dir / "rollouts" / identity.name(split)) for split, identity in rollouts.items()},
        report_dir=str(run_dir / "reports" / report.id),
        identity=Identity("trial", trial.as_dict(), {"dit": dit.id, "report": report.id}),
    )


def trial_tags(study: StudyConfig, spec: TrialSpec) -> dict[str, str]:
    trial = spec.trial
    return {
        "phyray.study": study.name,
        "phyray.role": "trial",
        "phyray.trial": trial.key,
        "phyray.trial_id": spec.identity.id,
        "phyray.dit_id": spec.dit.id,
        "phyray.scenario": trial.scenario,
        "phyray.model": trial.model,
        "phyray.data_size": trial.data_size,
        "phyray.seed": str(trial.seed),
        "phyray.eval_split": study.eval.split,
    } | ({"phyray.templates": trial.templates} if trial.templates is not None else {})


def find_trial_run(client, experiment_id: str, trial_id: str):
    """The newest MLflow run of the trial with this identity in the experiment, or None."""
    from phyray.tracking import newest_run

    return newest_run(client, experiment_id, f"tags.`phyray.trial_id` = '{trial_id}'")


def is_done(run) -> bool:
    return run is not None and run.data.tags.get(DONE_TAG) == "true" and run.info.status == "FINISHED"


# ---------------------------------------------------------------------------------------------
# Evaluation (runs as a Ray task on the trial's resources, after training freed them)
# ---------------------------------------------------------------------------------------------


def _gif_of(record: dict[str, Any], rollout_dir: str, reference_dir: str, path: Path) -> Path:
    from phyray.eval.video import side_by_side_gif

    def frames_of(directory) -> np.ndarray:
        row = next(r for r in iter_rows(directory) if r["video_id"] == record["video_id"])
        return decode_frames(row)

    return side_by_side_gif(frames_of(reference_dir), frames_of(rollout_dir), path)


def _scene_scores(study: StudyConfig, split: str, rollout_dir: str, floor_dir: str, reference: str, cond_frames: int):
    """A combinatorial split's per-video records (with their VAE floor and the frozen reference)
    and its FVD rows."""
    from phyray.eval.scenes import (
        add_frozen,
        add_scene_floor,
        floor_fvd_row,
        score_frozen_set,
        score_scene_set,
    )
    from phyray.study.combinatorial import scene_scoring

    scoring = scene_scoring(study, split, cond_frames)
    scores = score_scene_set(rollout_dir, reference, scoring)
    floor = score_scene_set(floor_dir, reference, scoring, cache_dir=scores_dir(floor_dir))
    frozen = score_frozen_set(reference, scoring, cache_dir=scores_dir(reference))
    records = add_frozen(add_scene_floor(scores["records"], floor["records"]), frozen)
    return records, [*scores["fvd"], *map(floor_fvd_row, floor["fvd"])]


def _probe_scores(
    study: StudyConfig, split: str, rollout_dir: str, floor_dir: str, reference: str, cond_frames: int,
    report_dir: Path, gifs: list[Path],
) -> dict[str, Any]:
    """An attribute probe's outcomes on one split, of the rollouts and of the VAE's own
    reconstructions (its floor: a VAE that already flips an attribute would fake the finding),
    with a GIF of the first rollout of each outcome where one attribute won."""
    from phyray.eval.probes import probe_metrics, score_probe_set, summarize_outcomes

    group = "id" if EVAL_KIND[split] == "eval_id" else "ood"
    resamples, seed = study.eval.bootstrap_resamples, study.data.seed
    scored: dict[str, Any] = {"metrics": {}}
    for name, directory, prefix in (("rollouts", rollout_dir, "probe"), ("vae_floor", floor_dir, "probe_floor")):
        records = score_probe_set(directory, reference, cond_frames)
        summary = summarize_outcomes(records, resamples, seed, swapped_only=False)
        scored[name] = {"records": records, "summary": summary}
        scored["metrics"] |= probe_metrics(summary, f"{prefix}/{group}")
    if study.eval.gifs:
        for outcome in ("a_wins", "b_wins"):
            example = next((r for r in scored["rollouts"]["records"] if r["outcome"] == outcome), None)
            if example is not None:
                gifs.append(_gif_of(example, rollout_dir, reference, report_dir / f"{split}_{outcome}.gif"))
    return scored


def _case_scores(
    study: StudyConfig, family: str, split: str, rollout_dir: str, floor_dir: str, reference: str, cond_frames: int,
) -> dict[str, Any]:
    """A case-based probe's scores on one split (`phyray.eval.cases`): per-video records and
    their summary, of the rollouts and of the VAE's reconstructions (its floor: an effect below
    it shows nothing). Gaps are scored on the ID split (the whole speed range), flips on both."""
    from phyray.eval.cases import (
        between_outer_bands,
        case_config_of,
        case_metrics,
        flip_records,
        flip_summary,
        gap_records,
        gap_summary,
        score_case_set,
    )

    resamples, seed = study.eval.bootstrap_resamples, study.data.seed
    if family == "gap":
        span = between_outer_bands(case_config_of(reference))
        records_of, summarize, prefix = gap_records, lambda records: gap_summary(records, span, resamples, seed), ""
    else:
        group = "id" if EVAL_KIND[split] == "eval_id" else "ood"
        records_of, summarize, prefix = flip_records, lambda records: flip_summary(records, resamples, seed), f"/{group}"
    options = {"reversal_speed": study.eval.reversal_speed} if family == "flip" else {}
    scored: dict[str, Any] = {"metrics": {}}
    for name, directory, kind in (("rollouts", rollout_dir, family), ("vae_floor", floor_dir, f"{family}_floor")):
        records = score_case_set(directory, reference, study.eval.parser, cond_frames, records_of, **options)
        summary = summarize(records)
        scored[name] = {"records": records, "summary": summary}
        scored["metrics"] |= case_metrics(summary, kind + prefix)
    return scored


def _hull_scores(study: StudyConfig, split: str, records: list[dict[str, Any]], reference: str) -> dict[str, Any]:
    """A convex-hull variant's scores on one split: each video's point on the left-out plane, its
    region (trained, inside or outside the training hull) and its headline error beside the
    VAE's, summarised per region; the regions pooled over splits are the parent report's."""
    from phyray.eval.cases import case_config_of, case_metrics, hull_records, hull_summary

    rows = {row["video_id"]: row for row in iter_rows(reference, ["video_id", "params"])}
    hull = hull_records(records, rows, case_config_of(reference), study.eval.headline_metric)
    summary = hull_summary(hull, study.eval.bootstrap_resamples, study.data.seed)
    group = "id" if EVAL_KIND[split] == "eval_id" else "ood"
    return {"rollouts": {"records": hull, "summary": summary}, "metrics": case_metrics(summary, f"hull/{group}")}


def _composition_scores(study: StudyConfig, split: str, rollout_dir: str, floor_dir: str, reference: str,
                        cond_frames: int) -> dict[str, Any]:
    """A composition variant's scores on one split (ID: the trained kinds; OOD: the composed one):
    per video and object its velocity error after each event, survival, vanished and bounced, of
    the rollouts, of the VAE's reconstructions (its floor) and of the ground truth itself (the
    parser's floor), with their summaries."""
    from phyray.eval.composition import (
        composition_metrics,
        composition_summary,
        score_composition_set,
    )

    group = "id" if EVAL_KIND[split] == "eval_id" else "ood"
    scored: dict[str, Any] = {"metrics": {}}
    for name, directory, prefix in (("rollouts", rollout_dir, "compose"), ("vae_floor", floor_dir, "compose_floor"),
                                    ("ground_truth", reference, "compose_gt")):
        records = score_composition_set(directory, reference, study.eval.parser, cond_frames, study.eval.reversal_speed)
        summary = composition_summary(records, study.eval.bootstrap_resamples, study.data.seed)
        scored[name] = {"records": records, "summary": summary}
        scored["metrics"] |= composition_metrics(summary, f"{prefix}/{group}")
    return scored


def evaluate_trial(
    study: StudyConfig, spec: TrialSpec, export: str, inputs: ScenarioInputs, tracking_uri: str, run_id: str
) -> list[dict[str, Any]]:
    """Roll out the EMA model on its evaluation sets, score, log to the trial's run; report rows.

    Ball scenes get the physics report (`phyray.eval.report`); PHYRE scenes the combinatorial
    one (`phyray.eval.scenes`: PSNR, SSIM, LPIPS, FVD and the abnormal rate, each beside its VAE
    floor), logged as eval/in_template/<metric> and eval/out_of_template/<metric>."""
    from mlflow.tracking import MlflowClient

    from phyray import tracking
    from phyray.eval.report import (
        add_vae_floor,
        cached_physics_records,
        evaluate_physics_records,
        report_metrics,
        summarize,
        write_report,
    )
    from phyray.eval.rollouts import rollout_dataset
    from phyray.eval.scenes import SPLIT_GROUPS, scene_metrics, summarize_scenes, write_scene_report

    report_dir = Path(spec.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    cond_frames, seed = spec.run_cfg.diffusion.cond_frames, spec.trial.seed
    scenes = spec.trial.scenario == COMBINATORIAL
    probe = spec.trial.scenario.startswith(PROBE_PREFIX)
    family = next((name for name, prefix in CASE_FAMILIES.items() if spec.trial.scenario.startswith(prefix)), None)
    options = {"ssim": study.eval.ssim, "paper_filter": study.eval.paper_filter}
    records, fvd_rows, gifs, probe_splits, case_splits = [], [], [], {}, {}
    for split, key in inputs.eval_keys(spec.trial).items():
        reference, rollout_dir, floor_dir = inputs.eval[key], spec.rollouts[split], inputs.vae_floor[seed][key]
        rollout_dataset(
            export, reference, rollout_dir, study.eval.sample_steps, study.eval.batch_size, seed, vae_path=inputs.vae[seed],
            precision=study.eval.precision,
        )
        if scenes:
            split_records, split_fvd = _scene_scores(study, split, rollout_dir, floor_dir, reference, cond_frames)
            fvd_rows += split_fvd
        else:
            kept = {"floor_cache": scores_dir(reference)}  # the reference's own parse, shared by every trial
            split_records = add_vae_floor(
                evaluate_physics_records(rollout_dir, reference, study.eval.parser, cond_frames, **kept, **options),
                cached_physics_records(
                    scores_dir(floor_dir), floor_dir, reference, study.eval.parser, cond_frames, **kept, **options
                ),
            )
        records += split_records
        if probe:
            probe_splits[split] = _probe_scores(study, split, rollout_dir, floor_dir, reference, cond_frames, report_dir, gifs)
        if family == "hull":
            case_splits[split] = _hull_scores(study, split, split_records, reference)
        elif family == "compose":
            case_splits[split] = _composition_scores(study, split, rollout_dir, floor_dir, reference, cond_frames)
        elif family == "flip" or (family == "gap" and EVAL_KIND[split] == "eval_id"):
            case_splits[split] = _case_scores(study, family, split, rollout_dir, floor_dir, reference, cond_frames)
        # Best and worst rollouts: lowest and highest velocity error, or highest and lowest PSNR.
        metric, sign = ("psnr", -1) if scenes else (study.eval.headline_metric, 1)
        scored = [r for r in split_records if np.isfinite(r[metric])]
        if study.eval.gifs and scored:
            scored.sort(key=lambda r: sign * r[metric])
            for name, record in (("best", scored[0]), ("worst", scored[-1])):
                gifs.append(_gif_of(record, rollout_dir, reference, report_dir / f"{split}_{name}.gif"))
    resamples, bootstrap_seed = study.eval.bootstrap_resamples, study.data.seed
    if scenes:
        rows = [*summarize_scenes(records, resamples, bootstrap_seed), *fvd_rows]
        report_files = write_scene_report(rows, records, report_dir / "report.json")
        metrics = scene_metrics(rows)
    else:
        rows = summarize(records, study.eval.parser, cond_frames, resamples, bootstrap_seed)
        report_files = write_report(rows, report_dir / "report.json")
        metrics = report_metrics(rows)

    if probe:
        (report_dir / "probe.json").write_text(json.dumps(probe_splits, indent=1, sort_keys=True))
        report_files = [*report_files, report_dir / "probe.json"]
        for split, scored in probe_splits.items():
            metrics |= scored["metrics"]
    if family is not None:
        (report_dir / CASE_ARTIFACTS[family]).write_text(json.dumps(case_splits, indent=1, sort_keys=True))
        report_files = [*report_files, report_dir / CASE_ARTIFACTS[family]]
        for scored in case_splits.values():
            metrics |= scored["metrics"]

    client = MlflowClient(tracking_uri)
    tracking.log_metrics(tracking_uri, run_id, metrics, step=0)
    for row in fvd_rows:  # FVD depends on N: its protocol beside it
        group = SPLIT_GROUPS[row["split"]]
        tracking.set_tags(tracking_uri, run_id, {f"phyray.fvd.{group}.{row['metric']}": json.dumps(row["protocol"], sort_keys=True)})
    for path in report_files:
        client.log_artifact(run_id, str(path), artifact_path="report")
    for path in gifs:
        client.log_artifact(run_id, str(path), artifact_path="rollouts")
    return rows


# ---------------------------------------------------------------------------------------------
# The trial
# ---------------------------------------------------------------------------------------------


def execute_trial(
    study: StudyConfig, spec: TrialSpec, inputs: ScenarioInputs, tracking_uri: str, parent_run_id: str
) -> dict[str, float]:
    """Train, evaluate and log one trial (or return a done trial's metrics); returns its metrics."""
    import ray
    from mlflow.tracking import MlflowClient

    from phyray import tracking

    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(study.experiment_name).experiment_id
    previous = find_trial_run(client, experiment_id, spec.identity.id)
    if is_done(previous):
        return dict(previous.data.metrics)

    run_cfg = spec.run_cfg
    if previous is not None and previous.info.status != "FINISHED":
        run_id = previous.info.run_id  # killed or failed before: carry on in the same run
        client.update_run(run_id, status="RUNNING")
    else:
        params = to_flat_dict(run_cfg) | {f"trial.{k}": v for k, v in spec.trial.as_dict().items()}
        params["trial.num_videos"] = inputs.num_videos[spec.trial.data_key]
        run_id = tracking.start_run(
            tracking_uri, study.experiment_name, spec.trial.key, params,
            tags={"mlflow.parentRunId": parent_run_id, **trial_tags(study, spec)},
        )
    try:
        export = train_or_resume(run_cfg, spec.dit, run_id=run_id)
        # The trial's training resources are free again: the rollouts get the same. "DEFAULT"
        # leaves the Tune trial's placement group, which holds only the driver's sliver of CPU.
        evaluate = ray.remote(evaluate_trial).options(
            num_cpus=run_cfg.workers * run_cfg.cpus_per_worker,
            num_gpus=run_cfg.workers if run_cfg.use_gpu else 0,
            scheduling_strategy="DEFAULT",
        )
        ray.get(evaluate.remote(study, spec, str(export), inputs, tracking_uri, run_id))
        client.set_tag(run_id, DONE_TAG, "true")
    except BaseException:
        tracking.end_run(tracking_uri, run_id, "FAILED")
        raise
    tracking.end_run(tracking_uri, run_id, "FINISHED")
    return dict(client.get_run(run_id).data.metrics)


def run_trial(
    config: dict[str, Any], study: StudyConfig, specs: dict[str, TrialSpec], inputs: dict[str, ScenarioInputs],
    tracking_uri: str, parent_run_id: str,
) -> None:
    """The Ray Tune trainable: `config["trial"]` is the grid cell's key; the rest is bound by
    `tune.with_parameters` (the trials' specs and inputs per scenario)."""
    import ray.tune

    spec = specs[config["trial"]]
    metrics = execute_trial(study, spec, inputs[spec.trial.scenario], tracking_uri, parent_run_id)
    ray.tune.report(metrics)
