"""The driver side of training: validate, build datasets, fit a TorchTrainer, export the model.

    run = train(cfg)                 # a new run under <output_dir>/<name>
    run = train(cfg, resume=True)    # continue <name> from its last checkpoint

Everything that can be wrong with a config (presets, batch arithmetic, missing shards) fails
here, before any worker starts. The MLflow run is created and closed here too, so it always ends
FINISHED or FAILED.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from phyray.artifacts import Identity, ProductError, identity_of, result_settings
from phyray.config import ConfigError, TrainConfig, to_flat_dict
from phyray.data.shards import decode_frames, frame_columns, read_manifest, shard_paths
from phyray.presets import VAE_PRESETS

# Ray Train, torch and MLflow are imported inside the functions that train: checking a config
# (the CLI, a study's planning) does not load them.

CONFIG_FILE = "config.yaml"
DECODE_BLOCK_BYTES = 64 * 2**20
# Logical CPUs of each Ray Data task that reads and decodes a run's batches. A study reserves one
# CPU per trial for them (phyray.study.plan.DATA_CPUS_PER_TRIAL), but each trial's driver also
# holds a sliver of the pool (grid.TRIAL_DRIVER_CPU), so two trials on four logical CPUs leave
# 1.98 free: with whole-CPU tasks only one trial's reader could run, and a reader whose worker
# lease sat idle kept the other trial waiting ~10 minutes for its first epoch (the 64² probe
# mini study, docs/experiments.md 2026-12-05). Half a CPU lets both trials read at once.
DATA_TASK_CPUS = 0.5


@dataclass
class TrainRun:
    """What a finished run leaves: its directory, export, MLflow run and last metrics."""

    run_dir: Path
    export: Path
    tracking_uri: str
    run_id: str
    metrics: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Validation and datasets
# ---------------------------------------------------------------------------------------------


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """Absolute data paths: Ray workers do not run in the driver's working directory."""
    data = cfg.data.model_copy(
        update={
            "train": str(Path(cfg.data.train).resolve()),
            "eval": str(Path(cfg.data.eval).resolve()) if cfg.data.eval else None,
        }
    )
    return cfg.model_copy(update={"data": data, "output_dir": str(Path(cfg.output_dir).resolve())})


def run_dir_of(cfg: TrainConfig) -> Path:
    return Path(cfg.output_dir).resolve() / cfg.name


# TrainConfig fields that do not change a run's weights: where it writes and logs, how often it
# logs, checkpoints or evaluates (resume is exact, so checkpoint cadence is invisible), the
# in-training evaluation set, CPUs per worker, failure handling; and data.train, which enters
# as its product's identity instead of its path.
NON_RESULT_FIELDS = (
    "name", "output_dir", "tracking", "log_every", "checkpoint_every", "eval_every", "max_failures",
    "fail_once_at_step", "cpus_per_worker", "data.train", "data.eval", "data.eval_videos",
)


# Fields added after runs were first named by identity: at these values (the behaviour from before
# they existed) they are left out, so adding them renamed no cached run.
LATER_FIELD_DEFAULTS = {"vae_recon": "l1", "vae_foreground_weight": 0.0, "vae_logvar_init": None, "compile": "off"}


def result_fields(cfg: TrainConfig) -> dict[str, Any]:
    """The config fields that change what a run produces (all but NON_RESULT_FIELDS), nested."""
    return result_settings(cfg.model_dump(mode="json"), NON_RESULT_FIELDS, LATER_FIELD_DEFAULTS)


def training_identity(cfg: TrainConfig, manifest: dict[str, Any]) -> Identity:
    """A run's identity: its result fields and the identity of its training data."""
    return Identity(cfg.task, result_fields(cfg), {"data": identity_of(manifest, cfg.data.train)["id"]})


def check_compile(cfg: TrainConfig) -> None:
    """ConfigError before any worker starts if `compile` cannot work here: on CPU, inductor
    builds its kernels with a C++ compiler (g++, or $CXX), which a slim image may lack; without
    one every worker would fail at its first step."""
    if cfg.compile == "off" or cfg.use_gpu:
        return
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        get_cpp_compiler()
    except InvalidCxxCompiler:
        raise ConfigError(
            "compile: torch.compile on CPU needs a C++ compiler (g++, or one named by $CXX) and none was found; "
            "install one (apt-get install g++) or set compile=off"
        ) from None


