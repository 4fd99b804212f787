"""Identity of every cached product, and the one resumable writer of shard products.

A product is anything phyray makes once and reuses: a dataset, a trained VAE, latents, a DiT
trial's training run, rollouts, an evaluation report. Its identity is a short hash of

- its `kind`,
- the settings that change its bytes (never paths, never settings such as `log_every`,
  `tracking_uri` or `cpus_per_worker` that do not change the result), and
- the identities of its inputs (a DiT's latents, the latents' dataset and VAE, ...),

so the same settings on the same inputs name the same product on any machine and under any
mount point, and a changed setting names a new product that lands in a new place while every
product it does not affect keeps its identity and is reused. Which fields enter which identity:

| product  | settings                                                       | inputs            |
|----------|----------------------------------------------------------------|-------------------|
| dataset  | the whole data config, split, size, seed, shard layout         | -                 |
| PHYRE    | templates, seeds, trials, split, shard size                    | -                 |
| VAE      | `phyray.train.trainer.result_fields` of its TrainConfig        | its training set  |
| latents  | cond_frames, the latent format                                 | dataset, VAE      |
| DiT      | `result_fields` of its TrainConfig                             | its latents       |
| reconstructions | format (the VAE's posterior mean: no seed)              | VAE, reference    |
| rollouts | DDIM steps, rollout seed (the trial's), cond_frames, precision | DiT, reference    |
| report   | format, parser, cond_frames, SSIM on/off, paper filter, bootstrap | each split's rollouts |
| scores   | format, parser, cond_frames, metrics on/off, paper filter (a reference's own floor: its videos' ids and shape too) | scored set, reference |
| trial    | its grid cell and seed (an MLflow run, tag `phyray.trial_id`)  | DiT, report       |
| study    | the study config but paths, tracking, resources, plan (parent run) | -             |

A product's directory is named `<label>-<id>`, its manifest (or export meta) stores the
identity record `{kind, id, settings, inputs}`, and its MLflow run (VAE, trial, study) carries
`phyray.<kind>_id`. Absolute paths are recorded beside an identity for people (`sources`),
never inside it, so moving or re-mounting `data_dir` reuses everything.

Shard products (datasets, latents, rollouts, reconstructions) are all written by `write_product`:

1. a directory holding another product (by its manifest or in-progress plan) is refused with a
   message naming both identities;
2. `.plan.json` (the identity and the shard sizes) is written before the first shard;
3. each shard is written under a temporary name and renamed, and its checksum appended to
   `.shards.jsonl` as it finishes; on a rerun a shard counts as done only if its file still
   has that checksum;
4. the manifest is written last, by atomic rename, and the plan and journal removed.

A finished product is verified against its manifest when it is reused; a corrupt shard is
remade (one line says so) and the manifest rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from phyray import __version__

MANIFEST = "manifest.json"
PLAN_FILE = ".plan.json"
JOURNAL = ".shards.jsonl"
ID_LENGTH = 12


class ProductError(ValueError):
    """A directory that holds another product, or a product that cannot be used; names both."""


# ---------------------------------------------------------------------------------------------
# Identity
# ---------------------------------------------------------------------------------------------


def digest(obj: Any, length: int = ID_LENGTH) -> str:
    """Short sha256 of canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def result_settings(
    settings: dict[str, Any], non_result: Iterable[str] = (), later_defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A config's dump (nested dicts) cut to what enters an identity: without the dotted fields in
    `non_result`, and without each field of `later_defaults` that holds its default there (fields
    added after products were first named by identity, left out at the behaviour from before they
    existed, so adding them renamed nothing). Cuts `settings` in place and returns it."""
    later_defaults = later_defaults or {}
    for name in [*non_result, *later_defaults]:
        *parents, leaf = name.split(".")
        node = settings
        for part in parents:
            node = node[part]
        if name not in later_defaults or node[leaf] == later_defaults[name]:
            del node[leaf]
    return settings


@dataclass(frozen=True)
class Identity:
    """What makes a product itself: its kind, its result-changing settings, its inputs' ids."""

    kind: str
    settings: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)  # role -> input product's id

    @property
    def id(self) -> str:
        return digest({"kind": self.kind, "settings": self.settings, "inputs": self.inputs})

    def record(self) -> dict[str, Any]:
        """The form stored in manifests and export meta."""
        return {"kind": self.kind, "id": self.id, "settings": self.settings, "inputs": self.inputs}

    def name(self, label: str) -> str:
        """The product's directory name: a label for people, then the id."""
        return f"{label}-{self.id}"

    def describe(self) -> str:
        return f"{self.kind} {self.id}"


def describe_record(record: dict[str, Any] | None) -> str:
    """One phrase naming a stored identity record (or its absence)."""
    if not record:
        return "a product without an identity (made by an older phyray)"
    return f"{record.get('kind')} {record.get('id')}"


# ---------------------------------------------------------------------------------------------
# Atomic files and checksums
# ---------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside `path` with the permissions a plain open() would give."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename over `path`."""
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def kept_json(path: Path | None, make: Callable[[], Any]) -> Any:
    """`make()`'s JSON result, kept at `path` (atomically) and read back on the next call instead
    of making it again; `path` None keeps nothing. The caller names `path` by the identity of
    what `make` reads and the settings that change it."""
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    value = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(value).encode())
    return value


def write_files(out: Path, contents: dict[str, bytes]) -> dict[str, Path]:
    """Write each {name: bytes} into `out`, each atomically; returns {name: path}."""
    files = {}
    for name, content in contents.items():
        atomic_write_bytes(out / name, content)
        files[name] = out / name
    return files


