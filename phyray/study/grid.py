"""The study driver: data, VAEs and latents once, then the trial grid on Ray Tune, then the report.

    result = run_study(load_study_config("configs/studies/smoke.yaml"))

Runs wherever Ray is: joined to a cluster under `ray job submit` (or RAY_ADDRESS), else on an
embedded local Ray. MLflow holds the study as one experiment; each distinct study config has
its own parent run (tags `phyray.study`, `phyray.role=study`, `phyray.study_id`, and
`phyray.grid`: the identity of every trial of its grid), whose children are the VAE runs and
the trials it started (see `phyray.study.trial`). The report is built from exactly the trials
of that grid. Rerunning the same config reuses its parent run, the data, VAEs and latents,
skips finished trials (whichever run finished them) and resumes the rest; a changed setting gets
a new parent run and new trials for the cells it changes, and leaves the old ones untouched.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from phyray.artifacts import Identity, result_settings
from phyray.config import COMBINATORIAL, StudyConfig, to_flat_dict
from phyray.study.plan import check_fits, cost_plan, expand_grid, max_concurrent_trials
from phyray.study.prepare import (
    ScenarioInputs,
    generate_inputs,
    mix_vae_sets,
    prepare_latents,
    prepare_vae,
    prepare_vae_floors,
)
from phyray.study.settings import check_study, resolve_paths
from phyray.study.trial import TrialSpec, plan_trial

# Logical CPU of a trial's own process: it only drives a TorchTrainer and waits, so it should not
# hold a CPU that the trial's workers or data tasks need.
TRIAL_DRIVER_CPU = 0.01
# Ray, Tune and MLflow are imported inside the functions that run the study: importing the
# driver (tests, `--plan`) does not start or load them.
# Study-config fields that change no result: where things are stored and logged, how the
# cluster is used, the cost-plan assumptions.
NON_RESULT_STUDY_FIELDS = ("experiment", "output_dir", "data_dir", "tracking_uri", "resources", "plan")
# Fields added after studies were first named by identity: at these values (the behaviour from
# before they existed) they are left out, so adding them renamed no study's parent run.
LATER_STUDY_FIELD_DEFAULTS = {"eval.precision": "fp32"}
RAY_LOG = "ray.log"  # in the study directory: Ray's messages phyray cannot act on (RayChatter)


@dataclass
class StudyResult:
    """What a study run leaves: where its report is, its MLflow run, and trials that failed."""

    study_dir: Path
    tracking_uri: str
    parent_run_id: str
    report: dict[str, Any]
    failed: dict[str, str]  # trial key -> error


def study_identity(cfg: StudyConfig) -> Identity:
    """A study config's identity: every field but NON_RESULT_STUDY_FIELDS and the later ones at
    their defaults (its name included, so two studies never share a parent run)."""
    settings = result_settings(cfg.model_dump(mode="json"), NON_RESULT_STUDY_FIELDS, LATER_STUDY_FIELD_DEFAULTS)
    return Identity("study", settings)


def log(message: str) -> None:
    print(f"[phyray study] {message}", file=sys.stderr, flush=True)


def ensure_parent_run(cfg: StudyConfig, uri: str) -> str:
    """The parent run of this study config: the existing one (set RUNNING again) or a new one."""
    from mlflow.tracking import MlflowClient

    from phyray import tracking

    identity = study_identity(cfg)
    client = MlflowClient(uri)
    experiment_id = tracking.ensure_experiment(client, cfg.experiment_name, tracking.artifact_root_for(uri, cfg.study_dir))
    previous = tracking.newest_run(
        client, experiment_id, f"tags.`phyray.study_id` = '{identity.id}' and tags.`phyray.role` = 'study'"
    )
    if previous is not None:
        client.update_run(previous.info.run_id, status="RUNNING")
        return previous.info.run_id
    return tracking.start_run(
        uri, cfg.experiment_name, cfg.name, to_flat_dict(cfg),
        tags={"phyray.study": cfg.name, "phyray.role": "study", "phyray.study_id": identity.id},
    )


def pending_trials(cfg: StudyConfig, specs: list[TrialSpec], uri: str) -> tuple[list[TrialSpec], list[TrialSpec]]:
    """(pending, done) trials of the grid, by the MLflow runs of their identities."""
    from mlflow.tracking import MlflowClient

    from phyray.study.trial import find_trial_run, is_done

    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(cfg.experiment_name).experiment_id
    pending, done = [], []
    for spec in specs:
        (done if is_done(find_trial_run(client, experiment_id, spec.identity.id)) else pending).append(spec)
    return pending, done


def trial_lines(names: dict[str, str], metrics: tuple[str, ...]):
    """A Tune callback that logs the grid as a compact table, one line per trial as it starts
    and as it ends: its time and, per evaluation split, the first of `metrics` it logged
    (`names`: Tune trial key -> trial name). Tune's own reporter is off."""
    from ray.tune import Callback

    width = max(map(len, names.values()))

    def scores(result: dict[str, Any]) -> str:
        for metric in metrics:
            found = {k.split("/")[1]: v for k, v in sorted(result.items())
                     if k.startswith("eval/") and k.endswith(f"/{metric}") and k.count("/") == 2}
            if found:
                return f"  {metric}: " + ", ".join(f"{split} {value:.4g}" for split, value in found.items())
        return ""

    class TrialLines(Callback):
        def __init__(self):
            self.started: dict[str, float] = {}
            self.ended = 0

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started[trial.trial_id] = time.monotonic()
            log(f"  {names[trial.config['trial']]:<{width}}  started")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._ended(trial, "done", scores(trial.last_result or {}))

        def on_trial_error(self, iteration, trials, trial, **info):
            self._ended(trial, "FAILED", "")

        def _ended(self, trial, status: str, detail: str) -> None:
            self.ended += 1
            minutes, seconds = divmod(round(time.monotonic() - self.started.get(trial.trial_id, time.monotonic())), 60)
            log(f"  {names[trial.config['trial']]:<{width}}  {status} {self.ended}/{len(names)} "
                f"in {minutes}m{seconds:02d}s{detail}")

    return TrialLines()


