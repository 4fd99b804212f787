"""The combinatorial study's data: template sets, how many videos each draws, and their datasets.

A combinatorial study (`scenarios: [combinatorial]`) has a template axis: `templates: [6, 30,
60]` (PHYRE's template catalogue, phyray/sim/phyre.py; the paper's sets or ids and ranges).
Each cell trains on its own template set and is evaluated on two sets:

- `eval_in_template`: trial 990 of seeds 0..n-1 of each of its training templates (never trained
  on: training uses trials 0-989);
- `eval_out_of_template`: trial 0 of seeds 0..n-1 of each held-out template (10060-10069),
  shared by every cell.

With `eval.split: dev` the two sets are the dev sets instead, for choosing settings without
looking at the test sets: trial 995 in template and trial 500 out of template, of the same
seeds (`phyray.data.combinatorial.SPLIT_TRIALS`); they keep the roles' names (keys, MLflow
metrics), and the study's `eval.split` param says which sets a report scored.

Datasets are simulated once at 256² as palette indices (`phyray.data.combinatorial`, cached by
identity in `<data_dir>/combinatorial/`), then resampled to the study's side and frame count
(`phyray.data.resample`); everything after (VAE, latents, rollouts, reports) reads the
resampled sets. `ScenarioInputs` keys them by `Trial.data_key` ("<templates>t-<size>") and
by `eval_key` (the in-template set is per template set).
"""

from __future__ import annotations

from pathlib import Path

from phyray.artifacts import identity_of
from phyray.config import COMBINATORIAL, ConfigError, StudyConfig, parse_size
from phyray.sim.phyre import SCENE_SIZE, TEMPLATE_SETS, find_phyre_python, parse_templates
from phyray.study.plan import template_label
from phyray.study.prepare import ScenarioInputs, scenario_root

IN_TEMPLATE, OUT_OF_TEMPLATE = "eval_in_template", "eval_out_of_template"
SPLITS = (IN_TEMPLATE, OUT_OF_TEMPLATE)
# Evaluation videos per template when data.eval_id / eval_ood are unset: the paper's 100 seeds.
PAPER_EVAL_PER_TEMPLATE = 100
TRAIN_TRIALS = 990  # trials 0-989 of each seed train; 990-999 are in-template evaluation
I3D_MIN_FRAMES = 9  # phyray.eval.fvd.MIN_CLIP_FRAMES (not imported: it loads torch)


def template_ids(spec: str) -> list[int]:
    """The ids of a template set; ConfigError naming `templates` for an unknown one."""
    try:
        return parse_templates(spec)
    except ValueError as err:
        raise ConfigError(f"templates: {err}") from None


def draws(cfg: StudyConfig, size: str) -> tuple[int, int]:
    """(task seeds, trials per seed) of a data size, which counts videos per template."""
    label, count = parse_size(size)
    if count is None:
        raise ConfigError(f"data_sizes: {label!r} is a ball-scenario preset; a combinatorial size is videos per template (e.g. 100, 1K)")
    seeds = min(cfg.data.phyre.template_seeds, count)
    if count % seeds or count // seeds > TRAIN_TRIALS:
        raise ConfigError(
            f"data_sizes: {size} videos per template is not {seeds} seeds (data.phyre.template_seeds) "
            f"x at most {TRAIN_TRIALS} trials each"
        )
    return seeds, count // seeds


def eval_per_template(cfg: StudyConfig) -> dict[str, int]:
    return {
        IN_TEMPLATE: cfg.data.eval_id or PAPER_EVAL_PER_TEMPLATE,
        OUT_OF_TEMPLATE: cfg.data.eval_ood or PAPER_EVAL_PER_TEMPLATE,
    }


def data_split(split: str, role: str) -> str:
    """The dataset split that plays an evaluation role (IN_TEMPLATE, OUT_OF_TEMPLATE) under
    `eval.split` `split`: the role itself on test, its dev set on dev."""
    return role if split == "test" else role.replace("eval_", "dev_", 1)


def eval_key(split: str, templates: str) -> str:
    """The key of an evaluation set in ScenarioInputs.eval: the in-template set is per template set."""
    return f"{split}/{templates}" if split == IN_TEMPLATE else split


def key_parts(key: str) -> tuple[str, str | None]:
    """An evaluation key's split and template set (None for a set shared by every template set):
    the inverse of `eval_key`, for ball scenarios' keys (plain splits) too."""
    split, _, templates = key.partition("/")
    return split, templates or None


