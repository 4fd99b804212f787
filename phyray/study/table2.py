"""The combinatorial study's answer, rebuilt from MLflow alone: the paper's Table 2 and template scaling.

`publish_table2` (called by `phyray.study.report.publish_report` for a combinatorial study run,
which logs the files onto the study's parent run) writes:

- `table2.csv`: one row per cell (model, template set; seeds combined) with every metric's
  in-template and out-of-template value and 95 % interval, and the VAE floor's;
- `table2.md`: the protocol, Table 2 laid out as the paper's (each metric "in / out"), the VAE
  floors of the same sets, nothing moving (each video's conditioning frame held: the level a
  model must beat to have continued a scene) with each cell's paired PSNR gain over it, and the
  paper's two combinatorial claims as checks that answer yes, no or undecided at the intervals:
  - *out-of-template error falls with templates*, per model and metric: the cell with the most
    templates against the one with the fewest, better beyond both intervals
    (`phyray.study.verdict.falls`, reversed for PSNR and SSIM);
  - *the fewest templates are best in-template* (the paper's 6-template model, whose videos are
    each seen ~10x more often), per model and metric: the fewest-template cell against the
    most-template one, in-template;
- `template_scaling.png`: each metric against the number of training templates, a line per
  model, out-of-template solid and in-template dashed, 95 % intervals as bands, nothing moving
  out of template dotted;
- `gifs/`: each trial's [ground truth | rollout] GIFs of its best and worst out-of-template
  rollouts (by PSNR), copied from the trial runs.

Abnormal rates come from the automatic judge (phyray/eval/abnormal.py), not human raters; below
its calibrated resolution the table says so.
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from phyray.artifacts import atomic_write_bytes, write_files
from phyray.data.combinatorial import SPLIT_TRIALS
from phyray.eval.abnormal import TRUSTED_RESOLUTION
from phyray.eval.scenes import FROZEN_PREFIX
from phyray.study.combinatorial import IN_TEMPLATE, OUT_OF_TEMPLATE, data_split, template_ids
from phyray.study.report import (
    COND_FRAMES,
    Cell,
    dev_split_note,
    grid_cells,
    label_log_xticks,
    param,
    sampler_text,
)
from phyray.study.verdict import Estimate, falls

# (metric, Table 2 header, lower is better, format)
TABLE2_METRICS = (
    ("fvd", "FVD ↓", True, "{:.1f}"),
    ("ssim", "SSIM ↑", False, "{:.3f}"),
    ("psnr", "PSNR ↑", False, "{:.1f}"),
    ("lpips", "LPIPS ↓", True, "{:.3f}"),
    ("abnormal", "Abnormal ↓", True, "{:.0%}"),
)
SPLITS = (("in_template", "in"), ("out_of_template", "out"))


def num_templates(cell: Cell) -> int:
    return len(template_ids(cell.templates))


def _cells(records: list[dict[str, Any]]) -> list[Cell]:
    from phyray.study.report import _model_order

    cells = grid_cells(records)
    return sorted(cells, key=lambda c: (-_model_order(c.model)[0], num_templates(c), c.num_videos))


def _value(estimate: Estimate | None, fmt: str) -> str:
    return "–" if estimate is None else fmt.format(estimate.value)


def _pair(cell: Cell, metric: str, fmt: str, prefix: str = "") -> str:
    values = [_value(cell.get(f"eval/{group}/{prefix}{metric}"), fmt) for group, _ in SPLITS]
    return " / ".join(values)


def _better(fewer: Estimate, more: Estimate, lower_is_better: bool) -> str:
    """falls(), for "better": a smaller value, or a larger one for PSNR and SSIM."""
    if lower_is_better:
        return falls(fewer, more)
    return falls(Estimate(-fewer.value, -fewer.high, -fewer.low), Estimate(-more.value, -more.high, -more.low))


def template_checks(cells: list[Cell]) -> list[dict[str, str]]:
    """The paper's two claims per model and metric (see the module docstring)."""
    checks = []
    for model in dict.fromkeys(c.model for c in cells):
        members = sorted((c for c in cells if c.model == model), key=num_templates)
        if len({num_templates(c) for c in members}) < 2:
            continue
        fewest, most = members[0], members[-1]
        for metric, _, lower, _ in TABLE2_METRICS:
            answers = {}
            for group, claim in (("out_of_template", "out_of_template_improves"), ("in_template", "fewest_best_in_template")):
                name = f"eval/{group}/{metric}"
                few, many = fewest.get(name), most.get(name)
                if None in (few, many):
                    answers[claim] = "–"
                elif not all(f"{name}_ci_low" in c.trials[0] for c in (fewest, most)):
                    answers[claim] = "no interval"  # FVD: a set statistic
                else:
                    answers[claim] = _better(few, many, lower) if group == "out_of_template" else _better(many, few, lower)
            checks.append({"model": model, "metric": metric, "templates": f"{num_templates(fewest)} → {num_templates(most)}",
                           **answers})
    return checks