def run_grid(
    cfg: StudyConfig, specs: list[TrialSpec], inputs: dict[str, ScenarioInputs], uri: str, parent: str
) -> dict[str, str]:
    """Run trials on Ray Tune (one TorchTrainer per trial); returns {trial key: error} of failures."""
    import ray
    import ray.tune as tune

    from phyray.runtime import ResourceWatch
    from phyray.study.trial import run_trial

    concurrent = max_concurrent_trials(cfg, ray.cluster_resources(), len(specs))
    log(f"[4] Tune grid: {len(specs)} trials, {concurrent} at a time")
    by_key = {spec.trial.key: spec for spec in specs}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, study=cfg, specs=by_key, inputs=inputs, tracking_uri=uri, parent_run_id=parent),
        {"CPU": TRIAL_DRIVER_CPU},
    )

    names = {key: spec.run_cfg.name for key, spec in by_key.items()}

    def trial_name(trial) -> str:
        return names[trial.config["trial"]]

    # Ray 2.60's new console output prints its experiment banner and result paths whatever the
    # verbosity; the classic reporter honours verbose=0 (phyray reports the grid itself).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(list(by_key))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrent, trial_name_creator=trial_name, trial_dirname_creator=trial_name
        ),
        run_config=tune.RunConfig(
            name="tune", storage_path=str(cfg.study_dir / "tune"), verbose=0,
            # PSNR for the combinatorial trials: they score videos, not a physics metric.
            callbacks=[trial_lines(names, (cfg.eval.headline_metric, "psnr"))],
        ),
    )
    with ResourceWatch("Tune grid", log):
        results = tuner.fit()
    return {
        result.config["trial"]: f"{type(result.error).__name__}: {result.error}"
        for result in results
        if result.error is not None
    }


