"""The attribute-priority report of a probe study (paper §5.3, Figs. 8, 9, 13), from MLflow alone.

`publish_priority` (called by `phyray.study.report.publish_report` for a study of probe
scenarios, which logs the files onto the study's parent run) writes:

- `attribute_priority.md`: the protocol; per pair (seeds combined, `combine_seeds`), the outcome
  fractions on its swapped combinations with 95 % intervals, A's margin over B (fraction of A
  wins minus B wins) with its interval and the winner, or "tie" when the interval holds 0; the
  VAE floor (how often the VAE's own reconstruction keeps both attributes: a VAE that flips one
  would fake the finding) and the control (trained combinations kept); the priority order of
  colour, size, velocity and shape derived from the six pairwise winners (a total order when
  they are consistent, else the cycle or the ties named); whether the paper's order
  colour > size > velocity > shape is recovered; ring vs ball beside it (the paper's appendix);
- `attribute_priority.csv`: the same numbers, one row per pair;
- `probe_outcomes.png`: each pair's outcomes as stacked bars;
- `probe_heatmaps.png`: per pair with a size or velocity, its drift (generated minus conditioned
  value) over the conditioned values of the two attributes, all four combinations (Fig. 9), from
  the trials' `report/probe.json`.
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
from phyray.config import PROBE_PREFIX, load_probe_config
from phyray.eval.probes import CONTINUOUS, OUTCOMES
from phyray.study.report import dev_split_note, estimate_cell, percent_cell, run_settings
from phyray.study.verdict import Estimate, combine_trials

PAPER_ORDER = ("color", "size", "velocity", "shape")
ORDER_ATTRIBUTES = set(PAPER_ORDER)
# The paper's finding per pair (its winner; "compose" where it found the two combined).
PAPER_WINNERS = {
    "color_shape": "color", "size_shape": "size", "velocity_shape": "velocity", "velocity_size": "size",
    "color_size": "color", "color_velocity": "color", "ring_ball": "neither colour nor shape",
}
SIGNED = ("margin", *(f"{a}_drift_toward" for a in CONTINUOUS))


def _combined(trials: list[dict[str, Any]], name: str) -> Estimate | None:
    """A metric of a pair's trials combined over seeds (None if a seed lacks it)."""
    return combine_trials(trials, name, signed=name.rsplit("/", 1)[-1] in SIGNED)


