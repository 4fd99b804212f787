"""Which videos a dataset holds: the parameter points of a split, their ids, seeds and shards.

A plan is pure arithmetic on the config and seed; it is computed once on the driver and each
shard task receives only its slice, so shard contents never depend on how many workers run.

Training sets (docs/paper.md §4): the Cartesian product of per-parameter value lists, shuffled.
- Named sizes ("30K", "300K", "3M") use the paper's value counts (`grids` in the config).
- Any other count N keeps the aspect of the 30K grid: every value count is scaled by the same
  factor s (rounded up) until the grid has at least N usable points; the first N points of the
  shuffled grid form the set. E.g. uniform motion "200" -> 25 speeds × 9 radii, 200 of 225.
- Collision points with no valid placement (large, fast balls that cannot fit 8 frames before
  and after the impact in a 10-unit world) are dropped, as in the paper; `collision_feasible`
  decides this analytically, so the plan knows its final size.

Evaluation sets draw points uniformly at random from continuous ranges (ID: the training
ranges; OOD: each level's parameters from the union of OOD ranges, the others from ID), so ID
evaluation points are off every training grid; the plan rejects any point that lands exactly
on a grid value, which makes the disjointness a guarantee rather than a probability.

Attribute probes (`DataConfig.probe`, uniform motion): each video also has a colour and a shape
set (0 or 1). Training keeps the grid points of the probe's trained combinations
(`_probe_training_points`); eval_id draws the trained combinations off the grid, eval_ood the
two swapped ones, one OOD level each, named by their values.

Interpolation gaps (`DataConfig.train_velocity`, uniform motion): training keeps the grid points
whose speed lies in a band (a named size is then smaller than the paper's grid; a count N widens
the grid until N such points exist); evaluation is unchanged, over the whole ID range, so the
same evaluation videos serve every layout.

Left-out boxes (`DataConfig.train_exclude`, e.g. collisions without v1, v2 in [2, 3]): training
drops the grid points inside a box, widened like the bands; evaluation covers the holes.

Both directions (`DataConfig.train_direction: both`, uniform motion): every second training
point gets direction -1, and its video is the mirror image of the right-moving one.

Composition (`DataConfig.compose`): a video's one parameter is its kind (an index into
`COMPOSE_KINDS`); its sizes, speeds and placement are drawn from its own seed when it is simulated
(phyray/sim/compose.py). A size is a count of videos (a named one its nominal count: "30K" is
30,000). Training and ID evaluation splits mix the two trained kinds, `train_share` of the first,
in a seeded order; the OOD split holds the composed kind only, as one OOD level named after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from phyray.config import (
    COMPOSE_KINDS,
    EVAL_KIND,
    NOMINAL_SIZES,
    SIZE_PRESETS,
    SPLITS,
    ConfigError,
    DataConfig,
    ValueRange,
    parse_size,
)
from phyray.sim.balls import collision_feasible

SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}
# A probe video's categorical attributes, as the index of their value set (0 or 1).
PROBE_SET_NAMES = ("color", "shape")


def grid_names(cfg: DataConfig) -> tuple[str, ...]:
    """The parameters a training grid spans."""
    return ("r1", "r2", "v1", "v2") if cfg.scenario == "collision" else ("radius", "velocity")


def param_names(cfg: DataConfig, split: str = "train") -> tuple[str, ...]:
    """A video's parameters: the grid's, then, for a probe, the colour and shape set (0 or 1),
    and, for a training split with both directions, the direction (+1 right, -1 left); a
    composition video's kind alone."""
    if cfg.compose is not None:
        return ("kind",)
    mirrored = ("direction",) if split == "train" and cfg.train_direction == "both" else ()
    return grid_names(cfg) + (PROBE_SET_NAMES if cfg.probe is not None else ()) + mirrored


def _range_of(name: str) -> str:
    return "radius" if name.startswith("r") else "velocity"


@dataclass(frozen=True)
class DatasetPlan:
    """All videos of one dataset: (N, P) parameters, OOD level per video, per-video seeds."""

    scenario: str
    split: str
    size_label: str
    seed: int
    names: tuple[str, ...]
    params: np.ndarray  # (N, P) float64, columns in `names` order
    ood_levels: np.ndarray  # (N,) object: level name or None
    video_seeds: np.ndarray  # (N,) int64
    shard_size: int

    @property
    def num_videos(self) -> int:
        return len(self.params)

    @property
    def num_shards(self) -> int:
        return max(1, math.ceil(self.num_videos / self.shard_size))

    def video_id(self, index: int) -> str:
        return f"{self.scenario}-{self.split}-{self.size_label}-s{self.seed}-{index:07d}"

    def shard_slice(self, shard: int) -> slice:
        return slice(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_videos))


