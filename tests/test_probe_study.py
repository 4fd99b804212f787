"""The attribute-probe study end to end on a real local Ray and a SQLite MLflow store: two pairs,
tiny; the probe outcomes on every trial and the priority report on the parent run.

The VAE is the lossless space-to-depth preset: nothing to train (the test stays short), and its
floor is known: reconstructing the ground truth exactly, it keeps both attributes of every video.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import rebuilt_report, trial_runs
from mlflow.tracking import MlflowClient

from phyray.config import REPO_ROOT
from phyray.data.shards import iter_rows, read_manifest
from phyray.eval.probes import OUTCOMES
from phyray.study.grid import run_study
from phyray.study.settings import load_study_config

pytestmark = pytest.mark.slow

SMOKE = REPO_ROOT / "configs" / "studies" / "probe-attributes-smoke.yaml"
TINY = [
    "data_sizes=['32']", "data.eval_id=4", "data.eval_ood=6", "vae.preset=s2d-f4t2", "vae.train={}",
    "dit.steps=6", "dit.log_every=3", "dit.checkpoint_every=3", "dit.batch_size=8", "dit.micro_batch=8",
    "eval.sample_steps=2", "eval.batch_size=4",
]


@pytest.fixture(scope="module")
def probe_study(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("probe-study")
    cfg = load_study_config(SMOKE, [*TINY, f"output_dir={root / 'studies'}", f"data_dir={root / 'data'}"])
    return cfg, run_study(cfg)


def test_every_probe_trial_logs_its_outcomes_and_the_vae_floor(probe_study, tmp_path):
    cfg, result = probe_study
    assert result.failed == {}
    client = MlflowClient(result.tracking_uri)
    runs = trial_runs(client, cfg.experiment_name)
    assert sorted(r.data.tags["phyray.scenario"] for r in runs) == ["probe-color_shape", "probe-velocity_size"]
    for run in runs:
        metrics = run.data.metrics
        outcomes = [metrics[f"probe/ood/{o}"] for o in OUTCOMES]
        assert sum(outcomes) == pytest.approx(1.0) and metrics["probe/ood/num_videos"] == 6
        # Lossless: the floor is the ground truth, read back with both attributes kept.
        assert metrics["probe_floor/ood/composed"] == 1.0 and metrics["probe_floor/id/composed"] == 1.0
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
        assert "report/probe.json" in artifacts
        local = client.download_artifacts(run.info.run_id, "report/probe.json", str(tmp_path / run.info.run_id))
        scored = json.loads(Path(local).read_text())
        records = scored["eval_ood"]["rollouts"]["records"]
        assert len(records) == 6 and all(not r["trained"] for r in records)
        assert all(r["outcome"] == "composed" for r in scored["eval_ood"]["vae_floor"]["records"])


def test_the_pairs_share_one_vae_learnt_from_all_four_combinations_of_each(probe_study):
    cfg, _ = probe_study
    pairs = ["probe-color_shape", "probe-velocity_size"]
    (mix,) = (Path(cfg.data_dir) / "study-vae").glob("vae_train-32-*")
    rows = list(iter_rows(mix, ["video_id", "params"]))
    # 32 videos in all, 16 of each pair, interleaved row by row, ids kept apart by their pair.
    assert len(rows) == len({r["video_id"] for r in rows}) == 32
    assert [r["video_id"].split("/")[0] for r in rows] == pairs * 16
    vae_ids = set()
    for pair in pairs:
        root = Path(cfg.data_dir) / pair
        (share,) = root.glob("vae_train-16-*")
        (dit_set,) = root.glob("train-32-*")
        mixed = [r for r in rows if r["video_id"].startswith(pair + "/")]
        for found, combinations in ((iter_rows(share, ["params"]), 4), (mixed, 4), (iter_rows(dit_set, ["params"]), 2)):
            assert len({json.loads(row["params"])["combo"] for row in found}) == combinations
        (latents,) = (root / "latents").glob("train-32-*")
        vae_ids.add(read_manifest(latents)["identity"]["inputs"]["vae"])
    assert len(vae_ids) == 1 and len(list((Path(cfg.data_dir) / "study-vae" / "vae").iterdir())) == 1


def test_the_parent_run_gets_the_priority_report_and_it_rebuilds_from_mlflow(probe_study, tmp_path, capsys):
    cfg, result = probe_study
    report = result.report
    assert [pair["pair"] for pair in report["pairs"]] == ["color_shape", "velocity_size"]  # the paper's order
    text = report["summary"].read_text()
    assert "| color_shape (color vs shape) | red-disc, blue-square | red-square, blue-disc | 6 × 1 seeds |" in text
    assert "2 of the 6 pairs of colour, size, velocity, shape were run" in text
    client = MlflowClient(result.tracking_uri)
    logged = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"attribute_priority.md", "attribute_priority.csv", "probe_outcomes.png", "probe_heatmaps.png"} <= logged
    out = rebuilt_report(cfg, result, tmp_path / "rebuilt")
    assert (out / "attribute_priority.md").read_text() == text
    assert (out / "probe_heatmaps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
