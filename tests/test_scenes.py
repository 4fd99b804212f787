"""PHYRE scenes through the pipeline: resampled to the study's side, encoded, reconstructed and
scored by the combinatorial report, keeping every column a later stage joins on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from phyray.artifacts import Identity
from phyray.data import decode_frames, iter_rows, read_manifest
from phyray.data.combinatorial import generate_combinatorial
from phyray.data.resample import resample_dataset
from phyray.data.shards import area_downsample, shard_paths
from phyray.eval.abnormal import CHECKS
from phyray.eval.report import evaluate_physics_records
from phyray.eval.rollouts import reconstruct_dataset, video_noise_seed
from phyray.eval.scenes import (
    SceneScoring,
    add_frozen,
    evaluate_scene_records,
    scene_metrics,
    score_frozen_set,
    summarize_scenes,
)
from phyray.eval.video import frozen_video, pixel_metrics
from phyray.study.prepare import calibrated_export

pytestmark = pytest.mark.usefixtures("phyre_env")
SIDE, FRAMES = 64, 9


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("scenes")
    source = root / "eval_in_template"
    generate_combinatorial([10003, 10023], 1, 2, "eval_in_template", source, shard_size=3, num_workers=1, progress=False)
    resampled = root / "resampled"
    resample_dataset(source, SIDE, resampled, num_frames=FRAMES, num_workers=1)
    return source, resampled


def test_resampling_keeps_every_column_and_cuts_frames_and_objects(scenes, tmp_path):
    source, resampled = scenes
    again = tmp_path / "two-workers"
    resample_dataset(source, SIDE, again, num_frames=FRAMES, num_workers=2)
    assert [p.read_bytes() for p in shard_paths(resampled)] == [p.read_bytes() for p in shard_paths(again)]
    manifest = read_manifest(resampled)
    assert (manifest["resolution"], manifest["num_frames"], manifest["num_videos"]) == (SIDE, FRAMES, 4)
    for original, row in zip(iter_rows(source), iter_rows(resampled)):
        np.testing.assert_array_equal(decode_frames(row), area_downsample(decode_frames(original), SIDE)[:FRAMES])
        assert row["objects"] == original["objects"][:FRAMES]
        for column in ("video_id", "template_id", "seed", "trial", "palette", "params"):
            assert row[column] == original[column]
    other = resample_dataset(source, 32, tmp_path / "at-32", num_workers=1)
    assert other["identity"]["id"] != manifest["identity"]["id"] and other["num_frames"] == 32


def test_bad_resampling_settings_are_one_line_each(scenes, tmp_path):
    source, _ = scenes
    with pytest.raises(ValueError, match="resolution: 48 does not divide"):
        resample_dataset(source, 48, tmp_path / "x", num_workers=1)
    with pytest.raises(ValueError, match="num_frames: 40 is not in 1-32"):
        resample_dataset(source, SIDE, tmp_path / "y", num_frames=40, num_workers=1)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_palette_frames_decode_in_a_ray_data_batch(scenes):
    import ray.data

    from phyray.data.shards import frame_columns
    from phyray.train.trainer import decode_pixel_batch

    source, _ = scenes
    paths = [str(p) for p in shard_paths(source)]
    assert "palette" in frame_columns(paths[0])
    ds = ray.data.read_parquet(paths).select_columns(frame_columns(paths[0])).map_batches(decode_pixel_batch, batch_size=2)
    decoded = ds.take_batch(4)["frames"]  # as the VAE's training data (phyray.train.trainer.build_dataset)
    expected = np.stack([decode_frames(r) for r in iter_rows(source)])
    # Ray Data reads the shards in whatever order its tasks finish: compare video by video.
    assert sorted(v.tobytes() for v in decoded) == sorted(v.tobytes() for v in expected)


def test_reconstructions_keep_the_scene_columns_and_a_lossless_vae_scores_the_floor(scenes, tmp_path):
    _, resampled = scenes
    identity = Identity("vae", {"preset": "s2d-f4t2"}, {"data": "test"})
    vae = calibrated_export("s2d-f4t2", str(resampled), tmp_path / "vae", identity)
    out = tmp_path / "reconstructions"
    reconstruct_dataset(vae, resampled, out)
    for reference, made in zip(iter_rows(resampled), iter_rows(out)):
        np.testing.assert_array_equal(decode_frames(made), decode_frames(reference))
        for column in ("template_id", "seed", "trial", "palette", "objects"):
            assert made[column] == reference[column]
    records = evaluate_scene_records(out, resampled, cond_frames=1)
    assert len(records) == 4
    for record in records:
        assert record["psnr"] == 100.0 and record["ssim"] == pytest.approx(1.0, abs=1e-5)  # float32 SSIM
        assert record["abnormal"] == record["gt_floor_abnormal"]
        assert {f"abnormal_{c}" for c in CHECKS} <= record.keys()
    rows = summarize_scenes(records, resamples=200)
    templates = {row["template"] for row in rows}
    assert templates == {"all", "10003", "10023"}
    metrics = scene_metrics(rows)
    assert metrics["eval/in_template/psnr"] == 100.0
    assert "eval/in_template/ssim_ci_low" in metrics


def test_nothing_moving_is_scored_per_video_kept_by_identity_and_paired_with_each_rollout(scenes, tmp_path):
    _, resampled = scenes
    scoring = SceneScoring(cond_frames=1, abnormal=False)
    frozen = score_frozen_set(resampled, scoring, cache_dir=tmp_path / "scores")
    truths = {row["video_id"]: decode_frames(row) for row in iter_rows(resampled)}
    assert sorted(r["video_id"] for r in frozen) == sorted(truths)
    for record in frozen:
        truth = truths[record["video_id"]]
        expected = pixel_metrics([frozen_video(truth, 1)], [truth], cond_frames=1)
        assert record["psnr"] == pytest.approx(expected["psnr"][0]) and record["ssim"] == pytest.approx(expected["ssim"][0])
        assert "abnormal" not in record
    assert min(r["psnr"] for r in frozen) < 100.0  # the red ball falls: holding frame 0 is wrong somewhere
    (kept,) = (tmp_path / "scores").glob("*.json")  # read back, not re-made: a marked copy comes back marked
    kept.write_text(json.dumps([frozen[0] | {"psnr": -1.0}, *frozen[1:]]))
    assert score_frozen_set(resampled, scoring, cache_dir=tmp_path / "scores")[0]["psnr"] == -1.0
    # Another conditioning length is another frozen reference.
    assert score_frozen_set(resampled, SceneScoring(cond_frames=2), cache_dir=tmp_path / "scores") != frozen
    # The truth as a rollout gains over nothing moving exactly what nothing moving lost, per video.
    joined = add_frozen(evaluate_scene_records(resampled, resampled, cond_frames=1, abnormal=False), frozen)
    for record in joined:
        assert record["psnr_over_frozen"] == pytest.approx(100.0 - record["frozen_psnr"])
        assert record["frozen_ssim"] <= 1.0


def test_physics_report_refuses_a_phyre_scene_naming_the_column(scenes):
    _, resampled = scenes
    with pytest.raises(ValueError, match="no 'positions' column; the physics report needs ball states"):
        evaluate_physics_records(resampled, resampled)


def test_phyre_rollout_noise_differs_per_template_and_trial():
    base = {"seed": 4, "template_id": 10003, "trial": 990}
    seeds = {
        video_noise_seed(base, 0), video_noise_seed(base | {"trial": 991}, 0),
        video_noise_seed(base | {"template_id": 10005}, 0), video_noise_seed(base, 1),
    }
    assert len(seeds) == 4
    assert video_noise_seed({"seed": 4}, 0) == (4 * 1_000_003) % 2**63  # ball videos: as before
