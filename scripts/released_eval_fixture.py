"""Build the released-evaluator regression fixture: phyray videos scored by the authors' code.

The authors' evaluator (phyworld/phyworld, `id_ood_data/evaluate.py`) is read from a fetched copy
of that repository, copied into a temporary directory and imported from there; it is never
vendored into phyray. Its functions score a small set of phyray videos, and the numbers are
stored beside the videos for `tests/test_paper_eval.py`:

    tests/data/released_eval/fixture.npz   frames (N, T, H, W, 3) uint8 per scenario and their
                                           ground truth, as phyray's shards store it (float32)
    tests/data/released_eval/released.json header (source, commit, how it was made) and per video
                                           the released evaluator's numbers and phyray's own
                                           default metrics when the fixture was built

The videos are ground truth and deterministic "rollouts" derived from it (a velocity drift, a
jump of a few pixels, a ball erased in some frames), for uniform motion, parabola and collision,
including radii at the released filter's thresholds, a collision ball that leaves the view long
before the other, and collisions too slow for the released collision rule.

The released module imports cv2, h5py, imageio, pandas and tqdm at its top, so its half runs in
an interpreter that has them (`--released-python`, e.g. a throwaway venv; never phyray's):

    python -m venv /tmp/released-venv
    /tmp/released-venv/bin/pip install numpy pandas opencv-python-headless h5py imageio tqdm
    .venv/bin/python scripts/released_eval_fixture.py \\
        --released-repo /path/to/phyworld --released-python /tmp/released-venv/bin/python

`--released-repo` is a clone (bare or not) of github.com/phyworld/phyworld.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "tests" / "data" / "released_eval"
RELEASED_FILE = "id_ood_data/evaluate.py"
RESOLUTION = 64
COND_FRAMES = 3
SCENARIOS = ("uniform_motion", "parabola", "collision")
# The number each released driver computes per video, the one the paper's Fig. 3 reports.
RELEASED_METRIC = {"uniform_motion": "vel_error", "parabola": "x_vel_error", "collision": "post_vel_error"}

# Per video: name, generation parameters, placement seed and the edit that turns the ground
# truth into a rollout. Edits (applied to the rendered positions, never to the ground truth):
#   ("drift", ball, (dvx, dvy))     velocity offset from the first generated frame on
#   ("shift", ball, frame, (dx, dy)) a jump of (dx, dy) pixels from `frame` on
#   ("erase", ball, frames)          the ball not painted in `frames`; "last" is the last frame
#                                    of the released window, where the fallback border counts
VIDEOS = {
    "uniform_motion": [
        ("u_gt", {"radius": 1.0, "velocity": 2.5}, 1, None),
        ("u_gt_leaves", {"radius": 1.4, "velocity": 4.0}, 2, None),
        ("u_r059_drift", {"radius": 0.59, "velocity": 2.0}, 3, ("drift", 0, (0.4, 0.0))),
        ("u_r060_drift", {"radius": 0.6, "velocity": 1.5}, 4, ("drift", 0, (-0.3, 0.0))),
        ("u_r061_shift", {"radius": 0.61, "velocity": 3.0}, 5, ("shift", 0, 12, (3, 2))),
        ("u_erase_last", {"radius": 0.9, "velocity": 2.0}, 6, ("erase", 0, (10, "last"))),
        ("u_r030_ood", {"radius": 0.3, "velocity": 0.5}, 7, None),
        ("u_fast_drift", {"radius": 1.8, "velocity": 5.5}, 8, ("drift", 0, (-1.0, 0.0))),
    ],
    "parabola": [
        ("p_gt", {"radius": 1.0, "velocity": 2.0}, 11, None),
        ("p_r055", {"radius": 0.55, "velocity": 1.5}, 12, None),
        ("p_r060_drift", {"radius": 0.6, "velocity": 3.0}, 13, ("drift", 0, (0.25, 0.0))),
        ("p_y_drift", {"radius": 1.2, "velocity": 1.0}, 14, ("drift", 0, (0.0, -0.5))),
        ("p_erase_first", {"radius": 0.8, "velocity": 2.5}, 15, ("erase", 0, (3, 15))),
        ("p_fast_shift", {"radius": 1.6, "velocity": 5.0}, 16, ("shift", 0, 8, (-2, 0))),
    ],
    "collision": [
        ("c_gt", {"r1": 1.0, "r2": 1.0, "v1": 2.0, "v2": 2.0}, 21, None),
        ("c_r1_050", {"r1": 0.5, "r2": 1.0, "v1": 2.0, "v2": 1.5}, 22, None),
        ("c_r1_051", {"r1": 0.51, "r2": 1.4, "v1": 3.0, "v2": 1.0}, 23, None),
        ("c_drift", {"r1": 1.2, "r2": 0.8, "v1": 1.5, "v2": 3.0}, 24, ("drift", 1, (0.3, 0.0))),
        ("c_shift", {"r1": 0.8, "r2": 1.3, "v1": 2.5, "v2": 2.0}, 25, ("shift", 0, 11, (3, 0))),
        ("c_erase_last", {"r1": 1.0, "r2": 0.7, "v1": 3.5, "v2": 3.5}, 26, ("erase", 1, ("last",))),
        ("c_slow", {"r1": 1.0, "r2": 1.0, "v1": 0.3, "v2": 0.2}, 35, ("drift", 0, (0.1, 0.0))),
        ("c_too_slow", {"r1": 1.0, "r2": 1.2, "v1": 0.05, "v2": 0.03}, 28, None),
        ("c_first_leaves", {"r1": 0.6, "r2": 1.5, "v1": 4.0, "v2": 1.0}, 29, ("drift", 1, (0.3, 0.0))),
    ],
}


# ---------------------------------------------------------------------------------------------
# phyray's half: videos, ground truth and phyray's own metrics
# ---------------------------------------------------------------------------------------------


def released_window(gt_positions: np.ndarray, radii: np.ndarray, world_size: float) -> np.ndarray:
    """(T,) frames in the released evaluator's window: t ≥ c, every ball fully in view (float64)."""
    centres, r = gt_positions.astype(np.float64), radii.astype(np.float64)[None, :, None]  # (T, K, 2)
    inside = ((centres - r >= 0) & (centres + r <= world_size)).all(axis=(1, 2))
    return inside & (np.arange(len(gt_positions)) >= COND_FRAMES)


