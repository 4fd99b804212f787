"""Dataset generation end to end on a real local Ray: schema, determinism, resume, bad input."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pyarrow.parquet as pq
import pytest

from phyray.cli import main
from phyray.config import ConfigError, load_data_config, load_scenario_config, parse_size
from phyray.data import (
    ShardError,
    decode_frames,
    iter_rows,
    open_shards,
    read_manifest,
    verify_dataset,
)
from phyray.data.generate import build_shard, compose_colors, shard_tasks, simulate_video
from phyray.data.plan import plan_dataset
from phyray.data.shards import MANIFEST, SCHEMA, shard_name

SMALL = ["--set", "shard_size=40", "--resolution", "32", "--quiet"]


def generate(out, scenario="uniform_motion", size="100", split="train", workers=2, extra=()):
    argv = ["data", "generate", "--scenario", scenario, "--split", split, "--out", str(out)]
    if size is not None:
        argv += ["--size", size]
    return main(argv + ["--num-workers", str(workers), *SMALL, *extra])


def shard_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.glob("shard-*.parquet"))}


# ---------------------------------------------------------------------------------------------
# Sizes and plans
# ---------------------------------------------------------------------------------------------


def test_size_parsing():
    assert parse_size("30K") == ("30K", None)
    assert parse_size("2K") == ("2K", 2000)
    assert parse_size("200") == ("200", 200)
    assert parse_size("1.5M") == ("1.5M", 1_500_000)
    for bad in ("lots", "0", "-5", "2.5"):
        with pytest.raises(ConfigError, match="size"):
            parse_size(bad)


def test_named_presets_are_the_papers_grids():
    uniform = load_data_config("uniform_motion")
    assert plan_dataset(uniform, "train", "30K", 0).num_videos == 30_000
    collision = load_data_config("collision")
    plan = plan_dataset(collision, "train", "30K", 0)
    # 8² radii × 21² speeds = 28,224 points, minus the ~5% that cannot be placed.
    assert 0.9 * 28_224 < plan.num_videos < 28_224


def test_count_sizes_are_exact_and_eval_sets_are_disjoint_from_training():
    for scenario in ("uniform_motion", "collision", "parabola"):
        cfg = load_data_config(scenario)
        train = plan_dataset(cfg, "train", "500", 0)
        assert train.num_videos == 500
        assert len({tuple(p) for p in train.params}) == 500
        eval_id = plan_dataset(cfg, "eval_id", "300", 0)
        assert not {tuple(p) for p in train.params} & {tuple(p) for p in eval_id.params}
        lo, hi = cfg.id.radius[0].lo, cfg.id.radius[0].hi
        radius_col = 0
        assert np.all((eval_id.params[:, radius_col] >= lo) & (eval_id.params[:, radius_col] <= hi))


def test_dev_splits_are_drawn_like_the_test_splits_from_other_videos():
    for scenario in ("uniform_motion", "collision", "parabola"):
        cfg = load_data_config(scenario)
        train = {tuple(p) for p in plan_dataset(cfg, "train", "500", 0).params}
        for test_split, dev_split in (("eval_id", "dev_id"), ("eval_ood", "dev_ood")):
            test, dev = plan_dataset(cfg, test_split, None, 0), plan_dataset(cfg, dev_split, None, 0)
            assert dev.num_videos == test.num_videos == cfg.eval_sizes[test_split]
            assert sorted(map(str, dev.ood_levels)) == sorted(map(str, test.ood_levels))
            dev_points = {tuple(p) for p in dev.params}
            assert not dev_points & {tuple(p) for p in test.params} and not dev_points & train
            assert not set(dev.video_seeds) & set(test.video_seeds)
            # Same distribution: every parameter of the dev set spans the test set's range.
            lo, hi = test.params.min(axis=0), test.params.max(axis=0)
            span = hi - lo
            assert np.all(dev.params.min(axis=0) <= lo + 0.1 * span) and np.all(dev.params.max(axis=0) >= hi - 0.1 * span)
            assert np.all(dev.params >= lo - 0.1 * span) and np.all(dev.params <= hi + 0.1 * span)


def test_ood_levels_draw_the_right_parameters_out_of_distribution():
    cfg = load_data_config("collision")
    plan = plan_dataset(cfg, "eval_ood", "600", 0)
    assert sorted(set(plan.ood_levels)) == sorted(cfg.ood_levels)
    id_r, id_v = cfg.id.radius[0], cfg.id.velocity[0]
    for level, ood_params in cfg.ood_levels.items():
        rows = plan.params[plan.ood_levels == level]
        assert len(rows) == 100
        for col, name in enumerate(plan.names):
            value_range = id_r if name.startswith("r") else id_v
            inside = (rows[:, col] >= value_range.lo) & (rows[:, col] <= value_range.hi)
            assert (not inside.any()) if name in ood_params else inside.all(), (level, name)


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def test_generated_shards_follow_the_schema_and_decode(tmp_path, ray_local):
    out = tmp_path / "collision"
    assert generate(out, scenario="collision", size="90") == 0
    manifest = read_manifest(out)
    assert manifest["num_videos"] == 90 and manifest["num_shards"] == 3
    assert [e["file"] for e in manifest["shards"]] == [shard_name(i) for i in range(3)]
    verify_dataset(out)
    table = pq.read_table(out / shard_name(0))
    assert table.schema.equals(SCHEMA)
    rows = list(iter_rows(out))
    assert len({r["video_id"] for r in rows}) == 90
    row = rows[0]
    frames = decode_frames(row)
    assert frames.shape == (32, 32, 32, 3) and frames.dtype == np.uint8
    assert row["frame_shape"] == [32, 32, 32, 3]
    assert np.asarray(row["positions"]).shape == (32, 2, 2)
    assert np.asarray(row["velocities"]).shape == (32, 2, 2)
    assert row["colors"] == [[255, 0, 0], [0, 0, 255]]
    params = json.loads(row["params"])
    assert {"r1", "r2", "v1", "v2", "x0", "y0", "impact_frame"} <= params.keys()
    assert row["split"] == "train" and row["ood_level"] is None and isinstance(row["seed"], int)
    assert open_shards(out).count() == 90


def test_track_columns_hold_what_the_simulator_made(tmp_path):
    """positions, velocities, radii and colors are built from numpy buffers and offsets; each row
    holds its video's arrays, also in a shard whose videos have different object counts (a
    temporal composition shard mixes one-ball bounces and two-ball collisions)."""
    cfg = load_scenario_config("compose-temporal", ["render.resolution=32"])
    plan = plan_dataset(cfg, "train", "12", 0)
    task = shard_tasks(cfg, plan, tmp_path, [0])[0]
    table, _ = build_shard(cfg, task)
    object_counts = set()
    for i, row in enumerate(table.to_pylist()):
        scene, trajectory, placement = simulate_video(cfg, dict(zip(task["names"], task["params"][i])),
                                                      task["video_seeds"][i])
        for column, simulated in (("positions", trajectory.positions), ("velocities", trajectory.velocities),
                                  ("radii", scene.radii)):
            np.testing.assert_array_equal(np.asarray(row[column], np.float32), simulated.astype(np.float32))
        np.testing.assert_array_equal(row["colors"], compose_colors(cfg.compose, placement["kind"]))
        object_counts.add(len(scene.radii))
    assert object_counts == {1, 2}


def test_bytes_do_not_depend_on_worker_count(tmp_path, ray_local):
    assert generate(tmp_path / "one", size="80", workers=1) == 0
    assert generate(tmp_path / "two", size="80", workers=2) == 0
    one, two = shard_bytes(tmp_path / "one"), shard_bytes(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 2
    assert one == two
    assert (tmp_path / "one" / MANIFEST).read_bytes() == (tmp_path / "two" / MANIFEST).read_bytes()


def test_local_ray_workers_commit_arrows_memory_as_used(ray_local):
    """A local Ray's workers start with mimalloc's lazy arena commit (`init_ray`): with its eager
    default, generating collision shards at 256² was 18-28 % slower on this VM. The setting is read
    at a process's first Arrow allocation, so only the environment a worker starts with can
    carry it."""

    @ray_local.remote
    def arena_eager_commit() -> str | None:
        return os.environ.get("MIMALLOC_ARENA_EAGER_COMMIT")

    assert ray_local.get(arena_eager_commit.remote()) == "0"


def test_resume_restores_a_deleted_shard_byte_identically(tmp_path, ray_local):
    out = tmp_path / "ds"
    assert generate(out, size="120") == 0
    before = shard_bytes(out)
    (out / shard_name(1)).unlink()
    mtime_other = (out / shard_name(0)).stat().st_mtime_ns
    assert generate(out, size="120") == 0
    assert shard_bytes(out) == before
    assert (out / shard_name(0)).stat().st_mtime_ns == mtime_other  # untouched, not redone
    assert not list(out.glob(".*tmp"))


def test_a_corrupt_shard_is_detected_and_regenerated_saying_so(tmp_path, ray_local, capsys):
    out = tmp_path / "ds"
    assert generate(out, size="40") == 0
    before = shard_bytes(out)
    path = out / shard_name(0)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ShardError, match=shard_name(0)):
        verify_dataset(out)
    capsys.readouterr()
    assert generate(out, size="40") == 0
    said = [line for line in capsys.readouterr().out.splitlines() if "remaking" in line]
    assert len(said) == 1 and shard_name(0) in said[0]
    assert shard_bytes(out) == before


def test_eval_splits_record_ood_levels(tmp_path, ray_local):
    out = tmp_path / "ood"
    assert generate(out, scenario="parabola", size="60", split="eval_ood") == 0
    manifest = read_manifest(out)
    assert manifest["counts"] == {"both": 20, "radius": 20, "velocity": 20}
    levels = {r["ood_level"] for r in iter_rows(out, columns=["ood_level"])}
    assert levels == {"both", "radius", "velocity"}


# ---------------------------------------------------------------------------------------------
# Bad input: one clear line naming the field or path, non-zero exit, nothing written
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv_extra, message",
    [
        (["--scenario", "pendulum"], "--scenario: unknown 'pendulum'"),
        (["--scenario", "uniform_motion", "--size", "many"], "size: cannot parse 'many'"),
        (["--scenario", "uniform_motion", "--set", "id.velocity=[4.0, 1.0]"], "id.velocity"),
        (["--scenario", "uniform_motion", "--set", "id.radius=[-1.0, 1.0]"], "id.radius"),
        (["--scenario", "collision", "--set", "ood.radius=[[0.3, 0.6]]"], "overlaps the ID range"),
        (["--scenario", "uniform_motion", "--set", "shard_sizes=3"], "shard_sizes"),
        (["--scenario", "uniform_motion", "--set", "id.radius=[0.5"], "override 'id.radius=[0.5': not valid YAML"),
        (["--scenario", "uniform_motion", "--seed", "-1"], "seed"),
        (["--scenario", "uniform_motion", "--num-workers", "0"], "--num-workers: must be >= 1"),
    ],
)
def test_bad_input_fails_with_one_clear_line(tmp_path, capsys, argv_extra, message):
    out = tmp_path / "never"
    code = main(["data", "generate", "--out", str(out), "--quiet", *argv_extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_no_command_prints_the_usage_and_version_the_package(capsys):
    from importlib.metadata import version

    for argv, usage, commands in (
        ([], "usage: phyray ", ("data", "train", "study")),
        (["data"], "usage: phyray data ", ("generate", "encode")),
    ):
        assert main(argv) == 2
        printed = capsys.readouterr()
        assert printed.out.startswith(usage) and all(c in printed.out for c in commands) and printed.err == ""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"phyray {version('phyray')}\n"


def test_unwritable_out_fails_and_writes_nothing(tmp_path, capsys):
    if os.geteuid() == 0:
        # root ignores permission bits; a path under a regular file can never be created.
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = blocker / "ds"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        out = locked / "ds"
    code = main(["data", "generate", "--scenario", "uniform_motion", "--size", "10", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--out" in err and str(out) in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_out_holding_another_dataset_is_refused(tmp_path, ray_local, capsys):
    out = tmp_path / "ds"
    assert generate(out, size="40") == 0
    before = shard_bytes(out)
    first = read_manifest(out)["identity"]["id"]
    assert generate(out, size="40", extra=["--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert f"holds dataset {first}, not dataset " in err and len(err.strip().splitlines()) == 1
    assert shard_bytes(out) == before
