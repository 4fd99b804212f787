"""Training on a real local Ray with 2 workers, each a real DeepSpeed engine (gloo on CPU).

One module-scoped chain keeps the suite fast: tiny data -> VAE run -> cached latents ->
DiT run that survives an injected worker failure -> the DiT run resumed for more steps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from phyray.config import ConfigError, TrainConfig, load_data_config, validate
from phyray.data.generate import generate_dataset
from phyray.data.latents import encode_dataset
from phyray.data.shards import read_manifest
from phyray.models.export import load_dit, load_vae
from phyray.train.trainer import files_record, latest_checkpoint, train

pytestmark = pytest.mark.slow


def metric_history(run, key):
    return [(m.step, m.value) for m in MlflowClient(run.tracking_uri).get_metric_history(run.run_id, key)]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    a, b = a.state_dict(), b.state_dict()
    assert a.keys() == b.keys()
    assert [key for key in a if not torch.equal(a[key], b[key])] == []


@pytest.fixture(scope="module")
def data(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("train-data")
    cfg = load_data_config("uniform_motion", ["render.resolution=32", "shard_size=16"])
    generate_dataset(cfg, "train", "32", root / "train", progress=False)
    generate_dataset(cfg, "eval_id", "4", root / "eval", progress=False)
    return root


def base_config(data: Path, out: Path, **fields) -> dict:
    config = {
        "task": "vae",
        "name": "vae",
        "output_dir": str(out),
        "data": {"train": str(data / "train"), "eval": str(data / "eval"), "eval_videos": 2},
        "model": {"vae": "vae-f4t2c4-tiny", "dit": "DiT-T"},
        "diffusion": {"cond_frames": 3, "sample_steps": 4},
        "optim": {"lr": 2e-3, "warmup_steps": 2},
        "steps": 12,
        "batch_size": 4,
        "micro_batch": 2,
        "ema_decay": 0.5,
        "log_every": 3,
        "checkpoint_every": 6,
        "workers": 2,
    }
    for key, value in fields.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def vae_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return train(validate(TrainConfig, base_config(data, out)))


@pytest.fixture(scope="module")
def latents(data, vae_run):
    encode_dataset(data / "train", vae_run.run_dir, data / "latents", cond_frames=3, num_workers=1)
    return data / "latents"


@pytest.fixture(scope="module")
def dit_run(data, latents, vae_run):
    config = base_config(
        data, vae_run.run_dir.parent, task="dit", name="dit", steps=6, checkpoint_every=3,
        max_failures=1, fail_once_at_step=4,
    )
    config["data"]["train"] = str(latents)
    return train(validate(TrainConfig, config))


def test_vae_loss_falls_and_mlflow_holds_metrics_and_gif(vae_run):
    losses = metric_history(vae_run, "train/loss")
    assert [step for step, _ in losses] == [3, 6, 9, 12]
    assert losses[-1][1] < 0.6 * losses[0][1]
    client = MlflowClient(vae_run.tracking_uri)
    run = client.get_run(vae_run.run_id)
    assert run.info.status == "FINISHED"
    for key in ("train/lr", "train/samples_per_s", "eval/id/vel_err_per_frame", "eval/id/psnr"):
        assert key in run.data.metrics, key
    assert "train/mfu" not in run.data.metrics  # no peak FLOP/s on CPU: logged as null, i.e. absent
    assert run.data.params["model.vae"] == "vae-f4t2c4-tiny"
    # Where start-up went, logged once after the first step: milestones in the order they happen.
    milestones = ["worker_entered", "imports_done", "model_built", "engine_ready", "first_batch", "first_step"]
    startup = [run.data.metrics[f"startup/{m}_s"] for m in milestones]
    assert 0 < startup[0] and startup == sorted(startup)
    assert [step for step, _ in metric_history(vae_run, "startup/first_step_s")] == [1]
    gifs = [a.path for a in client.list_artifacts(vae_run.run_id, "rollouts")]
    assert gifs == ["rollouts/rollout_step0000012.gif"]
    assert vae_run.export.is_file()


def read_vae_id(run) -> str:
    return MlflowClient(run.tracking_uri).get_run(run.run_id).data.tags["phyray.vae_id"]


def test_latent_manifest_records_the_vae(latents, vae_run):
    from phyray.models.export import export_id

    manifest = read_manifest(latents)
    assert manifest["identity"]["kind"] == "latents" and manifest["num_videos"] == 32
    assert manifest["identity"]["inputs"]["vae"] == export_id(vae_run.export) == read_vae_id(vae_run)
    assert manifest["identity"]["settings"]["cond_frames"] == 3
    assert manifest["sources"]["vae"] == str(vae_run.export.resolve())  # for people; not in the identity


def test_dit_recovers_from_a_worker_failure_with_the_right_step_count(dit_run):
    assert (dit_run.run_dir / "injected-failure").read_text() == "4"
    assert dit_run.metrics["step"] == 6
    losses = metric_history(dit_run, "train/loss")
    # The failure at step 4 rolled back to the step-3 checkpoint, so step 6 is logged after it.
    assert losses[-1][0] == 6
    assert MlflowClient(dit_run.tracking_uri).get_run(dit_run.run_id).info.status == "FINISHED"


def straight_dit_config(data: Path, latents: Path, vae_run, name: str) -> TrainConfig:
    """dit_run's config without its injected failure."""
    config = base_config(
        data, vae_run.run_dir.parent, task="dit", name=name, steps=6, checkpoint_every=3, max_failures=1,
    )
    config["data"]["train"] = str(latents)
    return validate(TrainConfig, config)


