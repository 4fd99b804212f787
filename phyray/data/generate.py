"""Dataset generation with Ray Data: plan -> (simulate -> render -> encode -> write) per shard.

The driver computes the plan (every video's parameters and seed), then one Ray Data map task
per missing shard simulates, renders, encodes and writes that shard atomically, all through
`phyray.artifacts.write_product` (plan file, checksummed shards, manifest last). A shard's
bytes depend only on its slice of the plan, so the dataset is byte-identical whatever the number
of workers, and a rerun after a kill regenerates exactly the shards that are missing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from phyray.artifacts import Identity, write_product
from phyray.config import COMPOSE_KINDS, SHAPES, ComposeConfig, DataConfig
from phyray.data.plan import DatasetPlan, plan_dataset
from phyray.data.shards import (
    FORMAT_VERSION,
    PLANAR_RGB,
    PROBE_SCHEMA,
    SCHEMA,
    encode_frames,
    per_frame_column,
    ragged,
    shard_name,
    write_shard,
)
from phyray.render import BLUE, RED, ball_colors, render_videos, wall_background
from phyray.sim.balls import (
    impact_frame,
    mirror_scene,
    place_collision,
    place_single_ball,
    simulate,
)
from phyray.sim.compose import place_and_simulate

# Frames rendered together: enough videos to amortise numpy's per-call overhead, few enough that
# a batch's frames stay in cache from being drawn to being compressed (at 256² one video, 6 MiB).
# Against 24 MiB, in plain processes: 7-27 % more videos/s at 64²-256², and two processes at once
# scaled 0.95-1.01 at 128²-256² (24 MiB: 0.86-1.02; bench/render_batch.py, docs/performance.md,
# "2026-12-06 (4)").
# One buffer of this size serves every batch of a shard (`render_videos(out=...)`).
RENDER_BATCH_BYTES = 8 * 2**20
# Ray is imported in `RayShards.__call__`: the shard functions run inside Ray tasks, and
# planning, identities and finished products need no Ray.


# ---------------------------------------------------------------------------------------------
# One shard (runs inside a Ray task, but is a plain function)
# ---------------------------------------------------------------------------------------------


def simulate_video(cfg: DataConfig, params: dict[str, float], video_seed: int):
    """Place and simulate one video; returns (scene, trajectory, placement params).

    A composition video's placement names its kind and lists its events (each one's kind,
    frame, time and objects; `impact_frame` is the first event's frame), so evaluation can split
    its frames at them."""
    rng = np.random.default_rng(video_seed)
    if cfg.compose is not None:
        kind = COMPOSE_KINDS[int(params["kind"])]
        scene, trajectory = place_and_simulate(rng, cfg, kind)
        events = [event.record() for event in trajectory.events]
        placement = {"kind": kind, "x0": scene.positions[:, 0].tolist(), "y0": scene.positions[:, 1].tolist(),
                     "events": events, "impact_frame": events[0]["frame"] if events else None}
        return scene, trajectory, placement
    if cfg.scenario == "collision":
        scene = place_collision(rng, params["r1"], params["r2"], params["v1"], params["v2"], cfg)
    else:
        scene = place_single_ball(rng, params["radius"], params["velocity"], cfg)
        if params.get("direction", 1.0) < 0:
            scene = mirror_scene(scene, cfg.physics.world_size)
    trajectory = simulate(scene, cfg.physics)
    placement = {"x0": scene.positions[:, 0].tolist(), "y0": scene.positions[:, 1].tolist()}
    if cfg.scenario == "collision":
        placement["impact_frame"] = impact_frame(trajectory)
    return scene, trajectory, placement


def probe_attributes(cfg: DataConfig, point: dict[str, float]) -> tuple[np.ndarray, str, dict[str, Any]]:
    """A probe video's (1, 3) uint8 colour, its shape, and what its record adds: the colour and
    shape sets and the combination's name."""
    probe = cfg.probe
    sets = {name: int(point[name]) for name in ("color", "shape")}
    combo = probe.combo_of(point["radius"], point["velocity"], sets["color"], sets["shape"])
    color = np.array([probe.color[sets["color"]]], dtype=np.uint8)
    return color, probe.shape[sets["shape"]], sets | {"combo": probe.combo_label(combo)}


def compose_colors(compose: ComposeConfig, kind: str) -> np.ndarray:
    """A composition video's (K, 3) uint8 colours: object 0 red and object 1 blue, or a `bounce`
    video's one ball in `bounce_color` (phyray/sim/compose.py)."""
    if kind == "bounce":
        return np.array([compose.bounce_color], dtype=np.uint8)
    return np.array([RED, BLUE], dtype=np.uint8)


