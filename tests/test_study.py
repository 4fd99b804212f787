"""The scaling study: config checks, the plan, and the smoke study end to end on real Ray + MLflow.

The end-to-end tests shrink configs/studies/smoke.yaml further (a few steps, a handful of
videos) and share one data cache, so data and the VAE are made once:
- in-process against a real `mlflow server` on 127.0.0.1 (HTTP, proxied artifacts), then rerun
  (finished trials skipped; a trial killed during evaluation finished alone), then its report
  rebuilt from MLflow alone by `phyray study report`;
- submitted with `ray job submit` to a local head started by `ray start --head` with token auth,
  writing to the embedded default SQLite store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from phyray.config import ConfigError, load_study_config
from phyray.study.plan import check_fits, cost_plan, expand_grid
from phyray.study.prepare import scenario_root

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "studies" / "smoke.yaml"
PAPER = REPO / "configs" / "studies" / "paper.yaml"
VENV_BIN = Path(sys.executable).parent
# The smoke study at test size: 2 trials of a few steps on a handful of videos.
TINY = [
    "data_sizes=['16', '32']", "data.eval_id=4", "data.eval_ood=6",
    "vae.train.steps=4", "vae.train.log_every=2", "vae.train.checkpoint_every=4", "vae.train.data.eval_videos=2",
    "dit.steps=6", "dit.log_every=3", "dit.checkpoint_every=3", "dit.batch_size=8", "dit.micro_batch=8",
    "eval.sample_steps=2", "eval.batch_size=4",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, seconds: float = 90, token: str | None = None) -> None:
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# Config, grid and plan (no Ray)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("models=['DiT-S', 'DiT-Q']", "models: unknown model preset 'DiT-Q'"),
        ("scenarios=['uniform_motion', 'pendulum']", "scenarios: unknown scenario 'pendulum'"),
        ("vae.preset=vae-huge", "vae.preset: unknown preset 'vae-huge'"),
        ("data_sizes=['64', 'lots']", "data_sizes: cannot parse 'lots'"),
        ("dit.batch_size=24", "dit.batch_size: 24 is not divisible by micro_batch x workers = 16 x 1"),
        ("dit.model.dit=DiT-S", None),  # allowed: the grid sets it per trial
        ("dit.name=mine", "dit: name are set by the study"),
        ("dit.data.train=/elsewhere", "dit: data.train are set by the study"),
        ("dit.stepz=3", "dit.stepz: Extra inputs are not permitted"),
    ],
)
def test_bad_study_configs_fail_at_load_naming_the_field(override, message):
    if message is None:
        load_study_config(SMOKE, [override])
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_study_config(SMOKE, [override])


def test_grid_order_and_resource_fit():
    cfg = load_study_config(PAPER)
    trials = expand_grid(cfg)
    assert len(trials) == 27 and trials[0].key == "uniform_motion-DiT-S-30K" and trials[-1].key == "parabola-DiT-L-3M"
    check_fits(cfg, {"CPU": 64, "GPU": 8})  # one 8-GPU node holds a trial
    with pytest.raises(ConfigError, match="one trial needs 8 GPU .* the cluster has 4"):
        check_fits(cfg, {"CPU": 64, "GPU": 4})


def test_plan_counts_tokens_flops_and_gpu_hours(capsys):
    from phyray.models.info import model_info, peak_flops

    sys.path.insert(0, str(REPO / "studies"))
    import scaling_law

    assert scaling_law.main(["--config", str(PAPER), "--plan", "--gpu", "H100", "--mfu", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "27 trials" in out and "on H100 at 50% MFU" in out
    plan = cost_plan(load_study_config(PAPER, ["plan.gpu=H100", "plan.mfu=0.5"]))
    dit_b = next(r for r in plan["trials"] if r["trial"] == "collision-DiT-B-300K")
    info = model_info("DiT-B", 128, 32)
    assert dit_b["tokens_per_video"] == 9 * 8 * 8 == info["tokens_per_video"]
    assert dit_b["train_flops"] == info["train_flops_per_video"] * 100_000 * 256
    eval_flops = info["forward_flops_per_video"] * 50 * (2000 + 4800)  # collision's eval sizes
    assert dit_b["eval_flops"] == eval_flops
    assert dit_b["gpu_hours"] == pytest.approx((dit_b["train_flops"] + eval_flops) / (0.5 * peak_flops("H100")) / 3600)
    assert f"{plan['total_gpu_hours']:,.1f} GPU-hours" in out


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory):
    return tmp_path_factory.mktemp("study-data")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 (SQLite backend, proxied artifacts)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    server = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "w"),
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health")
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def http_study(ray_local, shared_data, mlflow_server, tmp_path_factory):
    from phyray.study.grid import run_study

    out = tmp_path_factory.mktemp("studies")
    cfg = load_study_config(SMOKE, [*TINY, f"output_dir={out}", f"data_dir={shared_data}", f"tracking_uri={mlflow_server}"])
    return cfg, run_study(cfg)


def trial_runs(client: MlflowClient, experiment: str):
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], filter_string="tags.`phyray.role` = 'trial'")


def test_study_over_http_mlflow_leaves_the_layout(http_study, mlflow_server):
    cfg, result = http_study
    assert result.failed == {}
    client = MlflowClient(mlflow_server)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["phyray.role"] == "study"
    assert parent.data.params["models"] == "[DiT-T]"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"results.csv", "results.md", "scaling_curves.png"}

    runs = trial_runs(client, cfg.experiment_name)
    assert sorted(r.data.tags["phyray.trial"] for r in runs) == ["uniform_motion-DiT-T-16", "uniform_motion-DiT-T-32"]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["phyray.trial_done"] == "true"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["model.dit"] == "DiT-T" and run.data.params["steps"] == "6"
        metrics = run.data.metrics
        for key in ("train/loss", "eval/id/vel_err_per_frame", "eval/id/vel_err_mean_velocity",
                    "eval/id/gt_floor_vel_err_per_frame", "eval/ood/vel_err_per_frame",
                    "eval/ood_velocity/vel_err_per_frame", "eval/ood_radius/parse_fail_rate",
                    "eval/ood_both/psnr", "eval/id/ssim"):
            assert key in metrics, key
        # The floor is the parser on ground truth: far below any 6-step model.
        assert metrics["eval/id/gt_floor_vel_err_mean_velocity"] < 0.05
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
        assert artifacts == {"report/report.json", "report/report.csv"}
        gifs = {a.path for a in client.list_artifacts(run.info.run_id, "rollouts")}
        assert gifs == {f"rollouts/{s}_{w}.gif" for s in ("eval_id", "eval_ood") for w in ("best", "worst")}
    vae_runs = client.search_runs([parent.info.experiment_id], filter_string="tags.`phyray.role` = 'vae'")
    assert len(vae_runs) == 1 and "eval/id/vel_err_per_frame" in vae_runs[0].data.metrics


def test_rollouts_are_shards_that_the_cli_scores_the_same(http_study, tmp_path):
    from phyray.cli import main

    cfg, result = http_study
    trial_dir = cfg.study_dir / "trials" / "uniform_motion-DiT-T-32"
    logged = {(r["split"], r["ood_level"], r["metric"]): r["value"] for r in json.loads((trial_dir / "report.json").read_text())}
    reference = scenario_root(cfg, "uniform_motion") / f"eval_ood-{cfg.data.eval_ood}-s{cfg.data.seed}"
    report = tmp_path / "ood.json"
    assert main(["eval", "physics", "--rollouts", str(trial_dir / "rollouts" / "eval_ood"),
                 "--reference", str(reference), "--out", str(report), "--quiet"]) == 0
    for row in json.loads(report.read_text()):
        assert row["value"] == pytest.approx(logged[("eval_ood", row["ood_level"], row["metric"])], nan_ok=True)


def test_rerun_skips_finished_trials_and_finishes_an_interrupted_one(http_study, mlflow_server):
    from phyray.study.grid import run_study

    cfg, first = http_study
    client = MlflowClient(mlflow_server)
    before = {r.data.tags["phyray.trial"]: r for r in trial_runs(client, cfg.experiment_name)}
    # Interrupt one trial after training, during evaluation: not done, left RUNNING, no report.
    killed = before["uniform_motion-DiT-T-16"]
    client.delete_tag(killed.info.run_id, "phyray.trial_done")
    client.update_run(killed.info.run_id, status="RUNNING")
    trial_dir = cfg.study_dir / "trials" / "uniform_motion-DiT-T-16"
    (trial_dir / "report.json").unlink()
    shutil.rmtree(trial_dir / "rollouts" / "eval_ood")
    checkpoints = sorted(p.name for p in trial_dir.rglob("checkpoint_*"))

    second = run_study(cfg)
    assert second.failed == {} and second.parent_run_id == first.parent_run_id
    after = {r.data.tags["phyray.trial"]: r for r in trial_runs(client, cfg.experiment_name)}
    assert after.keys() == before.keys()  # no new runs: the interrupted trial carried on in its own
    done = after["uniform_motion-DiT-T-32"]
    assert done.info.end_time == before["uniform_motion-DiT-T-32"].info.end_time  # untouched
    resumed = after["uniform_motion-DiT-T-16"]
    assert resumed.info.status == "FINISHED" and resumed.data.tags["phyray.trial_done"] == "true"
    assert (trial_dir / "report.json").is_file()
    assert sorted(p.name for p in trial_dir.rglob("checkpoint_*")) == checkpoints  # not retrained
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "train/loss")]
    assert steps == [3, 6]


def test_study_report_rebuilds_from_mlflow_alone(http_study, mlflow_server, tmp_path, capsys):
    from phyray.cli import main

    cfg, result = http_study
    out = tmp_path / "report"
    assert main(["study", "report", "--experiment", cfg.experiment_name, "--tracking-uri", mlflow_server, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("trial,scenario,model,data_size,num_videos,run_id,eval/")
    client = MlflowClient(mlflow_server)
    for run in trial_runs(client, cfg.experiment_name):
        value = run.data.metrics["eval/id/vel_err_mean_velocity"]
        assert f"| {run.data.tags['phyray.data_size']} | {run.data.params['trial.num_videos']} | {value:.4f} |" in printed
    assert (out / "scaling_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["study", "report", "--experiment", "no-such-study", "--tracking-uri", mlflow_server]) == 2


def test_a_grid_too_big_for_the_cluster_fails_before_running(ray_local, tmp_path):
    from phyray.study.grid import run_study

    cfg = load_study_config(SMOKE, [*TINY, f"output_dir={tmp_path}", f"data_dir={tmp_path / 'data'}", "dit.use_gpu=true"])
    with pytest.raises(ConfigError, match="one trial needs 1 GPU .* the cluster has 0"):
        run_study(cfg)
    assert not (tmp_path / "data").exists() and not cfg.study_dir.exists()


@pytest.fixture
def ray_head(ray_local, tmp_path):
    """A local Ray head started by `ray start --head`: dashboard on 127.0.0.1, token auth on."""
    import ray

    ray.shutdown()  # the session's embedded Ray; a fresh one starts on the next init_ray
    port, dashboard = free_port(), free_port()
    token = "phyray-test-token"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    temp = Path(os.environ["RAY_TMPDIR"]) / "head"
    start = [str(VENV_BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=4",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={temp}",
             "--object-store-memory=400000000", "--disable-usage-stats"]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=180)
    try:
        with pytest.raises(urllib.error.HTTPError, match="401"):  # token auth is on
            urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/api/version", timeout=5)
        wait_for_http(f"http://127.0.0.1:{dashboard}/api/version", token=token)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        subprocess.run([str(VENV_BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        from phyray.runtime import init_ray

        init_ray(num_cpus=4)  # give the rest of the session its embedded Ray back


@pytest.mark.slow
def test_job_submit_to_a_local_head_runs_the_smoke_study(ray_head, shared_data, tmp_path):
    address, env = ray_head
    out = tmp_path / "studies"
    overrides = [*TINY, f"output_dir={out}", f"data_dir={shared_data}"]
    submit = [str(VENV_BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
              "python", "studies/scaling_law.py", "--config", "configs/studies/smoke.yaml"]
    submit += [f"--set={o}" for o in overrides]
    job = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=900)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout

    uri = f"sqlite:///{out / 'smoke' / 'mlflow.db'}"  # the embedded default store
    client = MlflowClient(uri)
    runs = trial_runs(client, "phyray-study-smoke")
    assert len(runs) == 2 and all(r.data.tags["phyray.trial_done"] == "true" for r in runs)
    assert all("eval/ood/vel_err_mean_velocity" in r.data.metrics for r in runs)
    assert (out / "smoke" / "report" / "scaling_curves.png").is_file()
