"""The case-based probe studies end to end on a real local Ray and a SQLite MLflow store, tiny:
the interpolation gaps (two layouts), the direction flips (both sets), the convex hull (two
variants) and composition (its three variants); their metrics on every trial and their reports
on the parent run.

The VAE is the lossless space-to-depth preset: nothing to train (the test stays short), and its
floor is known: it reconstructs the ground truth exactly, so its error is the parser's floor
inside and outside the gaps alike, and it never reverses a ball.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import rebuilt_report, trial_runs
from mlflow.tracking import MlflowClient

from phyray.config import REPO_ROOT
from phyray.study.grid import run_study
from phyray.study.settings import load_study_config

pytestmark = pytest.mark.slow

SMOKE = REPO_ROOT / "configs" / "studies" / "interpolation-gaps-smoke.yaml"
FLIP_SMOKE = REPO_ROOT / "configs" / "studies" / "direction-flips-smoke.yaml"
HULL_SMOKE = REPO_ROOT / "configs" / "studies" / "convex-hull-smoke.yaml"
COMPOSE_SMOKE = REPO_ROOT / "configs" / "studies" / "composition-smoke.yaml"
TINY = [
    "data_sizes=['32']", "data.eval_id=12", "data.eval_ood=2", "vae.preset=s2d-f4t2", "vae.train={}",
    "dit.steps=6", "dit.log_every=3", "dit.checkpoint_every=3", "dit.batch_size=8", "dit.micro_batch=8",
    "eval.sample_steps=2", "eval.batch_size=4",
]


@pytest.fixture(scope="module")
def gap_study(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("gap-study")
    cfg = load_study_config(SMOKE, [*TINY, f"output_dir={root / 'studies'}", f"data_dir={root / 'data'}"])
    return cfg, run_study(cfg)


def test_every_gap_trial_logs_inside_and_outside_errors_beside_the_vae_floor(gap_study, tmp_path):
    cfg, result = gap_study
    assert result.failed == {}
    client = MlflowClient(result.tracking_uri)
    runs = trial_runs(client, cfg.experiment_name)
    assert sorted(r.data.tags["phyray.scenario"] for r in runs) == ["gap-3bands", "gap-wide"]
    for run in runs:
        metrics = run.data.metrics
        assert metrics["gap/num_videos"] == 12
        for name in ("inside", "outside", "span"):
            assert metrics[f"gap/{name}_ci_low"] <= metrics[f"gap/{name}"] <= metrics[f"gap/{name}_ci_high"]
        # Lossless: the floor is the parser's on the ground truth, well under 0.05 world units/s.
        assert metrics["gap_floor/inside"] < 0.05 and metrics["gap_floor/outside"] < 0.05
        local = client.download_artifacts(run.info.run_id, "report/gaps.json", str(tmp_path / run.info.run_id))
        records = json.loads(Path(local).read_text())["eval_id"]["rollouts"]["records"]
        assert len(records) == 12 and any(r["in_gap"] for r in records)
    # One VAE for both layouts, learnt from uniform motion (vae.train_on), none of their own.
    data = Path(cfg.data_dir)
    assert len(list((data / "uniform_motion" / "vae").iterdir())) == 1
    assert not (data / "gap-wide" / "vae").exists() and not (data / "gap-3bands" / "vae").exists()
    # The same 12 evaluation videos for both layouts; only which are in a gap differs.
    speeds = [sorted(json.loads((tmp_path / r.info.run_id / "gaps.json").read_text())
                     ["eval_id"]["rollouts"]["records"], key=lambda v: v["true_velocity"]) for r in runs]
    assert [v["true_velocity"] for v in speeds[0]] == [v["true_velocity"] for v in speeds[1]]


def test_the_parent_run_gets_the_gap_report_and_it_rebuilds_from_mlflow(gap_study, tmp_path, capsys):
    cfg, result = gap_study
    report = result.report
    assert [r["layout"] for r in report["layouts"]] == ["wide", "3bands"]
    text = report["summary"].read_text()
    assert "| wide | [1, 1.25] ∪ [3.75, 4] | DiT-T | 32 | 12 × 1 seeds |" in text
    assert "3bands: a restored band lowers the error over the wide gap's span" in text
    client = MlflowClient(result.tracking_uri)
    logged = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"interpolation_gaps.md", "interpolation_gaps.csv", "interpolation_gaps.png"} <= logged
    out = rebuilt_report(cfg, result, tmp_path / "rebuilt")
    assert (out / "interpolation_gaps.md").read_text() == text
    assert (out / "interpolation_gaps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()


@pytest.fixture(scope="module")
def flip_study(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("flip-study")
    overrides = [o.replace("data.eval_id=12", "data.eval_id=4").replace("data.eval_ood=2", "data.eval_ood=6") for o in TINY]
    cfg = load_study_config(FLIP_SMOKE, [*overrides, f"output_dir={root / 'studies'}", f"data_dir={root / 'data'}"])
    return cfg, run_study(cfg)


def test_both_direction_sets_train_report_reversals_and_rebuild_from_mlflow(flip_study, tmp_path, capsys):
    cfg, result = flip_study
    assert result.failed == {}
    client = MlflowClient(result.tracking_uri)
    runs = trial_runs(client, cfg.experiment_name)
    assert sorted(r.data.tags["phyray.scenario"] for r in runs) == ["flip-both", "flip-right"]
    for run in runs:
        metrics = run.data.metrics
        assert metrics["flip/ood/num_videos"] == 6 and metrics["flip/id/num_videos"] == 4
        assert 0 <= metrics["flip/ood/reversed"] <= 1
        # Lossless: the floor is the ground truth, which never reverses and does not drift.
        assert metrics["flip_floor/ood/reversed"] == 0 and abs(metrics["flip_floor/ood/drift"]) < 0.05
    text = result.report["summary"].read_text()
    assert [r["set"] for r in result.report["sets"]] == ["right", "both"]
    assert "Set-2 (both directions) reverses more slow balls than Set-1" in text
    assert "points left faster than 0.2 units/s" in text
    logged = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"direction_flips.md", "direction_flips.csv", "direction_flips.png"} <= logged
    out = rebuilt_report(cfg, result, tmp_path / "rebuilt")
    assert (out / "direction_flips.md").read_text() == text
    capsys.readouterr()


@pytest.fixture(scope="module")
def hull_study(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("hull-study")
    overrides = [o.replace("data.eval_id=12", "data.eval_id=16").replace("data.eval_ood=2", "data.eval_ood=4") for o in TINY]
    cfg = load_study_config(HULL_SMOKE, [*overrides, f"output_dir={root / 'studies'}", f"data_dir={root / 'data'}"])
    return cfg, run_study(cfg)


def test_the_hull_study_places_every_video_on_the_plane_and_reports_per_region(hull_study, tmp_path, capsys):
    cfg, result = hull_study
    assert result.failed == {}
    client = MlflowClient(result.tracking_uri)
    runs = trial_runs(client, cfg.experiment_name)
    assert sorted(r.data.tags["phyray.scenario"] for r in runs) == ["hull-lshape", "hull-square"]
    for run in runs:
        local = client.download_artifacts(run.info.run_id, "report/hulls.json", str(tmp_path / run.info.run_id))
        scored = json.loads(Path(local).read_text())
        assert sorted(scored) == ["eval_id", "eval_ood"]
        regions = {r["region"] for split in scored.values() for r in split["rollouts"]["records"]}
        assert "trained" in regions and "outside" in regions
        # The OOD set's v1 lies beyond the trained range: outside the hull, every video.
        assert {r["region"] for r in scored["eval_ood"]["rollouts"]["records"]} == {"outside"}
        assert "hull/ood/outside" in run.data.metrics
    report = result.report
    assert [r["variant"] for r in report["variants"]] == ["square", "lshape"]
    text = report["summary"].read_text()
    assert "| square | v1 [2, 3] × v2 [2, 3] | DiT-T | 32 |" in text
    logged = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"convex_hull.md", "convex_hull.csv", "convex_hull.png"} <= logged
    out = rebuilt_report(cfg, result, tmp_path / "rebuilt")
    assert (out / "convex_hull.md").read_text() == text
    capsys.readouterr()


@pytest.fixture(scope="module")
def compose_study(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("compose-study")
    overrides = [o.replace("data.eval_id=12", "data.eval_id=6").replace("data.eval_ood=2", "data.eval_ood=8") for o in TINY]
    cfg = load_study_config(COMPOSE_SMOKE, [*overrides, f"output_dir={root / 'studies'}", f"data_dir={root / 'data'}"])
    return cfg, run_study(cfg)


def test_the_composition_study_scores_each_object_after_each_event_and_rebuilds_from_mlflow(compose_study, tmp_path, capsys):
    cfg, result = compose_study
    assert result.failed == {}
    client = MlflowClient(result.tracking_uri)
    runs = trial_runs(client, cfg.experiment_name)
    assert sorted(r.data.tags["phyray.scenario"] for r in runs) == [
        "compose-spatial", "compose-temporal", "compose-temporal-noredbounce"]
    for run in runs:
        metrics = run.data.metrics
        assert metrics["compose/ood/num_videos"] == 8 and metrics["compose/id/num_videos"] == 6
        roles = ("red_ball", "blue_square") if run.data.tags["phyray.scenario"] == "compose-spatial" else ("red_ball", "blue_ball")
        for role in roles:
            # The parser on the ground truth, and the lossless VAE, find every object in every frame.
            assert metrics[f"compose_gt/ood/{role}/survival"] == 1 and metrics[f"compose_gt/ood/{role}/vanished"] == 0
            assert metrics[f"compose_floor/ood/{role}/survival"] == 1
            assert metrics[f"compose_gt/ood/{role}/moving_error"] < 0.05
            assert 0 <= metrics[f"compose/ood/{role}/survival"] <= 1
        local = client.download_artifacts(run.info.run_id, "report/composition.json", str(tmp_path / run.info.run_id))
        scored = json.loads(Path(local).read_text())
        assert sorted(scored) == ["eval_id", "eval_ood"] and sorted(scored["eval_ood"]) == [
            "ground_truth", "metrics", "rollouts", "vae_floor"]
        assert len(scored["eval_ood"]["rollouts"]["records"]) == 8
    # Each variant's VAE learnt from all its kinds of video (vae.probe_combinations: all).
    for scenario in cfg.scenarios:
        assert len(list((Path(cfg.data_dir) / scenario).glob("vae_train-32-*"))) == 1
    report = result.report
    assert [r["variant"] for r in report["variants"]] == ["spatial", "temporal", "temporal-noredbounce"]
    text = report["summary"].read_text()
    assert "| temporal | DiT-T | 32 | blue_ball | after_bounce |" in text
    assert "noredbounce: the red ball vanishes more often than in temporal" in text
    logged = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"composition.md", "composition.csv", "composition.png"} <= logged
    out = rebuilt_report(cfg, result, tmp_path / "rebuilt")
    assert (out / "composition.md").read_text() == text
    assert (out / "composition.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