def pair_results(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per probe pair: its attributes, outcomes, margin, winner, floor and control."""
    by_pair: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["scenario"].startswith(PROBE_PREFIX):
            by_pair[record["scenario"].removeprefix(PROBE_PREFIX)].append(record)
    results = []
    for pair, trials in by_pair.items():
        probe = load_probe_config(pair).probe
        a, b = probe.attributes
        margin = _combined(trials, "probe/ood/margin")
        winner = "tie" if margin is None or margin.low <= 0 <= margin.high else (a if margin.low > 0 else b)
        results.append({
            "pair": pair, "a": a, "b": b, "seeds": len(trials), "models": sorted({t["model"] for t in trials}),
            "trained": [probe.combo_label(c) for c in probe.train], "swapped": [probe.combo_label(c) for c in probe.swapped],
            "outcomes": {o: _combined(trials, f"probe/ood/{o}") for o in OUTCOMES},
            "margin": margin, "winner": winner,
            "drift": {x: _combined(trials, f"probe/ood/{x}_drift_toward") for x in CONTINUOUS if x in (a, b)},
            "floor_composed": _combined(trials, "probe_floor/ood/composed"),
            "control_composed": _combined(trials, "probe/id/composed"),
            "num_videos": _combined(trials, "probe/ood/num_videos"),
        })
    results.sort(key=lambda r: list(PAPER_WINNERS).index(r["pair"]) if r["pair"] in PAPER_WINNERS else 99)
    return results


def priority_order(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The order of colour, size, velocity and shape the pairwise winners imply.

    Returns {"order": [...] or None, "reason": why there is none, "paper": "yes" | "no" |
    "undecided"}: a total order when all six pairs are decided and consistent (no cycle); the
    paper's order is recovered ("yes") when every pair agrees with it, "no" when a decided
    pair contradicts it, else "undecided".
    """
    beats: dict[str, set[str]] = {x: set() for x in PAPER_ORDER}
    ties, agree, contradict, seen = [], 0, 0, 0
    for result in results:
        a, b = result["a"], result["b"]
        if {a, b} - ORDER_ATTRIBUTES or result["pair"] not in PAPER_WINNERS or result["pair"] == "ring_ball":
            continue
        seen += 1
        if result["winner"] == "tie":
            ties.append(f"{a} / {b}")
            continue
        loser = b if result["winner"] == a else a
        beats[result["winner"]].add(loser)
        if PAPER_ORDER.index(result["winner"]) < PAPER_ORDER.index(loser):
            agree += 1
        else:
            contradict += 1
    paper = "no" if contradict else ("yes" if agree == 6 else "undecided")
    if seen < 6:
        return {"order": None, "reason": f"{seen} of the 6 pairs of colour, size, velocity, shape were run", "paper": paper}
    if ties:
        return {"order": None, "reason": f"undecided at the intervals: {', '.join(ties)}", "paper": paper}
    # Six decided pairs of four attributes: a tournament, transitive exactly when it has no
    # 3-cycle; then the number of attributes each one beats ranks them.
    for x in PAPER_ORDER:
        for y in beats[x]:
            for z in beats[y]:
                if x in beats[z]:
                    return {"order": None, "reason": f"cycle: {x} > {y} > {z} > {x}", "paper": paper}
    order = sorted(PAPER_ORDER, key=lambda x: -len(beats[x]))
    return {"order": order, "reason": None, "paper": paper}


def priority_markdown(results: list[dict[str, Any]], study: dict[str, str], missing: list[str], params: dict[str, str]) -> str:
    order = priority_order(results)
    lines = [
        f"# Attribute priority: study {study['name']} ({study['id']}), run {study['run_id']}",
        "",
        (f"Protocol: swapped combinations of each pair (the OOD set; the trained ones are the ID set); "
         f"{run_settings(params, parser=False)} (mean ± t·sd/√k and the videos' intervals). Attributes are read "
         "from the generated frames after the conditioning ones (phyray/eval/attributes.py)."),
        "",
        "| pair (A vs B) | trained | swapped | videos | A wins | B wins | composed | neither | unreadable | "
        "margin A − B | winner | paper | VAE floor composed | control kept |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        o = r["outcomes"]
        videos = f"{r['num_videos'].value:.0f} × {r['seeds']} seeds" if r["num_videos"] else "–"
        lines.append(
            f"| {r['pair']} ({r['a']} vs {r['b']}) | {', '.join(r['trained'])} | {', '.join(r['swapped'])} | {videos} | "
            + " | ".join(percent_cell(o[name]) for name in OUTCOMES)
            + f" | {percent_cell(r['margin'])} | **{r['winner']}** | {PAPER_WINNERS.get(r['pair'], '?')} | "
            f"{percent_cell(r['floor_composed'])} | {percent_cell(r['control_composed'])} |"
        )
    drifts = [(r["pair"], name, estimate) for r in results for name, estimate in r["drift"].items()]
    if drifts:
        lines += ["", "Drift toward the training pairing (generated minus conditioned value, signed toward the "
                  "value the other attribute was trained with; world units, or units/s):", ""]
        lines += [f"- {pair}, {name}: {estimate_cell(estimate, '{:+.3f}')}" for pair, name, estimate in drifts]
    lines += ["", "## Priority", "", *dev_split_note(params)]
    if order["order"]:
        lines.append(f"Order from the pairwise winners: **{' > '.join(order['order'])}**.")
    else:
        lines.append(f"No total order: {order['reason']}.")
    lines.append(f"The paper's order colour > size > velocity > shape recovered: **{order['paper']}**.")
    floors = [r for r in results if r["floor_composed"] is not None and r["floor_composed"].value < 0.95]
    if floors:
        lines.append("")
        lines.append("The VAE itself flips an attribute in over 5 % of the swapped videos of "
                     + ", ".join(f"{r['pair']} ({percent_cell(r['floor_composed'])} kept)" for r in floors)
                     + ": those pairs' outcomes are partly the VAE's.")
    if missing:
        lines += ["", f"Missing trials (no finished run): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def priority_csv(results: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["pair", "a", "b", "seeds", "winner"]
    for name in (*OUTCOMES, "margin", "floor_composed", "control_composed"):
        header += [name, f"{name}_ci_low", f"{name}_ci_high"]
    writer.writerow(header)
    for r in results:
        row = [r["pair"], r["a"], r["b"], r["seeds"], r["winner"]]
        for estimate in (*(r["outcomes"][o] for o in OUTCOMES), r["margin"], r["floor_composed"], r["control_composed"]):
            row += [estimate.value, estimate.low, estimate.high] if estimate else ["", "", ""]
        writer.writerow(row)
    return out.getvalue()


def outcomes_png(results: list[dict[str, Any]]) -> bytes:
    """Stacked bars: each pair's outcome fractions on its swapped combinations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.3 * max(len(results), 2) + 2, 3.6))
    bottoms = [0.0] * len(results)
    for outcome in OUTCOMES:
        heights = [r["outcomes"][outcome].value if r["outcomes"][outcome] else 0.0 for r in results]
        ax.bar(range(len(results)), heights, bottom=bottoms, label=outcome.replace("_", " "))
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.set_xticks(range(len(results)), [f"{r['pair']}\n({r['a']} vs {r['b']})" for r in results], fontsize=7)
    ax.set_ylabel("fraction of swapped videos")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def heatmaps_png(per_pair: dict[str, list[dict[str, Any]]]) -> bytes:
    """Fig. 9: per pair and continuous attribute, the mean drift over the conditioned values
    (x: that attribute, binned; y: the other attribute, binned or its two values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(pair, name) for pair, records in per_pair.items() for name in CONTINUOUS
              if any(f"{name}_drift" in r for r in records)]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(3.4 * max(len(panels), 1), 3.0), squeeze=False)
    for ax, (pair, name) in zip(axes[0], panels):
        probe = load_probe_config(pair).probe
        other = probe.attributes[1 - probe.attributes.index(name)]
        records = [r for r in per_pair[pair] if f"{name}_drift" in r]
        x = np.array([r[f"{name}_conditioned"] for r in records])
        drift = np.array([r[f"{name}_drift"] for r in records])
        if other in CONTINUOUS:
            y = np.array([r[f"{other}_conditioned"] for r in records])
            y_edges = np.linspace(y.min(), y.max() + 1e-9, 7)
            y_labels = [f"{v:.2f}" for v in 0.5 * (y_edges[1:] + y_edges[:-1])]
        else:
            labels = sorted({r["combo"] for r in records})
            y = np.array([labels.index(r["combo"]) for r in records], dtype=float)
            y_edges, y_labels = np.arange(len(labels) + 1) - 0.5, labels
        x_edges = np.linspace(x.min(), x.max() + 1e-9, 9)
        total, _, _ = np.histogram2d(y, x, [y_edges, x_edges], weights=drift)
        count, _, _ = np.histogram2d(y, x, [y_edges, x_edges])
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        bound = float(np.nanmax(np.abs(mean))) if np.isfinite(mean).any() else 1.0
        image = ax.imshow(mean, origin="lower", aspect="auto", cmap="coolwarm", vmin=-bound, vmax=bound,
                          extent=(x_edges[0], x_edges[-1], -0.5, len(y_labels) - 0.5))
        ax.set_yticks(range(len(y_labels)), y_labels, fontsize=6)
        ax.set_xlabel(f"conditioned {name}")
        ax.set_ylabel(other)
        ax.set_title(f"{pair}: {name} drift", fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no pair with a size or velocity", ha="center")
        axes[0][0].set_axis_off()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _probe_records(client, records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every trial's per-video probe records (rollouts, all splits), by pair."""
    per_pair: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for record in records:
            if not record["scenario"].startswith(PROBE_PREFIX):
                continue
            local = client.download_artifacts(record["run_id"], "report/probe.json", tmp)
            for scored in json.loads(Path(local).read_text()).values():
                per_pair[record["scenario"].removeprefix(PROBE_PREFIX)] += scored["rollouts"]["records"]
    return per_pair


def publish_priority(client, parent, records: list[dict[str, Any]], missing: list[str], study: dict[str, str], out: Path) -> dict[str, Any]:
    """Write the probe study's report (module docstring); returns what publish_report does."""
    results = pair_results(records)
    contents = {
        "attribute_priority.md": priority_markdown(results, study, missing, parent.data.params).encode(),
        "attribute_priority.csv": priority_csv(results).encode(),
        "probe_outcomes.png": outcomes_png(results),
        "probe_heatmaps.png": heatmaps_png(_probe_records(client, records)),
    }
    files = write_files(out, contents)
    return {
        "records": records, "missing": missing, "pairs": results, "priority": priority_order(results), "files": files,
        "summary": files["attribute_priority.md"], "parent_run_id": parent.info.run_id, "study": study["name"],
        "study_id": study["id"],
    }
