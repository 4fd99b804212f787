"""Shared fixtures: one small real local Ray per test session, a throwaway PostgreSQL,
temporary directories."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import phyray  # noqa: F401  (first: its environment, MLflow's telemetry off, before a test module imports mlflow)

REPO = Path(__file__).resolve().parents[1]


def _session_members(session: int) -> list[int]:
    """Live (not zombie) processes of a session: /proc/<pid>/stat after the name is
    `state ppid pgrp session ...`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        state, _ppid, _pgrp, sid = stat[stat.rindex(")") + 2:].split()[:4]
        if int(sid) == session and state != "Z":
            members.append(int(entry.name))
    return members


def _kill_session(process: subprocess.Popen, timeout: float = 60.0) -> None:
    """SIGKILL a process started with `start_new_session=True` and everything it started, as a
    kill -9 of a job would, and wait until they are gone.

    Ray's workers run in process groups of their own (a kill of the group misses them and they
    finish the task they hold), but stay in the session.
    """
    deadline = time.monotonic() + timeout
    while members := _session_members(process.pid):
        assert time.monotonic() < deadline, f"processes {members} outlived SIGKILL"
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    process.wait()


def trial_runs(client, experiment: str, filter_string: str = ""):
    """The trial runs of a study's MLflow experiment, optionally filtered further."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs(
        [experiment_id], filter_string=" and ".join(["tags.`phyray.role` = 'trial'", *filter(None, [filter_string])])
    )


def rebuilt_report(cfg, result, out: Path) -> Path:
    """`phyray study report --out OUT` of a finished study's parent run: its report rebuilt from MLflow alone."""
    from phyray.cli import main

    assert main(["study", "report", "--experiment", cfg.experiment_name, "--tracking-uri", result.tracking_uri,
                 "--run-id", result.parent_run_id, "--out", str(out)]) == 0
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def kill_session():
    """The function that kills a test's subprocess with all it started (see `_kill_session`)."""
    return _kill_session


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A real local Ray (4 logical CPUs on the 2 cores, small object store, no dashboard)."""
    import ray

    from phyray.runtime import init_ray

    # Ray's socket paths must stay short, so its temp dir lives directly under /tmp.
    os.environ.setdefault("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray", numbered=True)))
    os.environ.pop("RAY_ADDRESS", None)
    init_ray(num_cpus=4)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def study_data(tmp_path_factory):
    """The smoke studies' data cache (datasets, the VAE, latents), made by the first study of
    each test module and reused by the rest. Per module: a study that reused another module's VAE
    would find no VAE run in its own MLflow store."""
    return tmp_path_factory.mktemp("study-data")


def _phyre_python_works() -> bool:
    from phyray.sim.phyre import ENV_PYTHON, PHYRE_VENV_PYTHON

    python = Path(os.environ.get(ENV_PYTHON, PHYRE_VENV_PYTHON))
    if not python.exists():
        return False
    result = subprocess.run([str(python), "-c", "import phyre"], check=False, capture_output=True)
    return result.returncode == 0


@pytest.fixture(scope="session")
def phyre_env() -> None:
    """Make sure the sidecar's environment exists, building it if a Python 3.9 is around."""
    if _phyre_python_works():
        return
    setup = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup_phyre.sh")],
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if _phyre_python_works():
        return
    if setup.returncode == 0 and "no Python 3.9 found" in setup.stdout:
        pytest.skip(setup.stdout.strip())
    pytest.fail(
        f"scripts/setup_phyre.sh did not produce a working .venv-phyre:\n{setup.stdout}"
        f"\n{setup.stderr}"
    )


# The role and database of the `postgres` fixture's server.
POSTGRES_USER, POSTGRES_DB = "phyray", "mlflow"


def _postgres_bin() -> Path | None:
    """The directory of PostgreSQL's server programs: that of `initdb` on PATH, else Debian's
    /usr/lib/postgresql/<version>/bin (the newest), where scripts/setup.sh installs them."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent  # pg_ctl finds `postgres` beside itself
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parts[-3].isdigit()]
    return max(found, key=lambda directory: int(directory.parent.name), default=None)


def _postgres_step(command: list, root: Path, what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        log = root / "server.log"
        server_log = log.read_text()[-2000:] if log.exists() else ""
        pytest.fail(f"PostgreSQL {what} failed:\n{result.stdout}{result.stderr}{server_log}", pytrace=False)


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 at a free port: its DSN
    postgresql://phyray:<random password>@127.0.0.1:<port>/mlflow (scram-sha-256 password auth,
    the database empty). Stopped and deleted after the module."""
    import psycopg

    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.fail(
            "no PostgreSQL server (initdb, pg_ctl on PATH or in /usr/lib/postgresql/*/bin): "
            "run scripts/setup.sh, which installs Debian's postgresql",
            pytrace=False,
        )
    # Directly in the temp dir, not pytest's: when we are root, initdb refuses to run, so the
    # server runs as the `postgres` system user, which must reach the directory (pytest's base
    # directory is private to its user) and own it.
    root = Path(tempfile.mkdtemp(prefix="phyray-postgres-"))
    as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data, sockets, password_file = root / "data", root / "sockets", root / "password"
    password = secrets.token_hex(16)
    password_file.write_text(password)
    sockets.mkdir()
    if as_server:
        for path in (root, sockets, password_file):
            shutil.chown(path, "postgres")
    port = free_port()
    pg_ctl = [*as_server, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        _postgres_step(
            [*as_server, str(bin_dir / "initdb"), "-D", str(data), "--username", POSTGRES_USER,
             "--pwfile", str(password_file), "--auth", "scram-sha-256", "--encoding", "UTF8",
             "--locale", "C", "--no-sync"],
            root, "initdb",
        )
        # TCP on loopback only, its unix socket in the throwaway directory (not the system's
        # /var/run/postgresql), and no fsync: the data is thrown away after the tests.
        options = f"-h 127.0.0.1 -p {port} -k {shlex.quote(str(sockets))} -c fsync=off -c full_page_writes=off"
        _postgres_step([*pg_ctl, "-l", str(root / "server.log"), "-w", "-t", "60", "-o", options, "start"], root, "start")
        server = f"postgresql://{POSTGRES_USER}:{password}@127.0.0.1:{port}"
        with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {POSTGRES_DB}")
        yield f"{server}/{POSTGRES_DB}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