# ---------------------------------------------------------------------------------------------
# Value lists and grids
# ---------------------------------------------------------------------------------------------


def _rng(seed: int, split: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_CODES[split], stream])


def value_list(cfg: DataConfig, param: str, count: int, seed: int) -> np.ndarray:
    """The `count` values a training grid uses for one parameter."""
    value_range = getattr(cfg.id, _range_of(param))[0]
    if cfg.grid_spacing == "linspace":
        return np.linspace(value_range.lo, value_range.hi, count)
    # Sorted uniform samples, one independent stream per parameter (seeded, reproducible).
    stream = 100 + grid_names(cfg).index(param)
    return np.sort(_rng(seed, "train", stream).uniform(value_range.lo, value_range.hi, count))


def grid_counts(cfg: DataConfig, size: str | int) -> tuple[str, dict[str, int], int | None]:
    """(label, values per parameter, requested count or None for a named preset)."""
    label, count = parse_size(size)
    base = cfg.grids[label if count is None else "30K"]
    counts = {p: getattr(base, _range_of(p)) for p in grid_names(cfg)}
    return label, counts, count


def _grid(cfg: DataConfig, counts: dict[str, int], seed: int) -> np.ndarray:
    """(G, P) Cartesian product of the value lists, feasible points only (a probe's: those of
    its trained combinations, with their colour and shape sets; with speed bands: those in a
    band)."""
    lists = [value_list(cfg, p, counts[p], seed) for p in grid_names(cfg)]
    mesh = np.meshgrid(*lists, indexing="ij")
    grid = np.stack([m.ravel() for m in mesh], axis=1)
    if cfg.scenario == "collision":
        grid = grid[collision_feasible(*grid.T, cfg)]
    if cfg.probe is not None:
        grid = _probe_training_points(cfg, grid)
    if cfg.train_velocity is not None:
        grid = grid[cfg.in_training_bands(grid[:, 1])]
    if cfg.train_exclude is not None:
        grid = grid[~cfg.excluded(grid, grid_names(cfg))]
    return grid


def _probe_training_points(cfg: DataConfig, grid: np.ndarray) -> np.ndarray:
    """(G, 2) radius, velocity -> (G', 4) with colour and shape sets: the points of the training
    combinations only (paper §5.3; `ProbeConfig.training_combinations`).

    A probed size or speed decides its set from the point's value, and a point whose sets make
    no training combination is dropped (velocity-size keeps slow-small and fast-large: about
    half the grid, as the paper's ~150K of 300K). A probed colour or shape then follows from the
    combination; where several combinations fit a point (a categorical attribute free to take
    either value), grid points alternate between them (the grid is later shuffled, so each
    gets an equal share, spread over the grid).
    """
    probe = cfg.probe
    combos = probe.training_combinations
    values = {"size": grid[:, 0], "velocity": grid[:, 1]}
    sets = {a: probe.set_of(a, values[a]) for a in probe.attributes if a in values}
    fits = np.ones((len(grid), len(combos)), dtype=bool)  # (G, C): combination c fits point g
    for index, combo in enumerate(combos):
        for attribute, wanted in zip(probe.attributes, combo):
            if attribute in sets:
                fits[:, index] &= sets[attribute] == wanted
    count = fits.sum(axis=1)
    keep = count > 0
    # The k-th fitting combination of point g, k = g mod its number of fitting combinations.
    rank = np.arange(len(grid)) % np.maximum(count, 1)
    choice = np.argmax(fits & (np.cumsum(fits, axis=1) == (rank + 1)[:, None]), axis=1)
    chosen = np.asarray(combos)[choice[keep]]  # (G', 2): A set, B set
    return np.concatenate([grid[keep], _categorical_sets(cfg, chosen)], axis=1)


def _categorical_sets(cfg: DataConfig, combos: np.ndarray) -> np.ndarray:
    """(N, 2) (A set, B set) -> (N, 2) float colour and shape sets (0 where not probed)."""
    columns = []
    for name in PROBE_SET_NAMES:
        if name in cfg.probe.attributes:
            columns.append(combos[:, cfg.probe.attributes.index(name)].astype(np.float64))
        else:
            columns.append(np.zeros(len(combos)))
    return np.stack(columns, axis=1)


