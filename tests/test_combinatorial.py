"""Combinatorial PHYRE datasets through the shard machinery: splits, determinism, decoding."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from phyray.config import ConfigError
from phyray.data import decode_frames, iter_rows, read_manifest
from phyray.data.combinatorial import (
    FIRST_EVAL_TRIAL,
    SharedSidecar,
    generate_combinatorial,
    plan_items,
)
from phyray.data.shards import area_downsample
from phyray.sim.phyre import TEMPLATE_SETS, PhyreSidecar, index_to_rgb

pytestmark = pytest.mark.usefixtures("phyre_env")


def shard_bytes(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.glob("shard-*.parquet"))}


def test_split_rules():
    train = plan_items([10003, 10005], seeds=3, trials=4, split="train")
    in_template = plan_items([10003, 10005], seeds=3, trials=10, split="eval_in_template")
    assert len(train) == 24 and all(trial < FIRST_EVAL_TRIAL for _, _, trial in train)
    assert all(trial >= FIRST_EVAL_TRIAL for _, _, trial in in_template)
    assert not set(train) & set(in_template)
    with pytest.raises(ConfigError, match="held-out templates"):
        plan_items([10003, 10061], seeds=1, trials=1, split="train")
    with pytest.raises(ConfigError, match="held-out templates only"):
        plan_items([10003], seeds=1, trials=1, split="eval_out_of_template")
    with pytest.raises(ConfigError, match="--trials"):
        plan_items([10003], seeds=1, trials=991, split="train")
    assert set(TEMPLATE_SETS["60"]).isdisjoint(TEMPLATE_SETS["heldout"])


def test_dev_splits_are_other_trials_of_the_same_seeds_never_a_studys_test_or_training_trials():
    templates, held_out = [10003, 10005], TEMPLATE_SETS["heldout"][:2]
    train = plan_items(templates, seeds=3, trials=FIRST_EVAL_TRIAL, split="train")
    # A study's test sets: one trial per seed (990 in template, 0 out of template).
    test_in, test_out = (plan_items(t, 3, 1, s) for t, s in ((templates, "eval_in_template"), (held_out, "eval_out_of_template")))
    dev_in = plan_items(templates, seeds=3, trials=5, split="dev_in_template")
    dev_out = plan_items(held_out, seeds=3, trials=500, split="dev_out_of_template")
    assert {t for _, _, t in dev_in} == set(range(995, 1000)) and {t for _, _, t in dev_out} == set(range(500, 1000))
    assert {(t, s) for t, s, _ in dev_in} == {(t, s) for t, s, _ in test_in}  # same templates and seeds
    assert not set(dev_in) & (set(train) | set(test_in)) and not set(dev_out) & set(test_out)
    with pytest.raises(ConfigError, match="dev_in_template has 5 trials per seed"):
        plan_items(templates, seeds=1, trials=6, split="dev_in_template")
    with pytest.raises(ConfigError, match="held-out templates only"):
        plan_items(templates, seeds=1, trials=1, split="dev_out_of_template")


def test_generation_is_deterministic_across_workers_and_decodes(tmp_path, ray_local):
    one = generate_combinatorial([10003, 10005], 2, 2, "train", tmp_path / "one", shard_size=3, num_workers=1, progress=False)
    generate_combinatorial([10003, 10005], 2, 2, "train", tmp_path / "two", shard_size=3, num_workers=2, progress=False)
    assert one["num_videos"] == 8 and one["num_shards"] == 3
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")
    rows = list(iter_rows(tmp_path / "one"))
    assert {(r["template_id"], r["seed"], r["trial"]) for r in rows} == set(plan_items([10003, 10005], 2, 2, "train"))
    row = rows[0]
    rgb = decode_frames(row)
    assert rgb.shape == (32, 256, 256, 3)
    palette = np.asarray(row["palette"], dtype=np.uint8)
    assert (rgb[0] == palette[0]).all(axis=-1).mean() > 0.5  # mostly background
    small = decode_frames(row, resolution=64)
    np.testing.assert_array_equal(small, area_downsample(rgb, 64))
    assert read_manifest(tmp_path / "one")["counts"] == {"10003": 4, "10005": 4}
    # The objects column holds the sidecar's (T, N, 15) arrays, whatever N each video has.
    with PhyreSidecar() as phyre:
        videos = phyre.simulate_batch([(r["template_id"], r["seed"], r["trial"]) for r in rows])
    assert len({video["objects"].shape[1] for video in videos}) > 1
    for row, video in zip(rows, videos):
        np.testing.assert_array_equal(np.asarray(row["objects"], dtype=np.float32), video["objects"])


def test_a_process_keeps_its_sidecar_between_shards_until_it_idles():
    shared = SharedSidecar(idle_s=0.5)
    with shared.use() as sidecar:
        pid = sidecar.pid
    with shared.use() as sidecar:  # the next shard task in this process
        assert sidecar.pid == pid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}"), "an idle sidecar stays running"
    with shared.use() as sidecar:
        assert sidecar.pid != pid and sidecar.ping()["ok"]


def test_decoded_frames_match_phyres_own_rgb(tmp_path, ray_local):
    generate_combinatorial([10023], 1, 1, "train", tmp_path / "ds", progress=False)
    row = next(iter_rows(tmp_path / "ds"))
    with PhyreSidecar() as phyre:
        video = phyre.simulate(10023, seed=0, trial=0, rgb=True)
    np.testing.assert_array_equal(decode_frames(row), video["rgb"])
    np.testing.assert_array_equal(decode_frames(row), index_to_rgb(video["frames"]))


def test_cli_needs_the_combinatorial_arguments(tmp_path, capsys):
    from phyray.cli import main

    code = main(["data", "generate", "--scenario", "combinatorial", "--out", str(tmp_path / "x"), "--quiet"])
    assert code == 2
    assert "needs --templates, --seeds and --trials" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
