"""Where Ray runs: join a cluster when there is one, else start a small local Ray.

Under `ray job submit` (or with RAY_ADDRESS set) phyray joins that cluster. Otherwise it starts
an embedded local Ray sized for a laptop: a few hundred MiB of object store, no dashboard, and
its temporary files under RAY_TMPDIR when set.
"""

from __future__ import annotations

import os

LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2


def init_ray(num_cpus: int | None = None) -> None:
    """Initialise Ray once per process (a no-op when it is already up).

    A local Ray gets `num_cpus` logical CPUs (default: the machine's, at least 4). Logical CPUs
    only gate scheduling: a training run whose workers hold a CPU each still needs free ones for
    the Ray Data tasks that feed it, or it waits forever for data.
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        return
    ray.init(
        num_cpus=num_cpus or max(4, os.cpu_count() or 1),
        object_store_memory=LOCAL_OBJECT_STORE_BYTES,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=os.environ.get("RAY_TMPDIR"),
    )


def quiet_ray_data() -> None:
    """phyray draws its own progress bars; silence Ray Data's bars and per-run banners."""
    import logging

    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def cluster_cpus() -> int:
    """CPUs Ray can schedule on (the whole cluster, or the local machine)."""
    import ray

    return int(ray.cluster_resources().get("CPU", 1))