def run_study(cfg: StudyConfig, verbose: bool = False) -> StudyResult:
    """Run (or finish) a study end to end; see the module docstring. Ray's messages that phyray
    cannot act on go to <study dir>/ray.log, or with `verbose` where Ray prints them."""
    import ray

    from phyray import tracking
    from phyray.runtime import RayChatter, configure_ray_data, init_ray
    from phyray.study.report import publish_report

    # [1] Paths resolved here, in the driver (Tune trials run in other working directories);
    # a database store must answer, Ray (cluster or embedded) start, and every stage fit on it
    # before anything runs.
    cfg = resolve_paths(cfg)
    check_study(cfg)
    tracking.check_store(cfg.tracking_uri)
    if COMBINATORIAL in cfg.scenarios:
        from phyray.study.combinatorial import check_phyre_environment, skipped_metrics

        check_phyre_environment()
        for line in skipped_metrics(cfg):
            log(line)
    init_ray(cfg.resources.local_cpus)
    configure_ray_data()
    check_fits(cfg, ray.cluster_resources())
    study_dir = cfg.study_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "study.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    with RayChatter(study_dir / RAY_LOG, verbose) as chatter:
        # [2] MLflow: the study's experiment and this config's parent run.
        uri = tracking.resolve_tracking_uri(cfg.tracking_uri, study_dir)
        parent = ensure_parent_run(cfg, uri)
        log(f"study {cfg.name} ({study_identity(cfg).id}): {study_dir}; MLflow {uri} "
            f"(experiment {cfg.experiment_name}, run {parent})")
        failed: dict[str, str] = {}
        try:
            # [3] Per scenario: datasets (then, for a VAE the scenarios share, their VAE sets mixed
            # into one), its VAE(s), latents of every training size, the VAE's floor on each
            # evaluation set (cached, reused).
            inputs: dict[str, ScenarioInputs] = {}
            child_tags = {"mlflow.parentRunId": parent, "phyray.study": cfg.name}
            for scenario in cfg.scenarios:
                log(f"[3] {scenario}: data in {cfg.data_dir}")
                inputs[scenario] = generate_inputs(cfg, scenario, log=log)
            if cfg.vae.scope == "study":
                mix_vae_sets(cfg, inputs, log=log)
            for scenario in cfg.scenarios:
                log(f"[3] {scenario}: VAE, latents and the VAE's floor")
                prepare_vae(cfg, inputs[scenario], uri, child_tags, log=log)
                prepare_latents(cfg, inputs[scenario], log=log)
                prepare_vae_floors(cfg, inputs[scenario], uri, log=log)

            # [4] The grid, every trial named by its identity: those not finished yet, the most
            # expensive first, so the long trials do not start last and leave the cluster idle.
            specs = [plan_trial(cfg, trial, inputs[trial.scenario], uri) for trial in expand_grid(cfg)]
            tracking.set_tags(uri, parent, {"phyray.grid": json.dumps({s.trial.key: s.identity.id for s in specs})})
            pending, done = pending_trials(cfg, specs, uri)
            flops = {row["trial"]: row["train_flops"] + row["eval_flops"] for row in cost_plan(cfg)["trials"]}
            pending.sort(key=lambda spec: -flops[spec.trial.key])
            if done:
                log(f"[4] {len(done)} trials already done: {', '.join(s.run_cfg.name for s in done)}")
            if pending:
                failed = run_grid(cfg, pending, inputs, uri, parent)

            # [5] The report of this config's grid, from MLflow alone, onto the parent run.
            report_dir = study_dir / "reports" / study_identity(cfg).id
            report = publish_report(uri, cfg.experiment_name, report_dir, cfg.eval.headline_metric, parent)
            log(f"[5] report: {report['summary']}")
        except BaseException:
            tracking.end_run(uri, parent, "FAILED")
            raise
        tracking.end_run(uri, parent, "FAILED" if failed else "FINISHED")
        for key, error in failed.items():
            log(f"trial {key} failed: {error}")
    if chatter.lines:
        log(chatter.summary(study_dir / RAY_LOG))
    return StudyResult(study_dir, uri, parent, report, failed)
