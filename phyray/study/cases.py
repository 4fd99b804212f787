"""The reports of the case-based probe studies (paper §5.1, 5.2, 5.4), from MLflow alone.

`publish_gaps` (called by `phyray.study.report.publish_report` for a study of gap layouts, which
logs the files onto the study's parent run) writes:

- `interpolation_gaps.md`: the protocol; per layout (seeds combined, `combine_seeds`) the mean
  velocity error of ID videos inside and outside the gaps, their ratio, the pull toward the
  training bands (generated minus true speed, signed toward the nearest trained speed) and the
  error between the outer bands, each with its 95 % interval, beside the VAE's own error inside
  and outside the gaps; then the paper's findings as checks, each "yes", "no" or "undecided"
  (intervals overlap): inside-gap error above outside; speeds in a gap pulled toward the bands;
  error growing with gap size (wide vs narrow); restoring middle bands shrinking the error over
  the wide gap's span (3bands and 4bands vs wide: the same evaluation videos);
- `interpolation_gaps.csv`: the same numbers, one row per layout and model;
- `interpolation_gaps.png`: Fig. 5: per layout, generated vs true speed of every ID video (all
  seeds), the training bands shaded, from the trials' `report/gaps.json`.

`publish_flips` (a study of direction sets, `flip-right` and `flip-both`) writes:

- `direction_flips.md`: per set and split (ID: the trained speeds; OOD: the slower ones) the
  fraction of rollouts that reverse direction after the conditioning frames and the drift
  (generated minus conditioned x velocity), with intervals and the VAE floor; the paper's
  findings as checks: Set-1 does not reverse slow balls, and speeds them up (drift > 0); Set-2
  reverses more of them than Set-1;
- `direction_flips.csv`: the same numbers;
- `direction_flips.png`: Fig. 7: generated vs conditioned x velocity per set, both splits.

`publish_hulls` (a study of convex-hull variants, `hull-<variant>`) writes:

- `convex_hull.md`: per variant the headline (post-collision) velocity error of evaluation
  videos in the trained region, in left-out holes inside the training hull, and outside it (both
  splits pooled per trial, combined over seeds), each beside the VAE's own; the paper's findings
  as checks: outside errs more than inside; inside errs like trained (inside / trained below
  1.5 — the paper says "about as well as ID"; the factor is a choice);
- `convex_hull.csv`: the same numbers;
- `convex_hull.png`: Fig. 6: per variant the mean error over the left-out plane (binned), the
  boxes and the training hull drawn on it.

`publish_composition` (a study of composition variants, `compose-<variant>`) reads every
trial's composition metrics (`compose/<id|ood>/...`, the VAE floor's `compose_floor/...` and the
parser floor's `compose_gt/...`, from `phyray.eval.composition`), combines each cell's seeds,
then writes:

- `composition.md`: the protocol; per variant, model and data size, for each object of the
  composed (OOD) videos the x-velocity error in each segment after the conditioning frames
  (start, after each event), beside the same object's error in the trained kinds (ID) and the
  VAE and parser floors; per object its survival, vanished and bounced fractions in composed
  and trained videos with the VAE's; then the paper's findings as checks, each "yes", "no" or
  "undecided" (intervals overlap):
  - spatial: both objects keep their trained motion — every moving segment's error of each
    composed object under `KEEP_FACTOR` (1.5, the convex-hull report's factor: the paper says
    "composes correctly") times that object's error in the trained kinds: "yes" if every upper
    bound is under 1.5x the trained lower bound, "no" if a lower bound is over 1.5x the trained
    upper bound. The reference is the model's own trained error, not the floors: a composition
    is correct when it costs no more than reproducing a trained case (the floors sit beside it);
  - temporal: the blue ball bounces after the collision — its bounced fraction (it moves toward
    the wall after the collision and away after the bounce) over a half: "yes" if the interval
    lies above 0.5, "no" if below;
  - noredbounce: the red ball vanishes more often than in temporal (the same arm of both).
- `composition.csv`: one row per (variant, model, data size, object, quantity) with the model's,
  the VAE's and the parser's estimates;
- `composition.png`: per variant the composed objects' error per segment (model with its
  interval, trained error, VAE and parser floors), and each object's survival and vanished and
  bounced fractions.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from phyray.artifacts import write_files
from phyray.config import (
    COMPOSE_PREFIX,
    COMPOSE_VARIANTS,
    FLIP_PREFIX,
    FLIP_SETS,
    GAP_LAYOUTS,
    GAP_PREFIX,
    HULL_PREFIX,
    HULL_VARIANTS,
    load_gap_config,
    load_hull_config,
)
from phyray.eval.cases import HULL_REGIONS, hull_plane, hull_polygon, hull_summary
from phyray.study.report import dev_split_note, estimate_cell, param, percent_cell, run_settings
from phyray.study.verdict import Estimate, combine_seeds, combine_trials, falls

GAP_FILES = ("interpolation_gaps.md", "interpolation_gaps.csv", "interpolation_gaps.png")
FLIP_FILES = ("direction_flips.md", "direction_flips.csv", "direction_flips.png")
QUANTITIES = ("inside", "outside", "ratio", "pull", "span")
SIGNED = ("pull", "drift")


def _combined(trials: list[dict[str, Any]], name: str) -> Estimate | None:
    """A metric of a cell's trials combined over seeds (None if a seed lacks it)."""
    return combine_trials(trials, name, signed=name.rsplit("/", 1)[-1] in SIGNED)


