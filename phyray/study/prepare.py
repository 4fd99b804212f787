"""What a study's trials read, made once and cached: datasets, the VAE, latents.

Everything lands in the study's shared `data_dir`, keyed by what makes it itself, so a rerun or
another study with the same data reuses it:

    <data_dir>/<scenario>/r<resolution>[-<overrides hash>]/
        train-<size>-s<seed>/          pixel shards of each training size
        eval_id-<n>-s<seed>/           ID evaluation set (paper's size unless configured)
        eval_ood-<n>-s<seed>/          OOD evaluation set, spread over the scenario's levels
        vae/<preset>-<hash>/           the VAE run (export/model.pt once it finished)
        latents/<preset>-<hash>/train-<size>-s<seed>/   latents of each training set

Each step is resumable on its own: generation and encoding finish missing shards, a killed VAE
run resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phyray.config import StudyConfig, load_data_config, parse_size, to_flat_dict
from phyray.study.plan import nominal_videos


@dataclass
class ScenarioInputs:
    """Paths of one scenario's prepared inputs (plain strings: they travel in Tune configs)."""

    scenario: str
    train: dict[str, str] = field(default_factory=dict)  # data size -> pixel dataset
    latents: dict[str, str] = field(default_factory=dict)  # data size -> latent dataset
    num_videos: dict[str, int] = field(default_factory=dict)  # data size -> videos
    eval: dict[str, str] = field(default_factory=dict)  # "eval_id" / "eval_ood" -> dataset
    vae: str = ""  # the VAE export


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def scenario_root(cfg: StudyConfig, scenario: str) -> Path:
    tag = f"-{_short_hash(cfg.data.overrides)}" if cfg.data.overrides else ""
    return Path(cfg.data_dir).resolve() / scenario / f"r{cfg.data.resolution}{tag}"


def vae_train_size(cfg: StudyConfig) -> str:
    """The training set the VAE learns from: configured, else the study's largest."""
    return cfg.vae.train_size or max(cfg.data_sizes, key=nominal_videos)


def generate_inputs(cfg: StudyConfig, scenario: str, log=print) -> ScenarioInputs:
    """Step 1 for one scenario: every training size and both evaluation sets (reused if there)."""
    from phyray.data.generate import generate_dataset

    data_cfg = load_data_config(scenario, [*cfg.data.overrides, f"render.resolution={cfg.data.resolution}"])
    root, seed = scenario_root(cfg, scenario), cfg.data.seed
    inputs = ScenarioInputs(scenario)
    for size in dict.fromkeys([*cfg.data_sizes, vae_train_size(cfg)]):
        out = root / f"train-{parse_size(size)[0]}-s{seed}"
        manifest = generate_dataset(data_cfg, "train", size, out, seed=seed)
        inputs.train[size], inputs.num_videos[size] = str(out), manifest["num_videos"]
        log(f"  {scenario} train {size}: {manifest['num_videos']} videos -> {out}")
    for split, count in (("eval_id", cfg.data.eval_id), ("eval_ood", cfg.data.eval_ood)):
        count = count or data_cfg.eval_sizes[split]
        out = root / f"{split}-{count}-s{seed}"
        manifest = generate_dataset(data_cfg, split, str(count), out, seed=seed)
        inputs.eval[split] = str(out)
        log(f"  {scenario} {split}: {manifest['num_videos']} videos -> {out}")
    return inputs


def _run_state(run_dir: Path) -> str:
    """"done" (exported), "resumable" (has a checkpoint), "empty" (nothing worth keeping)."""
    from phyray.train.trainer import latest_checkpoint

    if (run_dir / "export" / "model.pt").is_file():
        return "done"
    if run_dir.exists() and latest_checkpoint(run_dir) is not None:
        return "resumable"
    return "empty"


def train_or_resume(run_cfg, run_id: str | None = None, tags: dict[str, str] | None = None):
    """Train a run to its end: skip it if exported, resume it if checkpointed, else start over.

    Returns the export path.
    """
    from phyray.train.trainer import run_dir_of, train

    run_dir = run_dir_of(run_cfg)
    state = _run_state(run_dir)
    if state == "done":
        return run_dir / "export" / "model.pt"
    if state == "empty" and run_dir.exists():
        shutil.rmtree(run_dir)  # killed before its first checkpoint: nothing to resume
    return train(run_cfg, resume=state == "resumable", tags=tags, run_id=run_id).export


# Videos a parameter-free VAE's latent scale is calibrated on.
CALIBRATION_VIDEOS = 256


def calibrated_export(preset: str, train_set: str, directory: Path) -> Path:
    """Export a parameter-free VAE (SpaceToDepthAE) with its latent scale fitted to a dataset."""
    import numpy as np

    from phyray.data.shards import decode_frames, iter_rows
    from phyray.models.vae import build_vae, frames_to_tensor
    from phyray.train.checkpoint import EXPORT_FILE, save_export

    if (directory / "export" / EXPORT_FILE).is_file():
        return directory / "export" / EXPORT_FILE
    frames = []
    for row in iter_rows(train_set, ["frames", "frames_encoding", "frame_shape"]):
        frames.append(decode_frames(row))
        if len(frames) == CALIBRATION_VIDEOS:
            break
    vae = build_vae(preset)
    vae.calibrate(frames_to_tensor(np.stack(frames)))
    return save_export(directory / "export", "vae", {"preset": preset}, vae.state_dict())


def prepare_vae(cfg: StudyConfig, inputs: ScenarioInputs, tracking_uri: str, tags: dict[str, str], log=print) -> None:
    """Step 2 for one scenario: the VAE of its resolution, trained once (or reused)."""
    from phyray.models.vae import is_trainable

    root = scenario_root(cfg, inputs.scenario)
    train_set = inputs.train[vae_train_size(cfg)]
    if not is_trainable(cfg.vae.preset):
        name = f"{cfg.vae.preset}-{_short_hash({'preset': cfg.vae.preset, 'train': train_set})}"
        inputs.vae = str(calibrated_export(cfg.vae.preset, train_set, root / "vae" / name))
        log(f"  {inputs.scenario} VAE ({cfg.vae.preset}, calibrated, nothing to train): {inputs.vae}")
        return
    probe = cfg.train_config("vae", name="probe", train=train_set)
    identity = {k: v for k, v in to_flat_dict(probe).items() if not k.startswith(("name", "output_dir", "tracking"))}
    run_cfg = cfg.train_config(
        "vae", name=f"{cfg.vae.preset}-{_short_hash(identity)}", train=train_set,
        eval=inputs.eval["eval_id"], output_dir=str(root / "vae"), tracking_uri=tracking_uri,
    )
    export = train_or_resume(run_cfg, tags={**tags, "phyray.role": "vae", "phyray.scenario": inputs.scenario})
    inputs.vae = str(export)
    log(f"  {inputs.scenario} VAE: {export}")


def prepare_latents(cfg: StudyConfig, inputs: ScenarioInputs, log=print) -> None:
    """Step 3 for one scenario: latents of every training size with its VAE (reused if there)."""
    from phyray.data.latents import encode_dataset

    cond_frames = cfg.dit_settings().diffusion.cond_frames
    vae_name = Path(inputs.vae).parent.parent.name  # <run dir>/export/model.pt
    for size in cfg.data_sizes:
        out = scenario_root(cfg, inputs.scenario) / "latents" / vae_name / Path(inputs.train[size]).name
        encode_dataset(inputs.train[size], inputs.vae, out, cond_frames)
        inputs.latents[size] = str(out)
        log(f"  {inputs.scenario} latents {size}: {out}")
