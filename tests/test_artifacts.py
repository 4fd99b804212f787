"""The artifact layer: identities, the one resumable shard writer, verifying readers, layering.

No Ray here: the writer is driven by a plain in-process shard function, the way rollouts use it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from phyray.artifacts import (
    JOURNAL,
    MANIFEST,
    PLAN_FILE,
    Identity,
    ProductError,
    kept_json,
    write_product,
)
from phyray.config import TrainConfig, load_data_config, validate
from phyray.data.generate import dataset_identity
from phyray.data.plan import plan_dataset
from phyray.data.shards import ShardError, iter_rows, shard_paths, write_shard
from phyray.train.trainer import result_fields

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Identity
# ---------------------------------------------------------------------------------------------


def _dataset_id(*overrides: str, split: str = "train", size: str = "64", seed: int = 0) -> str:
    cfg = load_data_config("uniform_motion", list(overrides))
    return dataset_identity(cfg, plan_dataset(cfg, split, size, seed)).id


def test_dataset_identity_follows_settings_and_nothing_else():
    base = _dataset_id("render.resolution=32")
    assert _dataset_id("render.resolution=32") == base  # deterministic, no paths, no clock
    assert _dataset_id("render.resolution=64") != base
    assert _dataset_id("render.resolution=32", "physics.num_frames=16") != base
    assert _dataset_id("render.resolution=32", seed=1) != base
    assert _dataset_id("render.resolution=32", size="65") != base
    assert _dataset_id("render.resolution=32", split="eval_id") != base


def _train_config(**fields) -> TrainConfig:
    base = {"task": "dit", "name": "a", "data": {"train": "/somewhere/latents"}, "steps": 10, "batch_size": 8,
            "micro_batch": 8, "model": {"dit": "DiT-T", "vae": "vae-f4t2c4-tiny"}}
    for key, value in fields.items():
        node = base
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return validate(TrainConfig, base)


@pytest.mark.parametrize(
    "field, value, changes",
    [
        ("name", "b", False),
        ("output_dir", "/mnt/cluster_storage/runs", False),
        ("data.train", "/mnt/cluster_storage/latents", False),  # enters as its product's id
        ("log_every", 1, False),
        ("checkpoint_every", 1, False),
        ("eval_every", 5, False),
        ("cpus_per_worker", 4, False),
        ("tracking.tracking_uri", "http://127.0.0.1:5000", False),
        ("steps", 11, True),
        ("optim.lr", 3e-3, True),
        ("seed", 1, True),
        ("diffusion.cond_frames", 1, True),
        ("micro_batch", 4, True),  # the batch is split into micro-batches differently
        ("vae_recon", "mse", True),
        ("vae_foreground_weight", 10.0, True),
        ("vae_logvar_init", -8.0, True),
    ],
)
def test_training_identity_ignores_fields_that_do_not_change_the_weights(field, value, changes):
    assert (result_fields(_train_config(**{field: value})) != result_fields(_train_config())) == changes


def test_later_fields_at_their_defaults_leave_identities_as_they_were():
    # Runs cached before vae_recon, vae_foreground_weight and vae_logvar_init existed keep their names.
    fields = result_fields(_train_config(vae_recon="l1", vae_foreground_weight=0.0, vae_logvar_init=None))
    assert not {"vae_recon", "vae_foreground_weight", "vae_logvar_init"} & set(fields)


def test_rollout_precision_names_rollouts_and_studies_only_when_not_fp32():
    from phyray.eval.rollouts import rollouts_identity
    from phyray.study.grid import study_identity
    from phyray.study.settings import load_study_config

    # Rollouts and studies named before the setting existed (all fp32) keep their names.
    fp32 = rollouts_identity("dit", "reference", 10, 3, 0)
    assert rollouts_identity("dit", "reference", 10, 3, 0, precision="fp32") == fp32 and "precision" not in fp32.settings
    assert rollouts_identity("dit", "reference", 10, 3, 0, precision="bf16").id != fp32.id
    study = load_study_config(REPO / "configs" / "studies" / "smoke.yaml")
    assert "precision" not in study_identity(study).settings["eval"]
    bf16 = study.model_copy(update={"eval": study.eval.model_copy(update={"precision": "bf16"})})
    assert study_identity(bf16).id != study_identity(study).id


def test_a_study_is_named_by_its_trials_compile_scope_however_it_is_spelled():
    from phyray.study.grid import study_identity
    from phyray.study.settings import load_study_config

    def study_id(*overrides: str) -> str:
        return study_identity(load_study_config(REPO / "configs" / "studies" / "smoke.yaml", list(overrides))).id

    # `true` is `blocks` and `false` is no compile for the trials, so for the study too.
    assert study_id("dit.compile=true") == study_id("dit.compile=blocks") != study_id("dit.compile=network")
    assert study_id("dit.compile=false") == study_id("dit.compile=off") == study_id() != study_id("dit.compile=blocks")


def test_identity_names_its_directory_and_record():
    identity = Identity("latents", {"cond_frames": 3}, {"dataset": "abc", "vae": "def"})
    assert identity.name("train-300") == f"train-300-{identity.id}" and len(identity.id) == 12
    assert identity.record() == {"kind": "latents", "id": identity.id, "settings": {"cond_frames": 3},
                                 "inputs": {"dataset": "abc", "vae": "def"}}
    assert Identity("latents", {"cond_frames": 1}, identity.inputs).id != identity.id
    assert Identity("latents", {"cond_frames": 3}, {"dataset": "abc", "vae": "xyz"}).id != identity.id


# ---------------------------------------------------------------------------------------------
# The writer
# ---------------------------------------------------------------------------------------------

SHARDS = [f"shard-{i:05d}.parquet" for i in range(4)]
SIZES = [3, 3, 3, 1]


class Shards:
    """An in-process shard function that records what it was asked to write, and can be
    stopped after a number of shards as a kill would stop it."""

    def __init__(self, out: Path, value: int = 0, stop_after: int | None = None):
        self.out, self.value, self.stop_after, self.calls = out, value, stop_after, []

    def __call__(self, missing):
        self.calls.append(list(missing))
        for done, index in enumerate(missing):
            if self.stop_after is not None and done == self.stop_after:
                raise KeyboardInterrupt("killed")
            assert (self.out / PLAN_FILE).is_file() and not (self.out / MANIFEST).exists()
            table = pa.table({"video_id": [f"v{index}-{j}" for j in range(SIZES[index])],
                              "value": [self.value] * SIZES[index]})
            yield write_shard(table, self.out / SHARDS[index])


def _write(out: Path, shards: Shards, identity=Identity("dataset", {"n": 10})):
    return write_product(out, identity, SHARDS, SIZES, shards, log=lambda line: shards.calls.append(line))


def test_a_killed_product_resumes_with_only_its_missing_shards(tmp_path):
    out = tmp_path / "product"
    with pytest.raises(KeyboardInterrupt):
        _write(out, Shards(out, stop_after=2))
    assert (out / PLAN_FILE).is_file() and not (out / MANIFEST).exists()
    assert len((out / JOURNAL).read_text().splitlines()) == 2
    rerun = Shards(out)
    manifest = _write(out, rerun)
    assert rerun.calls == [[2, 3]]
    assert manifest["num_videos"] == 10 and [e["file"] for e in manifest["shards"]] == SHARDS
    assert not (out / PLAN_FILE).exists() and not (out / JOURNAL).exists()
    assert [r["video_id"] for r in iter_rows(out)][:4] == ["v0-0", "v0-1", "v0-2", "v1-0"]
    again = Shards(out)
    assert _write(out, again) == manifest and again.calls == []  # finished: nothing to do


def test_a_product_killed_before_its_manifest_only_gets_its_manifest(tmp_path):
    out = tmp_path / "product"

    def write_all_then_die(missing):
        yield from Shards(out)(missing)
        raise KeyboardInterrupt("killed after the last shard")

    with pytest.raises(KeyboardInterrupt):
        write_product(out, Identity("dataset", {"n": 10}), SHARDS, SIZES, write_all_then_die)
    assert not (out / MANIFEST).exists() and len((out / JOURNAL).read_text().splitlines()) == 4
    rerun = Shards(out)
    assert _write(out, rerun)["num_videos"] == 10 and rerun.calls == []  # nothing run, manifest written


def test_a_corrupt_shard_is_remade_and_said_once(tmp_path):
    out = tmp_path / "product"
    _write(out, Shards(out))
    path = out / SHARDS[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    repair = Shards(out)
    _write(out, repair)
    said = [c for c in repair.calls if isinstance(c, str)]
    assert repair.calls[-1] == [1] and len(said) == 1 and SHARDS[1] in said[0] and "checksum" in said[0]
    shard_paths(out)  # verified again


def test_a_directory_holding_another_product_is_refused_naming_both(tmp_path):
    out = tmp_path / "product"
    first = Identity("latents", {"cond_frames": 3}, {"dataset": "a", "vae": "b"})
    with pytest.raises(KeyboardInterrupt):
        _write(out, Shards(out, stop_after=1), first)  # killed half way
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = Identity("latents", {"cond_frames": 1}, first.inputs)
    with pytest.raises(ProductError, match=f"holds latents {first.id}, not latents {other.id}"):
        _write(out, Shards(out), other)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    _write(tmp_path / "elsewhere", Shards(tmp_path / "elsewhere"), other)
    assert _write(out, Shards(out), first)["identity"]["id"] == first.id


def test_readers_check_each_shard_against_the_manifest(tmp_path):
    out = tmp_path / "product"
    _write(out, Shards(out))
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["shards"][2]["sha256"] = "0" * 64
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match=f"{SHARDS[2]}: checksum does not match"):
        list(iter_rows(out))


def test_a_kept_result_is_made_once_and_read_back(tmp_path):
    calls = []

    def make():
        calls.append(1)
        return {"records": [{"video_id": "a", "psnr": 31.5}]}

    kept = tmp_path / "scores" / "abc.json"
    first = kept_json(kept, make)
    assert kept_json(kept, make) == first and len(calls) == 1
    assert sorted(p.name for p in kept.parent.iterdir()) == ["abc.json"]  # no temporary left
    assert kept_json(None, make) == first and len(calls) == 2  # None keeps nothing


def test_a_failed_make_keeps_nothing(tmp_path):
    kept = tmp_path / "abc.json"

    def make():
        raise RuntimeError("scoring failed")

    with pytest.raises(RuntimeError):
        kept_json(kept, make)
    assert not kept.exists()


# ---------------------------------------------------------------------------------------------
# The house: no package imports one above it in the flow
# ---------------------------------------------------------------------------------------------

# What each package may not import (the flow: config -> sim -> render -> data -> models ->
# eval -> train -> study; data.latents and eval use models, training evaluates with eval).
FORBIDDEN = {
    "phyray/sim": ("phyray.data", "phyray.models", "phyray.eval", "phyray.train", "phyray.study"),
    "phyray/data": ("phyray.train", "phyray.eval", "phyray.study"),
    "phyray/models": ("phyray.data", "phyray.train", "phyray.eval", "phyray.study"),
    "phyray/eval": ("phyray.train", "phyray.study"),
    "phyray/train": ("phyray.study",),
    # The step itself stays free of the cluster: a plain process (or a GPU box without Ray) runs it.
    "phyray/train/engine.py": ("ray", "mlflow", "phyray.data", "phyray.eval", "phyray.study", "phyray.tracking"),
    "phyray/config.py": ("phyray.models", "phyray.data", "phyray.train", "phyray.eval", "phyray.study", "torch"),
    "phyray/presets.py": ("torch",),
    "phyray/artifacts.py": ("phyray.data", "phyray.models", "phyray.train", "phyray.eval", "phyray.study"),
    "phyray/benchmark": ("phyray.train", "phyray.study"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_no_package_imports_one_above_it(where):
    files = [REPO / where] if where.endswith(".py") else sorted((REPO / where).rglob("*.py"))
    bad = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in files
        for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[where])
    ]
    assert not bad, bad


def test_configs_load_without_torch():
    code = (
        "import sys; from phyray.study.settings import load_study_config; "
        "load_study_config('configs/studies/mini.yaml'); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