def _estimates_csv(results: list[dict[str, Any]], keys: tuple[str, ...], names) -> str:
    """A probe's CSV, one row per result: its `keys` (a list as JSON), then the value, ci_low and
    ci_high of each named estimate (blank where missing)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*keys, *[f"{n}{suffix}" for n in names for suffix in ("", "_ci_low", "_ci_high")]])
    for r in results:
        row = [json.dumps(r[key]) if isinstance(r[key], list) else r[key] for key in keys]
        for name in names:
            row += ["", "", ""] if r[name] is None else [r[name].value, r[name].low, r[name].high]
        writer.writerow(row)
    return buffer.getvalue()


def _findings(checks: list[dict[str, str]], params: dict[str, str]) -> list[str]:
    """A report's section of the paper's findings: one row per check and arm."""
    return ["", "## The paper's findings", "", *dev_split_note(params), "| check | arm | answer |", "|---|---|---|",
            *(f"| {c['check']} | {c['arm']} | **{c['answer']}** |" for c in checks)]


def _png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (and closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def layout_results(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per (layout, model, data size): bands, estimates and the VAE floor."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["scenario"].startswith(GAP_PREFIX):
            groups[(record["scenario"].removeprefix(GAP_PREFIX), record["model"], record["data_size"])].append(record)
    results = []
    for (layout, model, size), trials in groups.items():
        bands = load_gap_config(layout).train_velocity
        results.append({
            "layout": layout, "model": model, "data_size": size, "seeds": len(trials),
            "bands": [(band.lo, band.hi) for band in bands],
            **{name: _combined(trials, f"gap/{name}") for name in QUANTITIES},
            "floor_inside": _combined(trials, "gap_floor/inside"), "floor_outside": _combined(trials, "gap_floor/outside"),
            "num_videos": _combined(trials, "gap/num_videos"),
        })
    results.sort(key=lambda r: (GAP_LAYOUTS.index(r["layout"]), r["model"], r["data_size"]))
    return results


def _sign(estimate: Estimate | None, threshold: float = 0.0) -> str:
    """yes / no / undecided: the estimate's interval wholly above / below `threshold`, or neither."""
    if estimate is None:
        return "undecided"
    return "yes" if estimate.low > threshold else "no" if estimate.high < threshold else "undecided"


def _within(value: Estimate | None, reference: Estimate | None, factor: float) -> str:
    """yes / no / undecided: `value`'s interval wholly under / over `factor` times `reference`'s."""
    if value is None or reference is None:
        return "undecided"
    if value.high < factor * reference.low:
        return "yes"
    return "no" if value.low > factor * reference.high else "undecided"


