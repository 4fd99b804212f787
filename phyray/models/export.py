"""Exported models: the weights a finished run hands to the next stage.

A training run's Ray checkpoints hold everything needed to resume (DeepSpeed shards, EMA
weights, step). Its export is the small, self-describing file later stages load: the EMA
weights plus the preset that rebuilds the module and the run's identity record
(`phyray.artifacts`), in `<run dir>/export/model.pt`, written last and atomically, so an export
that exists is a finished run of that identity.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from phyray.artifacts import atomic_write_bytes, sha256_file
from phyray.models.dit import build_dit
from phyray.models.vae import VideoVAE, build_vae

EXPORT_FILE = "model.pt"


def export_path(path: str | Path) -> Path:
    """Accept a run directory, its export directory or the model file itself."""
    path = Path(path)
    for candidate in (path, path / EXPORT_FILE, path / "export" / EXPORT_FILE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{path}: no exported model ({EXPORT_FILE}) found")


def save_export(directory: Path, kind: str, meta: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Path:
    """Write `{kind, meta, state_dict}` atomically to directory/model.pt."""
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"kind": kind, "meta": meta, "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}, buffer)
    path = directory / EXPORT_FILE
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _load(path: str | Path, kind: str) -> tuple[dict[str, Any], Path]:
    file = export_path(path)
    blob = torch.load(file, map_location="cpu", weights_only=True)
    if blob.get("kind") != kind:
        raise ValueError(f"{file}: holds a {blob.get('kind')!r} model, expected {kind!r}")
    return blob, file


def load_vae(path: str | Path) -> VideoVAE:
    """A trained VAE (EMA weights, latent scaling included) in eval mode."""
    blob, _ = _load(path, "vae")
    vae = build_vae(blob["meta"]["preset"])
    vae.load_state_dict(blob["state_dict"])
    return vae.eval().requires_grad_(False)


def load_dit(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A trained DiT (EMA weights) in eval mode, and its meta (preset, patch, VAE, diffusion)."""
    blob, _ = _load(path, "dit")
    meta = blob["meta"]
    dit = build_dit(meta["preset"], latent_channels=meta["latent_channels"], patch=tuple(meta["patch"]))
    dit.load_state_dict(blob["state_dict"])
    return dit.eval().requires_grad_(False), meta


def export_meta(path: str | Path) -> dict[str, Any]:
    """An export's meta (preset, identity, ...) without loading its weights into memory."""
    blob = torch.load(export_path(path), map_location="cpu", weights_only=True, mmap=True)
    return blob["meta"]


def export_id(path: str | Path) -> str:
    """The identity of an exported model: its run's identity, or for a file phyray did not
    train (no identity in its meta) a hash of its bytes."""
    record = export_meta(path).get("identity")
    return record["id"] if record else "sha256-" + sha256_file(export_path(path))[:12]
