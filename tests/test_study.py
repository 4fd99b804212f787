"""The scaling study: config checks, the plan, and the smoke study end to end on real Ray + MLflow.

The end-to-end tests shrink configs/studies/smoke.yaml further (a few steps, a handful of
videos) and share one data cache, so data and the VAE are made once:
- in-process against a real `mlflow server` on 127.0.0.1 (HTTP, proxied artifacts, its store a
  throwaway PostgreSQL: the `postgres` fixture of conftest.py), then rerun
  (finished trials skipped; a trial killed during evaluation finished alone), then its report
  rebuilt from MLflow alone by `phyray study report`;
- submitted with `ray job submit` to a 3-node local cluster (tests/test_multinode.py), writing to
  the embedded default SQLite store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port, trial_runs
from mlflow.tracking import MlflowClient

from phyray.config import ConfigError
from phyray.study.plan import check_fits, cost_plan, expand_grid
from phyray.study.prepare import scenario_root
from phyray.study.settings import load_study_config

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
        ("data.resolution=33", "data.resolution: 33 is not a multiple of 8"),
        ("dit.model.patch=[1, 3, 3]", "data.resolution: 32 is not a multiple of 12"),
        ("dit.diffusion.cond_frames=16", "dit.diffusion.cond_frames: 16 leaves nothing to predict of 16 frames"),
        ("vae.train.vae_clip_frames=17", "vae.train.vae_clip_frames: 17 is longer than the 16-frame videos"),
        ("seeds=[0, 0]", "seeds: [0, 0] must be distinct integers >= 0"),
        ("seeds=[]", "seeds: List should have at least 1 item"),
        ("dit.seed=3", "dit.seed: the study's `seeds` set it"),
        ("eval.split=validation", "eval.split: Input should be 'test' or 'dev'"),
        ("eval.split=256", "eval.split: Input should be 'test' or 'dev'"),
        ("tracking_uri=[256]", "tracking_uri: Input should be a valid string"),
        ("models=[DiT-T", "override 'models=[DiT-T': not valid YAML"),
        ("vae.data_span=ood", "vae.data_span: Input should be 'id' or 'id+ood'"),
    ],
)
def test_bad_study_configs_fail_at_load_naming_the_field(override, message):
    if message is None:
        load_study_config(SMOKE, [override])
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_study_config(SMOKE, [override])


def test_a_study_that_would_compile_without_a_cpp_compiler_fails_at_load():
    from torch._inductor import config as inductor_config

    with inductor_config.patch({"cpp.cxx": (None, "no-such-c++")}):  # the compilers inductor tries
        with pytest.raises(ConfigError, match=r"dit.compile: torch.compile on CPU needs a C\+\+ compiler"):
            load_study_config(SMOKE, ["dit.compile=true"])
        load_study_config(SMOKE, ["dit.compile=false"])


def test_set_keeps_a_text_fields_value_as_typed():
    cfg = load_study_config(SMOKE, [
        "name=256", "experiment=1.50", "data_sizes=[16, 32]", "vae.train_size=32", "tracking_uri=null",
        "seeds=[0, 1]", "eval.ssim=no",
    ])
    assert (cfg.name, cfg.experiment, cfg.data_sizes, cfg.vae.train_size) == ("256", "1.50", ["16", "32"], "32")
    # Null is still "unset", and fields that are not text still take YAML's numbers and booleans.
    assert cfg.tracking_uri is None and cfg.seeds == [0, 1] and cfg.eval.ssim is False


def test_grid_order_and_resource_fit():
    cfg = load_study_config(PAPER)
    trials = expand_grid(cfg)
    assert len(trials) == 27 and trials[0].key == "uniform_motion-DiT-S-30K-s0" and trials[-1].key == "parabola-DiT-L-3M-s0"
    seeded = expand_grid(load_study_config(PAPER, ["seeds=[0, 1, 2]"]))
    assert len(seeded) == 81 and [t.key for t in seeded[:3]] == [f"uniform_motion-DiT-S-30K-s{s}" for s in range(3)]
    assert len({(t.scenario, t.model, t.data_size) for t in seeded}) == 27
    check_fits(cfg, {"CPU": 64, "GPU": 8})  # one 8-GPU node holds a trial
    with pytest.raises(ConfigError, match="VAE training: needs 8 GPU at once .* the cluster has 4"):
        check_fits(cfg, {"CPU": 64, "GPU": 4})
    # Every stage, not only the trials: the smoke VAE's 2 workers + a data task on a 2-CPU head.
    with pytest.raises(ConfigError, match=r"VAE training: needs 3 CPU at once .*vae.train.workers.* the cluster has 2"):
        check_fits(load_study_config(SMOKE), {"CPU": 2})


def test_vae_seeds_shared_or_one_vae_per_study_seed():
    from phyray.study.prepare import vae_runs

    manifest = {"identity": {"kind": "dataset", "id": "0123456789ab", "settings": {}, "inputs": {}}}
    shared = vae_runs(load_study_config(SMOKE, ["seeds=[0, 1]"]), "train", manifest, "eval", "vae")
    assert list(shared) == [None]
    per_seed = vae_runs(load_study_config(SMOKE, ["seeds=[0, 1]", "vae.seeds=per_seed"]), "train", manifest, "eval", "vae")
    assert list(per_seed) == [0, 1] and [run.seed for run, _ in per_seed.values()] == [0, 1]
    ids = [identity.id for _, identity in per_seed.values()]
    assert len(set(ids)) == 2 and all(run.name.endswith(identity.id) for run, identity in per_seed.values())
    # Seed 0 of per_seed is the shared VAE when the shared one trains with seed 0 too.
    assert ids[0] == shared[None][1].id
    with pytest.raises(ConfigError, match="vae.seeds: 's2d-f4t2' has no weights"):
        load_study_config(SMOKE, ["vae.preset=s2d-f4t2", "vae.train={}", "vae.seeds=per_seed"])


def test_the_vae_can_learn_from_a_wider_set_than_the_dits(ray_local, tmp_path):
    """vae.data_span: id+ood: the VAE's own training set spans the ID and OOD radii and speeds
    (as a pretrained VAE has seen them); the DiT's sets stay ID; by default the VAE shares the
    DiT's largest set."""
    from phyray.data import iter_rows
    from phyray.study.prepare import generate_inputs, vae_train_key

    assert vae_train_key(load_study_config(SMOKE, TINY), "uniform_motion") == "32"
    wide = ["vae.data_span=id+ood", f"data_dir={tmp_path}"]
    cfg = load_study_config(SMOKE, [*TINY, *wide])
    inputs = generate_inputs(cfg, "uniform_motion", log=lambda *_: None)
    assert vae_train_key(cfg, "uniform_motion") == "vae-32" and set(inputs.train) == {"16", "32", "vae-32"}

    def ranges(key):
        rows = list(iter_rows(inputs.train[key]))
        radii = [r for row in rows for r in row["radii"]]
        speeds = [abs(row["velocities"][0][0][0]) for row in rows]
        return min(radii), max(radii), max(speeds)

    low, high, fastest = ranges("vae-32")
    assert low < 0.7 and high > 1.4 and fastest > 4.0
    for key in ("16", "32"):
        low, high, fastest = ranges(key)
        assert 0.7 - 1e-6 <= low and high <= 1.4 + 1e-6 and fastest <= 4.0 + 1e-6  # stored as float32


