"""The benchmark harness on real suites (shrunk), real ffmpeg and the real evaluators.

Known answers: the ground truth through PNG scores exactly its parse floor, through MP4 exactly
the compression floor at that bitrate; a frozen ball's velocity error is its true speed; the
constant-velocity prior is exact for uniform motion. Every submission format of the same frames
gives the same scores, and every kind of bad video gets its own per-video line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from mlflow.tracking import MlflowClient

from phyray.artifacts import Identity, write_product
from phyray.benchmark.baselines import baseline_source
from phyray.benchmark.media import decode_mp4, encode_mp4, read_pngs, write_pngs
from phyray.benchmark.score import (
    COND_MISMATCH,
    MALFORMED,
    MISSING,
    SCORED,
    WRONG_FRAMES,
    Scoring,
    Submission,
    compression_floor,
    score_suite,
    score_videos,
    submission_source,
)
from phyray.benchmark.suites import (
    COND_DIR,
    export_suite,
    get_suite,
    reference_sets,
    suite_card,
    suite_frames,
)
from phyray.cli import main
from phyray.config import ConfigError
from phyray.data.shards import PLANAR_RGB, encode_frames, shard_name, write_shard

VIDEOS = 4  # per split: 4 ID, 4 OOD (over the three levels)
FAST = Scoring(ssim=False)
COLUMNS = ["video_id", "frames", "frames_encoding", "frame_shape"]


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def uniform(bench_dir, ray_local):
    suite = get_suite("uniform_motion", VIDEOS)
    references = reference_sets(suite, bench_dir / "data", log=lambda line: None)
    return suite, references, suite_card(suite, references)


def _truth(suite, references) -> dict[str, np.ndarray]:
    return {row["video_id"]: np.array(frames) for row, frames in suite_frames(suite, references, COLUMNS)}


def _scores(records, metric="vel_err_per_frame") -> dict[str, float]:
    return {r["video_id"]: r[metric] for r in records if r["status"] == SCORED}


def _tree(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_suite_exports_the_same_bytes_twice(uniform, tmp_path):
    suite, references, _ = uniform
    first = export_suite(suite, references, tmp_path / "a")
    export_suite(suite, references, tmp_path / "b")
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    truth = _truth(suite, references)
    assert [v["video_id"] for v in first["videos"]] == sorted(truth) and len(truth) == 2 * VIDEOS
    assert first["suite"]["key"] == suite.key and first["suite"]["cond_frames"] == 3
    video_id = first["videos"][0]["video_id"]
    pngs = read_pngs(tmp_path / "a" / COND_DIR / video_id)
    np.testing.assert_array_equal(pngs, truth[video_id][:3])  # PNG: exact
    clip = decode_mp4(tmp_path / "a" / COND_DIR / f"{video_id}.mp4")
    assert clip.shape == (3, 128, 128, 3) and np.abs(clip.astype(int) - pngs).mean() < 2  # MP4: close


def test_a_shrunk_suite_has_its_own_key():
    assert get_suite("uniform_motion").key != get_suite("uniform_motion", VIDEOS).key
    assert get_suite("uniform_motion").splits == {"eval_id": 1050, "eval_ood": 2400}
    combinatorial = get_suite("combinatorial", 1)
    assert combinatorial.splits == {"eval_in_template": 1, "eval_out_of_template": 1}  # one trial per template


def test_ground_truth_through_png_scores_the_parse_floor_exactly(uniform, tmp_path):
    suite, references, _ = uniform
    submission = tmp_path / "png"
    for video_id, frames in _truth(suite, references).items():
        write_pngs(frames, submission / video_id)
    records = score_videos(suite, references, submission_source(Submission(submission, set()), suite), FAST)
    assert all(r["status"] == SCORED for r in records)
    for r in records:
        assert r["vel_err_per_frame"] == r["gt_floor_vel_err_per_frame"]
        assert r["parse_fail_rate"] == r["gt_floor_parse_fail_rate"] == 0
    assert max(r["vel_err_per_frame"] for r in records) < 0.05  # the sub-pixel parser's floor


def test_ground_truth_through_mp4_scores_the_compression_floor(uniform, tmp_path):
    suite, references, card = uniform
    submission = tmp_path / "mp4"
    submission.mkdir()
    for video_id, frames in _truth(suite, references).items():
        encode_mp4(frames, submission / f"{video_id}.mp4", suite.fps, bitrate=10_000)
    summary = score_suite(suite, card, references, submission_source(sub := Submission(submission, set()), suite),
                          tmp_path / "report", "gt-mp4", FAST, bitrates=(10_000,), bitrates_of=lambda: sub.bitrates,
                          log=lambda line: None)
    floor = compression_floor(suite, references, 10_000, FAST, None)
    assert summary["scores"] and [r for r in summary["scores"] if r["metric"] in {f["metric"] for f in floor}] == floor
    assert summary["submission_bitrate"] is not None and str(round(summary["submission_bitrate"])) in summary["compression_floors"]
    parse_floor = {r["group"]: r["value"] for r in summary["scores"] if r["metric"] == "gt_floor_vel_err_per_frame"}
    lossy = {r["group"]: r["value"] for r in floor if r["metric"] == "vel_err_per_frame"}
    assert all(lossy[g] > parse_floor[g] for g in parse_floor)  # H.264 costs something the parse floor does not show


def test_a_frozen_ball_scores_its_true_speed_and_inertia_scores_the_floor(uniform):
    suite, references, _ = uniform
    speeds = {}
    for directory in references.values():
        from phyray.data.shards import iter_rows

        for row in iter_rows(directory, ["video_id", "velocities"]):
            speeds[row["video_id"]] = float(np.linalg.norm(np.asarray(row["velocities"])[0, 0]))
    frozen = score_videos(suite, references, baseline_source(suite, "frozen"), FAST)
    for r in frozen:
        assert r["vel_err_per_frame"] == pytest.approx(speeds[r["video_id"]], abs=0.05)
    inertia = score_videos(suite, references, baseline_source(suite, "constant_velocity"), FAST)
    for r in inertia:
        assert r["vel_err_per_frame"] == pytest.approx(r["gt_floor_vel_err_per_frame"], abs=2e-3)


def test_constant_velocity_misses_gravity(bench_dir, ray_local):
    suite = get_suite("parabola", 2)
    references = reference_sets(suite, bench_dir / "data", log=lambda line: None)
    records = score_videos(suite, references, baseline_source(suite, "constant_velocity"), FAST)
    for r in records:
        assert r["vel_err_per_frame"] > 10 * r["gt_floor_vel_err_per_frame"] and r["vel_err_per_frame"] > 0.5


def _write_dataset(out: Path, videos: dict[str, np.ndarray]) -> None:
    ids = sorted(videos)
    table = pa.table({
        "video_id": ids,
        "frames": [encode_frames(videos[v]) for v in ids],
        "frames_encoding": [PLANAR_RGB] * len(ids),
        "frame_shape": [list(videos[v].shape) for v in ids],
    })
    write_product(out, Identity("submission", {"n": len(ids)}), [shard_name(0)], [len(ids)],
                  lambda missing: (write_shard(table, out / shard_name(i)) for i in missing), log=lambda line: None)


def test_every_format_of_the_same_frames_gives_the_same_scores(uniform, tmp_path):
    suite, references, _ = uniform
    frozen = baseline_source(suite, "frozen")
    decoded = {}
    for video_id, truth in _truth(suite, references).items():
        path = tmp_path / "mp4" / f"{video_id}.mp4"
        path.parent.mkdir(exist_ok=True)
        encode_mp4(frozen({}, truth), path, suite.fps, crf=18)
        decoded[video_id] = decode_mp4(path)
    for video_id, frames in decoded.items():
        write_pngs(frames, tmp_path / "png" / video_id)
        (tmp_path / "npz").mkdir(exist_ok=True)
        np.savez_compressed(tmp_path / "npz" / f"{video_id}.npz", frames=frames)
        (tmp_path / "npy").mkdir(exist_ok=True)
        np.save(tmp_path / "npy" / f"{video_id}.npy", frames.astype(np.float32) / 255.0)  # floats in [0, 1]
        (tmp_path / "big").mkdir(exist_ok=True)  # 256² (each pixel 2x2): area-averaged back
        np.save(tmp_path / "big" / f"{video_id}.npy", frames.repeat(2, axis=1).repeat(2, axis=2))
    _write_dataset(tmp_path / "shards" / "rollouts", decoded)
    scores = {
        kind: score_videos(suite, references, submission_source(Submission(tmp_path / kind, set()), suite), FAST)
        for kind in ("mp4", "png", "npz", "npy", "big", "shards")
    }
    assert all(r["status"] == SCORED for r in scores["mp4"])
    # A dataset whose shard does not match its manifest: a note, and each of its videos missing.
    shard = tmp_path / "shards" / "rollouts" / shard_name(0)
    shard.write_bytes(shard.read_bytes()[:-8] + b"corrupt!")
    broken = Submission(tmp_path / "shards", set())
    assert "checksum does not match" in dict(broken.notes)["rollouts"]
    assert {r["status"] for r in score_videos(suite, references, submission_source(broken, suite), FAST)} == {MISSING}
    for kind, records in scores.items():
        assert _scores(records) == _scores(scores["mp4"]), kind
        assert _scores(records, "psnr") == _scores(scores["mp4"], "psnr"), kind


def test_each_bad_video_gets_its_line_and_no_score_is_reported(uniform, tmp_path, capsys):
    suite, references, card = uniform
    truth = _truth(suite, references)
    ids = sorted(truth)
    submission = tmp_path / "videos"
    submission.mkdir()
    for video_id in ids[1:]:
        np.save(submission / f"{video_id}.npy", truth[video_id])
    np.save(submission / f"{ids[1]}.npy", truth[ids[1]][:20])  # wrong frame count
    np.save(submission / f"{ids[2]}.npy", truth[ids[3]])  # another video's frames
    (submission / f"{ids[4]}.mp4").write_bytes(b"not a video")  # beside its .npy: given twice
    (submission / f"{ids[5]}.npy").unlink()
    (submission / f"{ids[5]}.mp4").write_bytes(b"not a video")  # malformed
    np.save(submission / "someone-else-0001.npy", truth[ids[6]])  # not in the suite
    (submission / "notes.txt").write_text("hello")

    bench = str(Path(references["eval_id"]).parents[2])  # the module's: references are made once
    args = ["bench", "score", "--suite", "uniform_motion", "--videos-per-split", str(VIDEOS), "--no-ssim",
            "--bench-dir", bench, "--videos", str(submission), "--bitrates", "160000"]
    assert main([*args, "--out", str(tmp_path / "report")]) == 1
    lines = capsys.readouterr()
    records = {r["video_id"]: r for r in _csv(tmp_path / "report" / "videos.csv")}
    assert records[ids[0]]["status"] == MISSING
    assert records[ids[1]]["status"] == WRONG_FRAMES and "20 frames" in records[ids[1]]["reason"]
    assert records[ids[2]]["status"] == COND_MISMATCH and "conditioning frames differ" in records[ids[2]]["reason"]
    assert records[ids[4]]["status"] == MALFORMED and "more than once" in records[ids[4]]["reason"]
    assert records[ids[5]]["status"] == MALFORMED and "not a readable video" in records[ids[5]]["reason"]
    assert {records[v]["status"] for v in ids[3:4] + ids[6:]} == {SCORED}
    for video_id in (ids[0], ids[1], ids[2], ids[4], ids[5]):
        assert f"{video_id}: {records[video_id]['status']}" in lines.out
    assert "someone-else-0001: not a video of this suite" in lines.out and "notes.txt: not a video" in lines.out
    assert "incomplete submission" in lines.err
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert not summary["reported"] and summary["scores"] == [] and summary["counts"][SCORED] == 3
    assert "Not scored: the submission is incomplete" in (tmp_path / "report" / "results.md").read_text()

    assert main([*args, "--out", str(tmp_path / "partial"), "--allow-partial"]) == 0
    partial = json.loads((tmp_path / "partial" / "summary.json").read_text())
    assert partial["reported"] and {r["n"] for r in partial["scores"] if r["group"] == "id" and r["metric"] == "psnr"} <= {1, 2}


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


def test_cli_exports_and_scores_a_baseline_with_its_floors(uniform, tmp_path, capsys):
    suite, references, _ = uniform
    bench = str(Path(references["eval_id"]).parents[2])
    common = ["--suite", "uniform_motion", "--videos-per-split", str(VIDEOS), "--bench-dir", bench]
    assert main(["bench", "export", *common, "--out", str(tmp_path / "suite")]) == 0
    assert (tmp_path / "suite" / "suite.json").is_file()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["bench", "score", *common, "--baseline", "frozen", "--no-ssim", "--out", str(tmp_path / "r"),
                 "--mlflow", uri]) == 0
    results = (tmp_path / "r" / "results.md").read_text()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    (run,) = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("phyray-bench").experiment_id])
    assert run.data.tags["phyray.suite"] == suite.key and run.info.run_name == "baseline: frozen"
    logged = next(r for r in summary["scores"] if r["group"] == "id" and r["metric"] == "vel_err_per_frame")
    assert run.data.metrics["id/vel_err_per_frame"] == logged["value"]
    assert run.data.metrics["id/vel_err_per_frame_ci_low"] == logged["ci_low"]
    assert "floor_160000/id/vel_err_per_frame" in run.data.metrics
    assert {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)} == {"results.md", "summary.json", "videos.csv"}
    assert f"# {suite.key}: vel_err_per_frame" in results and f"- baseline: frozen: **Protocol.** {2 * VIDEOS} of {2 * VIDEOS} videos scored" in results
    for rate in ("10", "40", "160"):
        assert f"H.264 at {rate} kb/s" in results
    assert main(["bench", "score", *common, "--baseline", "constant_velocity", "--out", str(tmp_path / "cv")]) == 0
    cv = json.loads((tmp_path / "cv" / "summary.json").read_text())
    assert not cv["protocol"]["ssim"] and "ssim" not in {r["metric"] for r in cv["scores"]}  # ball suites: off by default
    assert main(["bench", "leaderboard", str(tmp_path / "r"), str(tmp_path / "cv"), "--out", str(tmp_path / "board.md")]) == 0
    board = (tmp_path / "board.md").read_text().splitlines()
    ranked = [line.split(" | ")[0] for line in board if line.startswith("| ")][1:]
    assert ranked[:2] == ["| baseline: constant_velocity", "| baseline: frozen"]  # the better first
    assert sum("compression floor" in line for line in ranked) == 3
    assert main(["bench", "score", *common, "--out", str(tmp_path / "x")]) == 2  # neither --videos nor --baseline
    assert main(["bench", "score", "--suite", "nope", "--baseline", "frozen", "--out", str(tmp_path / "y")]) == 2
    assert "--suite: unknown 'nope'" in capsys.readouterr().err


@pytest.mark.usefixtures("phyre_env")
def test_the_combinatorial_suite_scores_the_judge_and_fvd(bench_dir, ray_local):
    from dataclasses import replace

    from phyray.eval.fvd import default_weights

    if default_weights() is None:
        pytest.skip("no I3D weights: run `bash scripts/fetch_weights.sh`")
    # Two templates per split, two trials each: the full suite's settings, shrunk.
    suite = replace(get_suite("combinatorial", 1), splits={"eval_in_template": 2, "eval_out_of_template": 2},
                    templates={"eval_in_template": [10003, 10016], "eval_out_of_template": [10060, 10064]})
    references = reference_sets(suite, bench_dir / "data", log=lambda line: None)
    scoring = Scoring(ssim=False, fvd_weights=default_weights())
    truth = score_videos(suite, references, baseline_source(suite, "ground_truth"), scoring)
    frozen = score_videos(suite, references, baseline_source(suite, "frozen"), scoring)
    assert len(truth) == 8 and {r["split"] for r in truth} == {"eval_in_template", "eval_out_of_template"}
    for r in truth:
        assert r["abnormal"] == r["gt_floor_abnormal"] and r["psnr"] == 100
    from phyray.benchmark.score import suite_metrics, summarize

    fvd = {name: {r["group"]: r["value"] for r in summarize(records, suite_metrics(suite)) if r["metric"] == "fvd"}
           for name, records in (("truth", truth), ("frozen", frozen))}
    assert set(fvd["truth"]) == {"in_template", "out_of_template"}
    for group, value in fvd["truth"].items():
        assert abs(value) < 1e-3 < fvd["frozen"][group]  # a set against itself; nothing moving is far
    assert sum(r["abnormal"] for r in frozen) > sum(r["abnormal"] for r in truth)  # a frozen world levitates
    with pytest.raises(ConfigError, match="constant_velocity"):
        baseline_source(suite, "constant_velocity")


def test_a_changed_data_config_renames_the_suite(tmp_path, monkeypatch):
    import shutil

    import phyray.config as config

    before, other = get_suite("uniform_motion", VIDEOS).key, get_suite("collision", VIDEOS).key
    copy = tmp_path / "configs"
    shutil.copytree(config.CONFIG_DIR, copy)
    path = copy / "data" / "uniform_motion.yaml"
    text = path.read_text()
    assert "velocity: [[0.0, 0.8], [4.5, 6.0]]" in text
    path.write_text(text.replace("velocity: [[0.0, 0.8], [4.5, 6.0]]", "velocity: [[0.0, 0.8], [4.5, 7.0]]"))
    monkeypatch.setattr(config, "CONFIG_DIR", copy)
    assert get_suite("uniform_motion", VIDEOS).key != before  # other OOD videos: another suite
    assert get_suite("collision", VIDEOS).key == other
