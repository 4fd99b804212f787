"""Shared fixtures: one small real local Ray per test session, temporary directories."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A real local Ray (2 CPUs, small object store, no dashboard) shared by the session."""
    import ray

    from phyray.runtime import init_ray

    # Ray's socket paths must stay short, so its temp dir lives directly under /tmp.
    os.environ.setdefault("RAY_TMPDIR", str(tmp_path_factory.mktemp("ray", numbered=True)))
    os.environ.pop("RAY_ADDRESS", None)
    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
