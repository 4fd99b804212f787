"""Physics evaluation with known answers: floors, velocity offsets, vanishing balls, aggregation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow as pa
import pytest

from phyray.artifacts import Identity, write_product
from phyray.cli import main
from phyray.config import load_data_config
from phyray.data import ShardError, decode_frames, iter_rows, row_states
from phyray.data.generate import generate_dataset
from phyray.data.shards import (
    PLANAR_RGB,
    SCHEMA,
    area_downsample,
    encode_frames,
    shard_name,
    write_shard,
)
from phyray.eval import (
    ParsedStates,
    evaluate_physics,
    evaluate_videos,
    fill_missing,
    parse_states,
    summarize,
)
from phyray.eval.physics import collision_frames, in_view
from phyray.eval.report import POOLED_LEVEL, ROW_FIELDS
from phyray.eval.video import PSNR_CAP_DB, frame_psnr, frame_ssim, frames_to_tensor, pixel_metrics
from phyray.render import ball_colors, render_videos

RESOLUTION = 64
C = 3
DT = 0.1


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, ray_local):
    """Tiny reference sets at 64²: uniform-motion and collision ID, uniform-motion OOD."""
    root = tmp_path_factory.mktemp("eval-data")
    out = {}
    for name, scenario, split, size in [
        ("uniform", "uniform_motion", "eval_id", "6"),
        ("collision", "collision", "eval_id", "6"),
        ("uniform_ood", "uniform_motion", "eval_ood", "9"),
    ]:
        cfg = load_data_config(scenario, [f"render.resolution={RESOLUTION}"])
        generate_dataset(cfg, split, size, root / name, seed=1, num_workers=2, progress=False)
        out[name] = root / name
    return out


def rows_of(directory):
    return list(iter_rows(directory))


def write_rollouts(directory, rows, videos):
    """A rollout dataset: the reference rows with their frames replaced by `videos`."""
    rollout_rows = [
        dict(row, frames=encode_frames(np.ascontiguousarray(v)), frame_shape=list(v.shape), frames_encoding=PLANAR_RGB)
        for row, v in zip(rows, videos)
    ]

    def write(missing):
        yield write_shard(pa.Table.from_pylist(rollout_rows, schema=SCHEMA), directory / shard_name(0))

    write_product(directory, Identity("rollouts", {"test": directory.name}), [shard_name(0)], [len(rows)], write)
    return directory


def rerender(rows, shift_velocity):
    """Re-render each reference video with (T, K, 2) world velocity `shift_velocity(row)` added
    to every ball from the first generated frame on: x_t += Δv·Δt·(t − c + 1) for t ≥ c."""
    positions = np.stack([row_states(row)[0].astype(np.float64) for row in rows])  # (N, T, K, 2)
    steps = np.clip(np.arange(positions.shape[1]) - C + 1, 0, None) * DT  # (T,)
    for i, row in enumerate(rows):
        positions[i] += steps[:, None, None] * shift_velocity(row)
    radii = np.stack([row_states(row)[2] for row in rows])
    return render_videos(positions, radii, np.asarray(rows[0]["colors"], np.uint8), RESOLUTION)


def by_key(report):
    return {(r["ood_level"], r["metric"]): r for r in report}


# ---------------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("parser", ["threshold", "subpixel"])
def test_parsers_find_ideal_discs_within_a_quarter_pixel(parser):
    rng = np.random.default_rng(0)
    n, resolution = 60, 128
    # A red ball on the left half and a blue ball on the right half of each frame.
    red, blue = rng.uniform([1.6, 1.6], [3.4, 8.4], (n, 2)), rng.uniform([6.6, 1.6], [8.4, 8.4], (n, 2))
    positions = np.stack([red, blue], axis=1)  # (N, K, 2)
    radii = rng.uniform(0.5, 1.5, (n, 2))
    frames = render_videos(positions[:, None], radii, ball_colors(2), resolution)  # (N, 1, H, W, 3)
    parsed = parse_states(frames, ball_colors(2), parser)
    px = resolution / 10.0
    assert parsed.found.all()
    assert np.abs(parsed.positions[:, 0] - positions).max() * px <= 0.25
    assert np.abs(parsed.radii[:, 0] - radii).max() * px <= 0.25
    # A frame's parse does not depend on the batch it is in (exact integer moments).
    part = parse_states(list(frames[5:9]), ball_colors(2), parser)
    np.testing.assert_array_equal(part.positions, parsed.positions[5:9])


def test_missing_balls_fall_back_to_the_border_and_keep_y_and_r():
    positions = np.full((1, 4, 2, 2), np.nan)
    radii = np.full((1, 4, 2), np.nan)
    found = np.zeros((1, 4, 2), dtype=bool)
    positions[0, 1] = [[2.0, 3.0], [7.0, 4.0]]
    radii[0, 1] = [0.8, 1.1]
    found[0, 1] = True
    filled, filled_r = fill_missing(ParsedStates(positions, radii, found))
    # Left ball (0) -> x = 0, right ball (1) -> x = 10; y, r from the last (or first) detection.
    np.testing.assert_array_equal(filled[0, :, 0, 0], [0.0, 2.0, 0.0, 0.0])
    np.testing.assert_array_equal(filled[0, :, 1, 0], [10.0, 7.0, 10.0, 10.0])
    np.testing.assert_array_equal(filled[0, :, 1, 1], [4.0, 4.0, 4.0, 4.0])
    np.testing.assert_array_equal(filled_r[0, :, 0], [0.8] * 4)
    single = ParsedStates(np.full((1, 2, 1, 2), np.nan), np.full((1, 2, 1), np.nan), np.zeros((1, 2, 1), bool))
    never, never_r = fill_missing(single)
    np.testing.assert_array_equal(never[0, :, 0], [[10.0, 5.0], [10.0, 5.0]])  # never found
    np.testing.assert_array_equal(never_r, 0.0)


def test_psnr_and_ssim_are_torchmetrics_values_bit_for_bit(datasets):
    """phyray's own PSNR and SSIM (written out to spare every scoring process torchmetrics'
    import) against torchmetrics itself: rendered videos, noisy and shifted copies, odd sizes."""
    import torch
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    rng = np.random.default_rng(0)
    truth = np.stack([decode_frames(row) for row in iter_rows(datasets["collision"])][:3])  # (3, T, H, W, 3)
    noisy = np.clip(truth + rng.normal(0, 20, truth.shape), 0, 255).astype(np.uint8)
    odd = rng.integers(0, 256, (2, 5, 37, 23, 3), dtype=np.uint8)
    pairs = [(truth, noisy), (truth, np.roll(truth, 2, axis=3)), (odd, odd[::-1]), (truth, truth)]
    for rollouts, references in pairs:
        for rollout, reference in zip(rollouts, references):
            x, y = frames_to_tensor(rollout), frames_to_tensor(reference)  # (T, 3, H, W) each
            expected_psnr = peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))
            assert torch.equal(frame_psnr(x, y), expected_psnr)
            expected_ssim = structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")
            assert torch.equal(frame_ssim(x, y), expected_ssim)
    scores = pixel_metrics(truth, noisy, cond_frames=1)
    assert np.all((scores["ssim"] > 0) & (scores["ssim"] < 1)) and np.all(scores["psnr"] < PSNR_CAP_DB)
    assert np.all(pixel_metrics(truth, truth, cond_frames=1)["psnr"] == PSNR_CAP_DB)


def test_collision_frame_is_the_first_velocity_jump_else_the_impact_frame():
    velocities = np.zeros((2, 6, 2, 2))
    velocities[0, :, 0, 0] = [2, 2, 2, -1, -1, -1]  # jump at frame 3
    velocities[1, :, 0, 0] = [0.05, 0.05, 0.05, 0.05, -0.02, -0.02]  # too small to count
    np.testing.assert_array_equal(collision_frames(velocities, [3, 4]), [3, 4])
    np.testing.assert_array_equal(collision_frames(velocities, [None, None]), [3, 6])


# ---------------------------------------------------------------------------------------------
# Known answers on generated data
# ---------------------------------------------------------------------------------------------


def test_rollout_equal_to_reference_scores_exactly_the_floor(datasets, tmp_path):
    for name in ("uniform", "collision"):
        rows = rows_of(datasets[name])
        same = write_rollouts(tmp_path / name, rows, [decode_frames(r) for r in rows])
        report = evaluate_physics(same, datasets[name])
        rows_by = by_key(report)
        assert {r["ood_level"] for r in report} == {"id"}
        for (level, metric), row in rows_by.items():
            if metric.startswith("vel_err") or metric.startswith("parse"):
                assert row["value"] == rows_by[(level, "gt_floor_" + metric)]["value"], metric
                assert row["n"] == len(rows) and row["n_excluded"] == 0
        assert 0 < rows_by[("id", "vel_err_per_frame")]["value"] < 0.05
        assert rows_by[("id", "parse_fail_rate")]["value"] == 0.0
        assert rows_by[("id", "psnr")]["value"] == PSNR_CAP_DB
        assert rows_by[("id", "ssim")]["value"] == pytest.approx(1.0, abs=1e-6)
        assert all(r["resolution"] == RESOLUTION for r in report)


def test_a_lossless_vae_reconstructs_exactly_and_its_floor_is_the_parse_floor(datasets, tmp_path):
    from phyray.eval.report import VAE_FLOOR_PREFIX, add_vae_floor, evaluate_physics_records
    from phyray.eval.rollouts import reconstruct_dataset
    from phyray.study.prepare import calibrated_export

    reference = datasets["uniform_ood"]
    vae = calibrated_export("s2d-f4t2", reference, tmp_path / "vae", Identity("vae", {"preset": "s2d-f4t2"}))
    manifest = reconstruct_dataset(vae, reference, tmp_path / "recon")
    assert manifest["identity"]["kind"] == "reconstructions"
    for original, rebuilt in zip(rows_of(reference), rows_of(tmp_path / "recon")):
        np.testing.assert_array_equal(decode_frames(rebuilt), decode_frames(original))
    floor = evaluate_physics_records(tmp_path / "recon", reference, ssim=False)
    records = add_vae_floor(floor, floor)
    rows = by_key(summarize(records))
    for (level, metric), row in rows.items():
        if metric.startswith(VAE_FLOOR_PREFIX) and metric != VAE_FLOOR_PREFIX + "psnr":
            physics = metric.removeprefix(VAE_FLOOR_PREFIX)
            assert row["value"] == rows[(level, "gt_floor_" + physics)]["value"], metric
            assert row["n"] == rows[(level, "gt_floor_" + physics)]["n"]
    assert rows[("pooled", VAE_FLOOR_PREFIX + "psnr")]["value"] == PSNR_CAP_DB
    with pytest.raises(ShardError, match="has no VAE reconstruction"):
        add_vae_floor(floor, floor[1:])


def test_kept_scores_are_named_by_what_made_them(datasets, tmp_path):
    """The reference's own parse (the ground-truth floor) is kept per reference, videos, shape
    and parser settings and shared by every rollout set scored against it; a set's whole
    records are kept by both sets' identities and the scoring settings."""
    from phyray.eval.report import cached_physics_records, evaluate_physics_records

    reference = datasets["collision"]
    rows = rows_of(reference)
    shifted = write_rollouts(tmp_path / "shifted", rows, [np.roll(decode_frames(r), 1, axis=2) for r in rows])
    same = write_rollouts(tmp_path / "same", rows, [decode_frames(r) for r in rows])
    plain = json.dumps(evaluate_physics_records(shifted, reference, ssim=False))
    cache = tmp_path / "scores"
    assert json.dumps(evaluate_physics_records(shifted, reference, ssim=False, floor_cache=cache)) == plain
    (kept,) = cache.glob("*.json")
    # Another rollout set of that reference reads the kept floor (altered here, so it shows)
    # and, with no pixel metrics, needs no reference frames at all.
    floors = json.loads(kept.read_text())
    floors[rows[0]["video_id"]]["gt_floor_vel_err_per_frame"] = 123.0
    kept.write_text(json.dumps(floors))
    records = evaluate_physics_records(same, reference, psnr=False, ssim=False, floor_cache=cache)
    assert records[0]["gt_floor_vel_err_per_frame"] == 123.0
    assert records[1]["gt_floor_vel_err_per_frame"] == records[1]["vel_err_per_frame"]
    # Another parser, another floor.
    evaluate_physics_records(same, reference, parser="threshold", ssim=False, floor_cache=cache)
    assert len(list(cache.glob("*.json"))) == 2
    # Whole records: made once, then read back.
    records_cache = tmp_path / "records"
    made = cached_physics_records(records_cache, shifted, reference, ssim=False)
    assert json.dumps(made) == plain
    (kept_records,) = [p for p in records_cache.glob("*.json") if json.loads(p.read_text()) == made]
    kept_records.write_text(json.dumps(made[:1]))
    assert cached_physics_records(records_cache, shifted, reference, ssim=False) == made[:1]
    assert len(cached_physics_records(records_cache, shifted, reference, ssim=False, psnr=False)) == len(rows)