@pytest.fixture(scope="module")
def dit_straight(data, latents, vae_run):
    return train(straight_dit_config(data, latents, vae_run, "dit-straight"))


def test_dit_resumed_after_a_failure_ends_as_if_never_interrupted(dit_run, dit_straight):
    # dit_run failed at step 4 and Ray resumed it from its step-3 checkpoint. Its twin without
    # the failure must end bit-identical: the same batches and noise after the restart, and
    # before it, on two workers reading two shards, the same read order (without order-preserving
    # ingest it would depend on which read task finishes first): the same config, the same
    # weights. (Runs before test_resume_continues_from_the_checkpoint_step, which moves
    # dit_run's export on.)
    assert not (dit_straight.run_dir / "injected-failure").exists()
    assert_same_weights(load_dit(dit_run.export)[0], load_dit(dit_straight.export)[0])
    # Each step's loss logged once and equal: a restart from step 0 would log step 3 twice.
    assert metric_history(dit_run, "train/loss") == metric_history(dit_straight, "train/loss")


def test_vae_killed_and_resumed_ends_as_if_never_interrupted(data, vae_run):
    # vae_run's config killed at step 8 with no retries, then resumed as `--resume` does from its
    # step-6 checkpoint: mid first epoch (8 micro-batches per worker), so the resumed run must
    # re-read the epoch's first 6 batches to skip them and draw the same VAE samples after.
    config = base_config(data, vae_run.run_dir.parent, name="vae-killed", fail_once_at_step=8)
    cfg = validate(TrainConfig, config)
    with pytest.raises(Exception, match="injected failure at step 8"):
        train(cfg)
    resumed = train(cfg, resume=True)
    assert_same_weights(load_vae(resumed.export), load_vae(vae_run.export))
    # The resumed run starts at the checkpoint's step, and with the killed run logs each step once.
    client = MlflowClient(resumed.tracking_uri)
    experiment = client.get_run(resumed.run_id).info.experiment_id
    (killed,) = client.search_runs([experiment], "run_name = 'vae-killed' and status = 'FAILED'")
    killed_losses = [(m.step, m.value) for m in client.get_metric_history(killed.info.run_id, "train/loss")]
    resumed_losses = metric_history(resumed, "train/loss")
    assert [step for step, _ in resumed_losses] == [9, 12]
    assert killed_losses + resumed_losses == metric_history(vae_run, "train/loss")


def test_resume_continues_from_the_checkpoint_step(dit_run):
    from phyray.config import load_config
    from phyray.train.trainer import CONFIG_FILE

    cfg = load_config(TrainConfig, dit_run.run_dir / CONFIG_FILE, ["steps=8", "fail_once_at_step=null"])
    resumed = train(cfg, resume=True)
    assert resumed.metrics["step"] == 8
    assert [step for step, _ in metric_history(resumed, "train/loss")] == [8]
    run = MlflowClient(resumed.tracking_uri).get_run(resumed.run_id)
    assert run.info.status == "FINISHED" and "phyray.resumed_from" in run.data.tags


def bare_config(**fields) -> TrainConfig:
    """A config to build objectives from, no data behind it."""
    return validate(TrainConfig, {"name": "c", "output_dir": ".", "data": {"train": "."}, "steps": 1, "batch_size": 2,
                                  "micro_batch": 2, "model": {"vae": "vae-f4t2c4-tiny", "dit": "DiT-T"}, **fields})


