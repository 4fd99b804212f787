"""What a study's trials read, made once and cached: datasets, the VAE, latents.

Everything lands in the study's shared `data_dir`, each product in a directory named by its
identity (`phyray.artifacts`), so a rerun or another study with the same settings reuses it, a
changed setting makes a new product beside the old one, and a moved `data_dir` is reused as it is:

    <data_dir>/<scenario>/
        train-<size>-<id>/             pixel shards of each training size
        vae_train-<size>-<id>/         an attribute probe's VAE set: all four combinations; a
                                       composition variant's: all its kinds (with vae.scope:
                                       study, this scenario's share of the study's VAE set)
        eval_id-<n>-<id>/              ID evaluation set (paper's size unless configured)
        eval_ood-<n>-<id>/             OOD evaluation set, spread over the scenario's levels
        dev_id-<n>-<id>/, dev_ood-...  the same for a study evaluated on its dev split
        vae/<preset>-<id>/             the VAE run (export/model.pt once it finished; one per
                                       study seed with vae.seeds: per_seed; with vae.train_on,
                                       under that scenario, shared by the study's scenarios)
            reconstructions/<split>-<id>/   its reconstruction of each evaluation set
        latents/train-<size>-<id>/     latents of each training set with that VAE
    <data_dir>/study-vae/              a VAE the study's scenarios share (vae.scope: study):
        vae_train-<n>-<id>/            their VAE sets' shares, rows interleaved (phyray/data/mix.py)
        vae/<preset>-<id>/             its run and reconstructions, as above
    <data_dir>/combinatorial/          (phyray/study/combinatorial.py) the same, keyed by
        train-<templates>t-<size>-256-<id>/ and -<side>-<id>/   PHYRE at 256², resampled
        eval_in_template-<templates>t-<n>-..., eval_out_of_template-<n>-...
        vae/<preset>-<id>/reconstructions/..., scores/   the VAE floor and its cached scores
        i3d-features/                  FVD's reference features, per set and videos

Each step is resumable on its own: generation and encoding finish missing shards, a killed VAE
run resumes from its last checkpoint.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phyray.artifacts import Identity, ProductError, identity_of
from phyray.config import (
    COMBINATORIAL,
    COMPOSE_PREFIX,
    EVAL_KIND,
    PROBE_PREFIX,
    DataConfig,
    StudyConfig,
    TrainConfig,
    load_scenario_config,
    parse_size,
)
from phyray.data.plan import plan_dataset
from phyray.data.shards import dataset_id, decode_frames, iter_rows, read_manifest
from phyray.presets import is_trainable
from phyray.study.plan import expand_grid, nominal_videos, template_label
from phyray.study.settings import dit_settings, train_config, vae_data_config

# torch, Ray and MLflow, and the phyray modules that load them, are imported inside the stage
# functions: loading, checking and planning a study runs without them.


@dataclass
class ScenarioInputs:
    """Paths of one scenario's prepared inputs (plain strings: they travel in Tune configs)."""

    scenario: str
    train: dict[str, str] = field(default_factory=dict)  # data size -> pixel dataset
    num_videos: dict[str, int] = field(default_factory=dict)  # data size -> videos
    eval: dict[str, str] = field(default_factory=dict)  # evaluation split (cfg.eval.splits) -> dataset
    # Per study seed (one shared VAE gives every seed the same paths):
    vae: dict[int, str] = field(default_factory=dict)  # seed -> the VAE export
    latents: dict[str, dict[int, str]] = field(default_factory=dict)  # data size -> seed -> latents
    vae_floor: dict[int, dict[str, str]] = field(default_factory=dict)  # seed -> eval key -> reconstructions

    def eval_keys(self, trial) -> dict[str, str]:
        """{split: key in `eval` and `vae_floor`} of a trial's evaluation sets: the split itself,
        except a combinatorial cell's in-template set, which is its template set's own."""
        if self.scenario == COMBINATORIAL:
            from phyray.study.combinatorial import SPLITS, eval_key

            return {split: eval_key(split, trial.templates) for split in SPLITS}
        return {split: split for split in self.eval}


def scenario_root(cfg: StudyConfig, scenario: str) -> Path:
    return Path(cfg.data_dir) / scenario


def vae_train_size(cfg: StudyConfig) -> str:
    """The training set the VAE learns from: configured, else the study's largest."""
    return cfg.vae.train_size or max(cfg.data_sizes, key=nominal_videos)