def _render_batch(
    cfg: DataConfig, sims: list, colors: list[np.ndarray], shapes: list[list[str]], canvas: np.ndarray
) -> list[np.ndarray]:
    """Each video's (T, H, W, 3) frames, drawn into `canvas` ((>= B, T, 3, H, W) uint8, reused by
    the next batch); videos with the same number of objects render together (a composition
    batch mixes one-ball and two-object videos)."""
    frames: list[np.ndarray | None] = [None] * len(sims)
    groups: dict[int, list[int]] = {}
    for j, (_, scene, _) in enumerate(sims):
        groups.setdefault(len(scene.radii), []).append(j)
    background = None
    if cfg.compose is not None:
        wall = cfg.compose.wall
        background = wall_background([(wall.x, wall.thickness)], wall.color, cfg.render.resolution,
                                     cfg.physics.world_size, cfg.render.edge_px)
    with_shapes = cfg.probe is not None or cfg.compose is not None
    used = 0  # videos of `canvas` drawn on so far
    for members in groups.values():
        positions = np.stack([sims[j][2].positions for j in members])  # (B, T, K, 2)
        radii = np.stack([sims[j][1].radii for j in members])  # (B, K)
        rendered = render_videos(
            positions, radii, np.stack([colors[j] for j in members]), cfg.render.resolution, cfg.physics.world_size,
            cfg.render.edge_px,
            shapes=np.array([[SHAPES.index(s) for s in shapes[j]] for j in members]) if with_shapes else None,
            ring_inner=cfg.probe.ring_inner if cfg.probe is not None else 0.6,
            background=background,
            out=canvas[used : used + len(members)],
        )
        used += len(members)
        for j, video in zip(members, rendered):
            frames[j] = video
    return frames


def build_shard(cfg: DataConfig, task: dict[str, Any]) -> tuple[pa.Table, dict[str, float]]:
    """Simulate, render and encode the videos of one shard.

    Returns the shard table and the seconds spent per stage (simulate, render, encode).
    """
    names, params = task["names"], np.asarray(task["params"], dtype=np.float64)
    timings = {"simulate": 0.0, "render": 0.0, "encode": 0.0}
    # Probes and composition scenes record each object's shape; ball datasets keep SCHEMA.
    schema = SCHEMA if cfg.probe is None and cfg.compose is None else PROBE_SCHEMA
    columns: dict[str, list | pa.Array] = {name: [] for name in schema.names}
    # Columns of arrays, built from numpy at the end (`per_frame_column`, `ragged`).
    tracks: dict[str, list[np.ndarray]] = {"positions": [], "velocities": []}  # (T, K, 2) per video
    radii: list[np.ndarray] = []  # (K,) per video
    video_colors: list[np.ndarray] = []  # (K, 3) uint8 per video
    side = cfg.render.resolution
    batch_size = max(1, RENDER_BATCH_BYTES // (cfg.physics.num_frames * 3 * side * side))
    canvas = np.empty((min(batch_size, len(params)), cfg.physics.num_frames, 3, side, side), dtype=np.uint8)
    for start in range(0, len(params), batch_size):
        batch = range(start, min(start + batch_size, len(params)))
        t0 = time.perf_counter()
        sims, colors, shapes = [], [], []
        for i in batch:
            point = dict(zip(names, params[i].tolist()))
            scene, trajectory, placement = simulate_video(cfg, point, task["video_seeds"][i])
            record = point | placement
            if cfg.compose is not None:
                colors.append(compose_colors(cfg.compose, placement["kind"]))
                shapes.append(list(scene.shapes))
            elif cfg.probe is None:
                colors.append(ball_colors(cfg.num_balls))
                shapes.append(["disc"] * cfg.num_balls)
            else:
                color, shape, attributes = probe_attributes(cfg, point)
                colors.append(color)
                shapes.append([shape])
                record |= attributes
            sims.append((record, scene, trajectory))
        t1 = time.perf_counter()
        frames = _render_batch(cfg, sims, colors, shapes, canvas)
        t2 = time.perf_counter()
        for j, i in enumerate(batch):
            record, scene, trajectory = sims[j]
            columns["video_id"].append(task["video_ids"][i])
            columns["scenario"].append(cfg.scenario)
            columns["split"].append(task["split"])
            columns["ood_level"].append(task["ood_levels"][i])
            columns["seed"].append(int(task["video_seeds"][i]))
            columns["params"].append(json.dumps(record, sort_keys=True))
            columns["frames"].append(encode_frames(frames[j]))
            columns["frames_encoding"].append(PLANAR_RGB)
            columns["frame_shape"].append(list(frames[j].shape))
            tracks["positions"].append(trajectory.positions)
            tracks["velocities"].append(trajectory.velocities)
            radii.append(scene.radii)
            video_colors.append(colors[j])
            if "shapes" in columns:
                columns["shapes"].append(shapes[j])
        t3 = time.perf_counter()
        timings["simulate"] += t1 - t0
        timings["render"] += t2 - t1
        timings["encode"] += t3 - t2
    tick = time.perf_counter()
    columns |= {name: per_frame_column(videos, fixed=True) for name, videos in tracks.items()}
    columns["radii"] = ragged(pa.array(np.concatenate(radii).astype(np.float32)), [len(r) for r in radii])
    columns["colors"] = ragged(
        pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(video_colors).astype(np.uint8).reshape(-1)), 3),
        [len(c) for c in video_colors],
    )
    table = pa.Table.from_pydict(columns, schema=schema)
    timings["encode"] += time.perf_counter() - tick
    return table, timings


