"""Latents through the one writer: killed mid-encode, rerun with another config, then finished.

The VAE is a seeded, untrained `vae-f4t2c4-tiny` export: encoding cost and identities are
those of a real one, without minutes of training.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from phyray.artifacts import JOURNAL, MANIFEST, PLAN_FILE, Identity
from phyray.cli import main
from phyray.config import load_data_config
from phyray.data.generate import generate_dataset
from phyray.data.latents import encode_dataset
from phyray.data.shards import read_manifest
from phyray.models.export import export_id, save_export
from phyray.models.vae import build_vae

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source(tmp_path_factory, ray_local):
    """48 videos at 32², 16 frames, in 16 shards of 3, and a VAE export."""
    root = tmp_path_factory.mktemp("latents")
    cfg = load_data_config("uniform_motion", ["render.resolution=32", "physics.num_frames=16", "min_frames_in_view=16", "shard_size=3"])
    generate_dataset(cfg, "train", "48", root / "train", num_workers=2, progress=False)
    torch.manual_seed(0)
    vae = build_vae("vae-f4t2c4-tiny")
    export = save_export(root / "vae" / "export", "vae", {"preset": "vae-f4t2c4-tiny",
                         "identity": Identity("vae", {"untrained": 0}).record()}, vae.state_dict())
    return root / "train", export


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_killed_encode_rerun_with_another_config_leaves_it_intact(source, tmp_path, capsys, kill_session):
    train, vae = source
    first = tmp_path / "latents-c3"
    command = [sys.executable, "-m", "phyray.cli", "data", "encode", "--shards", str(train), "--vae", str(vae),
               "--out", str(first), "--cond-frames", "3", "--num-workers", "1"]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    deadline = time.monotonic() + 300
    try:
        while not ((first / JOURNAL).is_file() and (first / JOURNAL).read_text().count("\n") >= 2):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        kill_session(process)  # Ray's workers included: none may write after the snapshot
    assert (first / PLAN_FILE).is_file() and not (first / MANIFEST).exists(), "the encode finished before the kill"
    killed = snapshot(first)

    # Another cond_frames into the same directory: refused, naming both, and nothing touched.
    code = main(["data", "encode", "--shards", str(train), "--vae", str(vae), "--out", str(first), "--cond-frames", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "holds latents" in err and "not latents" in err and len(err.strip().splitlines()) == 1
    assert snapshot(first) == killed
    # Elsewhere it is its own product.
    other = encode_dataset(train, vae, tmp_path / "latents-c1", cond_frames=1)
    assert other["identity"]["settings"]["cond_frames"] == 1

    # The first, rerun as it was: only the shards not journalled before the kill are encoded.
    journalled = {line.split('"file": "')[1].split('"')[0] for line in killed[JOURNAL].decode().splitlines() if line}
    mtimes = {name: (first / name).stat().st_mtime_ns for name in journalled}
    done = encode_dataset(train, vae, first, cond_frames=3)
    assert done["num_videos"] == 48 and done["identity"]["inputs"] == {
        "dataset": read_manifest(train)["identity"]["id"], "vae": export_id(vae)
    }
    assert {name: (first / name).stat().st_mtime_ns for name in journalled} == mtimes
    assert not (first / PLAN_FILE).exists() and not (first / JOURNAL).exists()
    assert done["identity"]["id"] != other["identity"]["id"]
    c1 = {e["file"]: e["sha256"] for e in other["shards"]}
    assert all(c1[e["file"]] != e["sha256"] for e in done["shards"])  # never mixed: every shard differs


def test_the_cli_keeps_rays_own_lines_out_of_the_terminal(source, tmp_path, ray_local):
    """Ray Data's actor pool makes a driver's core worker log an error-level line on fd 2 (once
    per process, hence a fresh one here, on the tests' Ray); `phyray data encode` sends it, and
    Ray's other chatter, to ray.log beside --out."""
    train, vae = source
    out = tmp_path / "latents" / "c3"
    command = [sys.executable, "-m", "phyray.cli", "data", "encode", "--shards", str(train), "--vae", str(vae),
               "--out", str(out), "--num-workers", "1"]
    env = os.environ | {"RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{out}: latents of 48 videos" in done.stdout
    assert "core_worker" not in done.stderr and "WARNING" not in done.stderr, done.stderr
    log = tmp_path / "latents" / "ray.log"
    assert "MapWorker(MapBatches(ShardEncoder))" in log.read_text()
    assert f"{log.read_text().count(chr(10)) - 1} lines of Ray's own messages: {log}" in done.stdout
