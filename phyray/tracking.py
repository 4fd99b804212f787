"""MLflow helpers: where the store is, experiments with a local artifact root, run lifecycle.

Runs are created and closed by the driver (so a run always ends FINISHED or FAILED, never
RUNNING, whatever happens to the workers); workers log into an existing run by id through
`MlflowClient`, which needs no process-global "active run".
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import sysconfig
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from phyray.config import ConfigError

# MLflow tells at INFO level every time it creates or migrates a SQLite store's tables.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

MLFLOW_DB = "mlflow.db"
# MLflow caps a param value at 6000 characters and a batch at 100 params.
_PARAM_LIMIT, _BATCH = 6000, 100
# A database host that drops packets instead of refusing them fails after this long, not after
# the operating system's TCP timeout (minutes).
CONNECT_TIMEOUT_S = 10


def configured_uri(configured: str | None) -> str | None:
    """Config value, else $MLFLOW_TRACKING_URI; None: the default local store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI")


def resolve_tracking_uri(configured: str | None, default_dir: str | Path) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else a SQLite file in `default_dir`.

    MLflow 3 refuses plain folders as stores; SQLite is its default backend.
    """
    uri = configured_uri(configured)
    if uri:
        return uri
    path = Path(default_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / MLFLOW_DB}"


def check_store(configured: str | None) -> None:
    """ConfigError in one line, the password masked, if the store is a PostgreSQL database that
    cannot be reached: a study checks this before it writes anything, so a wrong DSN leaves no
    study directory, data or half-made runs behind. Other stores (a local SQLite file, an MLflow
    server) are left to MLflow."""
    uri = configured_uri(configured)
    if uri is None or uri.partition(":")[0].split("+")[0] != "postgresql":
        return
    from sqlalchemy import create_engine, exc
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    field = "tracking_uri" if configured else "$MLFLOW_TRACKING_URI"
    try:
        url = make_url(uri)
    except (exc.ArgumentError, ValueError) as err:
        raise ConfigError(f"{field}: not a database URI ({err})") from None
    shown = url.render_as_string(hide_password=True)
    try:
        engine = create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}, poolclass=NullPool)
        with engine.connect():
            pass
    except ModuleNotFoundError as err:
        raise ConfigError(f"{field}: {shown} needs the Python module {err.name}") from None
    except exc.DBAPIError as err:
        # The driver's first line says why (refused, unknown host, bad password); the rest is hints.
        reason = str(err.orig).splitlines()[0].removeprefix("connection failed: ")
        if url.password:
            reason = reason.replace(url.password, "***")
        raise ConfigError(f"{field}: cannot connect to {shown}: {reason}") from None


def ui_hint(uri: str) -> str:
    """How to look at a store in MLflow's UI, ready to paste: a tracking server's URL as it is,
    else `mlflow ui` of the running interpreter's own environment (relative to the current
    directory when under it: `.venv/bin/mlflow`), since a study started as `.venv/bin/python
    studies/...` may have no `mlflow` on PATH."""
    if uri.startswith(("http://", "https://")):
        return uri
    script = Path(sysconfig.get_path("scripts")) / "mlflow"
    # Installed where the interpreter finds the package but not beside it (e.g. --user): its module.
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "mlflow"]
    if Path(command[0]).is_relative_to(Path.cwd()):
        relative = Path(command[0]).relative_to(Path.cwd())
        # A bare name would be looked up on PATH: `./mlflow` when run from the scripts folder itself.
        command[0] = str(relative) if len(relative.parts) > 1 else os.path.join(os.curdir, relative)
    return shlex.join([*command, "ui", "--backend-store-uri", uri])


def artifact_root_for(uri: str, default_dir: str | Path) -> str | None:
    """Local stores keep artifacts beside the database; a server decides for itself."""
    if uri.startswith("sqlite:") or uri.startswith("file:"):
        return (Path(default_dir).resolve() / "mlartifacts").as_uri()
    return None


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_root)


def newest_run(client: MlflowClient, experiment_id: str, filter_string: str):
    """The most recently started run of the experiment that matches the filter, or None."""
    runs = client.search_runs(
        [experiment_id], filter_string=filter_string, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def start_run(
    uri: str,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    tags: dict[str, str] | None = None,
    artifact_root: str | None = None,
) -> str:
    """Create a run with its params; returns the run id."""
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, experiment, artifact_root)
    run = client.create_run(experiment_id, run_name=run_name, tags={"mlflow.runName": run_name, **(tags or {})})
    items = [Param(k, str(v)[:_PARAM_LIMIT]) for k, v in params.items()]
    for start in range(0, len(items), _BATCH):
        client.log_batch(run.info.run_id, params=items[start : start + _BATCH])
    return run.info.run_id


def log_metrics(uri: str, run_id: str, metrics: dict[str, float | None], step: int) -> None:
    """Log the non-None metrics of one step."""
    import time

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
    for start in range(0, len(batch), 1000):
        MlflowClient(uri).log_batch(run_id, metrics=batch[start : start + 1000])


def set_tags(uri: str, run_id: str, tags: dict[str, str]) -> None:
    client = MlflowClient(uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def end_run(uri: str, run_id: str, status: str) -> None:
    """Mark a run FINISHED, FAILED or KILLED."""
    MlflowClient(uri).set_terminated(run_id, status=status)