def shard_entry(path: Path, num_videos: int) -> dict[str, Any]:
    """A finished shard's manifest entry."""
    return {"file": path.name, "num_videos": num_videos, "sha256": sha256_file(path), "bytes": path.stat().st_size}


# ---------------------------------------------------------------------------------------------
# Reading and verifying
# ---------------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ProductError(f"{path}: corrupt ({err})") from None


def stored_identity(directory: Path) -> dict[str, Any] | None:
    """The identity record of what `directory` holds or is being made into, if anything."""
    for name in (MANIFEST, PLAN_FILE):
        if (directory / name).is_file():
            return read_json(directory / name).get("identity") or {}
    return None


def identity_of(manifest: dict[str, Any], where: Path | str) -> dict[str, Any]:
    """A product manifest's identity record, or a ProductError naming a product made without one."""
    record = manifest.get("identity")
    if not record:
        raise ProductError(f"{where}: has no identity (made by an older phyray); make it again")
    return record


# Shards already checked in this process, keyed by (path, size, mtime): a reader checks each
# shard once, and a rewritten or modified file is checked again.
_verified: set[tuple[str, int, int, str]] = set()


def verify_shard(path: Path, sha256: str) -> None:
    """Raise ProductError naming the shard if it is missing or its checksum differs."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ProductError(f"{path}: listed in {MANIFEST} but missing") from None
    key = (str(path), stat.st_size, stat.st_mtime_ns, sha256)
    if key in _verified:
        return
    if sha256_file(path) != sha256:
        raise ProductError(f"{path}: checksum does not match {MANIFEST}; the shard is corrupt")
    _verified.add(key)


# ---------------------------------------------------------------------------------------------
# The one resumable writer
# ---------------------------------------------------------------------------------------------


def prepare_out(out: Path) -> None:
    """Create the output directory, failing with one line naming it if that is impossible."""
    if out.exists() and not out.is_dir():
        raise ProductError(f"{out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProductError(f"{out}: cannot create directory ({err.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ProductError(f"{out}: directory is not writable")


def _refuse_other(out: Path, identity: Identity) -> None:
    stored = stored_identity(out)
    if stored is not None and stored.get("id") != identity.id:
        raise ProductError(
            f"{out}: holds {describe_record(stored)}, not {identity.describe()} "
            f"(settings {json.dumps(identity.settings, sort_keys=True)[:200]}); choose another directory or delete it"
        )


def _journal_entries(out: Path) -> dict[str, dict[str, Any]]:
    """Shards finished by an earlier, interrupted run (a torn last line is ignored)."""
    entries = {}
    if (out / JOURNAL).is_file():
        for line in (out / JOURNAL).read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            entries[entry["file"]] = entry
    return entries


def _is_intact(out: Path, entry: dict[str, Any] | None, num_videos: int) -> bool:
    path = out / entry["file"] if entry else None
    if path is None or entry["num_videos"] != num_videos or not path.is_file():
        return False
    try:
        verify_shard(path, entry["sha256"])
    except ProductError:
        return False
    return True


def write_product(
    out: Path,
    identity: Identity,
    shard_files: list[str],
    shard_sizes: list[int],
    run_shards: Callable[[list[int]], Iterable[dict[str, Any]]],
    log: Callable[[str], None] = print,
    **manifest_fields: Any,
) -> dict[str, Any]:
    """Make (or finish, or verify) a shard product in `out`; returns its manifest.

    Args:
        out: the product's directory (created).
        identity: what the product is; a directory holding another is refused.
        shard_files: each shard's file name, in shard order.
        shard_sizes: videos per shard, in shard order.
        run_shards: shard indices -> an iterable of the manifest entries (`shard_entry`) of
            those shards as each is written; it decides where the work runs (Ray tasks, an
            actor pool, this process).
        log: where a repaired shard is reported (one line).
        **manifest_fields: what else the manifest records (resolution, counts, sources, ...).
    """
    prepare_out(out)
    _refuse_other(out, identity)
    known: dict[str, dict[str, Any]] = {}
    if (out / MANIFEST).is_file():
        known = {e["file"]: e for e in read_json(out / MANIFEST)["shards"]}
    known |= _journal_entries(out)
    missing = [i for i, name in enumerate(shard_files) if not _is_intact(out, known.get(name), shard_sizes[i])]
    if not missing and (out / MANIFEST).is_file():
        return read_json(out / MANIFEST)

    for i in missing:
        if shard_files[i] in known and (out / shard_files[i]).is_file():
            log(f"{out / shard_files[i]}: checksum does not match its record; remaking it")
    atomic_write_json(out / PLAN_FILE, {"identity": identity.record(), "shards": dict(zip(shard_files, shard_sizes))})
    (out / MANIFEST).unlink(missing_ok=True)  # no manifest vouches for a product being remade
    if missing:  # else killed after its last shard, before its manifest: only that is left to do
        with open(out / JOURNAL, "a") as journal:
            for entry in run_shards(missing):
                known[entry["file"]] = entry
                journal.write(json.dumps(entry) + "\n")
                journal.flush()

    entries = [known[name] for name in shard_files]
    manifest = {
        "phyray_version": __version__,
        "identity": identity.record(),
        **manifest_fields,
        "num_videos": sum(shard_sizes),
        "num_shards": len(entries),
        "shards": entries,
        "bytes": sum(e["bytes"] for e in entries),
    }
    atomic_write_json(out / MANIFEST, manifest)
    (out / PLAN_FILE).unlink(missing_ok=True)
    (out / JOURNAL).unlink(missing_ok=True)
    return manifest