def test_a_setting_a_later_stage_rejects_fails_the_plan_in_one_line(capsys):
    sys.path.insert(0, str(REPO / "studies"))
    import scaling_law

    assert scaling_law.main(["--config", str(SMOKE), "--plan", "--set", "data.resolution=33"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.resolution: 33 is not a multiple of 8" in err


def test_a_postgresql_store_that_refuses_fails_before_anything_is_written(tmp_path, capsys):
    """A study whose `tracking_uri` is a PostgreSQL nobody listens at stops at once in one line
    naming the URI, its password masked: no study or data directory, no local store, no Ray."""
    import ray

    sys.path.insert(0, str(REPO / "studies"))
    import scaling_law

    ray_before = ray.is_initialized()
    port = free_port()  # bound and released: nothing listens there
    uri = f"postgresql://phyray:not-to-be-shown@127.0.0.1:{port}/mlflow"
    overrides = [f"output_dir={tmp_path / 'studies'}", f"data_dir={tmp_path / 'data'}", f"tracking_uri={uri}"]
    assert scaling_law.main(["--config", str(SMOKE), *(f"--set={o}" for o in overrides)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"scaling_law: error: tracking_uri: cannot connect to postgresql://phyray:***@127.0.0.1:{port}/mlflow: ")
    assert "Connection refused" in err and len(err.splitlines()) == 1 and "not-to-be-shown" not in err
    assert list(tmp_path.iterdir()) == [] and ray.is_initialized() == ray_before


def test_a_ray_address_with_no_ray_there_fails_in_one_line(tmp_path):
    """Ray itself would retry for minutes, logging a warning every few seconds."""
    port = free_port()  # bound and released: nothing listens there
    overrides = [f"--set=output_dir={tmp_path / 'studies'}", f"--set=data_dir={tmp_path / 'data'}"]
    study = subprocess.run(
        [sys.executable, str(REPO / "studies" / "scaling_law.py"), "--config", str(SMOKE), *overrides],
        capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": f"127.0.0.1:{port}"},
    )
    assert study.returncode == 2 and study.stdout == ""
    assert study.stderr.splitlines() == [
        f"scaling_law: error: RAY_ADDRESS=127.0.0.1:{port}: no Ray answers there (Connection refused); "
        "start one (`ray start --head`) or unset RAY_ADDRESS to run on a local Ray"
    ]
    assert list(tmp_path.iterdir()) == []


def test_the_printed_mlflow_ui_command_runs_as_printed(monkeypatch, tmp_path):
    import shlex

    from phyray.tracking import ui_hint

    assert ui_hint("http://127.0.0.1:5000") == "http://127.0.0.1:5000"  # a server: its URL to open
    uri = f"sqlite:///{tmp_path / 'with space' / 'mlflow.db'}"
    # This interpreter's environment, relative from above it (`.venv/bin/mlflow`), else absolute.
    for cwd, relative in ((Path(sys.prefix).parent, True), (tmp_path, False)):
        monkeypatch.chdir(cwd)
        *program, ui, flag, store = shlex.split(ui_hint(uri))
        assert (ui, flag, store) == ("ui", "--backend-store-uri", uri)
        assert Path(program[0]).is_absolute() != relative and os.access(program[0], os.X_OK)


def test_plan_counts_tokens_flops_and_gpu_hours(capsys):
    from phyray.models.info import model_info, peak_flops

    sys.path.insert(0, str(REPO / "studies"))
    import scaling_law

    assert scaling_law.main(["--config", str(PAPER), "--plan", "--gpu", "H100", "--mfu", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "27 trials" in out and "on H100 at 50% MFU" in out
    plan = cost_plan(load_study_config(PAPER, ["plan.gpu=H100", "plan.mfu=0.5"]))
    dit_b = next(r for r in plan["trials"] if r["trial"] == "collision-DiT-B-300K-s0")
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
def mlflow_server(tmp_path_factory, postgres):
    """A real MLflow tracking server on 127.0.0.1 as cluster/mlflow.yaml runs it: its backend
    store PostgreSQL, artifacts proxied."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    server = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", postgres, "--serve-artifacts", "--artifacts-destination", str(root / "artifacts")],
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
def study_cwd(tmp_path_factory):
    """The working directory the studies below are started from: their `output_dir` is the
    relative "studies", which must be resolved here, not in Tune trials' own directories."""
    cwd = tmp_path_factory.mktemp("cwd")
    before = os.getcwd()
    os.chdir(cwd)
    yield cwd
    os.chdir(before)


@pytest.fixture(scope="module")
def http_study(ray_local, study_data, mlflow_server, study_cwd):
    from phyray.study.grid import run_study

    cfg = load_study_config(SMOKE, [*TINY, "output_dir=studies", f"data_dir={study_data}", f"tracking_uri={mlflow_server}"])
    return cfg, run_study(cfg)


def trial_dir_of(run) -> Path:
    """A trial's run directory, from its MLflow params (output_dir is the resolved study path)."""
    return Path(run.data.params["output_dir"]) / run.data.params["name"]


def test_study_over_http_mlflow_leaves_the_layout(http_study, mlflow_server, study_cwd):
    cfg, result = http_study
    assert result.failed == {}
    client = MlflowClient(mlflow_server)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["phyray.role"] == "study"
    assert parent.data.params["models"] == "[DiT-T]"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"results.csv", "results.md", "scaling_curves.png"}
    grid = json.loads(parent.data.tags["phyray.grid"])

    runs = trial_runs(client, cfg.experiment_name)
    assert sorted(r.data.tags["phyray.trial"] for r in runs) == ["uniform_motion-DiT-T-16-s0", "uniform_motion-DiT-T-32-s0"]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["phyray.trial_done"] == "true"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert grid[run.data.tags["phyray.trial"]] == run.data.tags["phyray.trial_id"]
        assert run.data.params["model.dit"] == "DiT-T" and run.data.params["steps"] == "6"
        # Products land where the user said, named by identity: <cwd>/studies/smoke/trials/<key>-<dit id>.
        directory = trial_dir_of(run)
        assert directory == study_cwd / "studies" / "smoke" / "trials" / f"{run.data.tags['phyray.trial']}-{run.data.tags['phyray.dit_id']}"
        assert (directory / "export" / "model.pt").is_file() and len(list(directory.glob("reports/*/report.json"))) == 1
        assert len(list(directory.glob("rollouts/eval_*-*/manifest.json"))) == 2
        metrics = run.data.metrics
        for key in ("train/loss", "eval/id/vel_err_per_frame", "eval/id/vel_err_mean_velocity",
                    "eval/id/gt_floor_vel_err_per_frame", "eval/ood/vel_err_per_frame",
                    "eval/ood_velocity/vel_err_per_frame", "eval/ood_radius/parse_fail_rate",
                    "eval/ood_both/psnr", "eval/id/ssim", "eval/id/vae_floor_vel_err_mean_velocity",
                    "eval/ood_velocity/vae_floor_vel_err_per_frame", "eval/id/vae_floor_psnr", "eval/id/paper_vel_err",
                    "eval/id/gt_floor_paper_vel_err"):
            assert key in metrics, key
        # The floor is the parser on ground truth: far below any 6-step model.
        assert metrics["eval/id/gt_floor_vel_err_mean_velocity"] < 0.05
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
        assert artifacts == {"report/report.json", "report/report.csv"}
        gifs = {a.path for a in client.list_artifacts(run.info.run_id, "rollouts")}
        assert gifs == {f"rollouts/{s}_{w}.gif" for s in ("eval_id", "eval_ood") for w in ("best", "worst")}
    vae_runs = client.search_runs([parent.info.experiment_id], filter_string="tags.`phyray.role` = 'vae'")
    assert len(vae_runs) == 1 and "eval/id/vel_err_per_frame" in vae_runs[0].data.metrics
    assert vae_runs[0].data.tags["phyray.vae_id"] in vae_runs[0].data.params["name"]
    # The VAE's floor: its reconstructions of both evaluation sets, scored like rollouts, on its
    # run and beside the parse floor in every trial's report, equal in both places.
    vae_metrics = vae_runs[0].data.metrics
    for split in ("id", "ood", "ood_radius"):
        floor = vae_metrics[f"vae_floor/{split}/vel_err_mean_velocity"]
        assert all(r.data.metrics[f"eval/{split}/vae_floor_vel_err_mean_velocity"] == floor for r in runs)
    (vae_dir,) = scenario_root(cfg, "uniform_motion").glob("vae/*-*")
    reconstructions = [p for p in vae_dir.glob("reconstructions/*") if p.name != "scores"]
    assert sorted(p.name.split("-")[0] for p in reconstructions) == ["eval_id", "eval_ood"]
    # Scores kept once and shared: each reconstruction set's records beside it, and each
    # evaluation set's own parse (its ground-truth floor) beside the data, for every trial.
    assert len(list(vae_dir.glob("reconstructions/scores/*.json"))) == 2
    assert len(list(scenario_root(cfg, "uniform_motion").glob("scores/*.json"))) == 2


def test_the_server_keeps_the_study_in_postgresql(http_study, postgres):
    """The runs are rows of the PostgreSQL database behind the server, not a file beside it."""
    import psycopg

    cfg, result = http_study
    with psycopg.connect(postgres) as connection:
        rows = connection.execute(
            "SELECT runs.status, experiments.name FROM runs JOIN experiments USING (experiment_id) "
            "WHERE runs.run_uuid = %s", (result.parent_run_id,),
        ).fetchall()
    assert rows == [("FINISHED", cfg.experiment_name)]


def test_rollouts_are_shards_that_the_cli_scores_the_same(http_study, mlflow_server, tmp_path):
    from phyray.cli import main

    cfg, result = http_study
    (run,) = trial_runs(MlflowClient(mlflow_server), cfg.experiment_name, "tags.`phyray.data_size` = '32'")
    trial_dir = trial_dir_of(run)
    (report_json,) = trial_dir.glob("reports/*/report.json")
    logged = {(r["split"], r["ood_level"], r["metric"]): r["value"] for r in json.loads(report_json.read_text())}
    (reference,) = scenario_root(cfg, "uniform_motion").glob(f"eval_ood-{cfg.data.eval_ood}-*")
    (rollouts,) = trial_dir.glob("rollouts/eval_ood-*")
    report = tmp_path / "ood.json"
    assert main(["eval", "physics", "--rollouts", str(rollouts), "--reference", str(reference), "--out", str(report), "--quiet"]) == 0
    for row in json.loads(report.read_text()):
        assert row["value"] == pytest.approx(logged[("eval_ood", row["ood_level"], row["metric"])], nan_ok=True)


def test_bf16_rollouts_are_their_own_product_and_fp32_ones_the_trials(http_study, mlflow_server, tmp_path):
    """`phyray eval rollout` at the trial's sampler, seed and batch makes the trial's own rollouts, named
    and written alike (the default precision changed nothing); in bf16 it makes another product,
    whose videos stay close to them."""
    import torch

    from phyray.cli import main
    from phyray.data.shards import decode_frames, iter_rows, read_manifest

    cfg, _ = http_study
    (run,) = trial_runs(MlflowClient(mlflow_server), cfg.experiment_name, "tags.`phyray.data_size` = '32'")
    trial_dir = trial_dir_of(run)
    (reference,) = scenario_root(cfg, "uniform_motion").glob(f"eval_ood-{cfg.data.eval_ood}-*")
    (trial_rollouts,) = trial_dir.glob("rollouts/eval_ood-*")
    common = ["eval", "rollout", "--model", str(trial_dir), "--reference", str(reference),
              "--sample-steps", str(cfg.eval.sample_steps), "--batch-size", str(cfg.eval.batch_size), "--seed", "0"]
    # The trial rolled out in its Tune process, which Ray runs on one thread (OMP_NUM_THREADS=1
    # for its fraction of a CPU); on two threads, float sums may round a pixel the other way.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*common, "--out", str(tmp_path / "fp32")]) == 0
        assert main([*common, "--precision", "bf16", "--out", str(tmp_path / "bf16")]) == 0
    finally:
        torch.set_num_threads(threads)
    identity = {name: read_manifest(path)["identity"] for name, path in
                [("trial", trial_rollouts), ("fp32", tmp_path / "fp32"), ("bf16", tmp_path / "bf16")]}
    assert identity["fp32"] == identity["trial"] and "precision" not in identity["trial"]["settings"]
    assert identity["bf16"]["settings"]["precision"] == "bf16" and identity["bf16"]["id"] != identity["trial"]["id"]

    def frames(path: Path) -> dict[str, np.ndarray]:
        return {row["video_id"]: decode_frames(row) for row in iter_rows(path)}

    trial, fp32, bf16 = frames(trial_rollouts), frames(tmp_path / "fp32"), frames(tmp_path / "bf16")
    assert trial.keys() == fp32.keys() == bf16.keys()
    for video_id, video in trial.items():
        np.testing.assert_array_equal(fp32[video_id], video)
    difference = np.concatenate([np.abs(bf16[v].astype(int) - trial[v].astype(int)).ravel() for v in trial])
    assert difference.any() and difference.mean() < 2


def test_a_trained_dit_is_scored_on_a_benchmark_suite(http_study, mlflow_server, tmp_path, capsys):
    """A study's DiT (32²) continues a shrunk 128² suite at its own side and is scored like any
    submission: its rollout datasets are the submission, read by video id."""
    from phyray.cli import main

    cfg, _ = http_study
    (run,) = trial_runs(MlflowClient(mlflow_server), cfg.experiment_name, "tags.`phyray.data_size` = '32'")
    model = trial_dir_of(run) / "export" / "model.pt"
    suite = ["--suite", "uniform_motion", "--videos-per-split", "2", "--bench-dir", str(tmp_path / "bench")]
    assert main(["bench", "export", *suite, "--out", str(tmp_path / "suite")]) == 0
    references = [line.split(": ")[1] for line in capsys.readouterr().out.splitlines() if "reference " in line]
    assert len(references) == 2
    for i, reference in enumerate(references):
        assert main(["eval", "rollout", "--model", str(model), "--reference", reference, "--resolution", "32",
                     "--out", str(tmp_path / "videos" / f"split{i}"), "--batch-size", "4"]) == 0
    assert main(["bench", "score", *suite, "--videos", str(tmp_path / "videos"), "--no-ssim", "--bitrates", "40000",
                 "--name", "DiT-T smoke", "--out", str(tmp_path / "report")]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["counts"]["scored"] == summary["counts"]["suite"] == 4  # conditioning checked at 32²
    headline = {r["group"]: r for r in summary["scores"] if r["metric"] == "vel_err_per_frame"}
    assert {"id", "ood"} <= set(headline)
    assert "| DiT-T smoke |" in (tmp_path / "report" / "results.md").read_text()


def test_rerun_skips_finished_trials_and_finishes_an_interrupted_one(http_study, mlflow_server):
    from phyray.study.grid import run_study

    cfg, first = http_study
    client = MlflowClient(mlflow_server)
    before = {r.data.tags["phyray.trial"]: r for r in trial_runs(client, cfg.experiment_name)}
    # Interrupt one trial after training, during evaluation: not done, left RUNNING, no report.
    killed = before["uniform_motion-DiT-T-16-s0"]
    client.delete_tag(killed.info.run_id, "phyray.trial_done")
    client.update_run(killed.info.run_id, status="RUNNING")
    trial_dir = trial_dir_of(killed)
    shutil.rmtree(trial_dir / "reports")
    (ood,) = trial_dir.glob("rollouts/eval_ood-*")
    shutil.rmtree(ood)
    checkpoints = sorted(p.name for p in trial_dir.rglob("checkpoint_*"))

    second = run_study(cfg)
    assert second.failed == {} and second.parent_run_id == first.parent_run_id
    after = {r.data.tags["phyray.trial"]: r for r in trial_runs(client, cfg.experiment_name)}
    assert after.keys() == before.keys()  # no new runs: the interrupted trial carried on in its own
    done = after["uniform_motion-DiT-T-32-s0"]
    assert done.info.end_time == before["uniform_motion-DiT-T-32-s0"].info.end_time  # untouched
    resumed = after["uniform_motion-DiT-T-16-s0"]
    assert resumed.info.status == "FINISHED" and resumed.data.tags["phyray.trial_done"] == "true"
    assert len(list(trial_dir.glob("reports/*/report.json"))) == 1 and ood.is_dir()
    assert sorted(p.name for p in trial_dir.rglob("checkpoint_*")) == checkpoints  # not retrained
    steps = [m.step for m in client.get_metric_history(resumed.info.run_id, "train/loss")]
    assert steps == [3, 6]


def test_study_report_rebuilds_from_mlflow_alone(http_study, mlflow_server, tmp_path, capsys):
    from phyray.cli import main

    cfg, result = http_study
    client = MlflowClient(mlflow_server)
    logged = {a.path: a.file_size for a in client.list_artifacts(result.parent_run_id)}
    logged_table = Path(client.download_artifacts(result.parent_run_id, "results.md", str(tmp_path))).read_text()
    out = tmp_path / "report"
    assert main(["study", "report", "--experiment", cfg.experiment_name, "--tracking-uri", mlflow_server,
                 "--run-id", result.parent_run_id, "--metric", "vel_err_per_frame", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"parent run {result.parent_run_id} left as it was" in printed
    # --out is a copy (here with another headline metric): the study run keeps its own report.
    assert "Headline metric: `vel_err_per_frame`" in (out / "results.md").read_text()
    assert "Headline metric: `vel_err_mean_velocity`" in logged_table
    assert {a.path: a.file_size for a in client.list_artifacts(result.parent_run_id)} == logged
    again = Path(client.download_artifacts(result.parent_run_id, "results.md", str(tmp_path / "after"))).read_text()
    assert again == logged_table
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("trial,scenario,model,data_size,seed,num_videos,run_id,eval/")
    grid = json.loads(client.get_run(result.parent_run_id).data.tags["phyray.grid"])
    for run in trial_runs(client, cfg.experiment_name):
        if run.data.tags["phyray.trial_id"] in grid.values():
            value = run.data.metrics["eval/id/vel_err_per_frame"]
            videos = int(run.data.params["trial.num_videos"])
            assert f"| {run.data.tags['phyray.data_size']} | {videos:,} | 1 | {value:.4f} |" in printed
    assert (out / "scaling_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["study", "report", "--experiment", cfg.experiment_name, "--tracking-uri", mlflow_server, "--list"]) == 0
    assert result.parent_run_id in capsys.readouterr().out
    assert main(["study", "report", "--experiment", "no-such-study", "--tracking-uri", mlflow_server]) == 2
    assert main(["study", "report", "--experiment", cfg.experiment_name, "--tracking-uri", mlflow_server,
                 "--run-id", "0" * 32]) == 2


def _study_process(overrides: list[str], log: Path) -> subprocess.Popen:
    """The study entrypoint in its own process group (its own embedded Ray), as a user runs it."""
    command = [sys.executable, str(REPO / "studies" / "scaling_law.py"), "--config", str(SMOKE)]
    return subprocess.Popen(
        command + [f"--set={o}" for o in overrides], stdout=open(log, "w"), stderr=subprocess.STDOUT,
        start_new_session=True, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )


def _in_training(trials: Path) -> dict[str, int]:
    """Trial directories with a complete checkpoint and no export yet -> its last one's step
    (one Ray is still copying into place is not a checkpoint to resume from)."""
    from phyray.train.trainer import checkpoint_step, latest_checkpoint

    steps = {}
    for directory in trials.glob("*"):
        latest = latest_checkpoint(directory / "ray")
        if latest is not None and not (directory / "export").exists():
            steps[directory.name] = checkpoint_step(latest)
    return steps


def test_a_changed_setting_trains_new_trials_and_a_killed_one_resumes(
    http_study, mlflow_server, study_cwd, kill_session, capfd
):
    """Rerun with another dit.steps: new trials under a new parent run, the old ones untouched.
    Killed mid-training (the whole process group, as a kill -9 of the job would), the rerun
    resumes each trial from its checkpoint in the study directory. The entrypoint's output is
    phyray's lines; the trial table says when each trial starts and ends."""
    from phyray.study.grid import run_study

    cfg, first = http_study
    client = MlflowClient(mlflow_server)
    old = {r.info.run_id: r.info.end_time for r in trial_runs(client, cfg.experiment_name)}
    # One cell (the 16-video one, on the same VAE) keeps the test short; 300 steps leave time to
    # kill it between its step-100 checkpoint and its end.
    changed = [*TINY, "output_dir=studies", f"data_dir={cfg.data_dir}", f"tracking_uri={mlflow_server}",
               "data_sizes=['16']", "vae.train_size='32'", "dit.steps=300", "dit.checkpoint_every=100", "dit.log_every=10"]
    process = _study_process(changed, study_cwd / "killed.log")
    trials = study_cwd / "studies" / "smoke" / "trials"
    deadline = time.monotonic() + 600
    try:
        while not _in_training(trials):
            assert process.poll() is None, (study_cwd / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.2)
    finally:
        kill_session(process)  # Ray's workers included: none may write after the snapshot
    interrupted = _in_training(trials)
    assert interrupted
    printed = (study_cwd / "killed.log").read_text().splitlines()
    assert any(re.fullmatch(r"\[phyray study\]   uniform_motion-DiT-T-16-s0-\w+  started", line) for line in printed)
    assert all(line.startswith(("[phyray study]", "uniform_motion/")) for line in printed), printed  # no Ray lines

    capfd.readouterr()
    result = run_study(load_study_config(SMOKE, changed))
    assert result.failed == {} and result.parent_run_id != first.parent_run_id
    ended = [line for line in capfd.readouterr().err.splitlines() if re.search(r"uniform_motion-DiT-T-16-s0-\w+  done", line)]
    assert len(ended) == 1 and re.search(r"  done 1/1 in \dm\d\ds  vel_err_mean_velocity: id ", ended[0])
    runs = trial_runs(client, cfg.experiment_name)
    for run in runs:
        if run.info.run_id in old:
            assert run.info.end_time == old[run.info.run_id]  # the first config's trials: untouched
    new = [r for r in runs if r.info.run_id not in old]
    assert [r.data.tags["phyray.trial"] for r in new] == ["uniform_motion-DiT-T-16-s0"]
    scores = {split: new[0].data.metrics[f"eval/{split}/vel_err_mean_velocity"] for split in ("id", "ood")}
    assert f"vel_err_mean_velocity: id {scores['id']:.4g}, ood {scores['ood']:.4g}, " in ended[0]  # the trial table's
    assert all(r.data.params["steps"] == "300" and r.data.tags["mlflow.parentRunId"] == result.parent_run_id for r in new)
    for run in new:
        name = run.data.params["name"]
        history = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert history[-1] == 300
        if name in interrupted:
            # Resumed from its checkpoint, not retrained: steps up to it were logged once.
            assert run.data.tags["phyray.resumed_from"].startswith(str(trials / name))
            upto = [step for step in history if step <= interrupted[name]]
            assert upto == sorted(set(upto)) == list(range(10, interrupted[name] + 1, 10))
    # The new table is the new trials' numbers, not the old ones'.
    new_values = sorted(r.data.metrics["eval/id/vel_err_mean_velocity"] for r in new)
    assert sorted(r["eval/id/vel_err_mean_velocity"] for r in result.report["records"]) == new_values
    assert {r["run_id"] for r in result.report["records"]} == {r.info.run_id for r in new}


def test_two_studies_in_one_experiment_report_separately(http_study, mlflow_server):
    from phyray.study.grid import run_study

    cfg, first = http_study
    client = MlflowClient(mlflow_server)
    before = {r.info.run_id for r in trial_runs(client, cfg.experiment_name)}
    # Another study (its own name, one data size, the same VAE) logging into the smoke study's
    # experiment: its one cell is the smoke study's 16-video trial (same identity), reused.
    other = load_study_config(SMOKE, [
        *TINY, "name=smoke-16", f"experiment={cfg.experiment_name}", "data_sizes=['16']", "vae.train_size='32'",
        "output_dir=studies",
        f"data_dir={cfg.data_dir}", f"tracking_uri={mlflow_server}",
    ])
    result = run_study(other)
    assert result.parent_run_id != first.parent_run_id
    assert {r.info.run_id for r in trial_runs(client, cfg.experiment_name)} == before
    assert [r["data_size"] for r in result.report["records"]] == ["16"]
    mine = publish_smoke_report(mlflow_server, cfg, first.parent_run_id)
    assert [r["data_size"] for r in mine["records"]] == ["16", "32"]


def test_seeds_train_each_cell_per_seed_and_the_dev_split_spares_the_test_sets(http_study, mlflow_server, study_cwd):
    """`seeds: [0, 1]` makes one trial per seed and the table their mean ± sd; `eval.split: dev`
    scores them on the dev sets (new trials, new rollouts) while seed 0's DiT, the same as the
    first study's, is reused, not retrained."""
    import statistics

    from phyray.study.grid import run_study

    cfg, first = http_study
    client = MlflowClient(mlflow_server)
    before = {r.info.run_id: r for r in trial_runs(client, cfg.experiment_name)}
    (old,) = [r for r in before.values() if r.data.tags["phyray.trial"] == "uniform_motion-DiT-T-16-s0"
              and r.data.tags["mlflow.parentRunId"] == first.parent_run_id]
    result = run_study(load_study_config(SMOKE, [
        *TINY, "data_sizes=['16']", "vae.train_size='32'", "seeds=[0, 1]", "eval.split=dev",
        "output_dir=studies", f"data_dir={cfg.data_dir}", f"tracking_uri={mlflow_server}",
    ]))
    assert result.failed == {} and result.parent_run_id != first.parent_run_id
    new = sorted((r for r in trial_runs(client, cfg.experiment_name) if r.info.run_id not in before),
                 key=lambda r: r.data.tags["phyray.seed"])
    assert [r.data.tags["phyray.trial"] for r in new] == ["uniform_motion-DiT-T-16-s0", "uniform_motion-DiT-T-16-s1"]
    assert {r.data.tags["phyray.eval_split"] for r in new} == {"dev"}
    assert new[0].data.tags["phyray.dit_id"] == old.data.tags["phyray.dit_id"] != new[1].data.tags["phyray.dit_id"]
    assert "train/loss" not in new[0].data.metrics and "train/loss" in new[1].data.metrics  # reused, trained
    for run in new:
        assert sorted(p.name.split("-")[0] for p in trial_dir_of(run).glob("rollouts/dev_*")) == ["dev_id", "dev_ood"]
    assert len(list(scenario_root(cfg, "uniform_motion").glob(f"dev_id-{cfg.data.eval_id}-*"))) == 1

    (cell,) = result.report["cells"]
    name = "eval/id/vel_err_mean_velocity"
    values = [r.data.metrics[name] for r in new]
    combined = cell.metrics[name]
    assert len(cell.trials) == 2 and combined.seeds == 2
    assert combined.value == pytest.approx(statistics.mean(values)) and combined.sd == pytest.approx(statistics.stdev(values))
    # The eval videos' noise is common to both seeds: the interval is never narrower than theirs.
    widths = [r.data.metrics[name + "_ci_high"] - r.data.metrics[name + "_ci_low"] for r in new]
    assert combined.low < combined.value < combined.high and combined.high - combined.low >= min(widths)
    table = result.report["files"]["results.md"].read_text()
    assert "Protocol: the dev split" in table and "## Per seed" in table
    assert f"{combined.value:.4f} ± {combined.sd:.4f}" in table


def publish_smoke_report(uri: str, cfg, parent_run_id: str):
    from phyray.study.report import publish_report

    return publish_report(uri, cfg.experiment_name, cfg.study_dir.resolve() / "rebuilt", None, parent_run_id)


def test_a_moved_data_dir_is_reused_without_recomputation(http_study, mlflow_server, tmp_path):
    from phyray.study.grid import run_study

    cfg, first = http_study
    moved = tmp_path / "mounted-elsewhere"
    shutil.copytree(cfg.data_dir, moved, symlinks=True)
    mtimes = {p: p.stat().st_mtime_ns for p in moved.rglob("*")}
    client = MlflowClient(mlflow_server)
    runs_before = {r.info.run_id for r in client.search_runs([client.get_experiment_by_name(cfg.experiment_name).experiment_id])}
    result = run_study(load_study_config(SMOKE, [*TINY, "output_dir=studies", f"data_dir={moved}", f"tracking_uri={mlflow_server}"]))
    assert result.failed == {} and result.parent_run_id == first.parent_run_id  # the same study config
    # Nothing was generated, trained or encoded again: no new file, no file rewritten, no new run.
    assert {p: p.stat().st_mtime_ns for p in moved.rglob("*")} == mtimes
    runs_after = {r.info.run_id for r in client.search_runs([client.get_experiment_by_name(cfg.experiment_name).experiment_id])}
    assert runs_after == runs_before


def test_a_grid_too_big_for_the_cluster_fails_before_running(ray_local, tmp_path):
    from phyray.study.grid import run_study

    cfg = load_study_config(SMOKE, [*TINY, f"output_dir={tmp_path}", f"data_dir={tmp_path / 'data'}", "dit.use_gpu=true"])
    with pytest.raises(ConfigError, match="DiT trials: needs 1 GPU at once .* the cluster has 0"):
        run_study(cfg)
    assert not (tmp_path / "data").exists() and not cfg.study_dir.exists()


def test_a_stage_waiting_for_resources_says_what_it_waits_for(ray_local):
    from phyray.runtime import ResourceWatch

    lines: list[str] = []
    group = ray_local.util.placement_group([{"CPU": 64}])  # more than the 4-CPU local Ray has
    try:
        with ResourceWatch("VAE training", lines.append, after_s=1.0):
            time.sleep(3.5)
    finally:
        ray_local.util.remove_placement_group(group)
    assert lines and all(line.startswith("VAE training: waiting") for line in lines)
    assert "{'CPU': 64.0}" in lines[0] and "free now: {'CPU'" in lines[0]


# A driver as a study's: Ray's three routes to its terminal, each taken inside RayChatter, with
# phyray's own lines on stderr before, inside and after the block.
CHATTY_DRIVER = """
import os, sys, time, warnings
from pathlib import Path
import ray
from ray._private.utils import publish_error_to_driver
from phyray.runtime import RayChatter, init_ray

class Same:  # a Ray Data actor pool: the driver's core worker logs a line for it (ray-project/ray#57733)
    def __call__(self, batch):
        return batch

init_ray()
log = Path(sys.argv[1])
print("[phyray study] before", file=sys.stderr, flush=True)
with RayChatter(log) as chatter:
    print("[phyray study] inside", file=sys.stderr, flush=True)
    publish_error_to_driver("phyray_test", "a raylet message", ray._private.worker.global_worker.gcs_client)
    ray.data.range(1).map_batches(Same, concurrency=1).take_all()
    warnings.warn("a library's deprecation", FutureWarning)
    deadline = time.monotonic() + 30
    while "a raylet message" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    print(f"[phyray study] {chatter.lines} lines logged", file=sys.stderr, flush=True)
print("[phyray study] after", file=sys.stderr, flush=True)
os.write(2, b"descriptor 2 is the terminal again\\n")
"""


def test_rays_own_messages_go_to_the_study_log_and_phyrays_lines_to_the_terminal(ray_local, tmp_path):
    """RayChatter in a driver whose stderr is its descriptor 2 (a study run from a terminal):
    the raylet's message, the core worker's actor-pool line and a library warning go to the log;
    phyray's lines stay on stderr, and after the block descriptor 2 is stderr again."""
    log = tmp_path / "ray.log"
    address = ray_local.get_runtime_context().gcs_address
    driver = subprocess.run(
        [sys.executable, "-c", CHATTY_DRIVER, str(log)], capture_output=True, text=True, timeout=180,
        env={**os.environ, "RAY_ADDRESS": address},
    )
    assert driver.returncode == 0, driver.stderr[-3000:]
    logged = log.read_text()
    assert "(raylet) a raylet message" in logged
    assert "core_worker.cc" in logged and "MapWorker(MapBatches(Same))" in logged
    assert "FutureWarning: a library's deprecation" in logged
    terminal = driver.stderr.splitlines()
    phyrays = [line for line in terminal if line.startswith("[phyray study]")]
    assert phyrays[:2] == ["[phyray study] before", "[phyray study] inside"] and phyrays[3:] == ["[phyray study] after"]
    assert int(re.fullmatch(r"\[phyray study\] (\d+) lines logged", phyrays[2])[1]) >= 3
    assert terminal[-1] == "descriptor 2 is the terminal again"
    assert not any(word in driver.stderr + driver.stdout for word in ("raylet message", "core_worker", "deprecation"))