def training_grid(cfg: DataConfig, size: str | int, seed: int) -> np.ndarray:
    """The (N, P) training points of a size, shuffled by the seed."""
    label, counts, count = grid_counts(cfg, size)
    if count is None:
        grid = _grid(cfg, counts, seed)
    else:
        base_total = math.prod(counts.values())
        scale = (count / base_total) ** (1 / len(counts))
        while True:
            scaled = {p: max(2, math.ceil(c * scale)) for p, c in counts.items()}
            grid = _grid(cfg, scaled, seed)
            if len(grid) >= count:
                break
            scale *= 1.1  # infeasible collision points ate into the grid: widen it
    if cfg.train_direction == "both":
        # Every second grid point moves left (before the shuffle, so each direction covers the
        # grid evenly).
        grid = np.concatenate([grid, np.where(np.arange(len(grid)) % 2 == 0, 1.0, -1.0)[:, None]], axis=1)
    order = _rng(seed, "train", 0).permutation(len(grid))
    grid = grid[order]
    return grid if count is None else grid[:count]


def _on_any_training_grid(cfg: DataConfig, points: np.ndarray, seed: int) -> np.ndarray:
    """Whether each point sits exactly on a value of every parameter of a named preset grid."""
    hit = np.zeros(len(points), dtype=bool)
    for label in SIZE_PRESETS:
        _, counts, _ = grid_counts(cfg, label)
        on = np.ones(len(points), dtype=bool)
        for col, p in enumerate(grid_names(cfg)):
            on &= np.isin(points[:, col], value_list(cfg, p, counts[p], seed))
        hit |= on
    return hit


# ---------------------------------------------------------------------------------------------
# Evaluation draws
# ---------------------------------------------------------------------------------------------


def _draw_union(rng: np.random.Generator, ranges: list[ValueRange], n: int) -> np.ndarray:
    """Uniform draws from a union of disjoint ranges (each picked in proportion to its width)."""
    widths = np.array([r.width for r in ranges])
    weights = widths / widths.sum() if widths.sum() > 0 else np.full(len(ranges), 1 / len(ranges))
    which = rng.choice(len(ranges), size=n, p=weights)
    lo = np.array([r.lo for r in ranges])[which]
    hi = np.array([r.hi for r in ranges])[which]
    return rng.uniform(lo, hi)


def _eval_points(
    cfg: DataConfig, rng: np.random.Generator, n: int, ood_params: list[str], seed: int
) -> np.ndarray:
    """n usable evaluation points with `ood_params` drawn OOD and the rest ID."""
    ranges = {p: getattr(cfg.ood if p in ood_params else cfg.id, _range_of(p)) for p in grid_names(cfg)}
    return _draw_points(cfg, rng, n, ranges, seed)


def _draw_points(
    cfg: DataConfig, rng: np.random.Generator, n: int, ranges: dict[str, list[ValueRange]], seed: int
) -> np.ndarray:
    """n usable (n, P) points of the grid's parameters, each drawn from its union of ranges: none
    on a training grid value and, for collisions, each with a placement."""
    points = np.empty((0, len(ranges)))
    while len(points) < n:
        want = 2 * (n - len(points)) + 16
        batch = np.stack([_draw_union(rng, ranges[p], want) for p in grid_names(cfg)], axis=1)
        keep = ~_on_any_training_grid(cfg, batch, seed)
        if cfg.scenario == "collision":
            keep &= collision_feasible(*batch.T, cfg)
        points = np.concatenate([points, batch[keep]])
    return points[:n]


def _probe_eval_points(
    cfg: DataConfig, rng: np.random.Generator, n: int, combo: tuple[int, int], seed: int
) -> np.ndarray:
    """n evaluation points of one probe combination: a probed size or speed drawn from its set's
    range, the others from the ID range, none on a training grid value."""
    ranges = {"radius": cfg.id.radius, "velocity": cfg.id.velocity}
    for attribute, index in zip(cfg.probe.attributes, combo):
        if attribute in ("size", "velocity"):
            ranges["radius" if attribute == "size" else "velocity"] = [getattr(cfg.probe, attribute)[index]]
    sets = _categorical_sets(cfg, np.tile(np.asarray(combo), (n, 1)))
    return np.concatenate([_draw_points(cfg, rng, n, ranges, seed), sets], axis=1)


