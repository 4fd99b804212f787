"""One trial of a study: train a DiT on its latents, roll it out on ID and OOD sets, score, log.

`run_trial` is the Ray Tune trainable (a driver function in Ray's Train-in-Tune pattern: it
builds and fits a TorchTrainer through `phyray.train.trainer.train`, then evaluates).
`execute_trial` is the same work as a plain function. Each trial owns one MLflow child run of
the study's parent run, found again by its tags on a rerun:

- tags `phyray.study`, `phyray.role=trial`, `phyray.trial=<scenario>-<model>-<size>`,
  `mlflow.parentRunId`; `phyray.trial_done=true` once its evaluation is logged;
- params: the DiT run's flat config plus `trial.*` (scenario, model, data size, videos);
- metrics: `train/*` from training, `eval/<split>/<metric>` from the physics report
  (`eval/id/...`, `eval/ood/...` pooled, `eval/ood_<level>/...`, `gt_floor_*` beside each);
- artifacts: `report/report.json|csv`, `rollouts/<split>_{best,worst}.gif` [ground truth | rollout].

A rerun skips a done trial, resumes a trial whose training was checkpointed, and re-evaluates a
trial killed during evaluation (rollout shards already written are kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from phyray.config import StudyConfig, to_flat_dict
from phyray.study.plan import Trial
from phyray.study.prepare import ScenarioInputs, train_or_resume

DONE_TAG = "phyray.trial_done"
EVAL_SPLITS = ("eval_id", "eval_ood")


def trial_tags(study: StudyConfig, trial: Trial) -> dict[str, str]:
    return {
        "phyray.study": study.name,
        "phyray.role": "trial",
        "phyray.trial": trial.key,
        "phyray.scenario": trial.scenario,
        "phyray.model": trial.model,
        "phyray.data_size": trial.data_size,
    }


def find_trial_run(client, experiment_id: str, study: StudyConfig, trial: Trial):
    """The newest MLflow run of this trial in the experiment, or None."""
    from phyray.tracking import newest_run

    return newest_run(
        client, experiment_id, f"tags.`phyray.study` = '{study.name}' and tags.`phyray.trial` = '{trial.key}'"
    )


def is_done(run) -> bool:
    return run is not None and run.data.tags.get(DONE_TAG) == "true" and run.info.status == "FINISHED"


# ---------------------------------------------------------------------------------------------
# Evaluation (runs as a Ray task on the trial's resources, after training freed them)
# ---------------------------------------------------------------------------------------------


def _gif_of(record: dict[str, Any], rollout_dir: Path, reference_dir: str, path: Path) -> Path:
    from phyray.data.shards import decode_frames, iter_rows
    from phyray.train.evaluate import side_by_side_gif

    def frames_of(directory) -> np.ndarray:
        row = next(r for r in iter_rows(directory) if r["video_id"] == record["video_id"])
        return decode_frames(row)

    return side_by_side_gif(frames_of(reference_dir), frames_of(rollout_dir), path)


def evaluate_trial(
    study: StudyConfig, export: str, inputs: ScenarioInputs, trial_dir: str, tracking_uri: str, run_id: str
) -> list[dict[str, Any]]:
    """Roll out the EMA model on both evaluation sets, score, log to the trial's run; report rows."""
    from mlflow.tracking import MlflowClient

    from phyray import tracking
    from phyray.eval.report import evaluate_physics_records, summarize, write_report
    from phyray.eval.rollouts import rollout_dataset
    from phyray.train.evaluate import report_metrics

    directory = Path(trial_dir)
    cond_frames = study.dit_settings().diffusion.cond_frames
    records, gifs = [], []
    for split in EVAL_SPLITS:
        rollout_dir = directory / "rollouts" / split
        rollout_dataset(export, inputs.eval[split], rollout_dir, study.eval.sample_steps, study.eval.batch_size, study.data.seed)
        split_records = evaluate_physics_records(
            rollout_dir, inputs.eval[split], study.eval.parser, cond_frames, ssim=study.eval.ssim
        )
        records += split_records
        scored = [r for r in split_records if np.isfinite(r[study.eval.headline_metric])]
        if study.eval.gifs and scored:
            scored.sort(key=lambda r: r[study.eval.headline_metric])
            for name, record in (("best", scored[0]), ("worst", scored[-1])):
                gifs.append(_gif_of(record, rollout_dir, inputs.eval[split], directory / f"{split}_{name}.gif"))
    rows = summarize(records, study.eval.parser, cond_frames)
    report_json, report_csv = write_report(rows, directory / "report.json")

    client = MlflowClient(tracking_uri)
    tracking.log_metrics(tracking_uri, run_id, report_metrics(rows), step=0)
    for path in (report_json, report_csv):
        client.log_artifact(run_id, str(path), artifact_path="report")
    for path in gifs:
        client.log_artifact(run_id, str(path), artifact_path="rollouts")
    return rows


