"""Where Ray runs: join a cluster when there is one, else start a small local Ray.

Under `ray job submit` (or with RAY_ADDRESS set) phyray joins that cluster. Otherwise it starts
an embedded local Ray sized for a laptop: a few hundred MiB of object store, no dashboard, and
its temporary files under RAY_TMPDIR when set.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2
RAY_CONNECT_TIMEOUT_S = 10.0  # how long a RAY_ADDRESS may take to accept a connection (check_reachable)
EXECUTOR_POLL_S = 0.02  # how often Ray Data's executor looks for finished tasks (configure_ray_data)


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
        check_reachable(os.environ["RAY_ADDRESS"])
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        return
    # Ray Train's controller polls its workers this often (default 2 s) and so notices a finished
    # run up to that late: ~2.5 s of every short local run. The local Ray's processes inherit
    # this environment; a cluster keeps Ray's default (its runs are hours, not seconds).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    # Arrow's allocator (mimalloc) commits its 1 GiB arena eagerly by default. Where page faults
    # are slow (this VM), that made encoding and writing a collision video at 256² cost 2.3-2.6
    # ms instead of 1.4 (one worker: 210-225 against 274-291 videos/s), and a fresh worker's
    # first shard took 370k page faults against 89k (docs/performance.md, 2026-12-06 (6)).
    # mimalloc reads the option at a process's first Arrow allocation, so it goes into the
    # environment the local Ray's processes inherit; the Dockerfile sets it on a cluster.
    os.environ.setdefault("MIMALLOC_ARENA_EAGER_COMMIT", "0")
    # Ray 2.60 turns token authentication on for a new local Ray and warns that it did, on every
    # start. (Setting RAY_AUTH_MODE here instead would be too late: `import ray` has read it.)
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    ray.init(
        num_cpus=num_cpus or max(4, os.cpu_count() or 1),
        object_store_memory=LOCAL_OBJECT_STORE_BYTES,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,  # not Ray's INFO lines ("Started a local Ray instance", Tune's)
        _temp_dir=os.environ.get("RAY_TMPDIR"),
    )


def check_reachable(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Fail in one line if nothing listens at a `HOST:PORT` Ray address.

    `ray.init(address=...)` with no Ray there does not fail: it retries for minutes, logging a
    warning every few seconds (five minutes and 25 lines in a test on Ray 2.60). Other forms
    (`auto`, `ray://...`) are left to Ray.
    """
    import socket

    from phyray.config import ConfigError

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConfigError(
            f"RAY_ADDRESS={address}: no Ray answers there ({err.strerror or err}); start one (`ray start --head`) "
            "or unset RAY_ADDRESS to run on a local Ray"
        ) from None


