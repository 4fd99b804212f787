"""Calibration of the abnormal-rate judge: its confusion table on all 70 PHYRE templates, by resolution.

The judge (phyray/eval/abnormal.py) must flag physics violations and nothing else. Three classes
of video, all made from real PHYRE simulations through the sidecar, each judged at every
`--resolutions` side (frames area-averaged from 256², as the study's data are):

- ground truth: template t, task seed s, red-ball placement (trial) 990 — the in-template
  evaluation trials — for every template 10000-10069 and seeds F..F+S-1 (`--first-seed`,
  `--seeds`; seeds 0-39 are the test split, dev splits start at 100). Forty seeds give a
  template 80 real videos, so one chance flag is 1.3 % of them: the per-template limit (5 %)
  then tells a template the judge misreads from chance (with 8 seeds, one flag was 6 %);
- different but plausible: the same template and seed with another red-ball placement (trial
  991): a real simulation whose outcome differs from the ground truth's;
- corruptions (phyray/eval/corrupt.py), each kind applied to the ground truth of seeds
  F..F+C-1 (`--corrupt-seeds`) at its own random frame.

Prints, per resolution, the share flagged per class with its 95 % bootstrap interval (targets:
ground truth <= 1 %, plausible <= 2 %, each corruption >= 95 %), which checks fire for each
class, the templates whose ground-truth + plausible videos are flagged above 5 %, and the
judging speed (videos/s per process). `--out` keeps the per-video records (records.csv) and the
tables (confusion.md). Work is split by template over `--workers` processes, each with its own
PHYRE sidecar; the records do not depend on the worker count.

    .venv/bin/python bench/abnormal.py --resolutions 256,128,64   # the test split: 2,800 + 2,800 + 8 x ~270
    .venv/bin/python bench/abnormal.py --seeds 2 --corrupt-seeds 1 --resolutions 256
    .venv/bin/python bench/abnormal.py --first-seed 100 --seeds 4 --corrupt-seeds 1   # dev split
"""

from __future__ import annotations

import argparse
import csv
import io
import time
import zlib
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from phyray.artifacts import atomic_write_bytes
from phyray.data.shards import area_downsample
from phyray.eval.abnormal import (
    CHECKS,
    AbnormalConfig,
    find_violations,
    palette_labels,
    verdict_record,
)
from phyray.eval.corrupt import CORRUPTIONS, CorruptionError, corrupt
from phyray.eval.stats import bootstrap_ci
from phyray.sim.phyre import FIRST_TEMPLATE, LAST_TEMPLATE, PhyreSidecar, index_to_rgb

GROUND_TRUTH, PLAUSIBLE = "ground truth", "plausible"
GT_TRIAL, PLAUSIBLE_TRIAL = 990, 991
TARGETS = {GROUND_TRUTH: ("<=", 0.01), PLAUSIBLE: ("<=", 0.02)} | {k: (">=", 0.95) for k in CORRUPTIONS}
TEMPLATE_FP_LIMIT = 0.05
RECORD_FIELDS = ("template_id", "seed", "trial", "label", "resolution", "abnormal", *CHECKS,
                 *(f"{check}_frame" for check in CHECKS), "seconds")


def judge(indices: np.ndarray, resolution: int, config: AbnormalConfig) -> tuple[dict, float]:
    """Flags (and the first frame of each check) of one (T, 256, 256) palette-index video judged at
    `resolution`, and the seconds it took (segmenting the area-averaged RGB below 256², as for a
    generated video)."""
    start = time.perf_counter()
    if resolution == indices.shape[2]:
        labels = indices
    else:
        labels = palette_labels(area_downsample(index_to_rgb(indices), resolution), config=config)
    verdict = find_violations(labels, config)
    return verdict_record(verdict), time.perf_counter() - start


def template_records(task: dict) -> list[dict]:
    """Every record of one template: its ground truth, plausible and corrupted videos at every resolution."""
    template, resolutions = task["template"], task["resolutions"]
    seeds = range(task["first_seed"], task["first_seed"] + task["seeds"])
    corrupted = set(seeds[: task["corrupt_seeds"]])
    config = AbnormalConfig()
    with PhyreSidecar() as phyre:
        items = [(template, seed, trial) for seed in seeds for trial in (GT_TRIAL, PLAUSIBLE_TRIAL)]
        videos = {(v["seed"], v["trial"]): v["frames"] for v in phyre.simulate_batch(items)}
    records = []

    def add(indices: np.ndarray, seed: int, trial: int, label: str) -> None:
        for resolution in resolutions:
            flags, seconds = judge(indices, resolution, config)
            records.append({"template_id": template, "seed": seed, "trial": trial, "label": label,
                            "resolution": resolution, **flags, "seconds": seconds})

    for seed in seeds:
        truth, other = videos[(seed, GT_TRIAL)], videos[(seed, PLAUSIBLE_TRIAL)]
        add(truth, seed, GT_TRIAL, GROUND_TRUTH)
        if not np.array_equal(truth, other):  # plausible means a different outcome, not a copy
            add(other, seed, PLAUSIBLE_TRIAL, PLAUSIBLE)
        if seed in corrupted:
            for kind in CORRUPTIONS:
                rng = np.random.default_rng([task["seed"], template, seed, CORRUPTIONS.index(kind)])
                try:
                    made = corrupt(truth, kind, rng)
                except CorruptionError:  # e.g. nothing airborne to freeze
                    continue
                add(made.frames, seed, GT_TRIAL, kind)
    return records