def check_data(cfg: TrainConfig) -> dict[str, Any]:
    """Fail early, naming the path, if the data a run needs is missing, corrupt or of the wrong
    kind; every shard is checked against its manifest checksum here, once."""
    try:
        manifest = read_manifest(cfg.data.train)
        shard_paths(cfg.data.train)
        if cfg.data.eval:
            shard_paths(cfg.data.eval)
        kind = identity_of(manifest, cfg.data.train)["kind"]
    except ProductError as err:
        raise ConfigError(f"data: {err}") from None
    if cfg.task == "dit" and kind != "latents":
        raise ConfigError(f"data.train: {cfg.data.train} holds pixels; a DiT trains on latents (`phyray data encode`)")
    if cfg.task == "vae" and kind == "latents":
        raise ConfigError(f"data.train: {cfg.data.train} holds latents; a VAE trains on pixel shards")
    encoded_for = manifest["identity"]["settings"].get("cond_frames")
    if cfg.task == "dit" and encoded_for != cfg.diffusion.cond_frames:
        raise ConfigError(
            f"diffusion.cond_frames: {cfg.diffusion.cond_frames} but the latents in {cfg.data.train} were "
            f"encoded for {encoded_for}"
        )
    if manifest["num_videos"] < cfg.micro_batch * cfg.workers:
        raise ConfigError(
            f"data.train: {manifest['num_videos']} videos cannot fill micro_batch x workers = "
            f"{cfg.micro_batch} x {cfg.workers}"
        )
    return manifest


def decode_pixel_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """Ray Data batch of pixel rows (`frame_columns`) -> {"frames": (B, T, H, W, 3) uint8}."""
    import numpy as np

    names = [name for name in batch if name in ("frames", "frames_encoding", "frame_shape", "palette")]
    rows = [dict(zip(names, values)) for values in zip(*(batch[name] for name in names))]
    return {"frames": np.stack([decode_frames(r) for r in rows])}


def build_dataset(cfg: TrainConfig):
    """The training set as a lazy Ray Dataset; Ray Train splits it across workers (streaming)."""
    import ray.data

    from phyray.data.latents import decode_latents

    paths = [str(p) for p in shard_paths(cfg.data.train)]
    # Decode in blocks of many videos: every block crosses the object store and the split
    # coordinator with a fixed cost, so micro-batch-sized blocks would tax every step;
    # iter_torch_batches re-batches locally. The block stays around 64 MB of decoded frames.
    read = ray.data.read_parquet(paths, num_cpus=DATA_TASK_CPUS)
    if cfg.task == "vae":
        frame_bytes = 3 * 32 * 256 * 256  # upper bound: 32 frames at 256²
        return read.select_columns(frame_columns(paths[0])).map_batches(
            decode_pixel_batch, batch_size=max(cfg.micro_batch, DECODE_BLOCK_BYTES // frame_bytes), num_cpus=DATA_TASK_CPUS
        )
    return read.select_columns(["latent", "cond", "latent_shape"]).map_batches(
        decode_latents, batch_size=max(cfg.micro_batch, 256), num_cpus=DATA_TASK_CPUS
    )


def ingest_config():
    """Ray Train's default ingest options with block order preserved.

    Without it, blocks reach the split in whatever order the read tasks finish, so two runs of
    one config see different batches. With it, blocks keep the dataset's order and the splitter
    deals each to the worker that has received the fewest rows so far (locality hints off), so
    two runs of one config see the same batches and end with the same weights.
    """
    import ray.train

    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return ray.train.DataConfig(execution_options=options)


def run_facts(cfg: TrainConfig, manifest: dict[str, Any]) -> dict[str, Any]:
    """Run-level numbers the workers log with (tokens and FLOPs per video for MFU), and for a DiT
    the VAE its latents came from (its identity, and its path for people and rollouts)."""
    facts: dict[str, Any] = {}
    if cfg.task == "dit":
        import pyarrow.parquet as pq

        from phyray.models.info import model_info

        latent_shape = pq.read_table(shard_paths(cfg.data.train)[0], columns=["latent_shape"]).column(0)[0].as_py()
        info = model_info(
            cfg.model.dit, manifest["resolution"], manifest["num_frames"], vae=cfg.model.vae, patch=cfg.model.patch
        )
        facts |= {
            "tokens_per_video": info["tokens_per_video"],
            "train_flops_per_video": info["train_flops_per_video"],
            "latent_shape": latent_shape,
            "vae_checkpoint": manifest["sources"]["vae"],
            "vae_id": manifest["identity"]["inputs"]["vae"],
        }
    return facts


# ---------------------------------------------------------------------------------------------
# Fit
# ---------------------------------------------------------------------------------------------


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete Ray checkpoint directory of a run (`checkpoint_step`), if any."""
    steps = {p.parent: checkpoint_step(p.parent) for p in run_dir.glob("**/state.json")}
    complete = [p for p, step in steps.items() if step is not None]
    return max(complete, key=lambda p: steps[p]) if complete else None


def files_record(rank: int) -> str:
    """The file naming the sizes of what `rank` wrote into a checkpoint (`checkpoint_step`)."""
    return f"files-{rank}.json"


def checkpoint_step(directory: Path) -> int | None:
    """A checkpoint's step, or None if it is incomplete: a run killed while Ray copied it into
    storage leaves state.json beside truncated or missing files. Every rank records the sizes
    of the files it wrote (`files_record`, phyray.train.loop.save_checkpoint); each must
    be there at its size. (Checkpoints from before that record hold state.json alone.)"""
    import json

    try:
        state = json.loads((directory / "state.json").read_text())
        for rank in range(state.get("world_size", 0)):
            sizes = json.loads((directory / files_record(rank)).read_text())
            if any(not (directory / name).is_file() or (directory / name).stat().st_size != size
                   for name, size in sizes.items()):
                return None
    except (OSError, ValueError, KeyError):
        return None
    return int(state["step"])


def train(
    cfg: TrainConfig, resume: bool = False, tags: dict[str, str] | None = None, run_id: str | None = None
) -> TrainRun:
    """Run (or continue) one training run on Ray Train + DeepSpeed; returns what it left.

    Args:
        cfg: the run's config.
        resume: continue <output_dir>/<name> from its last checkpoint.
        tags: extra MLflow tags of the run this creates.
        run_id: log into this existing MLflow run (in the config's store) instead of creating
            one; its owner (e.g. a study trial, which evaluates after training) ends it.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from phyray import tracking
    from phyray.models.export import save_export
    from phyray.runtime import ResourceWatch, configure_ray_data, init_ray
    from phyray.train.rendezvous import ListeningStoreTorchConfig

    started_at = time.time()  # the origin of the workers' startup/* metrics
    cfg = resolve_paths(cfg)
    check_compile(cfg)
    manifest = check_data(cfg)
    identity = training_identity(cfg, manifest)
    run_dir = run_dir_of(cfg)
    if run_dir.exists() and not resume:
        raise ConfigError(f"name: run {cfg.name!r} already exists in {run_dir.parent}; use --resume {cfg.name} or another name")
    resume_from = latest_checkpoint(run_dir) if resume else None
    if resume and resume_from is None:
        raise ConfigError(f"--resume: run {cfg.name!r} has no checkpoint in {run_dir}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    init_ray()
    configure_ray_data()
    uri = tracking.resolve_tracking_uri(cfg.tracking.tracking_uri, run_dir)
    run_tags = {
        "phyray.task": cfg.task, f"phyray.{cfg.task}_id": identity.id,
        **({"phyray.resumed_from": str(resume_from)} if resume_from else {}),
    }
    owns_run = run_id is None
    if owns_run:
        run_id = tracking.start_run(
            uri, cfg.tracking.experiment, cfg.name, to_flat_dict(cfg), tags={**run_tags, **(tags or {})},
            artifact_root=tracking.artifact_root_for(uri, run_dir),
        )
    else:
        tracking.set_tags(uri, run_id, run_tags)
    loop = {
        "config": cfg.model_dump(mode="json"),
        "run_dir": str(run_dir),
        "tracking_uri": uri,
        "run_id": run_id,
        "resume_from": str(resume_from) if resume_from else None,
        "identity": identity.record(),
        "started_at": started_at,
        **run_facts(cfg, manifest),
    }
    trainer = TorchTrainer(
        train_loop_per_worker=_worker_entry,
        train_loop_config=loop,
        torch_config=ListeningStoreTorchConfig(),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})},
            placement_strategy=cfg.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=f"{cfg.name}-{run_id[:8]}",
            storage_path=str(run_dir / "ray"),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
        datasets={"train": build_dataset(cfg)},
        dataset_config=ingest_config(),
    )
    try:
        with ResourceWatch(f"training {cfg.name}", say):
            result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"run {cfg.name!r} ended without a checkpoint")
        export = _export(cfg, result.checkpoint, run_dir, loop, save_export)
    except BaseException:
        if owns_run:
            tracking.end_run(uri, run_id, "FAILED")
        raise
    if owns_run:
        tracking.end_run(uri, run_id, "FINISHED")
    return TrainRun(run_dir=run_dir, export=export, tracking_uri=uri, run_id=run_id, metrics=dict(result.metrics or {}))