def beats_frozen(gain: Estimate | None) -> str:
    """Whether a cell's rollouts beat nothing moving: their paired PSNR gain's interval above 0."""
    if gain is None:
        return "–"
    return "yes" if gain.low > 0 else "no" if gain.high < 0 else "undecided"


def frozen_lines(cells: list[Cell]) -> list[str]:
    """Markdown: the frozen reference per template set, and each cell's paired PSNR gain over it."""
    sets = {c.templates: c for c in cells if c.get(f"eval/out_of_template/{FROZEN_PREFIX}psnr") is not None}
    if not sets:
        return []
    shown = [m for m in TABLE2_METRICS if any(c.get(f"eval/out_of_template/{FROZEN_PREFIX}{m[0]}") for c in sets.values())]
    lines = ["", "Nothing moving: each video's conditioning frame held over the rest (no model), scored the same way "
             "(a model below it has not continued the scene):", "",
             "| #Templates | " + " | ".join(h for _, h, _, _ in shown) + " |", "|---|" + "---|" * len(shown)]
    lines += [f"| {num_templates(c)} | " + " | ".join(_pair(c, m, fmt, FROZEN_PREFIX) for m, _, _, fmt in shown) + " |"
              for c in sorted(sets.values(), key=num_templates)]
    lines += ["", "Each cell's PSNR over nothing moving, paired over the same videos (dB, 95% interval), and whether "
              "it beats it:", "", "| Model | #Templates | in-template | out-of-template | beats it (in / out) |",
              "|---|---|---|---|---|"]
    for cell in cells:
        gains = [cell.get(f"eval/{group}/psnr_over_frozen") for group, _ in SPLITS]
        cells_text = ["–" if g is None else f"{g.value:+.2f} [{g.low:+.2f}, {g.high:+.2f}]" for g in gains]
        lines.append(f"| {cell.model} | {num_templates(cell)} | {cells_text[0]} | {cells_text[1]} | "
                     + " / ".join(beats_frozen(g) for g in gains) + " |")
    return lines