def rate_cell(flags: list[bool]) -> str:
    values = np.asarray(flags, dtype=np.float64)
    low, high = bootstrap_ci(values, seed=zlib.crc32(str(len(values)).encode()))
    return f"{values.mean():.1%} [{low:.1%}, {high:.1%}]"


def confusion(records: list[dict], resolution: int) -> str:
    """Markdown: per class, n, share flagged with its CI, the target, and the share each check fires."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if record["resolution"] == resolution:
            by_label[record["label"]].append(record)
    head = "| class | n | flagged [95% CI] | target | " + " | ".join(CHECKS) + " |"
    lines = [head, "|" + "---|" * (4 + len(CHECKS))]
    for label in (GROUND_TRUTH, PLAUSIBLE, *CORRUPTIONS):
        members = by_label.get(label, [])
        if not members:
            continue
        flagged = [m["abnormal"] for m in members]
        sign, bound = TARGETS[label]
        rate = float(np.mean(flagged))
        met = rate <= bound if sign == "<=" else rate >= bound
        checks = " | ".join(f"{np.mean([m[c] for m in members]):.0%}" for c in CHECKS)
        lines.append(f"| {label} | {len(members)} | {rate_cell(flagged)} | {sign} {bound:.0%} "
                     f"{'met' if met else '**missed**'} | {checks} |")
    return "\n".join(lines)


def template_false_positives(records: list[dict], resolution: int) -> str:
    """One line: the templates whose real (ground truth + plausible) videos are flagged above the limit."""
    by_template: dict[int, list[bool]] = defaultdict(list)
    for record in records:
        if record["resolution"] == resolution and record["label"] in (GROUND_TRUTH, PLAUSIBLE):
            by_template[record["template_id"]].append(record["abnormal"])
    rates = {t: float(np.mean(f)) for t, f in sorted(by_template.items())}
    over = {t: r for t, r in rates.items() if r > TEMPLATE_FP_LIMIT}
    worst = max(rates.values())
    listed = ", ".join(f"{t} {r:.0%}" for t, r in over.items()) or "none"
    videos = len(next(iter(by_template.values())))
    # Below 1 / limit videos a template, a single chance flag already exceeds the limit.
    caveat = f" (one flag is {1 / videos:.0%} of a template)" if 1 / videos > TEMPLATE_FP_LIMIT else ""
    return (f"per-template false positives (ground truth + plausible, {videos} videos each): max {worst:.0%}; "
            f"templates with a flag: {sum(r > 0 for r in rates.values())}; above {TEMPLATE_FP_LIMIT:.0%}: {listed}{caveat}")


def speed(records: list[dict], resolution: int) -> str:
    seconds = [r["seconds"] for r in records if r["resolution"] == resolution]
    return f"judged {len(seconds)} videos at {np.mean(seconds) * 1e3:.0f} ms each ({1 / np.mean(seconds):.1f} videos/s per process)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="first task seed (0-39: the test split; dev: --first-seed 100 --seeds 4 --corrupt-seeds 1)")
    parser.add_argument("--seeds", type=int, default=40, help="task seeds per template (ground truth and plausible videos)")
    parser.add_argument("--corrupt-seeds", type=int, default=4, help="seeds per template whose ground truth is corrupted")
    parser.add_argument("--resolutions", default="256,128,64,32", help="frame sides to judge at")
    parser.add_argument("--templates", default=f"{FIRST_TEMPLATE}-{LAST_TEMPLATE}", help="first-last template ids")
    parser.add_argument("--workers", type=int, default=2, help="processes, one PHYRE sidecar each")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruptions")
    parser.add_argument("--out", default="runs/bench/abnormal", help="directory for records.csv and confusion.md")
    args = parser.parse_args()
    first, last = (int(x) for x in args.templates.split("-"))
    resolutions = [int(r) for r in args.resolutions.split(",")]
    if args.corrupt_seeds > args.seeds:
        parser.error("--corrupt-seeds: at most --seeds")
    tasks = [{"template": t, "first_seed": args.first_seed, "seeds": args.seeds, "corrupt_seeds": args.corrupt_seeds,
              "resolutions": resolutions, "seed": args.seed} for t in range(first, last + 1)]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        records = [r for chunk in pool.map(template_records, tasks) for r in chunk]
    wall = time.perf_counter() - start
    sections = [f"# Abnormal-rate judge: confusion on templates {first}-{last}\n",
                f"{args.seeds} seeds per template ({args.first_seed}-{args.first_seed + args.seeds - 1}; ground truth "
                f"trial {GT_TRIAL}, plausible trial {PLAUSIBLE_TRIAL}), corruptions of seeds "
                f"{args.first_seed}-{args.first_seed + args.corrupt_seeds - 1}, corruption seed {args.seed}; {wall / 60:.1f} min "
                f"wall on {args.workers} workers.\n"]
    for resolution in resolutions:
        sections += [f"## {resolution}²\n", confusion(records, resolution), "",
                     template_false_positives(records, resolution) + "  ", speed(records, resolution) + "\n"]
    report = "\n".join(sections)
    print(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RECORD_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    atomic_write_bytes(out / "records.csv", buffer.getvalue().encode())
    atomic_write_bytes(out / "confusion.md", report.encode())
    print(f"records: {out / 'records.csv'}; tables: {out / 'confusion.md'}")


if __name__ == "__main__":
    main()
