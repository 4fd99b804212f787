"""Labelled physics violations made from ground truth, to calibrate the abnormal-rate judge.

`corrupt(indices, kind, rng)` takes a ground-truth PHYRE video as palette indices (T, H, W) and
edits one object (a blob of phyray/eval/objects.py: one object, or a group of touching objects
of one colour) from a random frame k on, following the object's chain of plain moves (until it
merges, splits or the video ends):

- vanish: the object is erased.
- appear: a copy of an object is pasted on empty background at frame k and moves as the
  original does.
- teleport: the object jumps by at least `teleport_distance` of the side to free background and
  moves on from there.
- morph: the object is scaled (area x0.36-0.56 or x1.7-2.25) or, keeping its area, stretched
  by 1.5-1.8 along a random direction; stretches only solid objects (a ball or a bar), since
  the judge cannot tell a hollow blob's legitimate change of shape from a stretch.
- freeze: an object moving through the air stops where it was at frame k and hangs there (the
  labelled frame is k + 1, the first that differs).
- interpenetrate: a moving object is slid half into a nearby, larger object of another colour
  (drawn under it) and stays glued to it. Objects of one colour are left out: PHYRE's own
  ground truth overlaps them (a bar through a jar's wall), so such an overlap is no violation.
- static_moves: a static (black) object shifts by 2-5 % of the side.
- colour_swap: the object takes another PHYRE object colour.

Edits paint only onto background, so the moved or pasted object passes under the others. The
result is a `Corruption`: the frames, the kind, the frame k and what was done. `CorruptionError`
says the video offers no suitable object or place (e.g. nothing airborne to freeze).
`corrupt_dataset` (CLI `phyray eval corrupt`) writes a labelled copy of a ground-truth dataset.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from scipy import ndimage

from phyray.artifacts import Identity, write_product
from phyray.data.shards import (
    PALETTE8,
    ShardError,
    dataset_id,
    encode_palette_frames,
    read_shard,
    shard_name,
    shard_paths,
    write_shard,
)
from phyray.eval.abnormal import UnknownPalette, phyre_indices
from phyray.eval.objects import BACKGROUND, Blobs, Links, ObjectConfig, find_blobs, link_blobs
from phyray.sim.phyre import PHYRE_PALETTE

CORRUPTIONS = (
    "vanish",
    "appear",
    "teleport",
    "morph",
    "freeze",
    "interpenetrate",
    "static_moves",
    "colour_swap",
)
STATIC_COLOUR = 6  # black
OBJECT_COLOURS = (1, 2, 3, 4, 5, 6)  # PHYRE's red, green, blue, purple, gray, black
TRIES = 50  # random placements tried before giving up on an object


class CorruptionError(ValueError):
    """The video offers no object or place for this corruption."""


@dataclass(frozen=True)
class CorruptConfig:
    """Sizes of the edits (fractions of the frame side), chosen well beyond the judge's
    tolerances so that each corruption is a clear violation, yet inside the frame."""

    teleport_distance: float = 0.3  # the judge's teleport limit is 0.2
    shrink: tuple[float, float] = (0.6, 0.75)  # linear scale factors (area x0.36-0.56)
    grow: tuple[float, float] = (1.3, 1.5)  # (area x1.7-2.25)
    stretch: tuple[float, float] = (1.5, 1.8)  # area-preserving stretch factor
    static_shift: tuple[float, float] = (0.02, 0.05)
    moving_speed: float = 0.01  # freeze: the object moves at least this much per frame
    clearance: float = 0.012  # free space kept around pasted / frozen objects (3 px at 256²)
    overlap: float = 0.5  # interpenetrate: share of the object's area inside the other
    first_frame: int = 1  # k is drawn from first_frame .. T - 3 (frame 0 conditions the model)
    objects: ObjectConfig = field(default_factory=ObjectConfig)


@dataclass(frozen=True)
class Corruption:
    """A corrupted video: frames (T, H, W) uint8 palette indices, the kind, the first corrupted
    frame, and details (the edited blob's frame-k centroid, offsets, factors)."""

    frames: np.ndarray
    kind: str
    frame: int
    details: dict[str, Any]


def corrupt(
    indices: np.ndarray, kind: str, rng: np.random.Generator, config: CorruptConfig = CorruptConfig()
) -> Corruption:
    """Apply corruption `kind` (one of CORRUPTIONS) to a (T, H, W) palette-index video."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; choose from {', '.join(CORRUPTIONS)}")
    side = indices.shape[2]
    blobs = find_blobs(indices, config.objects.min_area_px * config.objects.scale(side) ** 2)
    links = link_blobs(blobs, config.objects)
    editor = _Editor(indices, blobs, links, config, rng)
    frame, details = getattr(editor, kind)()
    return Corruption(editor.frames, kind, frame, details)


class _Editor:
    """The corruptions of one video: each method edits `frames` and returns (k, details)."""

    def __init__(self, indices, blobs: Blobs, links: Links, config: CorruptConfig, rng: np.random.Generator):
        self.frames = indices.copy()
        self.blobs, self.links, self.config, self.rng = blobs, links, config, rng
        self.t_count, self.h, self.w = indices.shape

    # -- choosing ---------------------------------------------------------------------------------

    def _pick(self, eligible) -> tuple[int, int]:
        """A random (frame k, blob) among the blobs for which `eligible(blob)` holds."""
        blobs = self.blobs
        frames = np.arange(self.config.first_frame, self.t_count - 2)
        candidates = [
            j for j in range(len(blobs)) if blobs.frame[j] in frames and eligible(j)
        ]
        if not candidates:
            raise CorruptionError("no suitable object")
        j = candidates[self.rng.integers(len(candidates))]
        return int(blobs.frame[j]), int(j)

    def _chain(self, j: int) -> list[int]:
        """Blob j and its plain-move successors (the same object until it merges or splits)."""
        chain = [j]
        while True:
            after = self.links.children[chain[-1]]
            if len(after) != 1 or self.links.single_parent(after[0]) != chain[-1]:
                return chain
            chain.append(after[0])

    def _mask(self, j: int) -> np.ndarray:
        return self.blobs.mask(j)

    def _dynamic(self, j: int) -> bool:
        return self.blobs.colour[j] != STATIC_COLOUR

    # -- painting ---------------------------------------------------------------------------------

    def _erase(self, chain: list[int]) -> None:
        for j in chain:
            self.frames[self.blobs.frame[j]][self._mask(j)] = BACKGROUND

    def _paint(self, t: int, mask: np.ndarray, colour: int) -> None:
        """Paint `colour` where `mask` is set and the frame is background (under the others)."""
        frame = self.frames[t]
        frame[mask & (frame == BACKGROUND)] = colour

    def _shift(self, mask: np.ndarray, offset: np.ndarray) -> np.ndarray | None:
        """The mask moved by (x, y) `offset` px, or None if any of it leaves the frame."""
        dx, dy = (int(round(v)) for v in offset)
        rows, cols = np.nonzero(mask)
        rows, cols = rows + dy, cols + dx
        if rows.min() < 0 or cols.min() < 0 or rows.max() >= self.h or cols.max() >= self.w:
            return None
        moved = np.zeros_like(mask)
        moved[rows, cols] = True
        return moved

    def _free(self, t: int, mask: np.ndarray, ignore: np.ndarray | None = None) -> bool:
        """Whether `mask`, grown by the clearance, covers only background (or `ignore`) at t."""
        grow = max(1, int(round(self.config.clearance * self.w)))
        rows, cols = np.nonzero(mask)
        window = np.s_[
            max(0, rows.min() - grow) : rows.max() + grow + 1, max(0, cols.min() - grow) : cols.max() + grow + 1
        ]
        around = ndimage.binary_dilation(mask[window], iterations=grow)
        occupied = self.frames[t][window] != BACKGROUND
        if ignore is not None:
            occupied &= ~ignore[window]
        return not (around & occupied).any()

    def _random_offset(self, low: float, high: float) -> np.ndarray:
        angle = self.rng.uniform(0, 2 * np.pi)
        return self.rng.uniform(low, high) * self.w * np.array([np.cos(angle), np.sin(angle)])

    def _moved_copy(self, j: int, offset: np.ndarray, erase: bool) -> None:
        """Move (or copy) blob j's chain by `offset` from its frame on; after the chain ends the
        copy keeps its last place."""
        chain = self._chain(j)
        masks = [self._shift(self._mask(k), offset) for k in chain]
        colour = self.blobs.colour[j]
        if erase:
            self._erase(chain)
        last = None
        for k, mask in zip(chain, masks):
            if mask is not None:
                last = mask
            if last is not None:
                self._paint(self.blobs.frame[k], last, colour)
        for t in range(self.blobs.frame[chain[-1]] + 1, self.t_count):
            self._paint(t, last, colour)

    def _place(self, j: int, low: float, high: float) -> np.ndarray:
        """A random offset of length low..high (of the side) taking blob j to free background."""
        t, mask = self.blobs.frame[j], self._mask(j)
        for _ in range(TRIES):
            offset = self._random_offset(low, high)
            moved = self._shift(mask, offset)
            if moved is not None and self._free(t, moved, ignore=mask):
                return offset
        raise CorruptionError("no free place")

    # -- the corruptions --------------------------------------------------------------------------

    def vanish(self):
        k, j = self._pick(lambda j: True)
        self._erase(self._chain(j))
        return k, {"centroid": self.blobs.centroid[j].tolist()}

    def appear(self):
        k, j = self._pick(lambda j: True)
        offset = self._place(j, 0.1, 0.6)
        self._moved_copy(j, offset, erase=False)
        return k, {"source": self.blobs.centroid[j].tolist(), "offset": offset.tolist()}

    def teleport(self):
        k, j = self._pick(self._dynamic)
        offset = self._place(j, self.config.teleport_distance, 0.7)
        self._moved_copy(j, offset, erase=True)
        return k, {"centroid": self.blobs.centroid[j].tolist(), "offset": offset.tolist()}

    def static_moves(self):
        k, j = self._pick(lambda j: not self._dynamic(j))
        offset = self._place(j, *self.config.static_shift)
        self._moved_copy(j, offset, erase=True)
        return k, {"centroid": self.blobs.centroid[j].tolist(), "offset": offset.tolist()}

    def colour_swap(self):
        k, j = self._pick(lambda j: True)
        colours = [c for c in OBJECT_COLOURS if c != self.blobs.colour[j]]
        colour = int(colours[self.rng.integers(len(colours))])
        for blob in self._chain(j):
            self.frames[self.blobs.frame[blob]][self._mask(blob)] = colour
        return k, {"centroid": self.blobs.centroid[j].tolist(), "colour": colour}

    def morph(self):
        rng, config = self.rng, self.config
        for _ in range(TRIES):
            stretch = rng.random() < 0.5
            # An area-keeping stretch only shows on a solid object (a ball or a bar): the judge
            # cannot tell a hollow or branched blob's legitimate change of shape (a jar, the
            # crossing sticks, objects touching) from a stretch, so those are only scaled.
            k, j = self._pick(self._solid if stretch else (lambda j: True))
            if stretch:
                factor, angle = rng.uniform(*config.stretch), rng.uniform(0, np.pi)
                direction = np.array([np.cos(angle), np.sin(angle)])
                # Stretch by `factor` along `direction`, squeeze by 1/factor across: area kept.
                normal = np.array([-direction[1], direction[0]])
                matrix = factor * np.outer(direction, direction) + np.outer(normal, normal) / factor
                what = f"stretch x{factor:.2f} at {np.degrees(angle):.0f} deg"
            else:
                factor = rng.uniform(*(config.shrink if rng.random() < 0.5 else config.grow))
                matrix, what = np.eye(2) * factor, f"scale x{factor:.2f}"
            own = self._mask(j)
            # The morphed object must not reach another (that would be a contact, not a morph).
            if self._free(k, self._transform(own, self.blobs.centroid[j], matrix), ignore=own):
                break
        else:
            raise CorruptionError("no object can morph without touching another")
        chain = self._chain(j)
        masks = [self._transform(self._mask(b), self.blobs.centroid[b], matrix) for b in chain]
        self._erase(chain)
        for b, mask in zip(chain, masks):
            self._paint(self.blobs.frame[b], mask, self.blobs.colour[j])
        return k, {"centroid": self.blobs.centroid[j].tolist(), "morph": what}

    def _solid(self, j: int) -> bool:
        """A single ball or bar: area / (12 σ_major σ_minor) near 1 (see abnormal.py)."""
        axes = self.blobs.axes[j]
        solidity = self.blobs.area[j] / max(12 * axes[0] * axes[1], 1e-9)
        return self.links.multiplicity[j] == 1 and 0.85 <= solidity <= 1.2

    def _transform(self, mask: np.ndarray, centre: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """The mask mapped by (x, y) -> centre + matrix @ ((x, y) - centre), nearest pixel."""
        rows, cols = np.mgrid[0 : self.h, 0 : self.w]
        points = np.stack([cols + 0.5, rows + 0.5], axis=-1) - centre  # (H, W, 2) x, y
        source = points @ np.linalg.inv(matrix).T + centre  # where each output pixel comes from
        src_c, src_r = np.floor(source[..., 0]).astype(int), np.floor(source[..., 1]).astype(int)
        inside = (src_r >= 0) & (src_r < self.h) & (src_c >= 0) & (src_c < self.w)
        out = np.zeros_like(mask)
        out[inside] = mask[src_r[inside], src_c[inside]]
        return out

    def freeze(self):
        speed = self.config.moving_speed * self.w

        def airborne(j: int) -> bool:
            if not self._dynamic(j) or self.links.single_parent(j) is None:
                return False
            if np.linalg.norm(self.links.velocity[j]) < speed:
                return False
            b = self.blobs.bbox[j]
            clear = max(1, int(round(self.config.clearance * self.w)))
            if b[0] < clear or b[1] < clear or b[2] > self.h - clear or b[3] > self.w - clear:
                return False
            return self._free(self.blobs.frame[j], self._mask(j), ignore=self._mask(j))

        k, j = self._pick(airborne)
        chain = self._chain(j)
        mask, colour = self._mask(j), self.blobs.colour[j]
        self._erase(chain[1:])
        for t in range(k + 1, self.t_count):
            self._paint(t, mask, colour)
        return k + 1, {"centroid": self.blobs.centroid[j].tolist()}

    def interpenetrate(self):
        blobs = self.blobs

        def hosts(j: int) -> np.ndarray:
            """Blobs of another colour in j's frame, at least as large as j."""
            others = blobs.in_frame(blobs.frame[j])
            return others[(blobs.colour[others] != blobs.colour[j]) & (blobs.area[others] >= blobs.area[j])]

        k, j = self._pick(lambda j: self._dynamic(j) and len(hosts(j)) > 0)
        candidates = hosts(j)
        gaps = [np.linalg.norm(self._nearest_pixel(h, blobs.centroid[j]) - blobs.centroid[j]) for h in candidates]
        for host in candidates[np.argsort(gaps)][:3]:  # the nearest first
            offset, share = self._overlap_offset(j, host)
            if offset is not None:
                break
        else:
            raise CorruptionError("no overlap reachable")
        glued = blobs.centroid[j] + offset - blobs.centroid[host]  # j's place relative to the host
        self._erase(self._chain(j))
        mask, colour = self._mask(j), blobs.colour[j]
        host_chain = self._chain(host)
        place = {int(blobs.frame[b]): blobs.centroid[b] for b in host_chain}
        last = blobs.centroid[host_chain[-1]]
        for t in range(k, self.t_count):
            moved = self._shift(mask, place.get(t, last) + glued - blobs.centroid[j])
            if moved is not None:
                self._paint(t, moved, colour)
        return k, {"centroid": blobs.centroid[j].tolist(), "into": blobs.centroid[host].tolist(), "share": share}

    def _nearest_pixel(self, j: int, point: np.ndarray) -> np.ndarray:
        rows, cols = np.nonzero(self._mask(j))
        pixels = np.stack([cols + 0.5, rows + 0.5], axis=1)
        return pixels[np.linalg.norm(pixels - point, axis=1).argmin()]

    def _overlap_offset(self, j: int, host: int) -> tuple[np.ndarray | None, float]:
        """An offset sliding blob j towards the host's nearest pixel and on, until the wanted
        share of j lies on the host; (None, 0) if no offset gets at least 0.3 of it there."""
        mask, target = self._mask(j), self._mask(host)
        centre = self.blobs.centroid[j]
        direction = self._nearest_pixel(host, centre) - centre
        best, best_share = None, 0.0
        for fraction in np.linspace(0.5, 2.5, 41):
            moved = self._shift(mask, fraction * direction)
            if moved is None:
                continue
            share = float((moved & target).sum() / mask.sum())
            if share >= 0.3 and abs(share - self.config.overlap) < abs(best_share - self.config.overlap):
                best, best_share = fraction * direction, share
        return best, best_share


# ---------------------------------------------------------------------------------------------
# A corrupted copy of a dataset
# ---------------------------------------------------------------------------------------------

CLEAN = "none"  # the label of an unchanged ground-truth copy
LABEL_FIELDS = [
    ("source_video_id", pa.string()),
    ("corruption", pa.string()),  # a CORRUPTIONS kind, or "none"
    ("corruption_frame", pa.int32()),  # the first corrupted frame (null when none)
    ("corruption_details", pa.string()),  # JSON: what was done
]
# Ground-truth columns that no longer describe a corrupted video.
_STALE_COLUMNS = ("objects",)


def corrupt_dataset(
    reference: str | Path,
    out: str | Path,
    kinds: Sequence[str] = CORRUPTIONS,
    seed: int = 0,
    with_clean: bool = True,
    shard_size: int = 1000,
    config: CorruptConfig = CorruptConfig(),
    log=print,
) -> dict[str, Any]:
    """Write a labelled copy of a PHYRE ground-truth dataset: for every video, one corrupted
    copy per kind it allows (video_id `<id>-<kind>`) and, with `with_clean`, the video itself
    (`<id>-none`), each with `corruption`, `corruption_frame`, `corruption_details` and
    `source_video_id`. Frames stay palette indices ("zstd-palette8"). Returns the manifest
    (its `counts` give the videos per label, `skipped` the corruptions a video did not allow).

    The copies are made in memory first (~30 KB per encoded video), then written as shards.
    """
    unknown = sorted(set(kinds) - set(CORRUPTIONS))
    if unknown or not kinds:
        raise ValueError(
            f"--kinds: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(CORRUPTIONS)}"
        )
    reference, out = Path(reference), Path(out)
    identity = Identity(
        "corrupted",
        {"format_version": 1, "kinds": list(kinds), "seed": seed, "with_clean": with_clean, "shard_size": shard_size},
        {"reference": dataset_id(reference)},
    )
    rows: list[dict[str, Any]] = []
    skipped: dict[str, int] = dict.fromkeys(kinds, 0)
    schema = None
    for path in shard_paths(reference):
        table = read_shard(path)
        if "frames" not in table.column_names:
            raise ShardError(f"{path}: no frames column; not a video shard")
        if schema is None:
            kept = [f for f in table.schema if f.name not in _STALE_COLUMNS]
            schema = pa.schema(kept + [pa.field(*f) for f in LABEL_FIELDS])
        for row in table.to_pylist():
            name = f"{path}: video {row['video_id']}"
            if not row["frames"] or row["frames_encoding"] != PALETTE8:
                raise ShardError(f"{name}: needs palette-encoded ground-truth frames ({PALETTE8})")
            try:
                indices = phyre_indices(row, name)
            except UnknownPalette as err:
                raise ShardError(str(err)) from None
            base = {k: v for k, v in row.items() if k not in _STALE_COLUMNS}
            base["palette"] = PHYRE_PALETTE.tolist()
            if with_clean:
                rows.append(_labelled(base, indices, CLEAN, None, {}))
            for kind in kinds:
                # One stream per (seed, video, kind): the same video gets the same corruption
                # whatever else is asked for.
                rng = np.random.default_rng([seed, zlib.crc32(row["video_id"].encode()), CORRUPTIONS.index(kind)])
                try:
                    made = corrupt(indices, kind, rng, config)
                except CorruptionError:
                    skipped[kind] += 1
                    continue
                rows.append(_labelled(base, made.frames, kind, made.frame, made.details))
    if not rows:
        raise ShardError(f"{reference}: no videos to corrupt")
    shards = [rows[i : i + shard_size] for i in range(0, len(rows), shard_size)]

    def write(missing: list[int]):
        for i in missing:
            columns = {f.name: [r.get(f.name) for r in shards[i]] for f in schema}
            yield write_shard(pa.Table.from_pydict(columns, schema=schema), out / shard_name(i))

    labels = ([CLEAN] if with_clean else []) + list(kinds)
    counts = {label: sum(r["corruption"] == label for r in rows) for label in labels}
    return write_product(
        out, identity, [shard_name(i) for i in range(len(shards))], [len(s) for s in shards], write, log=log,
        scenario="combinatorial", frames_encoding=PALETTE8, counts=counts, skipped=skipped,
    )


def _labelled(base: dict[str, Any], indices: np.ndarray, kind: str, frame: int | None, details: dict) -> dict[str, Any]:
    """A copy of row `base` with these frames and labels."""
    row = dict(base)
    row["video_id"] = f"{base['video_id']}-{kind}"
    row["source_video_id"] = base["video_id"]
    row["frames"] = encode_palette_frames(np.ascontiguousarray(indices, dtype=np.uint8))
    row["corruption"] = kind
    row["corruption_frame"] = frame
    row["corruption_details"] = json.dumps(details, sort_keys=True)
    return row