def configure_ray_data() -> None:
    """This process's Ray Data settings, before it builds a dataset (they travel with it).

    - Parquet through the V1 reader: Ray 2.60's DataSourceV2 lists the files in a task of its
      own before any read task starts; on a small machine that task waits for a fresh worker
      process, and a training run's first batch came 4 s later for it (2.60's V2 first batch
      5.8 s after the engine was ready, V1 1.5 s; bench/trial_startup.py). phyray always passes
      explicit shard paths, so there is nothing to list.
    - No progress bars or per-run banners: phyray draws its own.
    - The executor looks for finished tasks every `EXECUTOR_POLL_S` instead of 0.1 s: each
      scheduling step waits (`ray.wait`) until every running task has finished or the timeout
      has passed, so with two or more tasks running, each finished one left its worker idle for
      up to 0.1 s, often twice (the block, then the end of its stream). Generating 2,000
      uniform-motion videos at 256² on 2 workers scaled 0.77-0.83 from 1 worker with 0.1 s and
      0.90-0.93 with 10-20 ms, for ~0.1 s more driver CPU (bench/generate.py, 2026-12-05). The
      timeout is a module constant of Ray 2.60's executor (no setting exposes it); a Ray
      without it is left as it is.
    """
    import ray.data
    from ray.data._internal.execution import streaming_executor_state

    ctx = ray.data.DataContext.get_current()
    ctx.use_datasource_v2 = False
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if hasattr(streaming_executor_state, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S"):
        streaming_executor_state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = EXECUTOR_POLL_S
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    # Ray Train's own ingest sets this deprecated option (Ray's to change, nothing phyray passes).
    warnings.filterwarnings("ignore", message=r"`ExecutionOptions.exclude_resources` is deprecated")


def cluster_cpus() -> int:
    """CPUs Ray can schedule on (the whole cluster, or the local machine)."""
    import ray

    return int(ray.cluster_resources().get("CPU", 1))


class ResourceWatch:
    """While a stage runs, say what it waits for once a placement group has been pending a while.

    Ray Train's workers and Tune's trials hold their resources through placement groups; one
    that stays PENDING means the cluster has not got what it asks for (or another stage holds
    it). Ray itself says nothing to the driver then, so without this a study just sits there.

        with ResourceWatch("VAE training", log):
            train(...)
    """

    def __init__(self, stage: str, log: Callable[[str], None], after_s: float = 60.0):
        self.stage, self.log, self.after_s = stage, log, after_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"resource-watch-{stage}", daemon=True)

    def __enter__(self) -> ResourceWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        import ray

        pending_since: dict[str, float] = {}
        told: dict[str, float] = {}
        while not self._stop.wait(min(self.after_s, 5.0)):
            now = time.monotonic()
            table = ray.util.placement_group_table()
            for group_id, group in table.items():
                if group["state"] != "PENDING":
                    pending_since.pop(group_id, None)
                    continue
                since = pending_since.setdefault(group_id, now)
                if now - since >= self.after_s and now - told.get(group_id, since) >= self.after_s:
                    told[group_id] = now
                    needs = [{k: v for k, v in bundle.items() if v} for bundle in group["bundles"].values()]
                    free = {k: round(v, 2) for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
                    self.log(
                        f"{self.stage}: waiting {now - since:.0f} s for resources: {needs} "
                        f"(placement group {group.get('name') or group_id}); free now: {free}"
                    )


class RayChatter:
    """While a study runs, what Ray tells its driver that phyray cannot act on goes to a log file.

    A study's terminal shows phyray's own stages; Ray writes there by three routes no Ray setting
    turns off alone (docs/performance.md, "Ray's own start-up lines"):
    - the raylet's warnings, pushed to every driver (e.g. "8 PYTHON worker processes have been
      started ... 4x the maximum expected startup concurrency") and printed by the driver's
      `ray_listen_error_messages` thread through `ray._private.worker.print_to_stdstream`;
    - the C++ core worker inside the driver, which logs errors on file descriptor 2 (Ray Data's
      "Actor with class name: 'MapWorker(...)' has constructor arguments in the object store",
      once per actor pool);
    - Python warnings (deprecations of Ray's own calls into the libraries it loads).
    Inside the block the first goes to the log, descriptor 2 is the log while Python's
    `sys.stderr` keeps writing to the terminal through a copy of the old descriptor, and
    warnings are written to the log. `verbose` leaves everything where Ray puts it.

        with RayChatter(study_dir / "ray.log", verbose=args.verbose) as chatter:
            ...
        chatter.lines  # how many lines went to the log
    """

    def __init__(self, path: Path, verbose: bool = False):
        self.path, self.verbose = path, verbose
        self._start = 0
        self._restore: list[Callable[[], None]] = []

    @property
    def lines(self) -> int:
        """Lines written to the log inside the block (0 with `verbose`)."""
        if self.verbose or not self.path.exists():
            return 0
        with open(self.path, "rb") as log:
            log.seek(self._start)
            return log.read().count(b"\n")

    def summary(self, kept: Path) -> str:
        """The line that tells the user how many of Ray's lines are kept in `kept`, and how to see them."""
        return f"{self.lines} lines of Ray's own messages: {kept} (--verbose prints them here)"

    def __enter__(self) -> RayChatter:
        if self.verbose:
            return self
        import ray._private.worker as ray_worker

        log = open(self.path, "a", buffering=1)
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}\n")
        self._start = log.tell()
        self._restore.append(log.close)

        def raylet_to_log(data: dict, ignore_prefix: bool = False) -> None:  # print_to_stdstream's signature
            log.writelines(f"({data.get('pid')}) {line}\n" for line in data.get("lines", []))

        if hasattr(ray_worker, "print_to_stdstream"):  # a Ray without it is left as it is
            printer = ray_worker.print_to_stdstream
            ray_worker.print_to_stdstream = raylet_to_log
            self._restore.append(lambda: setattr(ray_worker, "print_to_stdstream", printer))

        def warning_to_log(message, category, filename, lineno, file=None, line=None) -> None:
            log.write(warnings.formatwarning(message, category, filename, lineno, line))

        showwarning = warnings.showwarning
        warnings.showwarning = warning_to_log
        self._restore.append(lambda: setattr(warnings, "showwarning", showwarning))

        # Descriptor 2 -> the log. Python's stderr, when it writes to that descriptor, moves to a
        # copy of the terminal's (a stream of pytest's, say, is left alone: it never used fd 2).
        sys.stderr.flush()
        terminal = os.dup(2)
        os.dup2(log.fileno(), 2)
        stderr = sys.stderr
        if _writes_to_fd(stderr, 2):
            sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1, encoding=stderr.encoding, errors=stderr.errors)
            self._restore.append(sys.stderr.close)
            self._restore.append(lambda: setattr(sys, "stderr", stderr))

        def back_to_terminal() -> None:
            sys.stderr.flush()
            os.dup2(terminal, 2)
            os.close(terminal)

        self._restore.append(back_to_terminal)
        return self

    def __exit__(self, *exc) -> None:
        while self._restore:
            self._restore.pop()()


def _writes_to_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False