def table2_csv(cells: list[Cell]) -> str:
    fields = ["model", "templates", "num_templates", "videos_per_template", "num_videos", "seeds"]
    for metric, *_ in TABLE2_METRICS:
        for group, _ in SPLITS:
            for prefix in ("", "vae_floor_", FROZEN_PREFIX):
                fields += [f"{group}/{prefix}{metric}", f"{group}/{prefix}{metric}_ci_low", f"{group}/{prefix}{metric}_ci_high"]
    for group, _ in SPLITS:
        fields += [f"{group}/psnr_over_frozen", f"{group}/psnr_over_frozen_ci_low", f"{group}/psnr_over_frozen_ci_high"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", restval="")
    writer.writeheader()
    for cell in cells:
        row = {"model": cell.model, "templates": cell.templates, "num_templates": num_templates(cell),
               "videos_per_template": cell.data_size, "num_videos": cell.num_videos, "seeds": len(cell.trials)}
        for name in fields[6:]:
            base = name.removesuffix("_ci_low").removesuffix("_ci_high")
            estimate = cell.get(f"eval/{base}")
            if estimate is not None:
                row[name] = estimate.low if name.endswith("_ci_low") else estimate.high if name.endswith("_ci_high") else estimate.value
        writer.writerow(row)
    return buffer.getvalue()


def protocol_line(params: dict[str, str], fvd_protocols: dict[str, str]) -> str:
    setting = partial(param, params)
    resolution = int(setting("data.resolution", "0") or 0)
    warning = (f" **The abnormal-rate judge meets its calibration targets at {TRUSTED_RESOLUTION}² only: at 128² it flags "
               f"0.8% of real videos and misses 6% of interpenetrations, at 64² it flags 62% (docs/abnormal.md); at "
               f"{resolution}² read its rates beside their ground-truth floor.**"
               if resolution and resolution < TRUSTED_RESOLUTION else "")
    fvd = "; ".join(f"FVD {group}: {protocol}" for group, protocol in sorted(fvd_protocols.items())) or "FVD not computed"
    split = setting("eval.split", "test")
    (in_trial, _), (out_trial, _) = (SPLIT_TRIALS[data_split(split, role)] for role in (IN_TEMPLATE, OUT_OF_TEMPLATE))
    return (
        f"Protocol: {split} split; {setting('data.resolution')}² frames, {setting('data.phyre.num_frames', '32')} frames per video, "
        f"{setting('dit.diffusion.cond_frames', COND_FRAMES)} conditioning frame(s); in-template: trial {in_trial} of seeds 0..n-1 of each "
        f"training template (n = {setting('data.eval_id', '100')}); out-of-template: trial {out_trial} of seeds 0..n-1 of templates "
        f"10060-10069 (n = {setting('data.eval_ood', '100')}); {sampler_text(params)}; training "
        f"seeds {setting('seeds', '[0]')}; PSNR, SSIM and LPIPS per generated frame in [0, 1], averaged; abnormal = the "
        f"automatic judge, not human raters; 95% percentile bootstrap over videos, {setting('eval.bootstrap_resamples', '1000')} "
        f"resamples (FVD, a set statistic, has none); {fvd}.{warning}"
    )


def table2_markdown(cells: list[Cell], study: dict[str, str], missing: list[str], params: dict[str, str],
                    fvd_protocols: dict[str, str]) -> str:
    lines = [f"# Combinatorial study {study['name']}: Table 2", "",
             f"Study run {study['run_id']} (study id {study['id']}).", "", protocol_line(params, fvd_protocols), ""]
    header = "| Model | #Templates (videos) | " + " | ".join(h for _, h, _, _ in TABLE2_METRICS) + " |"
    rule = "|---|---|" + "---|" * len(TABLE2_METRICS)
    lines += ["Each cell is in-template / out-of-template (the paper's layout).", "", header, rule]
    for cell in cells:
        seeds = f", {len(cell.trials)} seeds" if len(cell.trials) > 1 else ""
        label = f"{num_templates(cell)} ({cell.num_videos:,}{seeds})"
        lines.append(f"| {cell.model} | {label} | " + " | ".join(_pair(cell, m, fmt) for m, _, _, fmt in TABLE2_METRICS) + " |")
    lines += ["", "95% intervals (in-template; out-of-template):", ""]
    for cell in cells:
        parts = []
        for metric, _, _, fmt in TABLE2_METRICS:
            spans = [cell.get(f"eval/{group}/{metric}") for group, _ in SPLITS]
            if all(e is not None and e.low != e.high for e in spans):
                parts.append(f"{metric} " + "; ".join(f"[{fmt.format(e.low)}, {fmt.format(e.high)}]" for e in spans))
        lines.append(f"- {cell.model}, {num_templates(cell)} templates: " + (", ".join(parts) or "none"))
    lines += ["", "The VAE's reconstructions of the same videos, scored the same way (the floor under any DiT on its latents):",
              "", header, rule]
    for cell in cells:
        lines.append(f"| {cell.model} | {num_templates(cell)} | "
                     + " | ".join(_pair(cell, m, fmt, "vae_floor_") for m, _, _, fmt in TABLE2_METRICS) + " |")
    lines += frozen_lines(cells)
    floors = [f"{c.model}, {num_templates(c)} templates: {_pair(c, 'abnormal', '{:.0%}', 'gt_floor_')}" for c in cells
              if c.get("eval/out_of_template/gt_floor_abnormal") is not None]
    if floors:
        lines += ["", "The abnormal-rate judge on the ground truth of the same videos (in / out; its false positives "
                  "at this side): " + "; ".join(floors) + "."]
    checks = template_checks(cells)
    if checks:
        lines += ["", "The paper's claims, at the intervals (yes / no / undecided):", "", *dev_split_note(params),
                  "| Model | Metric | Templates | Out-of-template better with more templates | Fewest templates best in-template |",
                  "|---|---|---|---|---|"]
        lines += [f"| {c['model']} | {c['metric']} | {c['templates']} | {c['out_of_template_improves']} | "
                  f"{c['fewest_best_in_template']} |" for c in checks]
    if missing:
        lines += ["", f"Not finished yet (left out): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def template_scaling_png(cells: list[Cell]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TABLE2_METRICS), figsize=(3.6 * len(TABLE2_METRICS), 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    models = list(dict.fromkeys(c.model for c in cells))
    counts = {num_templates(c) for c in cells}
    for ax, (metric, header, _, _) in zip(axes[0], TABLE2_METRICS):
        if not any(c.get(f"eval/{group}/{metric}") for c in cells for group, _ in SPLITS):
            ax.set_axis_off()
            ax.set_title(f"{header}: not computed")
            continue
        for i, model in enumerate(models):
            rows = sorted((c for c in cells if c.model == model), key=num_templates)
            x = [num_templates(c) for c in rows]
            for (group, short), style in zip(SPLITS, ("--", "-")):
                found = [c.get(f"eval/{group}/{metric}") for c in rows]
                y = [math.nan if e is None else e.value for e in found]
                ax.plot(x, y, style, marker="o", color=colors[i % len(colors)], label=f"{model} {short}")
                ax.fill_between(x, [math.nan if e is None else e.low for e in found],
                                [math.nan if e is None else e.high for e in found],
                                color=colors[i % len(colors)], alpha=0.15, linewidth=0)
        frozen = next((e for c in cells if (e := c.get(f"eval/out_of_template/{FROZEN_PREFIX}{metric}"))), None)
        if frozen is not None:  # the same held-out videos for every cell
            ax.axhline(frozen.value, color="gray", linestyle=":", label="nothing moving, out")
        ax.set(xscale="log", title=header, xlabel="training templates")
        label_log_xticks(ax, {n: str(n) for n in counts})  # the grid's template counts
        ax.grid(True, which="both", alpha=0.3)
    # On PSNR's panel: always computed, and it has every line (nothing moving's too).
    axes[0][[m for m, *_ in TABLE2_METRICS].index("psnr")].legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _fvd_protocols(client, records: list[dict[str, Any]]) -> dict[str, str]:
    """The FVD protocol tags of the trials (one per split when every trial used the same)."""
    import json

    found: dict[str, set[str]] = {}
    for record in records:
        for name, value in client.get_run(record["run_id"]).data.tags.items():
            if name.startswith("phyray.fvd.") and name.endswith(".fvd"):
                p = json.loads(value)
                found.setdefault(name.split(".")[2], set()).add(
                    f"{p['videos']} videos, first {p['frames']} frames at {p['resolution']}² resized to {p['resized_to']}², "
                    f"I3D {p['weights_sha256'][:12]}"
                )
    return {group: " | ".join(sorted(values)) for group, values in found.items()}


def publish_table2(client, parent, records: list[dict[str, Any]], missing: list[str], study: dict[str, str], out: Path) -> dict[str, Any]:
    """Write the combinatorial report (module docstring); returns what publish_report does."""
    cells = _cells(records)
    contents = {
        "table2.csv": table2_csv(cells).encode(),
        "table2.md": table2_markdown(cells, study, missing, parent.data.params, _fvd_protocols(client, records)).encode(),
        "template_scaling.png": template_scaling_png(cells),
    }
    files = write_files(out, contents)
    with tempfile.TemporaryDirectory() as tmp:
        for record in records:
            for kind in ("best", "worst"):
                artifact = f"rollouts/eval_out_of_template_{kind}.gif"
                try:
                    local = client.download_artifacts(record["run_id"], artifact, tmp)
                except Exception:  # a trial run with GIFs switched off has none; MLflow's error types vary by store
                    continue
                target = out / "gifs" / f"{record['trial']}_out_of_template_{kind}.gif"
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target, Path(local).read_bytes())
                files[f"gifs/{target.name}"] = target
    return {
        "records": records, "missing": missing, "cells": cells, "checks": template_checks(cells), "files": files,
        "summary": files["table2.md"], "parent_run_id": parent.info.run_id, "study": study["name"], "study_id": study["id"],
    }