def write_built_shard(task: dict[str, Any], table: pa.Table, timings: dict[str, float]) -> dict[str, Any]:
    """Write a built shard atomically as `task` names it; returns the map function's row: its
    manifest entry and its stage seconds, the write counted as encoding (as the benchmark
    reports)."""
    tick = time.perf_counter()
    entry = write_shard(table, Path(task["out"]) / shard_name(task["shard"]))
    timings["encode"] += time.perf_counter() - tick
    return {"entry": json.dumps(entry), "timings": json.dumps(timings)}


def generate_shard(row: dict[str, Any]) -> dict[str, Any]:
    """Ray Data map function: build and atomically write one shard; returns its manifest entry."""
    task = json.loads(row["task"])
    cfg = DataConfig.model_validate(task["config"])
    return write_built_shard(task, *build_shard(cfg, task))


# ---------------------------------------------------------------------------------------------
# The dataset (driver side)
# ---------------------------------------------------------------------------------------------


def dataset_identity(cfg: DataConfig, plan: DatasetPlan) -> Identity:
    """What makes a ball dataset itself: the whole data config (physics, rendering, ranges,
    levels, grids, shard size), the split, size and seed. No path enters it."""
    return Identity("dataset", {
        "format_version": FORMAT_VERSION,
        "split": plan.split,
        "size": plan.size_label,
        "seed": plan.seed,
        "num_videos": plan.num_videos,
        "config": cfg.identity_fields(),
    })


def shard_tasks(cfg: DataConfig, plan: DatasetPlan, out: Path, shards: list[int]) -> list[dict[str, Any]]:
    """One self-contained task per shard: its slice of the plan plus the config."""
    config = cfg.model_dump(mode="json")
    tasks = []
    for shard in shards:
        rows = plan.shard_slice(shard)
        indices = range(rows.start, rows.stop)
        tasks.append(
            {
                "shard": shard,
                "out": str(out),
                "config": config,
                "split": plan.split,
                "names": list(plan.names),
                "params": plan.params[rows].tolist(),
                "ood_levels": list(plan.ood_levels[rows]),
                "video_seeds": [int(s) for s in plan.video_seeds[rows]],
                "video_ids": [plan.video_id(i) for i in indices],
            }
        )
    return tasks