def check_combinatorial(cfg: StudyConfig) -> None:
    """ConfigError naming the field for an unknown template, a training set that reaches the
    held-out templates, a size that is no whole seeds x trials, or a side that does not divide
    PHYRE's 256."""
    held_out = set(TEMPLATE_SETS["heldout"])
    for spec in cfg.templates:
        overlap = sorted(set(template_ids(spec)) & held_out)
        if overlap:
            raise ConfigError(
                f"templates: {spec!r} includes held-out templates {overlap}; they are the out-of-template "
                "evaluation set and never train"
            )
    for size in cfg.data_sizes:
        draws(cfg, size)
    for split, count in eval_per_template(cfg).items():
        if count > cfg.data.phyre.template_seeds and split == IN_TEMPLATE:
            raise ConfigError(f"data.eval_id: {count} in-template videos per template need as many seeds; data.phyre.template_seeds is {cfg.data.phyre.template_seeds}")
    for name in ("lpips_backbone", "fvd_weights"):
        path = getattr(cfg.eval, name)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"eval.{name}: {path} does not exist")
    if cfg.data.phyre.num_frames < I3D_MIN_FRAMES:
        raise ConfigError(f"data.phyre.num_frames: {cfg.data.phyre.num_frames} is below the {I3D_MIN_FRAMES} frames FVD's I3D needs")
    if SCENE_SIZE % cfg.data.resolution:
        raise ConfigError(f"data.resolution: {cfg.data.resolution} does not divide PHYRE's {SCENE_SIZE}² frames (area averaging)")


def check_phyre_environment() -> None:
    """ConfigError (one line, what to run) when no Python with PHYRE is there: a combinatorial
    study checks this before it generates anything."""
    from phyray.sim.phyre import PhyreUnavailable

    try:
        find_phyre_python()
    except PhyreUnavailable as err:
        raise ConfigError(f"scenarios: combinatorial needs PHYRE: {err}") from None


def generate_combinatorial_inputs(cfg: StudyConfig, log=print) -> ScenarioInputs:
    """Step 1 of a combinatorial study: each cell's training set and in-template set, the
    out-of-template set, simulated at 256² and resampled to the study's side (all cached)."""
    from phyray.data.combinatorial import dataset_identity, generate_combinatorial
    from phyray.data.resample import resample_dataset, resample_identity

    root = scenario_root(cfg, COMBINATORIAL)
    phyre = cfg.data.phyre

    def dataset(templates: list[int], seeds: int, trials: int, split: str, label: str) -> tuple[str, int]:
        source = root / dataset_identity(templates, seeds, trials, split, phyre.shard_size).name(f"{label}-256")
        manifest = generate_combinatorial(templates, seeds, trials, split, source, phyre.shard_size, progress=False, log=log)
        resampled = resample_identity(identity_of(manifest, source)["id"], cfg.data.resolution, phyre.num_frames)
        out = root / resampled.name(f"{label}-{cfg.data.resolution}")
        manifest = resample_dataset(source, cfg.data.resolution, out, phyre.num_frames, log=log)
        log(f"  {label}: {manifest['num_videos']} videos, {cfg.data.resolution}², {phyre.num_frames} frames -> {out}")
        return str(out), manifest["num_videos"]

    inputs = ScenarioInputs(COMBINATORIAL)
    per_template = eval_per_template(cfg)
    for spec in cfg.templates:
        ids, label = template_ids(spec), template_label(spec)
        for size in cfg.data_sizes:
            key = f"{label}t-{size}"
            inputs.train[key], inputs.num_videos[key] = dataset(ids, *draws(cfg, size), "train", f"train-{key}")
        count, split = per_template[IN_TEMPLATE], data_split(cfg.eval.split, IN_TEMPLATE)
        inputs.eval[eval_key(IN_TEMPLATE, spec)], _ = dataset(ids, count, 1, split, f"{split}-{label}t-{count}")
    count, split = per_template[OUT_OF_TEMPLATE], data_split(cfg.eval.split, OUT_OF_TEMPLATE)
    inputs.eval[OUT_OF_TEMPLATE], _ = dataset(TEMPLATE_SETS["heldout"], count, 1, split, f"{split}-{count}")
    return inputs


def largest_template_set(cfg: StudyConfig) -> str:
    """The study's template set with the most templates: the VAE trains and checks itself on it."""
    return max(cfg.templates, key=lambda s: len(template_ids(s)))


def largest_train_key(cfg: StudyConfig) -> str:
    """The training set the VAE learns from: the largest template set at the largest size."""
    size = max(cfg.data_sizes, key=lambda s: parse_size(s)[1] or 0)
    return f"{template_label(largest_template_set(cfg))}t-{size}"



def scene_scoring(cfg: StudyConfig, split: str, cond_frames: int):
    """How the study scores one evaluation split: its eval settings, with FVD's weights where
    they are (`fvd_weights`, else the fetched default if present)."""
    from phyray.eval.scenes import SceneScoring

    return SceneScoring(
        cond_frames=cond_frames, ssim=cfg.eval.ssim, abnormal=cfg.eval.abnormal,
        lpips_backbone=cfg.eval.lpips_backbone, fvd_weights=fvd_weights(cfg), fvd_videos=cfg.eval.fvd_videos.get(split),
    )


def fvd_weights(cfg: StudyConfig) -> str | None:
    from phyray.eval.fvd import default_weights

    return cfg.eval.fvd_weights or default_weights()


def skipped_metrics(cfg: StudyConfig) -> list[str]:
    """One line per video metric the study will not compute, saying how to supply it."""
    from phyray.eval.lpips import LPIPS_SKIPPED

    lines = [] if cfg.eval.lpips_backbone else [LPIPS_SKIPPED]
    if fvd_weights(cfg) is None:
        lines.append("fvd: skipped, no I3D weights; run `bash scripts/fetch_weights.sh` or set eval.fvd_weights")
    return lines