def vae_train_key(cfg: StudyConfig, scenario: str) -> str:
    """The key in ScenarioInputs.train of the VAE's training set."""
    if scenario == COMBINATORIAL:
        from phyray.study.combinatorial import largest_train_key

        return largest_train_key(cfg)
    if (cfg.vae.train_on is not None or cfg.vae.data_span != "id" or cfg.vae.scope == "study"
            or (scenario.startswith(PROBE_PREFIX) and cfg.vae.probe_combinations == "all")
            or (scenario.startswith(COMPOSE_PREFIX) and cfg.vae.probe_combinations == "all")):
        return f"vae-{vae_train_size(cfg)}"
    return vae_train_size(cfg)


# Where a VAE that every scenario of the study shares lives (`StudyVAE.scope`).
STUDY_VAE_DIR = "study-vae"


def shared_vae(cfg: StudyConfig) -> bool:
    """Whether the study's scenarios share one VAE (vae.train_on, or vae.scope: study)."""
    return cfg.vae.train_on is not None or cfg.vae.scope == "study"


def vae_share_size(cfg: StudyConfig) -> str:
    """The size of each scenario's own VAE set: the VAE's training size, or with vae.scope:
    study an equal share of it (rounded up)."""
    if cfg.vae.scope != "study":
        return vae_train_size(cfg)
    return str(-(-nominal_videos(vae_train_size(cfg)) // len(cfg.scenarios)))


def vae_root(cfg: StudyConfig, scenario: str) -> Path:
    """Where a scenario's VAE runs live: beside the data it learns from."""
    if cfg.vae.scope == "study":
        return Path(cfg.data_dir) / STUDY_VAE_DIR / "vae"
    return scenario_root(cfg, cfg.vae.train_on or scenario) / "vae"


def vae_eval_set(cfg: StudyConfig, inputs: ScenarioInputs) -> str:
    """The evaluation set the VAE run scores itself on while it trains."""
    if inputs.scenario == COMBINATORIAL:
        from phyray.study.combinatorial import IN_TEMPLATE, eval_key, largest_template_set

        return inputs.eval[eval_key(IN_TEMPLATE, largest_template_set(cfg))]
    return inputs.eval[cfg.eval.splits[0]]


def train_keys(cfg: StudyConfig, scenario: str) -> list[str]:
    """The keys of the training sets the scenario's trials train on (Trial.data_key), in order."""
    return list(dict.fromkeys(t.data_key for t in expand_grid(cfg) if t.scenario == scenario))


def generate_inputs(cfg: StudyConfig, scenario: str, log=print) -> ScenarioInputs:
    """Step 1 for one scenario: every training size and both evaluation sets (reused if there)."""
    from phyray.data.generate import dataset_identity, generate_dataset

    if scenario == COMBINATORIAL:
        from phyray.study.combinatorial import generate_combinatorial_inputs

        return generate_combinatorial_inputs(cfg, log)

    data_cfg = load_scenario_config(scenario, [*cfg.data.overrides, f"render.resolution={cfg.data.resolution}"])
    root, seed = scenario_root(cfg, scenario), cfg.data.seed

    def dataset(split: str, size: str, label: str, config: DataConfig = data_cfg) -> tuple[str, int]:
        plan = plan_dataset(config, split, size, seed)
        out = root / dataset_identity(config, plan).name(label)
        manifest = generate_dataset(config, split, size, out, seed=seed, log=log, plan=plan)
        log(f"  {scenario} {label}: {manifest['num_videos']} videos -> {out}")
        return str(out), manifest["num_videos"]

    inputs = ScenarioInputs(scenario)
    vae_key = vae_train_key(cfg, scenario)
    vae_cfg = vae_data_config(cfg, scenario)  # vae.train_on's scenario, vae.data_span's ranges
    vae_size = vae_share_size(cfg)
    vae_label = f"vae_train-{parse_size(vae_size)[0]}"
    for size in dict.fromkeys([*cfg.data_sizes, vae_key]):
        if size == vae_key and cfg.vae.train_on is not None:
            # One VAE for the study, on another scenario's training set (StudyVAE.train_on).
            plan = plan_dataset(vae_cfg, "train", vae_train_size(cfg), seed)
            label = vae_label if cfg.vae.data_span != "id" else f"train-{plan.size_label}"
            out = scenario_root(cfg, cfg.vae.train_on) / dataset_identity(vae_cfg, plan).name(label)
            manifest = generate_dataset(vae_cfg, "train", vae_train_size(cfg), out, seed=seed, log=log, plan=plan)
            log(f"  {scenario} VAE set ({cfg.vae.train_on}): {manifest['num_videos']} videos -> {out}")
            inputs.train[size], inputs.num_videos[size] = str(out), manifest["num_videos"]
        elif size == vae_key and vae_cfg.probe is not None and cfg.vae.probe_combinations == "all":
            # A probe's VAE set: the pair's four combinations (StudyVAE.probe_combinations).
            every = vae_cfg.model_copy(update={"probe": vae_cfg.probe.model_copy(update={"combinations": "all"})})
            inputs.train[size], inputs.num_videos[size] = dataset("train", vae_size, vae_label, every)
        elif size == vae_key and vae_cfg.compose is not None and cfg.vae.probe_combinations == "all":
            # A composition's VAE set: every kind of the variant (StudyVAE.probe_combinations).
            every = vae_cfg.model_copy(update={"compose": vae_cfg.compose.model_copy(update={"kinds": "all"})})
            inputs.train[size], inputs.num_videos[size] = dataset("train", vae_size, vae_label, every)
        elif size == vae_key and (cfg.vae.data_span != "id" or cfg.vae.scope == "study"):
            # The VAE's own set: wider than the DiT's (StudyVAE.data_span), or this scenario's
            # share of the study's (StudyVAE.scope).
            inputs.train[size], inputs.num_videos[size] = dataset("train", vae_size, vae_label, vae_cfg)
        else:
            inputs.train[size], inputs.num_videos[size] = dataset("train", size, f"train-{parse_size(size)[0]}")
    for split, count in zip(cfg.eval.splits, (cfg.data.eval_id, cfg.data.eval_ood)):
        count = count or data_cfg.eval_sizes[EVAL_KIND[split]]
        inputs.eval[split], _ = dataset(split, str(count), f"{split}-{count}")
    return inputs


def mix_vae_sets(cfg: StudyConfig, inputs: dict[str, ScenarioInputs], log=print) -> None:
    """Step 1b of a study whose scenarios share one VAE (vae.scope: study): each scenario's
    share of the VAE set, interleaved into one set (reused if there), becomes every scenario's
    VAE set."""
    from phyray.data.mix import mix_datasets, mix_identity

    key = vae_train_key(cfg, cfg.scenarios[0])
    sources = {scenario: inputs[scenario].train[key] for scenario in cfg.scenarios}
    shard_size = load_scenario_config(cfg.scenarios[0], cfg.data.overrides).shard_size
    label = f"vae_train-{parse_size(vae_train_size(cfg))[0]}"
    out = Path(cfg.data_dir) / STUDY_VAE_DIR / mix_identity(sources, shard_size).name(label)
    manifest = mix_datasets(sources, out, shard_size, log=log)
    log(f"  VAE set of the study ({len(sources)} scenarios): {manifest['num_videos']} videos -> {out}")
    for scenario in cfg.scenarios:
        inputs[scenario].train[key], inputs[scenario].num_videos[key] = str(out), manifest["num_videos"]


def train_or_resume(run_cfg: TrainConfig, identity: Identity, run_id: str | None = None, tags: dict[str, str] | None = None) -> Path:
    """Train a run to its end: reuse its export, resume it from a checkpoint, or start it.

    The run directory is named by `identity`, so what is there is this run's own work; an
    export of another identity there (a directory renamed by hand) is refused. Returns the export.
    """
    from phyray.models.export import EXPORT_FILE, export_meta
    from phyray.train.trainer import latest_checkpoint, run_dir_of, train

    run_dir = run_dir_of(run_cfg)
    export = run_dir / "export" / EXPORT_FILE
    if export.is_file():
        stored = (export_meta(export).get("identity") or {}).get("id")
        if stored != identity.id:
            raise ProductError(f"{export}: is {run_cfg.task} {stored}, not {identity.describe()}; delete {run_dir}")
        return export
    resumable = run_dir.exists() and latest_checkpoint(run_dir) is not None
    if run_dir.exists() and not resumable:
        shutil.rmtree(run_dir)  # killed before its first checkpoint: nothing to resume
    return train(run_cfg, resume=resumable, tags=tags, run_id=run_id).export


# Videos a parameter-free VAE's latent scale is calibrated on.
CALIBRATION_VIDEOS = 256


def calibrated_export(preset: str, train_set: str, directory: Path, identity: Identity) -> Path:
    """Export a parameter-free VAE (SpaceToDepthAE) with its latent scale fitted to a dataset."""
    import numpy as np

    from phyray.models.export import EXPORT_FILE, save_export
    from phyray.models.vae import build_vae, frames_to_tensor

    if (directory / "export" / EXPORT_FILE).is_file():
        return directory / "export" / EXPORT_FILE
    frames = []
    for row in iter_rows(train_set, ["frames", "frames_encoding", "frame_shape"]):
        frames.append(decode_frames(row))
        if len(frames) == CALIBRATION_VIDEOS:
            break
    vae = build_vae(preset)
    vae.calibrate(frames_to_tensor(np.stack(frames)))
    return save_export(directory / "export", "vae", {"preset": preset, "identity": identity.record()}, vae.state_dict())


def vae_runs(
    cfg: StudyConfig, train_set: str, train_manifest: dict[str, Any], eval_set: str, output_dir: str,
    tracking_uri: str | None = None,
) -> dict[int | None, tuple[TrainConfig, Identity]]:
    """The VAE training runs of a scenario, each named by its identity: one (key None) that
    every study seed shares, or one per study seed (trained with that seed) under
    `vae.seeds: per_seed`."""
    from phyray.train.trainer import training_identity

    run_cfg = train_config(
        cfg, "vae", name="vae", train=train_set, eval=eval_set, output_dir=output_dir, tracking_uri=tracking_uri
    )
    runs = {}
    for seed in cfg.seeds if cfg.vae.seeds == "per_seed" else [None]:
        seeded = run_cfg if seed is None else run_cfg.model_copy(update={"seed": seed})
        identity = training_identity(seeded, train_manifest)
        runs[seed] = (seeded.model_copy(update={"name": identity.name(cfg.vae.preset)}), identity)
    return runs


def prepare_vae(cfg: StudyConfig, inputs: ScenarioInputs, tracking_uri: str, tags: dict[str, str], log=print) -> None:
    """Step 2 for one scenario: the VAE of its data settings, trained once (or reused); one per
    study seed with `vae.seeds: per_seed`."""
    root = vae_root(cfg, inputs.scenario)
    train_set = inputs.train[vae_train_key(cfg, inputs.scenario)]
    train_manifest = read_manifest(train_set)
    if not is_trainable(cfg.vae.preset):
        data_id = identity_of(train_manifest, train_set)["id"]
        identity = Identity("vae", {"preset": cfg.vae.preset, "calibration_videos": CALIBRATION_VIDEOS}, {"data": data_id})
        directory = root / identity.name(cfg.vae.preset)
        export = str(calibrated_export(cfg.vae.preset, train_set, directory, identity))
        inputs.vae = dict.fromkeys(cfg.seeds, export)
        log(f"  {inputs.scenario} VAE ({cfg.vae.preset}, calibrated, nothing to train): {export}")
        return
    tags = {**tags, "phyray.role": "vae", "phyray.scenario": inputs.scenario}
    eval_set = vae_eval_set(cfg, inputs)
    for seed, (run_cfg, identity) in vae_runs(cfg, train_set, train_manifest, eval_set, str(root), tracking_uri).items():
        export = str(train_or_resume(run_cfg, identity, tags=tags))
        inputs.vae |= dict.fromkeys(cfg.seeds if seed is None else [seed], export)
        log(f"  {inputs.scenario} VAE{'' if seed is None else f' (seed {seed})'}: {export}")


def prepare_latents(cfg: StudyConfig, inputs: ScenarioInputs, log=print) -> None:
    """Step 3 for one scenario: latents of every training size with each VAE (reused if there)."""
    from phyray.data.latents import encode_dataset, latents_identity
    from phyray.models.export import export_id

    cond_frames = dit_settings(cfg).diffusion.cond_frames
    for size in train_keys(cfg, inputs.scenario):
        data_id = dataset_id(inputs.train[size])
        label = f"train-{size if inputs.scenario == COMBINATORIAL else parse_size(size)[0]}"
        by_vae: dict[str, str] = {}
        for seed, vae in inputs.vae.items():
            if vae not in by_vae:
                name = latents_identity(data_id, export_id(vae), cond_frames).name(label)
                out = scenario_root(cfg, inputs.scenario) / "latents" / name
                encode_dataset(inputs.train[size], vae, out, cond_frames, log=log)
                by_vae[vae] = str(out)
                log(f"  {inputs.scenario} latents {size}: {out}")
            inputs.latents.setdefault(size, {})[seed] = by_vae[vae]


def vae_floor_task(cfg: StudyConfig, scenario: str, split: str, vae: str, reference: str, out: str, cond_frames: int) -> dict[str, float]:
    """Reconstruct an evaluation set with a VAE and score the reconstructions as rollouts are
    scored; their metrics named `vae_floor/<group>/<metric>` (a Ray task: it runs the VAE where
    the cluster has room). A PHYRE set's scores are kept beside the reconstructions for the
    trials (`phyray.eval.scenes.score_scene_set`)."""
    from phyray.eval.report import cached_physics_records, report_metrics, summarize
    from phyray.eval.rollouts import reconstruct_dataset

    reconstruct_dataset(vae, reference, out)
    if scenario == COMBINATORIAL:
        from phyray.eval.scenes import scene_metrics, score_scene_set, summarize_scenes
        from phyray.study.combinatorial import scene_scoring

        scores = score_scene_set(out, reference, scene_scoring(cfg, split, cond_frames), cache_dir=scores_dir(out))
        rows = summarize_scenes(scores["records"], cfg.eval.bootstrap_resamples, cfg.data.seed, per_template=False)
        return scene_metrics([*rows, *scores["fvd"]], prefix="vae_floor")
    records = cached_physics_records(
        scores_dir(out), out, reference, cfg.eval.parser, cond_frames, ssim=cfg.eval.ssim,
        paper_filter=cfg.eval.paper_filter, floor_cache=scores_dir(reference),
    )
    metrics = report_metrics(summarize(records, cfg.eval.parser, cond_frames))
    return {name.replace("eval/", "vae_floor/", 1): value for name, value in metrics.items()}


def scores_dir(product: str | Path) -> Path:
    """Where scores made from a set are kept, each named by what made it: beside the set's
    product (a VAE's reconstruction scores, scored once for every trial that shows its floor;
    an evaluation set's own parse, the ground-truth floor every trial shares)."""
    return Path(product).parent / "scores"


def prepare_vae_floors(cfg: StudyConfig, inputs: ScenarioInputs, tracking_uri: str, log=print) -> None:
    """Step 3b for one scenario: each VAE's reconstruction of each evaluation set, scored, its
    floor logged on the VAE's MLflow run (`vae_floor/<split>/<metric>`, as eval/ metrics are
    named; `vae_floor/<scenario>/<split>/<metric>` for a VAE the scenarios share); every trial's
    report then carries it beside the parse floor (`vae_floor_*`)."""
    import ray

    from phyray import tracking
    from phyray.eval.rollouts import reconstructions_identity
    from phyray.models.export import export_id
    from phyray.study.combinatorial import key_parts

    cond_frames = dit_settings(cfg).diffusion.cond_frames
    floor = ray.remote(vae_floor_task).options(num_cpus=1, num_gpus=1 if ray.cluster_resources().get("GPU") else 0)
    done: dict[str, dict[str, str]] = {}
    for seed, vae in inputs.vae.items():
        if vae not in done:
            directories, jobs = {}, []
            for key, reference in inputs.eval.items():
                identity = reconstructions_identity(export_id(vae), dataset_id(reference))
                directories[key] = str(Path(vae).parent.parent / "reconstructions" / identity.name(key.replace("/", "-")))
                split, _ = key_parts(key)
                jobs.append(floor.remote(cfg, inputs.scenario, split, vae, reference, directories[key], cond_frames))
            metrics = {}
            for key, job in zip(directories, jobs):
                # A combinatorial study has one in-template set per template set: vae_floor/in_template_6t/...
                _, templates = key_parts(key)
                label = f"/in_template_{template_label(templates)}t/" if templates else None
                metrics |= {name.replace("/in_template/", label) if label else name: v for name, v in ray.get(job).items()}
            # A VAE shared by the study's scenarios keeps each one's floor apart.
            logged = {name.replace("vae_floor/", f"vae_floor/{inputs.scenario}/", 1): v for name, v in metrics.items()} \
                if shared_vae(cfg) else metrics
            vae_run = _vae_run(cfg, tracking_uri, export_id(vae))
            if vae_run is not None and not logged.keys() <= vae_run.data.metrics.keys():
                tracking.log_metrics(tracking_uri, vae_run.info.run_id, logged, step=0)
            headline = "psnr" if inputs.scenario == COMBINATORIAL else cfg.eval.headline_metric
            log(f"  {inputs.scenario} VAE floor ({headline}): "
                + ", ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in metrics.items() if k.endswith("/" + headline)))
            done[vae] = directories
        inputs.vae_floor[seed] = done[vae]


def _vae_run(cfg: StudyConfig, tracking_uri: str, vae_id: str):
    """The MLflow run of this study's experiment that trained the VAE of this identity (None for
    a calibrated one, or one another experiment trained)."""
    from mlflow.tracking import MlflowClient

    from phyray.tracking import newest_run

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    return newest_run(client, experiment.experiment_id, f"tags.`phyray.vae_id` = '{vae_id}'") if experiment else None
