"""Benchmark: the parsers' ground-truth floors at 32², 64², 128² and 256².

Simulates `--videos` ID evaluation videos per scenario (the generator's own `plan_dataset` +
`simulate_video`), renders them at each resolution and scores the frames against their own ground
truth with both parsers: the velocity error that even a perfect video cannot go below. Prints the
mean over videos of vel_err_per_frame (norm, and its x component, the paper's 1-D form) and
vel_err_mean_velocity, plus how many videos had no valid interval.

For context, the paper's reported floors (0.0099 / 0.0117 / 0.0210, mean-velocity variant, 256²)
are a unit mismatch in the released evaluator, not rasterisation (docs/paper.md §13).

    .venv/bin/python bench/parser_floor.py
    .venv/bin/python bench/parser_floor.py --videos 50 --resolutions 64 128
"""

from __future__ import annotations

import argparse

import numpy as np

from phyray.config import BALL_SCENARIOS, load_data_config
from phyray.data.generate import simulate_video
from phyray.data.plan import plan_dataset
from phyray.eval.physics import PARSERS, physics_metrics
from phyray.render import ball_colors, render_videos

COLUMNS = ("vel_err_per_frame", "vel_err_per_frame_x", "vel_err_mean_velocity")
RENDER_BATCH_BYTES = 128 * 2**20


def simulate_all(scenario: str, videos: int, seed: int) -> dict:
    """Ground truth of `videos` ID evaluation videos: positions, velocities (N, T, K, 2), radii (N, K)."""
    cfg = load_data_config(scenario)
    plan = plan_dataset(cfg, "eval_id", str(videos), seed)
    sims = [
        simulate_video(cfg, dict(zip(plan.names, point)), video_seed)
        for point, video_seed in zip(plan.params.tolist(), plan.video_seeds)
    ]
    return {
        "cfg": cfg,
        "positions": np.stack([traj.positions for _, traj, _ in sims]),
        "velocities": np.stack([traj.velocities for _, traj, _ in sims]),
        "radii": np.stack([scene.radii for scene, _, _ in sims]),
        "impact_frames": [placement.get("impact_frame") for _, _, placement in sims],
    }


def floors(truth: dict, resolution: int) -> dict[str, dict[str, np.ndarray]]:
    """{parser: {metric: (N,)}} of the ground-truth frames rendered at `resolution`."""
    cfg = truth["cfg"]
    n, t, k, _ = truth["positions"].shape
    colors = ball_colors(k)
    batch = max(1, RENDER_BATCH_BYTES // (t * 3 * resolution**2))
    out = {parser: {m: [] for m in COLUMNS} for parser in PARSERS}
    for start in range(0, n, batch):
        part = slice(start, start + batch)
        frames = render_videos(truth["positions"][part], truth["radii"][part], colors, resolution,
                               cfg.physics.world_size, cfg.render.edge_px)
        for parser in PARSERS:
            metrics = physics_metrics(
                frames, truth["positions"][part], truth["velocities"][part], truth["radii"][part], colors,
                cfg.scenario, truth["impact_frames"][part], parser=parser,
                frame_dt=cfg.physics.frame_dt, world_size=cfg.physics.world_size,
            )
            for m in COLUMNS:
                out[parser][m].append(metrics[m])
    return {parser: {m: np.concatenate(v) for m, v in metrics.items()} for parser, metrics in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=list(BALL_SCENARIOS))
    parser.add_argument("--resolutions", nargs="+", type=int, default=[32, 64, 128, 256])
    parser.add_argument("--videos", type=int, default=200, help="ID evaluation videos per scenario")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"{'scenario':<15} {'res':>4} {'parser':<10} {'per_frame':>10} {'per_frame_x':>12} "
          f"{'mean_velocity':>14} {'n':>5} {'excluded':>9}")
    for scenario in args.scenarios:
        truth = simulate_all(scenario, args.videos, args.seed)
        for resolution in args.resolutions:
            for name, metrics in floors(truth, resolution).items():
                values = {m: np.nanmean(v) for m, v in metrics.items()}
                counted = int(np.isfinite(metrics["vel_err_per_frame"]).sum())
                print(f"{scenario:<15} {resolution:>4} {name:<10} {values['vel_err_per_frame']:>10.5f} "
                      f"{values['vel_err_per_frame_x']:>12.5f} {values['vel_err_mean_velocity']:>14.6f} "
                      f"{counted:>5} {len(metrics['vel_err_per_frame']) - counted:>9}")


if __name__ == "__main__":
    main()