def test_lower_resolution_rollouts_are_compared_with_the_area_averaged_reference(datasets):
    rows = rows_of(datasets["collision"])
    small = [area_downsample(decode_frames(r), RESOLUTION // 2) for r in rows]
    records = evaluate_videos(rows, small, ssim=False)
    for record in records:
        assert record["resolution"] == RESOLUTION // 2
        assert record["vel_err_per_frame"] == record["gt_floor_vel_err_per_frame"] < 0.1
        assert record["psnr"] == PSNR_CAP_DB


def test_a_known_velocity_offset_is_measured(datasets):
    # Uniform motion: the ball slows by 0.5 after the conditioning frames (it stays in view).
    rows = rows_of(datasets["uniform"])
    dv = -0.5
    frames = rerender(rows, lambda row: np.array([dv, 0.0]))
    for record in evaluate_videos(rows, frames, ssim=False):
        for metric in ("vel_err_per_frame", "vel_err_per_frame_x", "vel_err_mean_velocity"):
            assert record[metric] == pytest.approx(abs(dv), abs=0.02), (metric, record)
    # Collision: both balls drift vertically toward the centre at 0.3, post-collision included.
    rows = rows_of(datasets["collision"])
    dvy = 0.3
    frames = rerender(rows, lambda row: np.array([0.0, dvy * -np.sign(row_states(row)[0][0, 0, 1] - 5.0)]))
    for record in evaluate_videos(rows, frames, ssim=False):
        for metric in ("vel_err_per_frame", "vel_err_per_frame_y", "vel_err_mean_velocity"):
            assert record[metric] == pytest.approx(dvy, abs=0.02), (metric, record)
        assert record["gt_floor_vel_err_per_frame"] < 0.05


def test_a_vanishing_ball_counts_as_parse_failures_without_crashing(datasets):
    rows = rows_of(datasets["uniform"])
    vanish_from = 10
    frames = np.stack([decode_frames(r) for r in rows])
    frames[:, vanish_from:] = 255
    frames[0] = 255  # one video blank from the start: the ball is never found
    records = evaluate_videos(rows, frames, ssim=False)
    for i, (row, record) in enumerate(zip(rows, records)):
        positions, _, radii = row_states(row)
        visible = in_view(positions[None], radii[None])[0, :, 0]  # (T,)
        judged = visible & (np.arange(len(visible)) >= C)
        gone = judged & (np.arange(len(visible)) >= (0 if i == 0 else vanish_from))
        assert record["parse_failures"] == gone.sum() > 0
        assert record["parse_fail_rate"] == pytest.approx(gone.sum() / judged.sum())
        assert np.isfinite(record["vel_err_per_frame"]) and record["vel_err_per_frame"] > 1.0
        assert record["gt_floor_parse_fail_rate"] == 0.0


def test_videos_without_valid_frames_are_excluded_and_counted(datasets):
    rows = rows_of(datasets["uniform"])
    frames = [decode_frames(r) for r in rows]
    # Ground truth that never has the ball fully in view: nothing to count for that video.
    positions = np.asarray(rows[1]["positions"])
    rows[1] = dict(rows[1], positions=(positions - [20.0, 0.0]).tolist())
    report = by_key(summarize(evaluate_videos(rows, frames, ssim=False)))
    for metric in ("vel_err_per_frame", "vel_err_mean_velocity_x", "parse_fail_rate", "gt_floor_vel_err_per_frame"):
        assert (report[("id", metric)]["n"], report[("id", metric)]["n_excluded"]) == (len(rows) - 1, 1)
    assert report[("id", "psnr")]["n"] == len(rows)


def test_ood_levels_aggregate_into_the_pooled_row(datasets, tmp_path):
    rows = rows_of(datasets["uniform_ood"])
    rng = np.random.default_rng(3)
    offsets = {row["video_id"]: rng.uniform(-0.4, 0.0) for row in rows}
    frames = rerender(rows, lambda row: np.array([offsets[row["video_id"]], 0.0]))
    rollouts = write_rollouts(tmp_path / "ood", rows, frames)
    report = evaluate_physics(rollouts, datasets["uniform_ood"], ssim=False)
    levels = {r["ood_level"] for r in report}
    assert levels == {"radius", "velocity", "both", POOLED_LEVEL}
    for metric in {r["metric"] for r in report}:
        per_level = [r for r in report if r["metric"] == metric and r["ood_level"] != POOLED_LEVEL]
        pooled = by_key(report)[(POOLED_LEVEL, metric)]
        assert sum(r["n"] for r in per_level) == pooled["n"]
        assert sum(r["n"] + r["n_excluded"] for r in per_level) == pooled["n"] + pooled["n_excluded"] == len(rows)
        counted = [r for r in per_level if r["n"]]
        if counted:
            weighted = sum(r["value"] * r["n"] for r in counted) / sum(r["n"] for r in counted)
            assert pooled["value"] == pytest.approx(weighted, rel=1e-12)


def test_a_rollout_missing_from_the_reference_is_a_clear_error(datasets, tmp_path, capsys):
    rows = rows_of(datasets["uniform"])
    stray = dict(rows[2], video_id="uniform_motion-eval_id-6-s9-0000099")
    rollouts = write_rollouts(tmp_path / "stray", [rows[0], stray], [decode_frames(rows[0]), decode_frames(rows[2])])
    with pytest.raises(ShardError, match="uniform_motion-eval_id-6-s9-0000099"):
        evaluate_physics(rollouts, datasets["uniform"])
    code = main(["eval", "physics", "--rollouts", str(rollouts), "--reference", str(datasets["uniform"]),
                 "--out", str(tmp_path / "never.json"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "0000099" in err
    assert not (tmp_path / "never.json").exists()


def test_flipped_bytes_in_a_rollout_shard_are_an_error_naming_it(datasets, tmp_path, capsys):
    rows = rows_of(datasets["uniform"])
    rollouts = write_rollouts(tmp_path / "flipped", rows, [decode_frames(r) for r in rows])
    shard = rollouts / shard_name(0)
    data = bytearray(shard.read_bytes())
    for offset in range(8):  # 8 bytes inside the frames' data: still a readable Parquet file
        data[len(data) // 3 + offset] ^= 0x01
    shard.write_bytes(bytes(data))
    code = main(["eval", "physics", "--rollouts", str(rollouts), "--reference", str(datasets["uniform"]),
                 "--out", str(tmp_path / "never.json"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"{shard}: checksum does not match" in err
    assert not (tmp_path / "never.json").exists()


def test_cli_writes_the_report_as_json_and_csv(datasets, tmp_path, capsys):
    rows = rows_of(datasets["collision"])
    rollouts = write_rollouts(tmp_path / "rollouts", rows, rerender(rows, lambda row: np.array([0.0, 0.0])))
    out = tmp_path / "reports" / "report.json"
    code = main(["eval", "physics", "--rollouts", str(rollouts), "--reference", str(datasets["collision"]),
                 "--out", str(out), "--parser", "threshold", "--cond-frames", "3", "--no-ssim", "--quiet"])
    assert code == 0
    report = json.loads(out.read_text())
    with open(out.with_suffix(".csv"), newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(report) > 0
    assert list(table[0]) == list(ROW_FIELDS)
    assert {r["parser"] for r in report} == {"threshold"}
    assert {r["metric"] for r in report} >= {"vel_err_per_frame", "gt_floor_vel_err_mean_velocity", "psnr"}
    assert "collision" in capsys.readouterr().out