def gap_checks(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The paper's findings, per model and data size, as yes / no / undecided."""
    checks = []
    by_arm: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in results:
        by_arm[(r["model"], r["data_size"])][r["layout"]] = r
    for (model, size), layouts in by_arm.items():
        arm = f"{model}, {size}"
        for layout, r in layouts.items():
            inside, outside = r["inside"], r["outside"]
            checks.append({"check": f"{layout}: error inside the gap above outside", "arm": arm,
                           "answer": "undecided" if inside is None or outside is None else falls(inside, outside)})
            checks.append({"check": f"{layout}: speeds in the gap pulled toward the trained bands", "arm": arm,
                           "answer": _sign(r["pull"])})
        if "wide" in layouts and "narrow" in layouts:
            wide, narrow = layouts["wide"]["inside"], layouts["narrow"]["inside"]
            checks.append({"check": "error in the gap grows with its size (wide vs narrow)", "arm": arm,
                           "answer": "undecided" if wide is None or narrow is None else falls(wide, narrow)})
        for restored in ("3bands", "4bands"):
            if "wide" in layouts and restored in layouts:
                wide, banded = layouts["wide"]["span"], layouts[restored]["span"]
                checks.append({"check": f"{restored}: a restored band lowers the error over the wide gap's span", "arm": arm,
                               "answer": "undecided" if wide is None or banded is None else falls(wide, banded)})
    return checks


def gaps_markdown(results: list[dict[str, Any]], checks: list[dict[str, str]], study: dict[str, str],
                  missing: list[str], params: dict[str, str]) -> str:
    lines = [
        f"# Interpolation gaps: study {study['name']} ({study['id']}), run {study['run_id']}",
        "",
        (f"Protocol: ID evaluation videos over the whole speed range [1, 4] (the same videos for every layout); "
         f"{run_settings(params)}. Error: mean-velocity error (world units/s); inside: true speed in no training "
         "band; pull: generated minus true speed toward the nearest trained speed (positive: toward the bands); "
         "span: videos between the outer bands."),
        "",
        "| layout | training bands | model | data | videos | inside gap | outside gap | inside / outside | pull | "
        "span error | VAE floor inside | VAE floor outside |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        bands = " ∪ ".join(f"[{lo:g}, {hi:g}]" for lo, hi in r["bands"])
        videos = f"{r['num_videos'].value:.0f} × {r['seeds']} seeds" if r["num_videos"] else "–"
        lines.append(
            f"| {r['layout']} | {bands} | {r['model']} | {r['data_size']} | {videos} | {estimate_cell(r['inside'])} | "
            f"{estimate_cell(r['outside'])} | {estimate_cell(r['ratio'], '{:.2f}')} | {estimate_cell(r['pull'])} | {estimate_cell(r['span'])} | "
            f"{estimate_cell(r['floor_inside'])} | {estimate_cell(r['floor_outside'])} |"
        )
    lines += _findings(checks, params)
    floors = [r for r in results if r["floor_inside"] is not None and r["inside"] is not None
              and r["floor_inside"].value > r["inside"].value / 3]
    if floors:
        lines += ["", "The VAE's own error inside the gap is over a third of the model's for "
                  + ", ".join(f"{r['layout']} ({r['model']})" for r in floors) + ": their gap effect is partly the VAE's."]
    if missing:
        lines += ["", f"Missing trials (no finished run): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def gaps_csv(results: list[dict[str, Any]]) -> str:
    return _estimates_csv(results, ("layout", "bands", "model", "data_size", "seeds"),
                          (*QUANTITIES, "floor_inside", "floor_outside"))


def gaps_png(per_layout: dict[str, list[dict[str, Any]]]) -> bytes:
    """Fig. 5: generated vs true speed per layout, training bands shaded, the identity line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layouts = [layout for layout in GAP_LAYOUTS if layout in per_layout]
    fig, axes = plt.subplots(1, max(len(layouts), 1), figsize=(3.0 * max(len(layouts), 1), 3.0), squeeze=False)
    for ax, layout in zip(axes[0], layouts):
        for band in load_gap_config(layout).train_velocity:
            ax.axvspan(band.lo, band.hi, color="tab:green", alpha=0.15, lw=0)
        records = per_layout[layout]
        inside = [r for r in records if r["in_gap"]]
        outside = [r for r in records if not r["in_gap"]]
        for group, colour, label in ((outside, "tab:green", "in a band"), (inside, "tab:red", "in a gap")):
            ax.scatter([r["true_velocity"] for r in group], [r["generated_velocity"] for r in group], s=5,
                       color=colour, label=label)
        ax.plot([1, 4], [1, 4], color="black", lw=0.8)
        ax.set_xlim(0.9, 4.1)
        ax.set_ylim(0, 5)
        ax.set_title(layout, fontsize=9)
        ax.set_xlabel("true speed")
    axes[0][0].set_ylabel("generated speed")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png_bytes(fig)


def _case_records(client, records: list[dict[str, Any]], prefix: str, artifact: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every trial's per-video records of its rollouts, by scenario name (prefix dropped) and split."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory() as tmp:
        for record in records:
            if record["scenario"].startswith(prefix):
                local = client.download_artifacts(record["run_id"], f"report/{artifact}", tmp)
                for split, scored in json.loads(Path(local).read_text()).items():
                    found[record["scenario"].removeprefix(prefix)][split] += scored["rollouts"]["records"]
    return found


def publish_gaps(client, parent, records: list[dict[str, Any]], missing: list[str], study: dict[str, str], out: Path) -> dict[str, Any]:
    """Write the gap study's report (module docstring); returns what publish_report does."""
    results = layout_results(records)
    checks = gap_checks(results)
    per_layout = {layout: [r for split in splits.values() for r in split]
                  for layout, splits in _case_records(client, records, GAP_PREFIX, "gaps.json").items()}
    files = write_files(out, {
        "interpolation_gaps.md": gaps_markdown(results, checks, study, missing, parent.data.params).encode(),
        "interpolation_gaps.csv": gaps_csv(results).encode(),
        "interpolation_gaps.png": gaps_png(per_layout),
    })
    return {
        "records": records, "missing": missing, "layouts": results, "checks": checks, "files": files,
        "summary": files["interpolation_gaps.md"], "parent_run_id": parent.info.run_id, "study": study["name"],
        "study_id": study["id"],
    }


# ---------------------------------------------------------------------------------------------
# Direction flips (paper §5.2, Fig. 7)
# ---------------------------------------------------------------------------------------------


def set_results(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per (set, model, data size): per split the reversed fraction and the drift,
    the VAE floor's reversed fraction."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["scenario"].startswith(FLIP_PREFIX):
            groups[(record["scenario"].removeprefix(FLIP_PREFIX), record["model"], record["data_size"])].append(record)
    results = []
    for (name, model, size), trials in groups.items():
        result = {"set": name, "model": model, "data_size": size, "seeds": len(trials)}
        for group in ("id", "ood"):
            for quantity in ("reversed", "drift", "num_videos"):
                result[f"{group}_{quantity}"] = _combined(trials, f"flip/{group}/{quantity}")
            result[f"{group}_floor_reversed"] = _combined(trials, f"flip_floor/{group}/reversed")
            result[f"{group}_floor_drift"] = _combined(trials, f"flip_floor/{group}/drift")
        results.append(result)
    results.sort(key=lambda r: (FLIP_SETS.index(r["set"]), r["model"], r["data_size"]))
    return results


def flip_checks(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The paper's findings on the slow (OOD) balls, per model and data size."""
    checks = []
    by_arm: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in results:
        by_arm[(r["model"], r["data_size"])][r["set"]] = r
    for (model, size), sets in by_arm.items():
        arm = f"{model}, {size}"
        if "right" in sets:
            reversed_ = sets["right"]["ood_reversed"]
            checks.append({"check": "Set-1 (right only) never reverses a slow ball (reversed under 5 %)", "arm": arm,
                           "answer": "undecided" if reversed_ is None else
                           "yes" if reversed_.high < 0.05 else "no" if reversed_.low >= 0.05 else "undecided"})
            checks.append({"check": "Set-1 speeds slow balls up toward its trained speeds (drift > 0)", "arm": arm,
                           "answer": _sign(sets["right"]["ood_drift"])})
        if "right" in sets and "both" in sets:
            one, two = sets["right"]["ood_reversed"], sets["both"]["ood_reversed"]
            checks.append({"check": "Set-2 (both directions) reverses more slow balls than Set-1", "arm": arm,
                           "answer": "undecided" if one is None or two is None else falls(two, one)})
    return checks


def flips_markdown(results: list[dict[str, Any]], checks: list[dict[str, str]], study: dict[str, str],
                   missing: list[str], params: dict[str, str]) -> str:
    lines = [
        f"# Direction flips: study {study['name']} ({study['id']}), run {study['run_id']}",
        "",
        (f"Protocol: right-moving evaluation balls, ID at the trained speeds [2.5, 4], OOD slower [1, 2.5]; "
         f"{run_settings(params)}. Reversed: the generated mean x velocity points left faster than "
         f"{param(params, 'eval.reversal_speed')} units/s; drift: generated minus conditioned x velocity."),
        "",
        "| set | model | data | videos (OOD) | reversed ID | reversed OOD | drift ID | drift OOD | VAE floor reversed OOD | "
        "VAE floor drift ID / OOD |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        videos = f"{r['ood_num_videos'].value:.0f} × {r['seeds']} seeds" if r["ood_num_videos"] else "–"
        lines.append(
            f"| {r['set']} | {r['model']} | {r['data_size']} | {videos} | {percent_cell(r['id_reversed'])} | "
            f"{percent_cell(r['ood_reversed'])} | {estimate_cell(r['id_drift'])} | {estimate_cell(r['ood_drift'])} | "
            f"{percent_cell(r['ood_floor_reversed'])} | {estimate_cell(r['id_floor_drift'])} / {estimate_cell(r['ood_floor_drift'])} |"
        )
    lines += _findings(checks, params)
    # The VAE's own reconstructions reversing balls or changing their speed would be read as the
    # model's doing: say so when they do more than the parser's floor allows.
    floors = [r for r in results if (r["ood_floor_reversed"] is not None and r["ood_floor_reversed"].value > 0.05)
              or any(r[f"{g}_floor_drift"] is not None and abs(r[f"{g}_floor_drift"].value) > 0.1 for g in ("id", "ood"))]
    if floors:
        lines += ["", "The VAE's own reconstructions reverse or drift for "
                  + ", ".join(f"{r['set']} ({r['model']}: reversed {percent_cell(r['ood_floor_reversed'])}, drift "
                              f"{estimate_cell(r['id_floor_drift'])} ID)" for r in floors)
                  + ": those numbers are the VAE's, not the model's."]
    if missing:
        lines += ["", f"Missing trials (no finished run): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def flips_csv(results: list[dict[str, Any]]) -> str:
    return _estimates_csv(results, ("set", "model", "data_size", "seeds"),
                          [f"{g}_{q}" for g in ("id", "ood") for q in ("reversed", "drift", "floor_reversed", "floor_drift")])


def flips_png(per_set: dict[str, dict[str, list[dict[str, Any]]]]) -> bytes:
    """Fig. 7: generated vs conditioned x velocity per set; ID and OOD (slow) balls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in FLIP_SETS if name in per_set]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.4 * max(len(names), 1), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names):
        for split, videos in sorted(per_set[name].items()):
            ax.scatter([r["true_velocity"] for r in videos], [r["generated_velocity"] for r in videos], s=5,
                       label=split.removeprefix("eval_").removeprefix("dev_"))
        ax.plot([1, 4], [1, 4], color="black", lw=0.8)
        ax.axhline(0, color="gray", lw=0.6)
        ax.set_title(f"{name} ({'Set-1' if name == 'right' else 'Set-2'})", fontsize=9)
        ax.set_xlabel("conditioned x velocity")
    axes[0][0].set_ylabel("generated x velocity")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png_bytes(fig)


def publish_flips(client, parent, records: list[dict[str, Any]], missing: list[str], study: dict[str, str], out: Path) -> dict[str, Any]:
    """Write the direction study's report (module docstring); returns what publish_report does."""
    results = set_results(records)
    checks = flip_checks(results)
    files = write_files(out, {
        "direction_flips.md": flips_markdown(results, checks, study, missing, parent.data.params).encode(),
        "direction_flips.csv": flips_csv(results).encode(),
        "direction_flips.png": flips_png(_case_records(client, records, FLIP_PREFIX, "flips.json")),
    })
    return {
        "records": records, "missing": missing, "sets": results, "checks": checks, "files": files,
        "summary": files["direction_flips.md"], "parent_run_id": parent.info.run_id, "study": study["name"],
        "study_id": study["id"],
    }


# ---------------------------------------------------------------------------------------------
# The collision convex hull (paper §5.1, Fig. 6)
# ---------------------------------------------------------------------------------------------

# Inside-hull error within this factor of the trained region's counts as "about as well as ID".
HULL_INSIDE_FACTOR = 1.5


def variant_results(records: list[dict[str, Any]], per_trial: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One result per (variant, model, data size): per region the error and the VAE floor, each
    trial's videos of both splits pooled, then combined over seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["scenario"].startswith(HULL_PREFIX) and record["run_id"] in per_trial:
            groups[(record["scenario"].removeprefix(HULL_PREFIX), record["model"], record["data_size"])].append(record)
    results = []
    for (name, model, size), trials in groups.items():
        summaries = [hull_summary(per_trial[t["run_id"]], 1000, 0) for t in trials]
        result = {"variant": name, "model": model, "data_size": size, "seeds": len(trials),
                  "plane": hull_plane(load_hull_config(name)), "boxes": load_hull_config(name).train_exclude}
        for key in (*HULL_REGIONS, *(f"{r}_floor" for r in HULL_REGIONS)):
            entries = [summary[key] for summary in summaries]
            result[key] = None if any(e["mean"] is None or e["ci"] is None for e in entries) else combine_seeds(
                [e["mean"] for e in entries], [e["ci"][0] for e in entries], [e["ci"][1] for e in entries])
            result[f"{key}_n"] = sum(e["n"] for e in entries)
        results.append(result)
    results.sort(key=lambda r: (HULL_VARIANTS.index(r["variant"]), r["model"], r["data_size"]))
    return results


def hull_checks(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    checks = []
    for r in results:
        arm = f"{r['model']}, {r['data_size']}"
        trained, inside, outside = r["trained"], r["inside"], r["outside"]
        checks.append({"check": f"{r['variant']}: outside the hull errs more than inside it", "arm": arm,
                       "answer": "undecided" if inside is None or outside is None else falls(outside, inside)})
        answer = _within(inside, trained, HULL_INSIDE_FACTOR)
        checks.append({"check": f"{r['variant']}: holes inside the hull err like trained points (under {HULL_INSIDE_FACTOR}x)",
                       "arm": arm, "answer": answer})
    return checks


def hulls_markdown(results: list[dict[str, Any]], checks: list[dict[str, str]], study: dict[str, str],
                   missing: list[str], params: dict[str, str]) -> str:
    lines = [
        f"# Convex hull: study {study['name']} ({study['id']}), run {study['run_id']}",
        "",
        (f"Protocol: every evaluation video (ID over the whole ranges, holes included; OOD beyond them) placed "
         f"on the left-out plane: trained, inside the training set's convex hull but left out, or outside it; "
         f"{param(params, 'eval.headline_metric', 'vel_err_mean_velocity')} (post-collision frames); "
         f"{run_settings(params)}."),
        "",
        "| variant | left out | model | data | trained | inside hull | outside hull | VAE trained | VAE inside | VAE outside |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        boxes = "; ".join(" × ".join(f"{k} [{v.lo:g}, {v.hi:g}]" for k, v in box.items()) for box in r["boxes"])
        cells = [f"{estimate_cell(r[key])} (n={r[f'{key}_n']})" for key in HULL_REGIONS]
        floors = [estimate_cell(r[f"{key}_floor"]) for key in HULL_REGIONS]
        lines.append(f"| {r['variant']} | {boxes} | {r['model']} | {r['data_size']} | " + " | ".join(cells + floors) + " |")
    lines += _findings(checks, params)
    # A region whose VAE floor is over a third of the model's error: the model's error there is
    # largely the VAE's (the gap report's rule), so the checks on it measure the VAE.
    floored = [f"{r['variant']} ({r['model']}, {r['data_size']}): {', '.join(regions)}" for r in results
               if (regions := [key for key in HULL_REGIONS if r[key] is not None and r[f"{key}_floor"] is not None
                               and r[f"{key}_floor"].value > r[key].value / 3])]
    if floored:
        lines += ["", "The VAE's own error is over a third of the model's in " + "; ".join(floored)
                  + ": there the checks measure the VAE more than the model."]
    if missing:
        lines += ["", f"Missing trials (no finished run): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def hulls_csv(results: list[dict[str, Any]]) -> str:
    return _estimates_csv(results, ("variant", "model", "data_size", "seeds"),
                          (*HULL_REGIONS, *(f"{r}_floor" for r in HULL_REGIONS)))


def hulls_png(per_variant: dict[str, list[dict[str, Any]]]) -> bytes:
    """Fig. 6: mean error over the left-out plane (binned), the boxes and the training hull."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Polygon, Rectangle

    names = [name for name in HULL_VARIANTS if name in per_variant]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.6 * max(len(names), 1), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        cfg = load_hull_config(name)
        a, b = hull_plane(cfg)
        videos = [r for r in per_variant[name] if np.isfinite(r["error"])]
        x, y = np.array([r[a] for r in videos]), np.array([r[b] for r in videos])
        error = np.array([r["error"] for r in videos])
        x_edges, y_edges = np.linspace(x.min(), x.max() + 1e-9, 13), np.linspace(y.min(), y.max() + 1e-9, 13)
        total, _, _ = np.histogram2d(x, y, [x_edges, y_edges], weights=error)
        count, _, _ = np.histogram2d(x, y, [x_edges, y_edges])
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        image = ax.imshow(mean.T, origin="lower", aspect="auto", cmap="viridis",
                          extent=(x_edges[0], x_edges[-1], y_edges[0], y_edges[-1]))
        for box in cfg.train_exclude:
            (lo_a, hi_a), (lo_b, hi_b) = [(box[p].lo, box[p].hi) if p in box else (-1e3, 1e3) for p in (a, b)]
            ax.add_patch(Rectangle((lo_a, lo_b), hi_a - lo_a, hi_b - lo_b, fill=False, edgecolor="white", lw=1.2, ls="--"))
        ax.add_patch(Polygon(hull_polygon(cfg), closed=True, fill=False, edgecolor="red", lw=1.0))
        ax.set_xlim(x_edges[0], x_edges[-1])
        ax.set_ylim(y_edges[0], y_edges[-1])
        ax.set_xlabel(a)
        ax.set_ylabel(b)
        ax.set_title(f"{name}: error (boxes dashed, hull red)", fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _png_bytes(fig)


def publish_hulls(client, parent, records: list[dict[str, Any]], missing: list[str], study: dict[str, str], out: Path) -> dict[str, Any]:
    """Write the convex-hull study's report (module docstring); returns what publish_report does."""
    per_trial: dict[str, list[dict[str, Any]]] = {}
    per_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for record in records:
            if record["scenario"].startswith(HULL_PREFIX):
                local = client.download_artifacts(record["run_id"], "report/hulls.json", tmp)
                videos = [v for scored in json.loads(Path(local).read_text()).values() for v in scored["rollouts"]["records"]]
                per_trial[record["run_id"]] = videos
                per_variant[record["scenario"].removeprefix(HULL_PREFIX)] += videos
    results = variant_results(records, per_trial)
    checks = hull_checks(results)
    files = write_files(out, {
        "convex_hull.md": hulls_markdown(results, checks, study, missing, parent.data.params).encode(),
        "convex_hull.csv": hulls_csv(results).encode(),
        "convex_hull.png": hulls_png(per_variant),
    })
    return {
        "records": records, "missing": missing, "variants": results, "checks": checks, "files": files,
        "summary": files["convex_hull.md"], "parent_run_id": parent.info.run_id, "study": study["name"],
        "study_id": study["id"],
    }


# ---------------------------------------------------------------------------------------------
# Composition (paper §5.4, Fig. 11, A.5.3)
# ---------------------------------------------------------------------------------------------

COMPOSITION_FILES = ("composition.md", "composition.csv", "composition.png")
# Sources of every composition metric: the model's rollouts, the VAE's reconstructions, the
# ground truth itself (the parser's floor).
SOURCES = {"model": "compose", "vae": "compose_floor", "parser": "compose_gt"}
FRACTIONS = ("survival", "vanished", "bounced")
# Composed error within this factor of the trained error counts as keeping the trained motion.
KEEP_FACTOR = 1.5
SEGMENT_ORDER = ("start", "after_collision", "after_bounce")


def _quantities(trials: list[dict[str, Any]]) -> dict[str, set[str]]:
    """{role: quantities} logged under compose/<group>/<role>/<quantity> by any of the trials."""
    found: dict[str, set[str]] = defaultdict(set)
    for trial in trials:
        for name in trial:
            parts = name.split("/")
            if len(parts) == 4 and parts[0] in SOURCES.values() and not parts[3].endswith(("_ci_low", "_ci_high")):
                found[parts[2]].add(parts[3])
    return found


def _segment_key(name: str) -> tuple[int, str]:
    return (SEGMENT_ORDER.index(name) if name in SEGMENT_ORDER else len(SEGMENT_ORDER), name)


def composition_results(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per (variant, model, data size): estimates[source][group][role][quantity],
    seeds combined (None where a seed lacks it)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["scenario"].startswith(COMPOSE_PREFIX):
            groups[(record["scenario"].removeprefix(COMPOSE_PREFIX), record["model"], record["data_size"])].append(record)
    results = []
    for (variant, model, size), trials in groups.items():
        roles = _quantities(trials)
        estimates = {
            source: {group: {role: {q: combine_trials(trials, f"{prefix}/{group}/{role}/{q}") for q in quantities}
                             for role, quantities in roles.items()}
                     for group in ("id", "ood")}
            for source, prefix in SOURCES.items()
        }
        results.append({"variant": variant, "model": model, "data_size": size, "seeds": len(trials),
                        "num_videos": combine_trials(trials, "compose/ood/num_videos"), "estimates": estimates})
    results.sort(key=lambda r: (COMPOSE_VARIANTS.index(r["variant"]), r["model"], r["data_size"]))
    return results


def _get(result: dict[str, Any], source: str, group: str, role: str, quantity: str) -> Estimate | None:
    return result["estimates"][source][group].get(role, {}).get(quantity)


def composed_segments(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, segment) of every moving segment of the composed videos, objects and segments in order."""
    model = result["estimates"]["model"]["ood"]
    pairs = [(role, q) for role, quantities in model.items() for q in quantities
             if q not in (*FRACTIONS, "moving_error", "num_videos")]
    return sorted(pairs, key=lambda p: (p[0], _segment_key(p[1])))


def composition_checks(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The paper's findings, per model and data size (module docstring)."""
    checks = []
    by_arm: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in results:
        by_arm[(r["model"], r["data_size"])][r["variant"]] = r
    for (model, size), variants in by_arm.items():
        arm = f"{model}, {size}"
        if "spatial" in variants:
            r = variants["spatial"]
            answers = [_within(_get(r, "model", "ood", role, segment), _get(r, "model", "id", role, "moving_error"), KEEP_FACTOR)
                       for role, segment in composed_segments(r)]
            answer = "no" if "no" in answers else "yes" if answers and all(a == "yes" for a in answers) else "undecided"
            checks.append({"check": f"spatial: both objects keep their trained motion (every segment's error under "
                                    f"{KEEP_FACTOR}x the object's error in the trained kinds)", "arm": arm, "answer": answer})
        if "temporal" in variants:
            bounced = _get(variants["temporal"], "model", "ood", "blue_ball", "bounced")
            checks.append({"check": "temporal: the blue ball bounces off the wall after the collision (in over half "
                                    "the composed videos)", "arm": arm, "answer": _sign(bounced, 0.5)})
        if "temporal" in variants and "temporal-noredbounce" in variants:
            plain = _get(variants["temporal"], "model", "ood", "red_ball", "vanished")
            failing = _get(variants["temporal-noredbounce"], "model", "ood", "red_ball", "vanished")
            checks.append({"check": "noredbounce: the red ball vanishes more often than in temporal", "arm": arm,
                           "answer": "undecided" if plain is None or failing is None else falls(failing, plain)})
    return checks


def composition_markdown(results: list[dict[str, Any]], checks: list[dict[str, str]], study: dict[str, str],
                         missing: list[str], params: dict[str, str]) -> str:
    lines = [
        f"# Composition: study {study['name']} ({study['id']}), run {study['run_id']}",
        "",
        (f"Protocol: per variant, ID videos of the two trained kinds and OOD videos of the composed kind; "
         f"{run_settings(params)}. Each object is found by its colour; error: |generated − true| mean x velocity "
         "(world units/s) over the intervals of a segment (start, then after each event) where the object is in "
         "view and found; trained: the same object's error in the trained kinds (ID), over its moving segments; "
         "survival: share of frames after the conditioning ones in which it is found; vanished: lost for good; "
         "bounced: it moved along the truth before and after its bounce (faster than "
         f"{param(params, 'eval.reversal_speed')} units/s)."),
        "",
        "| variant | model | data | object | segment | composed error | trained error | VAE floor | parser floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for role, segment in composed_segments(r):
            lines.append(
                f"| {r['variant']} | {r['model']} | {r['data_size']} | {role} | {segment} | "
                f"{estimate_cell(_get(r, 'model', 'ood', role, segment))} | {estimate_cell(_get(r, 'model', 'id', role, 'moving_error'))} | "
                f"{estimate_cell(_get(r, 'vae', 'ood', role, segment))} | {estimate_cell(_get(r, 'parser', 'ood', role, segment))} |"
            )
    lines += ["", "| variant | model | data | object | survival composed | vanished composed | vanished trained | "
              "bounced composed | VAE survival | VAE vanished |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for role in sorted(r["estimates"]["model"]["ood"]):
            lines.append(
                f"| {r['variant']} | {r['model']} | {r['data_size']} | {role} | "
                f"{percent_cell(_get(r, 'model', 'ood', role, 'survival'))} | {percent_cell(_get(r, 'model', 'ood', role, 'vanished'))} | "
                f"{percent_cell(_get(r, 'model', 'id', role, 'vanished'))} | {percent_cell(_get(r, 'model', 'ood', role, 'bounced'))} | "
                f"{percent_cell(_get(r, 'vae', 'ood', role, 'survival'))} | {percent_cell(_get(r, 'vae', 'ood', role, 'vanished'))} |"
            )
    lines += _findings(checks, params)
    # Where the VAE's own error is over a third of the model's (the gap and hull reports' rule),
    # the numbers there measure the VAE more than the model.
    floored = [f"{r['variant']} ({r['model']}, {r['data_size']}): " + ", ".join(f"{role} {segment}" for role, segment in pairs)
               for r in results
               if (pairs := [(role, segment) for role, segment in composed_segments(r)
                             if (model := _get(r, "model", "ood", role, segment)) is not None
                             and (floor := _get(r, "vae", "ood", role, segment)) is not None
                             and floor.value > model.value / 3])]
    if floored:
        lines += ["", "The VAE's own error is over a third of the model's in " + "; ".join(floored)
                  + ": there the numbers measure the VAE more than the model."]
    if missing:
        lines += ["", f"Missing trials (no finished run): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def composition_csv(results: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["variant", "model", "data_size", "seeds", "split", "object", "quantity",
                     *[f"{source}{suffix}" for source in SOURCES for suffix in ("", "_ci_low", "_ci_high")]])
    for r in results:
        for group in ("id", "ood"):
            for role, quantities in sorted(r["estimates"]["model"][group].items()):
                for quantity in sorted(quantities, key=_segment_key):
                    cells: list[Any] = []
                    for source in SOURCES:
                        estimate = _get(r, source, group, role, quantity)
                        cells += ["", "", ""] if estimate is None else [estimate.value, estimate.low, estimate.high]
                    writer.writerow([r["variant"], r["model"], r["data_size"], r["seeds"], group, role, quantity, *cells])
    return buffer.getvalue()


def composition_png(results: list[dict[str, Any]]) -> bytes:
    """Per variant (the first model and size of each): composed error per object and segment
    against the trained error and the floors; each object's survival and vanished and bounced
    fractions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    shown = list({r["variant"]: r for r in reversed(results)}.values())[::-1]
    fig, axes = plt.subplots(2, max(len(shown), 1), figsize=(4.2 * max(len(shown), 1), 6.0), squeeze=False)
    for column, r in enumerate(shown):
        top, bottom = axes[0][column], axes[1][column]
        pairs = composed_segments(r)
        x = np.arange(len(pairs))
        model = [_get(r, "model", "ood", role, segment) for role, segment in pairs]
        values = np.array([np.nan if e is None else e.value for e in model])
        spread = np.array([[0, 0] if e is None else [e.value - e.low, e.high - e.value] for e in model]).T.reshape(2, -1)
        top.bar(x, values, yerr=spread, color="tab:blue", label="model", capsize=2)
        for source, marker, label in (("vae", "v", "VAE floor"), ("parser", "x", "parser floor")):
            floors = [_get(r, source, "ood", role, segment) for role, segment in pairs]
            top.scatter(x, [np.nan if e is None else e.value for e in floors], marker=marker, color="black", label=label, zorder=3)
        trained = [_get(r, "model", "id", role, "moving_error") for role, _ in pairs]
        top.scatter(x, [np.nan if e is None else e.value for e in trained], marker="_", s=300, color="tab:red",
                    label="trained error", zorder=3)
        top.set_xticks(x, [f"{role}\n{segment}" for role, segment in pairs], fontsize=6, rotation=30, ha="right")
        top.set_title(f"{r['variant']} ({r['model']}, {r['data_size']}): composed error", fontsize=8)
        top.set_ylabel("x-velocity error (units/s)", fontsize=7)
        roles = sorted(r["estimates"]["model"]["ood"])
        width = 0.25
        for offset, quantity in enumerate(FRACTIONS):
            fractions = [_get(r, "model", "ood", role, quantity) for role in roles]
            bottom.bar(np.arange(len(roles)) + (offset - 1) * width, [np.nan if e is None else e.value for e in fractions],
                       width, label=quantity)
        bottom.set_xticks(np.arange(len(roles)), roles, fontsize=7)
        bottom.set_ylim(0, 1.05)
        bottom.set_title("composed: fractions of videos", fontsize=8)
    if shown:
        axes[0][0].legend(fontsize=6)
        axes[1][0].legend(fontsize=6)
    fig.tight_layout()
    return _png_bytes(fig)


def publish_composition(client, parent, records: list[dict[str, Any]], missing: list[str], study: dict[str, str],
                        out: Path) -> dict[str, Any]:
    """Write the composition study's report (module docstring); returns what publish_report does."""
    results = composition_results(records)
    checks = composition_checks(results)
    files = write_files(out, {
        "composition.md": composition_markdown(results, checks, study, missing, parent.data.params).encode(),
        "composition.csv": composition_csv(results).encode(),
        "composition.png": composition_png(results),
    })
    return {
        "records": records, "missing": missing, "variants": results, "checks": checks, "files": files,
        "summary": files["composition.md"], "parent_run_id": parent.info.run_id, "study": study["name"],
        "study_id": study["id"],
    }
