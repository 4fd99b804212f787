"""Shared fixtures: one small real local Ray per test session, temporary directories."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

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


@pytest.fixture
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