def say(line: str) -> None:
    print(f"[phyray train] {line}", file=sys.stderr, flush=True)


def _worker_entry(loop: dict[str, Any]) -> None:
    entered_at = time.time()  # before the imports: they are part of start-up (startup/*)
    # DeepSpeed's CPU accelerator is chosen by this variable; Ray workers inherit the driver's
    # environment, so decide per worker from what it actually has.
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from phyray.train.loop import train_loop_per_worker

    train_loop_per_worker({**loop, "worker_entered_at": entered_at})


def _export(cfg: TrainConfig, checkpoint, run_dir: Path, loop: dict[str, Any], save_export) -> Path:
    """Write <run dir>/export/model.pt from the final checkpoint's EMA weights."""
    import torch


    with checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / "ema.pt", map_location="cpu", weights_only=True)
    if cfg.task == "vae":
        meta = {"preset": cfg.model.vae, "identity": loop["identity"]}
    else:
        meta = {
            "preset": cfg.model.dit,
            "identity": loop["identity"],
            "patch": list(cfg.model.patch),
            "latent_channels": VAE_PRESETS[cfg.model.vae]["latent_channels"],
            "vae_checkpoint": loop["vae_checkpoint"],
            "vae_id": loop["vae_id"],
            "diffusion": cfg.diffusion.model_dump(),
        }
    return save_export(run_dir / "export", cfg.task, meta, state)