def test_compile_reaches_the_modules_each_objective_calls():
    from phyray.train.engine import build_objective, compile_network

    configs = {(task, scope): bare_config(task=task, compile=scope)
               for task in ("dit", "vae") for scope in (True, "blocks", "network", False)}
    assert [configs["dit", scope].compile for scope in (True, "blocks", "network", False)] == ["blocks", "blocks", "network", "off"]
    assert [configs["vae", scope].compile for scope in (True, "blocks", "network", False)] == ["network"] * 3 + ["off"]
    for (task, scope), cfg in configs.items():
        if cfg.compile == "off":
            continue
        objective = build_objective(cfg)
        model = objective.model
        if task == "vae":
            called = [model.encoder, model.decoder]
        else:
            called = list(model.blocks) if cfg.compile == "blocks" else [model]
        compile_network(objective, cfg.compile)
        compiled = [module for module in objective.modules() if module._compiled_call_impl is not None]
        assert compiled == called, (task, scope)
        assert all(not key.startswith("_orig_mod") for key in objective.state_dict())


def test_the_dit_blocks_share_one_compiled_graph():
    """`compile: blocks` pays one block's compile: dynamo traces the first block, and every other
    block (its own weights, the same code and shapes) passes that graph's guards. Traced with
    dynamo's eager backend, which guards as inductor's does, without building kernels."""
    import torch._dynamo

    from phyray.train.engine import build_objective, compiled_modules

    objective = build_objective(bare_config(task="dit", compile="blocks"))
    blocks = compiled_modules(objective, "blocks")
    assert len(blocks) == 4  # DiT-T's depth
    for block in blocks:
        block.compile(backend="eager")
    # Each block gets its tokens contiguous: inductor's block graph fed the transposed view
    # computed wrong input gradients (DiT.forward).
    layouts = []
    blocks[0].register_forward_pre_hook(lambda module, args: layouts.append(args[0].is_contiguous()))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    latent = torch.randn(2, 4, 3, 8, 8)  # (B, C_lat, T_lat, H_lat, W_lat)
    objective(latent, latent.clone(), generator=torch.Generator().manual_seed(0)).backward()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert not torch._dynamo.utils.counters["graph_break"]
    assert layouts == [True]