class RayShards:
    """Runs shard tasks on Ray Data for `phyray.artifacts.write_product`, with a progress bar.

    Args:
        make_tasks: shard indices -> self-contained task dicts (JSON-able).
        shard_writer: a function (run as Ray tasks) or a class (run as an actor pool, for
            stateful writers such as the latent encoder's VAE) taking {"task": json} rows and
            returning {"entry": json, "timings": json}.
        shard_sizes: videos per shard (for the progress bar).
        num_workers: concurrent tasks or actors (default: the CPUs Ray has).
        progress: show a bar of videos done, rate and time left.
        desc: the bar's label.
        constructor_kwargs: arguments of the writer class's constructor (actor pools).
        use_gpus: one GPU per actor (and as many actors as GPUs by default) when the cluster
            has GPUs; else one CPU each.

    After a run, `timings` holds the per-stage CPU-seconds of the shards it wrote.
    """

    def __init__(
        self, make_tasks: Callable[[list[int]], list[dict[str, Any]]], shard_writer: Callable | type,
        shard_sizes: list[int], num_workers: int | None, progress: bool, desc: str,
        constructor_kwargs: dict[str, Any] | None = None, use_gpus: bool = False,
    ):
        self.make_tasks, self.shard_writer, self.shard_sizes = make_tasks, shard_writer, shard_sizes
        self.num_workers, self.progress, self.desc = num_workers, progress, desc
        self.constructor_kwargs, self.use_gpus = constructor_kwargs or {}, use_gpus
        self.timings: dict[str, float] = {}

    def __call__(self, missing: list[int]) -> Iterator[dict[str, Any]]:
        import ray
        from tqdm import tqdm

        from phyray.runtime import cluster_cpus, configure_ray_data, init_ray

        init_ray(self.num_workers)
        configure_ray_data()
        gpus = int(ray.cluster_resources().get("GPU", 0)) if self.use_gpus else 0
        resources = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": 1}
        workers = max(1, min(self.num_workers or gpus or cluster_cpus(), len(missing)))
        rows = [{"task": json.dumps(task)} for task in self.make_tasks(missing)]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        if isinstance(self.shard_writer, type):
            ds = ds.map_batches(
                self.shard_writer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers),
                fn_constructor_kwargs=self.constructor_kwargs, **resources,
            )
        else:
            ds = ds.map(self.shard_writer, compute=ray.data.TaskPoolStrategy(size=workers), **resources)
        # A single map stage needs no CPUs held back for stages after it: Ray Data's operator
        # reservation (on by default) let one task run alone for the first ~1 s of every set,
        # until the first output was measured (bench/generate.py). Scoped to this dataset.
        ds.context.op_resource_reservation_enabled = False
        # Nor output backpressure: a shard task's output is one small manifest row, which the
        # driver reads at once, yet Ray 2.60's downstream-capacity policy held back the next
        # task while a worker sat idle, for up to a shard's time (a timeline of 2,000 videos at
        # 256² on 2 workers: from the third shard on, one worker idle 0.3-1.0 s per gap).
        ds.context.downstream_capacity_backpressure_ratio = None
        total = sum(self.shard_sizes)
        done = total - sum(self.shard_sizes[s] for s in missing)
        with tqdm(total=total, initial=done, unit="video", disable=not self.progress, desc=self.desc) as bar:
            for result in ds.iter_rows():
                for stage, seconds in json.loads(result["timings"]).items():
                    self.timings[stage] = self.timings.get(stage, 0.0) + seconds
                entry = json.loads(result["entry"])
                bar.update(entry["num_videos"])
                yield entry


def generate_dataset(
    cfg: DataConfig,
    split: str,
    size: str | None,
    out: str | Path,
    seed: int = 0,
    num_workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    plan: DatasetPlan | None = None,
) -> dict[str, Any]:
    """Generate (or finish, or verify and repair) a ball dataset; returns its manifest.

    Args:
        cfg: the scenario's data config (resolution etc. already applied).
        split: "train", "eval_id", "eval_ood" (test sets) or "dev_id", "dev_ood" (dev sets).
        size: a named preset ("30K"...) or a count ("200", "2K"); None for the eval default.
        out: output directory (created; must not hold another product).
        seed: dataset seed.
        num_workers: concurrent shard tasks (default: all CPUs Ray has).
        progress: show a progress bar of videos done, rate and time left.
        log: where a repaired shard is reported.
        plan: the dataset's plan if the caller already made it (`plan_dataset` of the above).

    Returns:
        The manifest, plus this run's per-stage CPU-seconds under "timings" (not stored).
    """
    plan = plan or plan_dataset(cfg, split, size, seed)
    sizes = [plan.shard_slice(s).stop - plan.shard_slice(s).start for s in range(plan.num_shards)]
    out = Path(out)
    levels = [level or "id" for level in plan.ood_levels]
    shards = RayShards(
        lambda missing: shard_tasks(cfg, plan, out, missing), generate_shard, sizes, num_workers, progress,
        f"{cfg.scenario}/{split}",
    )
    manifest = write_product(
        out, dataset_identity(cfg, plan), [shard_name(s) for s in range(len(sizes))], sizes, shards, log=log,
        scenario=cfg.scenario,
        resolution=cfg.render.resolution,
        num_frames=cfg.physics.num_frames,
        frames_encoding=PLANAR_RGB,
        counts={level: levels.count(level) for level in sorted(set(levels))},
    )
    return manifest | {"timings": shards.timings}
