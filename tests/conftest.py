"""Shared fixtures: one small real local Ray per test session, temporary directories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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