def test_a_compiled_dit_resumes_exactly_and_trains_as_the_eager_one(data, latents, vae_run, dit_straight):
    """`compile: blocks` on 2 workers at ZeRO stage 1: a run that fails at step 4 and resumes from
    its step-3 checkpoint ends bit-identical to its compiled twin, and both train as the eager
    run does, to rounding. Compiled kernels round differently, so `compile` is in the identity."""
    from phyray.train.trainer import result_fields, training_identity

    def compiled(name: str, **fields) -> TrainConfig:
        config = base_config(data, vae_run.run_dir.parent, task="dit", name=name, steps=6, checkpoint_every=3,
                             max_failures=1, compile="blocks", **fields)
        config["data"]["train"] = str(latents)
        return validate(TrainConfig, config)

    resumed = train(compiled("dit-compiled-failed", fail_once_at_step=4))
    straight = train(compiled("dit-compiled"))
    assert (resumed.run_dir / "injected-failure").read_text() == "4"
    cache = straight.run_dir.parent / "inductor-cache"  # under output_dir, not torch's default under /tmp:
    assert any(cache.rglob("*.py"))  # the kernels
    assert any((cache / "precompiled_headers").rglob("*.gch"))  # and the C++ headers they include
    assert_same_weights(load_dit(resumed.export)[0], load_dit(straight.export)[0])
    assert metric_history(resumed, "train/loss") == metric_history(straight, "train/loss")

    eager_losses, compiled_losses = metric_history(dit_straight, "train/loss"), metric_history(straight, "train/loss")
    assert [step for step, _ in compiled_losses] == [step for step, _ in eager_losses]
    for (_, eager_loss), (_, compiled_loss) in zip(eager_losses, compiled_losses):
        assert compiled_loss == pytest.approx(eager_loss, rel=1e-3)
    eager, compiled_weights = (load_dit(run.export)[0].state_dict() for run in (dit_straight, straight))
    assert eager.keys() == compiled_weights.keys()  # compiled in place: the eager module's keys
    drift = sum((compiled_weights[k] - eager[k]).norm() ** 2 for k in eager) ** 0.5
    # Rounding alone keeps the two within ~1e-6 of the weights' norm after 6 steps; a compiled
    # block fed a transposed token view (torch 2.13) drifted 3e-3 (docs/performance.md).
    assert drift <= 1e-4 * sum(eager[k].norm() ** 2 for k in eager) ** 0.5

    manifest = read_manifest(latents)
    eager_cfg = straight_dit_config(data, latents, vae_run, "dit-compiled")
    assert "compile" not in result_fields(eager_cfg)  # added later: eager runs keep their names
    assert training_identity(eager_cfg, manifest).id != training_identity(compiled("dit-compiled"), manifest).id


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"model": {"vae": "vae-huge"}}, "model.vae: unknown preset 'vae-huge'"),
        ({"task": "dit", "model": {"vae": "vae-f4t2c4-tiny", "dit": "DiT-Q"}}, "model.dit"),
        ({"batch_size": 6}, "batch_size: 6 is not divisible by micro_batch x workers = 2 x 2"),
        ({"vae_clip_frames": 8}, "vae_clip_frames: 8 is not 1 + k * 2"),
        ({"model": {"vae": "s2d-f4t2"}}, "model.vae: 's2d-f4t2' has no weights to train"),
    ],
)
def test_bad_configs_fail_before_any_worker_starts(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(TrainConfig, base_config(tmp_path, tmp_path / "runs", **fields))


def test_missing_shard_dir_fails_before_any_worker_starts(tmp_path):
    cfg = validate(TrainConfig, base_config(tmp_path / "nowhere", tmp_path / "runs"))
    with pytest.raises(ConfigError, match="data: .*nowhere/train: no manifest.json"):
        train(cfg)
    assert not (tmp_path / "runs").exists()


def test_compile_without_a_cpp_compiler_fails_before_any_worker_starts(tmp_path):
    from torch._inductor import config as inductor_config

    with inductor_config.patch({"cpp.cxx": (None, "no-such-c++")}):  # the compilers inductor tries
        with pytest.raises(ConfigError, match=r"^compile: torch.compile on CPU needs a C\+\+ compiler"):
            train(validate(TrainConfig, base_config(tmp_path, tmp_path / "runs", compile=True)))
        assert not (tmp_path / "runs").exists()
        # Eager, the same config gets as far as its (missing) data.
        with pytest.raises(ConfigError, match="^data: "):
            train(validate(TrainConfig, base_config(tmp_path, tmp_path / "runs")))


def test_cli_reports_bad_config_in_one_line(tmp_path, capsys):
    from phyray.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text(json.dumps(base_config(tmp_path, tmp_path / "runs", batch_size=5)))
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "batch_size" in err


# The step a trial takes, with no cluster: a GPU machine without Ray benchmarks exactly this
# (bench/train_step.py --gpu). A fresh process: a one-rank gloo group, the DeepSpeed engine.
ENGINE_STEP = """
import os, sys, torch, torch.distributed as dist
from phyray.config import TrainConfig, validate
from phyray.train.engine import build_objective, setup_engine, train_step, update_ema
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
dist.init_process_group("gloo", rank=0, world_size=1)
cfg = validate(TrainConfig, {"task": "dit", "name": "s", "output_dir": ".", "data": {"train": "."},
    "model": {"vae": "vae-f4t2c4-tiny", "dit": "DiT-T"}, "steps": 2, "batch_size": 4, "micro_batch": 2,
    "optim": {"lr": 1e-2, "warmup_steps": 1}, "zero_stage": 1})
objective = build_objective(cfg)
ema = build_objective(cfg).model.requires_grad_(False)
ema.load_state_dict(objective.model.state_dict())
before = {k: v.clone() for k, v in objective.model.state_dict().items()}
engine = setup_engine(cfg, objective, torch.device("cpu"))
drawn = []
def batches():
    g = torch.Generator().manual_seed(0)
    while True:
        drawn.append(1)
        yield {"latent": torch.randn(2, 4, 5, 8, 8, generator=g), "cond": torch.randn(2, 4, 5, 8, 8, generator=g)}
data = batches()
generator = torch.Generator().manual_seed(0)
loss, _ = train_step(engine, cfg, data, generator, torch.device("cpu"))
update_ema(ema, objective.model, 0.5)
assert len(drawn) == 2, drawn  # grad_accum = batch_size / micro_batch micro-batches
assert loss.ndim == 0 and torch.isfinite(loss), loss
after = objective.model.state_dict()
moved = [k for k in after if not torch.equal(before[k], after[k])]
assert moved, "no parameter changed"
k = moved[0]
assert torch.allclose(ema.state_dict()[k], (before[k] + after[k]) / 2), "EMA at decay 0.5 is the midpoint"
# One rank skips DeepSpeed's gradient all-reduce: the same update, bit for bit, as an engine
# that copies the gradients out, all-reduces them over the one rank and copies them back.
assert not engine.enable_backward_allreduce
reduced = build_objective(cfg)
reduced.model.load_state_dict(before)
reference = setup_engine(cfg, reduced, torch.device("cpu"))
reference.enable_backward_allreduce = True
train_step(reference, cfg, batches(), torch.Generator().manual_seed(0), torch.device("cpu"))
assert all(torch.equal(after[k], v) for k, v in reduced.model.state_dict().items()), "the all-reduce changed the update"
assert "ray" not in sys.modules, "the step imported Ray"
"""


def test_the_trial_step_runs_without_ray():
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([sys.executable, "-c", ENGINE_STEP, str(port)], check=True, timeout=300)


# Rank 0 opens the store, then starts rank 1 (this file again, with the address) and the two
# all-reduce.
RENDEZVOUS = """
import socket, subprocess, sys
import torch, torch.distributed as dist
from phyray.train.rendezvous import _join_process_group, _open_store

if len(sys.argv) > 1:
    _join_process_group("gloo", 1, 2, sys.argv[1], int(sys.argv[2]), 60)
    dist.all_reduce(torch.tensor([2.0]))
    sys.exit()
address, port = _open_store(60)
# Listening before anyone is told the port: no window in which another socket can take it.
socket.create_connection((address, port), timeout=5).close()
rank_one = subprocess.Popen([sys.executable, __file__, address, str(port)])
_join_process_group("gloo", 0, 2, address, port, 60)
total = torch.tensor([1.0])
dist.all_reduce(total)
assert (total.item(), rank_one.wait(60)) == (3.0, 0), (total, rank_one.returncode)
"""


def test_rank_zero_listens_on_its_port_before_the_other_ranks_are_told_it(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "rendezvous.py"
    script.write_text(RENDEZVOUS)
    subprocess.run([sys.executable, str(script)], check=True, timeout=120)


def test_a_checkpoint_killed_while_being_copied_is_not_resumed_from(tmp_path):
    """Ray copies a checkpoint's files into storage one by one; a run killed during the copy
    leaves state.json beside a truncated shard (seen in CI: PytorchStreamReader "failed finding
    central directory" on resume). The resume takes the newest complete checkpoint."""

    def checkpoint(name: str, step: int, world_size: int | None = 2) -> Path:
        directory = tmp_path / "run" / name
        (directory / "engine").mkdir(parents=True)
        state = {"step": step} if world_size is None else {"step": step, "world_size": world_size}
        (directory / "state.json").write_text(json.dumps(state))
        for rank in range(world_size or 1):
            (directory / "engine" / f"shard-{rank}.pt").write_bytes(bytes(100 + rank))
            (directory / f"worker-{rank}.pt").write_bytes(bytes(10))
            sizes = {f"engine/shard-{rank}.pt": 100 + rank, f"worker-{rank}.pt": 10}
            (directory / files_record(rank)).write_text(json.dumps(sizes))
        return directory

    older, newer = checkpoint("checkpoint_000000", 100), checkpoint("checkpoint_000001", 200)
    assert latest_checkpoint(tmp_path / "run") == newer
    (newer / "engine" / "shard-1.pt").write_bytes(bytes(50))  # truncated mid-copy
    assert latest_checkpoint(tmp_path / "run") == older
    (newer / "engine" / "shard-1.pt").write_bytes(bytes(101))
    (newer / files_record(1)).unlink()  # a rank's record not copied yet
    assert latest_checkpoint(tmp_path / "run") == older
    (older / "state.json").write_text('{"step": 1')  # state.json itself cut short
    assert latest_checkpoint(tmp_path / "run") is None
    legacy = checkpoint("checkpoint_000002", 300, world_size=None)  # written before the record
    assert latest_checkpoint(tmp_path / "run") == legacy


def test_the_first_batch_is_drawn_before_it_is_asked_for_and_nothing_else_changes():
    import threading

    from phyray.train.loop import first_in_background

    asked = threading.Event()

    def source():
        asked.set()
        yield from range(5)

    data = first_in_background(source())
    assert asked.wait(10)  # drawing started without a next() from this thread
    assert list(data) == [0, 1, 2, 3, 4]

    def failing():
        raise RuntimeError("data.train: this worker's shard has fewer than micro_batch=4 videos")
        yield

    data = first_in_background(failing())
    with pytest.raises(RuntimeError, match="fewer than micro_batch"):  # where the batch is asked for
        next(data)