def edited_positions(gt_positions, radii, edit, frame_dt, world_size):
    """The positions a rollout is rendered from: the ground truth with `edit` applied."""
    positions = gt_positions.astype(np.float64).copy()  # (T, K, 2)
    if edit is None:
        return positions
    kind, ball, *args = edit
    frames = np.arange(len(positions))
    if kind == "drift":
        steps = np.clip(frames - COND_FRAMES + 1, 0, None) * frame_dt  # (T,)
        positions[:, ball] += steps[:, None] * np.asarray(args[0])
    elif kind == "shift":
        start, offset_px = args
        positions[start:, ball] += np.asarray(offset_px) * (world_size / RESOLUTION)
    elif kind == "erase":
        window = np.flatnonzero(released_window(gt_positions, radii, world_size))
        erased = [window[-1] if f == "last" else f for f in args[0]]
        positions[erased, ball] = -100.0 * world_size  # wholly out of view: not painted
    return positions


def build_fixture() -> tuple[dict[str, np.ndarray], list[dict]]:
    """Render every video; returns the npz arrays and the per-video descriptions."""
    # phyray is imported here: the released half of this script runs in another interpreter.
    from phyray.config import load_data_config
    from phyray.data.generate import simulate_video
    from phyray.render import ball_colors, render_videos

    arrays, videos = {}, []
    for scenario in SCENARIOS:
        cfg = load_data_config(scenario, [f"render.resolution={RESOLUTION}"])
        physics = cfg.physics
        colors = ball_colors(cfg.num_balls)
        frames, gt = [], {"positions": [], "velocities": [], "radii": [], "impact_frames": []}
        for name, params, seed, edit in VIDEOS[scenario]:
            scene, trajectory, placement = simulate_video(cfg, params, seed)
            # The ground truth exactly as a shard stores it (build_shard: float32).
            positions = trajectory.positions.astype(np.float32)
            radii = scene.radii.astype(np.float32)
            rollout = edited_positions(positions, radii, edit, physics.frame_dt, physics.world_size)
            frames.append(
                render_videos(rollout[None], radii[None].astype(np.float64), colors, RESOLUTION, physics.world_size)[0]
            )
            gt["positions"].append(positions)
            gt["velocities"].append(trajectory.velocities.astype(np.float32))
            gt["radii"].append(radii)
            gt["impact_frames"].append(-1 if placement.get("impact_frame") is None else placement["impact_frame"])
            videos.append({"name": name, "scenario": scenario, "params": params, "seed": seed, "edit": edit})
        arrays[f"{scenario}/frames"] = np.stack(frames)  # (N, T, H, W, 3)
        for key, values in gt.items():
            arrays[f"{scenario}/{key}"] = np.stack(values)
        arrays[f"{scenario}/colors"] = colors
        arrays[f"{scenario}/params"] = np.array([list(v["params"].values()) for v in videos if v["scenario"] == scenario])
    return arrays, videos