def _spread(count: int, parts: int) -> list[int]:
    """count split into `parts` near-equal parts, the first parts taking the remainder."""
    return [count // parts + (i < count % parts) for i in range(parts)]


def eval_counts(cfg: DataConfig, split: str, size: str | int | None) -> tuple[str, int]:
    if size is None:
        default = cfg.eval_sizes[EVAL_KIND[split]]
        return str(default), default
    label, count = parse_size(size)
    if count is None:
        raise ConfigError(f"size: {label!r} names a training grid; give {split} a count like 500")
    return label, count


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------


def _video_seeds(seed: int, split: str, n: int) -> np.ndarray:
    """Independent per-video seeds (int64) so each row alone reproduces its video."""
    states = np.random.SeedSequence([seed, SPLIT_CODES[split], 7]).generate_state(n, np.uint64)
    return (states >> np.uint64(1)).astype(np.int64)


def _compose_kinds(cfg: DataConfig, split: str, size: str | int | None, seed: int) -> tuple[str, np.ndarray, np.ndarray]:
    """A composition split's size label, (N, 1) kind codes and OOD levels (see the docstring)."""
    compose = cfg.compose
    if split == "train":
        label, count = parse_size(size if size is not None else "30K")
        count = count or NOMINAL_SIZES[label]
        kinds = compose.training_kinds
    else:
        label, count = eval_counts(cfg, split, size)
        kinds = compose.train if EVAL_KIND[split] == "eval_id" else (compose.eval,)
    if len(kinds) == 1:
        chosen = np.zeros(count, dtype=np.int64)
    else:
        # The first kind takes train_share of the videos, the rest share the remainder evenly.
        first = round(count * compose.train_share)
        rest = _spread(count - first, len(kinds) - 1)
        chosen = np.repeat(np.arange(len(kinds)), [first, *rest])
        chosen = chosen[_rng(seed, split, 0).permutation(count)]
    codes = np.array([COMPOSE_KINDS.index(kind) for kind in kinds], dtype=np.float64)[chosen]
    composed = split != "train" and EVAL_KIND[split] == "eval_ood"
    levels = np.full(count, compose.eval if composed else None, dtype=object)
    return label, codes[:, None], levels


def plan_dataset(cfg: DataConfig, split: str, size: str | int | None, seed: int) -> DatasetPlan:
    """Every video of a split: parameters, OOD level, id, seed and shard."""
    if split not in SPLITS:
        raise ConfigError(f"split: unknown {split!r}; choose from {', '.join(SPLITS)}")
    if seed < 0:
        raise ConfigError(f"seed: must be >= 0, got {seed}")
    names = param_names(cfg, split)
    if cfg.compose is not None:
        label, params, levels = _compose_kinds(cfg, split, size, seed)
    elif split == "train":
        label, _ = parse_size(size if size is not None else "30K")
        params = training_grid(cfg, label, seed)
        levels = np.full(len(params), None, dtype=object)
    else:
        label, count = eval_counts(cfg, split, size)
        rng = _rng(seed, split, 1)
        if cfg.probe is not None:
            # ID: the trained combinations at points off the grid; OOD: the swapped ones, one
            # level each, named by their values.
            combos = cfg.probe.train if EVAL_KIND[split] == "eval_id" else cfg.probe.swapped
            per_combo = _spread(count, len(combos))
            params = np.concatenate([_probe_eval_points(cfg, rng, k, c, seed) for c, k in zip(combos, per_combo)])
            if EVAL_KIND[split] == "eval_id":
                levels = np.full(count, None, dtype=object)
            else:
                levels = np.concatenate([np.full(k, cfg.probe.combo_label(c), dtype=object) for c, k in zip(combos, per_combo)])
        elif EVAL_KIND[split] == "eval_id":
            params = _eval_points(cfg, rng, count, [], seed)
            levels = np.full(count, None, dtype=object)
        else:
            # Spread the count evenly over the levels (the first levels take the remainder).
            level_names = list(cfg.ood_levels)
            per_level = _spread(count, len(level_names))
            chunks = [_eval_points(cfg, rng, k, cfg.ood_levels[name], seed) for name, k in zip(level_names, per_level)]
            params = np.concatenate(chunks) if chunks else np.empty((0, len(names)))
            levels = np.concatenate([np.full(k, name, dtype=object) for name, k in zip(level_names, per_level)])
    if len(params) == 0:
        raise ConfigError(f"size: {label!r} gives no videos")
    return DatasetPlan(
        scenario=cfg.scenario,
        split=split,
        size_label=label,
        seed=seed,
        names=names,
        params=params,
        ood_levels=levels,
        video_seeds=_video_seeds(seed, split, len(params)),
        shard_size=cfg.shard_size,
    )
