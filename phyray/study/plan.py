"""What a study will run, what each trial needs, and what it costs: no Ray, no data touched.

    trials = expand_grid(cfg)                    # scenarios x models x data sizes, in order
    check_fits(cfg, {"CPU": 16, "GPU": 8})       # ConfigError if one trial cannot be placed
    print(format_plan(cost_plan(cfg)))           # tokens, FLOPs, GPU-hours per trial and total

FLOPs come from `phyray model info` (forward + backward, attention included): a trial trains
`steps * batch_size` videos and samples `eval videos * sample_steps` forward passes. GPU-hours
are those FLOPs at the config's MFU of the named GPU's dense bf16 peak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from phyray.config import (
    COMBINATORIAL,
    NOMINAL_SIZES,
    ConfigError,
    StudyConfig,
    load_scenario_config,
    parse_size,
)
from phyray.study.settings import dit_settings, scenario_frames, vae_settings

# CPUs a trial asks for beside its workers: the Ray Data tasks that read and decode its batches
# (a run whose workers hold every CPU waits forever for data; see phyray/runtime.py).
DATA_CPUS_PER_TRIAL = 1
# `phyray.models.info` (torch: it builds DiTs on the meta device) is imported in `cost_plan`
# alone: the grid and the resource checks run without torch.


@dataclass(frozen=True)
class Trial:
    """One cell of the grid; `key` names it everywhere (directories, MLflow tags, Tune).

    A combinatorial cell also has its training template set (`templates`, a spec of the
    study's `templates`); its data size is then videos per template."""

    scenario: str
    model: str
    data_size: str
    seed: int = 0
    templates: str | None = None

    @property
    def data_key(self) -> str:
        """The key of the trial's training set: its data size, or "<templates>t-<size>"."""
        return self.data_size if self.templates is None else f"{template_label(self.templates)}t-{self.data_size}"

    @property
    def key(self) -> str:
        return f"{self.scenario}-{self.model}-{self.data_key}-s{self.seed}"

    def as_dict(self) -> dict[str, str | int]:
        # A ball trial's record (and so its identity) has no templates entry at all.
        return {k: v for k, v in asdict(self).items() if k != "templates" or v is not None}


def template_label(spec: str) -> str:
    """A template set's spec as it appears in trial keys, paths and metric names: "6", "10003_10005"."""
    return spec.replace(",", "_").replace(" ", "")


def expand_grid(cfg: StudyConfig) -> list[Trial]:
    """Every trial of the study: scenarios x models x (template sets x) data sizes x seeds, in
    config order, less the cells `exclude` names."""
    trials = [
        Trial(scenario, model, size, seed, templates)
        for scenario in cfg.scenarios
        for model in cfg.models
        for templates in (cfg.templates if scenario == COMBINATORIAL else [None])
        for size in cfg.data_sizes
        for seed in cfg.seeds
    ]
    return [t for t in trials if not any(all(str(getattr(t, k)) == str(v) for k, v in e.items()) for e in cfg.exclude)]


def nominal_videos(size: str) -> int:
    """Videos a size names: a count, or a preset's nominal size (collision's grids drop ~5%)."""
    label, count = parse_size(size)
    return count if count is not None else NOMINAL_SIZES[label]


# ---------------------------------------------------------------------------------------------
# Resources
# ---------------------------------------------------------------------------------------------


def run_resources(run) -> dict[str, float]:
    """Logical resources a training run holds: its workers plus its data tasks."""
    resources = {"CPU": float(run.workers * run.cpus_per_worker + DATA_CPUS_PER_TRIAL)}
    if run.use_gpu:
        resources["GPU"] = float(run.workers)
    return resources


def trial_resources(cfg: StudyConfig) -> dict[str, float]:
    """Logical resources one trial holds while it trains."""
    return run_resources(dit_settings(cfg))


def stage_resources(cfg: StudyConfig) -> dict[str, tuple[str, dict[str, float]]]:
    """What each stage needs at once, with the fields that set it: data generation and latent
    encoding one CPU (latents use a GPU instead where the cluster has one), the VAE run and
    each trial their workers plus a data CPU."""
    stages = {"data generation": ("(one task per shard)", {"CPU": 1.0})}
    vae = vae_settings(cfg)
    if vae is not None:
        stages["VAE training"] = ("vae.train.workers / vae.train.cpus_per_worker / vae.train.use_gpu", run_resources(vae))
    stages["latent encoding"] = ("(one actor per shard)", {"CPU": 1.0})
    stages["DiT trials"] = ("dit.workers / dit.cpus_per_worker / dit.use_gpu", trial_resources(cfg))
    return stages


def check_fits(cfg: StudyConfig, cluster: dict[str, float]) -> None:
    """ConfigError naming the stage and its shortfall if the cluster cannot run every stage
    (a stage that cannot be placed would wait for resources forever)."""
    for stage, (fields, needs) in stage_resources(cfg).items():
        for name, needed in needs.items():
            have = cluster.get(name, 0.0)
            if needed > have:
                raise ConfigError(
                    f"{stage}: needs {needed:g} {name} at once (workers x per-worker + a data task; {fields}) "
                    f"but the cluster has {have:g}; lower them or add nodes"
                )


def max_concurrent_trials(cfg: StudyConfig, cluster: dict[str, float], pending: int) -> int:
    """How many trials run at once: as many as the cluster holds, capped by the config."""
    check_fits(cfg, cluster)
    fits = min(int(cluster.get(name, 0.0) // needed) for name, needed in trial_resources(cfg).items())
    limit = cfg.resources.max_concurrent_trials or fits
    return max(1, min(fits, limit, pending))


# ---------------------------------------------------------------------------------------------
# Cost
# ---------------------------------------------------------------------------------------------


def _eval_videos(cfg: StudyConfig, trial: Trial) -> int:
    if trial.scenario == COMBINATORIAL:
        from phyray.sim.phyre import TEMPLATE_SETS
        from phyray.study.combinatorial import (
            IN_TEMPLATE,
            OUT_OF_TEMPLATE,
            eval_per_template,
            template_ids,
        )

        per_template = eval_per_template(cfg)
        return (per_template[IN_TEMPLATE] * len(template_ids(trial.templates))
                + per_template[OUT_OF_TEMPLATE] * len(TEMPLATE_SETS["heldout"]))
    sizes = load_scenario_config(trial.scenario).eval_sizes
    return (cfg.data.eval_id or sizes["eval_id"]) + (cfg.data.eval_ood or sizes["eval_ood"])


def trial_videos(cfg: StudyConfig, trial: Trial) -> int:
    """Training videos of a trial: its size, times its templates for a combinatorial cell."""
    if trial.scenario == COMBINATORIAL:
        from phyray.study.combinatorial import template_ids

        return nominal_videos(trial.data_size) * len(template_ids(trial.templates))
    return nominal_videos(trial.data_size)


def cost_plan(cfg: StudyConfig) -> dict[str, Any]:
    """Per trial: parameters, tokens, FLOPs and GPU-hours; plus the totals and assumptions."""
    from phyray.models.info import model_info, peak_flops

    peak = peak_flops(cfg.plan.gpu)
    if peak is None:
        raise ConfigError(f"plan.gpu: no known bf16 peak for {cfg.plan.gpu!r} (see phyray/models/info.py)")
    rows = []
    for trial in expand_grid(cfg):
        run = dit_settings(cfg, trial.model)
        frames = scenario_frames(cfg, trial.scenario)
        info = model_info(trial.model, cfg.data.resolution, frames, vae=cfg.vae.preset, patch=run.model.patch)
        train_flops = info["train_flops_per_video"] * run.steps * run.batch_size
        eval_flops = info["forward_flops_per_video"] * cfg.eval.sample_steps * _eval_videos(cfg, trial)
        videos = trial_videos(cfg, trial)
        rows.append({
            "trial": trial.key,
            **trial.as_dict(),
            "videos": videos,
            "params": info["params"],
            "tokens_per_video": info["tokens_per_video"],
            "steps": run.steps,
            "batch_size": run.batch_size,
            "epochs": run.steps * run.batch_size / videos,
            "train_flops": train_flops,
            "eval_flops": eval_flops,
            "gpu_hours": (train_flops + eval_flops) / (cfg.plan.mfu * peak) / 3600,
        })
    return {
        "gpu": cfg.plan.gpu,
        "peak_flops": peak,
        "mfu": cfg.plan.mfu,
        "trials": rows,
        "total_flops": sum(r["train_flops"] + r["eval_flops"] for r in rows),
        "total_gpu_hours": sum(r["gpu_hours"] for r in rows),
    }


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as a fixed-width table with a total line."""
    header = (f"{'trial':<42} {'params':>8} {'tokens':>7} {'steps x batch':>15} {'epochs':>8} "
              f"{'train FLOPs':>11} {'eval FLOPs':>10} {'GPU-h':>9}")
    lines = [header]
    for r in plan["trials"]:
        lines.append(
            f"{r['trial']:<42} {r['params'] / 1e6:>7.1f}M {r['tokens_per_video']:>7} "
            f"{r['steps']:>7} x {r['batch_size']:<5} {r['epochs']:>8.3g} {r['train_flops']:>11.3e} "
            f"{r['eval_flops']:>10.3e} {r['gpu_hours']:>9.2f}"
        )
    lines.append(
        f"total: {len(plan['trials'])} trials, {plan['total_flops']:.3e} FLOPs, "
        f"{plan['total_gpu_hours']:,.1f} GPU-hours on {plan['gpu']} at {100 * plan['mfu']:.0f}% MFU "
        f"({plan['peak_flops'] / 1e12:.0f} TFLOP/s bf16 peak); data generation and VAE training not included"
    )
    return "\n".join(lines)
