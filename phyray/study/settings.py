"""From a study config to the runs it launches, checked before anything runs.

    cfg = load_study_config("configs/studies/smoke.yaml", ["dit.steps=100"])
    run_cfg = train_config(cfg, "dit", name="...", train=latents_dir, model="DiT-T")

`load_study_config` rejects, naming the field, every setting a later stage would reject: bad
training fields (built into a VAE and a DiT TrainConfig now), a resolution the VAE and the DiT's
patch cannot tile, too few frames for the conditioning frames or VAE clips. `resolve_paths`
makes `output_dir` and `data_dir` absolute in the driver, before the config travels to Ray
workers and Tune trials whose working directories are not the driver's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from phyray.config import (
    COMBINATORIAL,
    ConfigError,
    DataConfig,
    StudyConfig,
    TrainConfig,
    apply_overrides,
    load_config,
    load_scenario_config,
    validate,
)
from phyray.presets import VAE_PRESETS, is_trainable, latent_frames
from phyray.train.trainer import check_compile


def train_config(
    study: StudyConfig, task: Literal["vae", "dit"], name: str, train: str, model: str | None = None,
    eval: str | None = None, output_dir: str | None = None, tracking_uri: str | None = None,
) -> TrainConfig:
    """The TrainConfig of one VAE run or DiT trial of a study."""
    fields = apply_overrides(study.vae.train if task == "vae" else study.dit, [])
    model_fields = fields.setdefault("model", {})
    model_fields["vae"] = study.vae.preset
    if model is not None:
        model_fields["dit"] = model
    fields |= {
        "task": task, "name": name, "output_dir": output_dir or str(study.study_dir / "trials"),
        "data": {**fields.get("data", {}), "train": train, **({"eval": eval} if eval else {})},
        "tracking": {"tracking_uri": tracking_uri, "experiment": study.experiment_name},
    }
    return validate(TrainConfig, fields)


def dit_settings(study: StudyConfig, model: str | None = None) -> TrainConfig:
    """What every DiT trial's TrainConfig shares (workers, steps, diffusion, ...), with a
    placeholder name and data; `model` defaults to the study's first."""
    return train_config(study, "dit", name="probe", train="probe", model=model or study.models[0])


def vae_settings(study: StudyConfig) -> TrainConfig | None:
    """The VAE run's TrainConfig with placeholder data; None for a VAE with nothing to train."""
    if not is_trainable(study.vae.preset):
        return None
    return train_config(study, "vae", name="probe", train="probe")


def check_study(study: StudyConfig) -> None:
    """ConfigError naming the field if a stage of the study would reject its settings."""
    runs = {}
    for section, build in (("vae.train", vae_settings), ("dit", dit_settings)):
        try:
            runs[section] = build(study)
            if runs[section] is not None:
                check_compile(runs[section])
        except ConfigError as err:
            raise ConfigError(f"{section}." + str(err).removeprefix("config: ")) from None
    dit, vae = runs["dit"], runs["vae.train"]
    spec = VAE_PRESETS[study.vae.preset]
    tile = spec["spatial_compression"] * dit.model.patch[1]
    if study.data.resolution % tile or study.data.resolution % (spec["spatial_compression"] * dit.model.patch[2]):
        raise ConfigError(
            f"data.resolution: {study.data.resolution} is not a multiple of {tile} (the VAE {study.vae.preset}'s "
            f"{spec['spatial_compression']}x spatial compression times the DiT patch {list(dit.model.patch)})"
        )
    for scenario in study.scenarios:
        if scenario == COMBINATORIAL:
            from phyray.study.combinatorial import check_combinatorial

            check_combinatorial(study)
        frames = scenario_frames(study, scenario)
        if dit.diffusion.cond_frames >= frames:
            raise ConfigError(f"dit.diffusion.cond_frames: {dit.diffusion.cond_frames} leaves nothing to predict of {frames} frames")
        if vae is not None and vae.vae_clip_frames and vae.vae_clip_frames > frames:
            raise ConfigError(f"vae.train.vae_clip_frames: {vae.vae_clip_frames} is longer than the {frames}-frame videos")
        if latent_frames(frames, spec["temporal_compression"]) % dit.model.patch[0]:
            raise ConfigError(
                f"dit.model.patch: {frames} frames make {latent_frames(frames, spec['temporal_compression'])} latent "
                f"frames, not a multiple of the temporal patch {dit.model.patch[0]}"
            )


def scenario_frames(study: StudyConfig, scenario: str) -> int:
    """Frames per video of a scenario's datasets in this study."""
    if scenario == COMBINATORIAL:
        return study.data.phyre.num_frames
    return load_scenario_config(scenario, study.data.overrides).physics.num_frames


def vae_data_config(study: StudyConfig, scenario: str) -> DataConfig:
    """The data config of a ball scenario's VAE training set: the scenario's (or vae.train_on's),
    with data.overrides and the study's resolution; with `vae.data_span: id+ood`, its ID radius
    and speed ranges widened to the hull of its ID and OOD ranges, no OOD ranges left (only a
    training split is drawn from it), and no training bands or left-out boxes."""
    config = load_scenario_config(
        study.vae.train_on or scenario, [*study.data.overrides, f"render.resolution={study.data.resolution}"]
    )
    if study.vae.data_span == "id":
        return config
    data = config.model_dump()
    for name in ("radius", "velocity"):
        ranges = [*getattr(config.id, name), *getattr(config.ood, name)]
        data["id"][name] = [[min(r.lo for r in ranges), max(r.hi for r in ranges)]]
        data["ood"][name] = []
    return DataConfig.model_validate(data | {"train_velocity": None, "train_exclude": None})


def resolve_paths(study: StudyConfig) -> StudyConfig:
    """The config with `output_dir` and `data_dir` absolute, as seen from the driver."""
    return study.model_copy(
        update={"output_dir": str(Path(study.output_dir).resolve()), "data_dir": str(Path(study.data_dir).resolve())}
    )


def load_study_config(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """A study config from YAML with dotted overrides (e.g. `dit.steps=10`), fully checked."""
    study = load_config(StudyConfig, path, overrides)
    try:
        check_study(study)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return study