def phyray_metrics(arrays: dict[str, np.ndarray]) -> dict[str, list[dict[str, float | None]]]:
    """phyray's default metrics (both parsers) per scenario and video, NaN as None."""
    from phyray.eval.physics import physics_metrics

    out = {}
    for scenario in SCENARIOS:
        impact = [None if f < 0 else int(f) for f in arrays[f"{scenario}/impact_frames"]]
        per_parser = {
            parser: physics_metrics(
                arrays[f"{scenario}/frames"], arrays[f"{scenario}/positions"], arrays[f"{scenario}/velocities"],
                arrays[f"{scenario}/radii"], arrays[f"{scenario}/colors"], scenario, impact, parser=parser,
            )
            for parser in ("threshold", "subpixel")
        }
        n = len(arrays[f"{scenario}/frames"])
        out[scenario] = [
            {parser: {m: _json_float(v[i]) for m, v in metrics.items()} for parser, metrics in per_parser.items()}
            for i in range(n)
        ]
    return out


def _json_float(value) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


# ---------------------------------------------------------------------------------------------
# The released half: runs in the released evaluator's interpreter (numpy + its own imports)
# ---------------------------------------------------------------------------------------------


def score_released(evaluate_dir: str, fixture: str) -> dict[str, list[dict]]:
    """Score the fixture with the released code, as its eval_uniform / eval_parabola /
    eval_collision do after loading a video and its hdf5 record.

    Differences from the released driver, none of which touches its arithmetic: frames come
    from the npz, not an MP4 (so no compression), already RGB and flipped upside down as
    `get_gt_and_rollout_videos` returns them; the ground truth is passed with one state per
    frame (the driver's `gt_states[:-1]` drops the hdf5's extra last state), as float64 like
    the hdf5's; `init` is the generation parameters, as in the hdf5's `init_streams`.
    """
    sys.path.insert(0, evaluate_dir)
    import evaluate as released  # noqa: E402  (the copied id_ood_data/evaluate.py)

    data = np.load(fixture)
    out = {}
    for scenario in SCENARIOS:
        frames = data[f"{scenario}/frames"][:, :, ::-1]  # (N, T, H, W, 3), rows bottom-up
        states = data[f"{scenario}/positions"].astype(np.float64)  # (N, T, K, 2)
        records = []
        for video, gt, init in zip(frames, states, data[f"{scenario}/params"]):
            if scenario == "collision":
                # eval_collision: init = (r1, r2, v1, v2); a video that raises is skipped.
                try:
                    ret = released.evaluate_xy_collision(video, gt, init, mode="all")
                except Exception as error:  # noqa: BLE001 - the driver's bare `except:`
                    records.append({"raised": repr(error), "kept": False})
                    continue
                value = np.abs(ret["post_x_vel"].mean(-2) - ret["gt_post_x_vel"].mean(-2)).mean()
                kept = not (init[0] <= 0.5 or init[1] <= 0.5)
                records.append({RELEASED_METRIC[scenario]: _json_float(value), "kept": bool(kept)})
            else:
                # eval_uniform / eval_parabola: init = (r, v), gt states (T, 2).
                ret = released.evaluate_xy(video, gt[:, 0], init, mode="all")
                value = np.abs(ret["x_vel"].mean() - ret["init"][1])
                records.append({RELEASED_METRIC[scenario]: _json_float(value), "kept": bool(not init[0] < 0.6)})
        out[scenario] = records
    return out


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--released-repo", help="clone (bare or not) of github.com/phyworld/phyworld")
    parser.add_argument("--released-python", default=sys.executable, help="interpreter with the released imports")
    parser.add_argument("--out", default=str(OUT_DIR))
    parser.add_argument("--score", nargs=2, metavar=("EVALUATE_DIR", "FIXTURE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.score:  # the released half, in the released interpreter: JSON on stdout
        json.dump(score_released(*args.score), sys.stdout)
        return
    if not args.released_repo:
        parser.error("--released-repo is required")

    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", args.released_repo, *cmd], check=True, capture_output=True, text=True).stdout

    commit = git("rev-parse", "HEAD").strip()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arrays, videos = build_fixture()
    np.savez_compressed(out / "fixture.npz", **arrays)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "evaluate.py").write_text(git("show", f"{commit}:{RELEASED_FILE}"))
        scored = subprocess.run(
            [args.released_python, __file__, "--score", tmp, str(out / "fixture.npz")],
            check=True, capture_output=True, text=True,
        )
    released = json.loads(scored.stdout)
    phyray = phyray_metrics(arrays)

    records = []
    for scenario in SCENARIOS:
        for i, video in enumerate(v for v in videos if v["scenario"] == scenario):
            records.append(video | {"index": i, "released": released[scenario][i], "phyray_default": phyray[scenario][i]})
    header = {
        "source": {
            "repo": "https://github.com/phyworld/phyworld",
            "commit": commit,
            "file": RELEASED_FILE,
            "functions": ["evaluate_xy", "evaluate_xy_collision"],
        },
        "metrics": {
            "vel_error": "uniform motion: np.abs(ret['x_vel'].mean() - ret['init'][1]) (eval_uniform)",
            "x_vel_error": "parabola: np.abs(ret['x_vel'].mean() - ret['init'][1]) (eval_parabola)",
            "post_vel_error": "collision: np.abs(ret['post_x_vel'].mean(-2) - ret['gt_post_x_vel'].mean(-2)).mean()"
            " (eval_collision); a video whose evaluate_xy_collision raises is skipped",
            "kept": "the drivers' radius filter on init: drop r < 0.6 (eval_uniform, eval_parabola), "
            "r1 <= 0.5 or r2 <= 0.5 (eval_collision)",
            "phyray_default": "phyray's physics_metrics with its defaults (paper_filter off), both parsers, "
            "when the fixture was built; NaN is null",
        },
        "produced_by": "scripts/released_eval_fixture.py (see its docstring); frames are phyray's renderer at "
        f"{RESOLUTION} px, ground truth float32 as phyray's shards store it",
        "fixture": "fixture.npz: <scenario>/frames (N, T, H, W, 3) uint8, positions and velocities (N, T, K, 2) "
        "float32, radii (N, K) float32, impact_frames (N,) (-1: none), colors (K, 3), params (N, P) "
        "(uniform motion, parabola: radius, velocity; collision: r1, r2, v1, v2)",
    }
    (out / "released.json").write_text(json.dumps({"header": header, "videos": records}, indent=1) + "\n")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({size / 1024:.0f} KiB, {len(records)} videos) from {commit[:7]}")
    # The agreement tests/test_paper_eval.py asserts, over the videos the released code scores.
    for scenario in SCENARIOS:
        pairs = [
            (r["released"][RELEASED_METRIC[scenario]], r["phyray_default"]["threshold"]["paper_vel_err"])
            for r in records
            if r["scenario"] == scenario and r["released"]["kept"] and r["released"].get(RELEASED_METRIC[scenario]) is not None
        ]
        gap = max(np.inf if mine is None else abs(theirs - mine) for theirs, mine in pairs)
        print(f"{scenario}: phyray paper_vel_err (threshold) vs released, max |diff| {gap:.2g} over {len(pairs)} videos")


if __name__ == "__main__":
    main()
