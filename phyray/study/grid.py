"""The study driver: data, VAEs and latents once, then the trial grid on Ray Tune, then the report.

    result = run_study(load_study_config("configs/studies/smoke.yaml"))

Runs wherever Ray is: joined to a cluster under `ray job submit` (or RAY_ADDRESS), else on an
embedded local Ray. MLflow holds the study as one experiment with a parent run (tags
`phyray.study`, `phyray.role=study`) whose children are the VAE runs and the trials (see
`phyray.study.trial`); the parent carries the report (`phyray.study.report`). Rerunning the
same study reuses the parent run, the data, VAEs and latents, skips finished trials and
resumes the rest.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from phyray.config import StudyConfig, to_flat_dict
from phyray.study.plan import Trial, check_fits, cost_plan, expand_grid, max_concurrent_trials
from phyray.study.prepare import ScenarioInputs, generate_inputs, prepare_latents, prepare_vae

# Logical CPU of a trial's own process: it only drives a TorchTrainer and waits, so it should not
# hold a CPU that the trial's workers or data tasks need.
TRIAL_DRIVER_CPU = 0.01


@dataclass
class StudyResult:
    """What a study run leaves: where its report is, its MLflow run, and trials that failed."""

    study_dir: Path
    tracking_uri: str
    parent_run_id: str
    report: dict[str, Any]
    failed: dict[str, str]  # trial key -> error


def log(message: str) -> None:
    print(f"[phyray study] {message}", file=sys.stderr, flush=True)


def ensure_parent_run(cfg: StudyConfig, uri: str) -> str:
    """The study's parent run: the existing one of this study (set RUNNING again) or a new one."""
    from mlflow.tracking import MlflowClient

    from phyray import tracking

    client = MlflowClient(uri)
    experiment_id = tracking.ensure_experiment(client, cfg.experiment_name, tracking.artifact_root_for(uri, cfg.study_dir))
    previous = tracking.newest_run(
        client, experiment_id, f"tags.`phyray.study` = '{cfg.name}' and tags.`phyray.role` = 'study'"
    )
    if previous is not None:
        client.update_run(previous.info.run_id, status="RUNNING")
        return previous.info.run_id
    return tracking.start_run(
        uri, cfg.experiment_name, cfg.name, to_flat_dict(cfg),
        tags={"phyray.study": cfg.name, "phyray.role": "study"},
    )


def pending_trials(cfg: StudyConfig, uri: str) -> tuple[list[Trial], list[Trial]]:
    """(pending, done) trials of the grid, by their MLflow runs."""
    from mlflow.tracking import MlflowClient

    from phyray.study.trial import find_trial_run, is_done

    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(cfg.experiment_name).experiment_id
    pending, done = [], []
    for trial in expand_grid(cfg):
        (done if is_done(find_trial_run(client, experiment_id, cfg, trial)) else pending).append(trial)
    return pending, done


def run_grid(cfg: StudyConfig, trials: list[Trial], inputs: dict[str, ScenarioInputs], uri: str, parent: str) -> dict[str, str]:
    """Run trials on Ray Tune (one TorchTrainer per trial); returns {trial key: error} of failures."""
    import ray
    import ray.tune as tune

    from phyray.study.trial import run_trial

    concurrent = max_concurrent_trials(cfg, ray.cluster_resources(), len(trials))
    log(f"[4] Tune grid: {len(trials)} trials, {concurrent} at a time")
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, study=cfg, inputs=inputs, tracking_uri=uri, parent_run_id=parent),
        {"CPU": TRIAL_DRIVER_CPU},
    )

    def trial_key(trial) -> str:
        return Trial(**trial.config["trial"]).key

    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([t.as_dict() for t in trials])},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrent, trial_name_creator=trial_key, trial_dirname_creator=trial_key
        ),
        run_config=tune.RunConfig(name="tune", storage_path=str(cfg.study_dir / "tune"), verbose=0),
    )
    results = tuner.fit()
    return {
        Trial(**result.config["trial"]).key: f"{type(result.error).__name__}: {result.error}"
        for result in results
        if result.error is not None
    }


def run_study(cfg: StudyConfig) -> StudyResult:
    """Run (or finish) a study end to end; see the module docstring."""
    import ray

    from phyray import tracking
    from phyray.runtime import init_ray, quiet_ray_data
    from phyray.study.report import publish_report

    # [1] Ray (cluster or embedded), and a trial must fit on it before anything runs.
    init_ray(cfg.resources.local_cpus)
    quiet_ray_data()
    check_fits(cfg, ray.cluster_resources())
    study_dir = cfg.study_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "study.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    # [2] MLflow: the study's experiment and parent run.
    uri = tracking.resolve_tracking_uri(cfg.tracking_uri, study_dir)
    parent = ensure_parent_run(cfg, uri)
    log(f"study {cfg.name}: {study_dir}; MLflow {uri} (experiment {cfg.experiment_name}, run {parent})")
    failed: dict[str, str] = {}
    try:
        # [3] Per scenario: datasets, its VAE, latents of every training size (cached, reused).
        inputs: dict[str, ScenarioInputs] = {}
        child_tags = {"mlflow.parentRunId": parent, "phyray.study": cfg.name}
        for scenario in cfg.scenarios:
            log(f"[3] {scenario}: data, VAE and latents in {cfg.data_dir}")
            inputs[scenario] = generate_inputs(cfg, scenario, log=log)
            prepare_vae(cfg, inputs[scenario], uri, child_tags, log=log)
            prepare_latents(cfg, inputs[scenario], log=log)

        # [4] The grid: every trial not finished yet, the most expensive first, so the long
        # trials do not start last and leave the cluster idle at the end.
        pending, done = pending_trials(cfg, uri)
        flops = {row["trial"]: row["train_flops"] + row["eval_flops"] for row in cost_plan(cfg)["trials"]}
        pending.sort(key=lambda trial: -flops[trial.key])
        if done:
            log(f"[4] skipping {len(done)} finished trials: {', '.join(t.key for t in done)}")
        if pending:
            failed = run_grid(cfg, pending, inputs, uri, parent)

        # [5] The report, from MLflow alone, onto the parent run.
        report = publish_report(uri, cfg.experiment_name, study_dir / "report", cfg.eval.headline_metric)
        log(f"[5] report: {report['files']['results.md']}")
    except BaseException:
        tracking.end_run(uri, parent, "FAILED")
        raise
    tracking.end_run(uri, parent, "FAILED" if failed else "FINISHED")
    for key, error in failed.items():
        log(f"trial {key} failed: {error}")
    return StudyResult(study_dir, uri, parent, report, failed)