# ---------------------------------------------------------------------------------------------
# The trial
# ---------------------------------------------------------------------------------------------


def execute_trial(
    study: StudyConfig, trial: Trial, inputs: ScenarioInputs, tracking_uri: str, parent_run_id: str
) -> dict[str, float]:
    """Train, evaluate and log one trial (or return a done trial's metrics); returns its metrics."""
    import ray
    from mlflow.tracking import MlflowClient

    from phyray import tracking
    from phyray.train.trainer import run_dir_of

    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(study.experiment_name).experiment_id
    previous = find_trial_run(client, experiment_id, study, trial)
    if is_done(previous):
        return dict(previous.data.metrics)

    run_cfg = study.train_config(
        "dit", name=trial.key, train=inputs.latents[trial.data_size], model=trial.model, tracking_uri=tracking_uri
    )
    if previous is not None and previous.info.status != "FINISHED":
        run_id = previous.info.run_id  # killed or failed before: carry on in the same run
        client.update_run(run_id, status="RUNNING")
    else:
        params = to_flat_dict(run_cfg) | {f"trial.{k}": v for k, v in trial.as_dict().items()}
        params["trial.num_videos"] = inputs.num_videos[trial.data_size]
        run_id = tracking.start_run(
            tracking_uri, study.experiment_name, trial.key, params,
            tags={"mlflow.parentRunId": parent_run_id, **trial_tags(study, trial)},
        )
    try:
        export = train_or_resume(run_cfg, run_id=run_id)
        # The trial's training resources are free again: the rollouts get the same. "DEFAULT"
        # leaves the Tune trial's placement group, which holds only the driver's sliver of CPU.
        evaluate = ray.remote(evaluate_trial).options(
            num_cpus=run_cfg.workers * run_cfg.cpus_per_worker,
            num_gpus=run_cfg.workers if run_cfg.use_gpu else 0,
            scheduling_strategy="DEFAULT",
        )
        ray.get(evaluate.remote(study, str(export), inputs, str(run_dir_of(run_cfg)), tracking_uri, run_id))
        client.set_tag(run_id, DONE_TAG, "true")
    except BaseException:
        tracking.end_run(tracking_uri, run_id, "FAILED")
        raise
    tracking.end_run(tracking_uri, run_id, "FINISHED")
    return dict(client.get_run(run_id).data.metrics)


def run_trial(
    config: dict[str, Any], study: StudyConfig, inputs: dict[str, ScenarioInputs], tracking_uri: str, parent_run_id: str
) -> None:
    """The Ray Tune trainable: `config["trial"]` is the grid cell; the rest is bound by
    `tune.with_parameters` (inputs per scenario)."""
    import ray.tune

    trial = Trial(**config["trial"])
    ray.tune.report(execute_trial(study, trial, inputs[trial.scenario], tracking_uri, parent_run_id))
