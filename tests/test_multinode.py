"""Multi-node Ray on this machine: a head and two worker nodes, each started by `ray start`.

The nodes are started on 127.0.0.1 (`--node-ip-address`) and join with Ray's token auth (Ray
2.60's GCS and raylets still bind every interface; it has no bind-address setting). As in cluster/raycluster.yaml
the head has no CPUs (it holds GCS, the dashboard and job drivers), so every task, actor and
training worker runs on a worker node; each worker node advertises its own custom resource so
the test can name it. Each node is a `ray start --block` in a session of its own: a node is
killed by killing its session (as a lost machine would be), and teardown stops exactly the nodes
started here — `ray stop` would stop every Ray on the host.

Jobs go in through `ray job submit`, as on a real cluster: the smoke study (its trials on the
worker nodes), then a 2-worker DiT training spread over the two worker nodes that loses one of
them mid-run and finishes on a replacement node from its last registered checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml
from conftest import free_port, trial_runs
from mlflow.tracking import MlflowClient
from test_study import TINY, wait_for_http

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TOKEN = "phyray-multinode-test-token"
# Logical CPUs per worker node: a training worker's CPU, one for the Ray Data tasks that feed it,
# and one spare. With exactly two, two trials' drivers (0.01 CPU each, phyray/study/grid.py) and
# workers can leave each node 0.99 CPU, and the data tasks (1 CPU) wait forever.
NODE_CPUS = 3


class NodeExited(AssertionError):
    """A node's `ray start --block` ended before the node was up."""


@dataclass
class LocalCluster:
    gcs: str  # 127.0.0.1:<port>, what nodes join
    dashboard: str  # http://127.0.0.1:<port>, the job and state APIs
    env: dict[str, str]  # token auth on, for every node and every CLI call
    logs: Path
    # Ray's session files, one directory per node: each node's runtime-env agent deletes the job
    # packages it no longer uses from its own, which must not be another node's. Short, as
    # Ray's socket paths must fit in 107 bytes.
    temp: Path
    kill_session: Callable[[subprocess.Popen], None]
    nodes: dict[str, subprocess.Popen] = field(default_factory=dict)  # name -> `ray start --block`
    node_logs: dict[str, Path] = field(default_factory=dict)  # name -> its latest start's output

    def start(self, name: str, *args: str, attempt: int = 0) -> None:
        self.node_logs[name] = self.logs / f"{name}{f'-{attempt}' if attempt else ''}.log"
        with open(self.node_logs[name], "w") as log:  # the node keeps its own copy of the descriptor
            self.nodes[name] = subprocess.Popen(
                [str(VENV_BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                 f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
                 f"--temp-dir={self.temp / name}", *args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def kill_node(self, name: str) -> None:
        """SIGKILL the node's whole session (raylet, its workers, its agents), as a lost machine."""
        self.kill_session(self.nodes.pop(name))

    def add_worker(self, name: str, attempts: int = 2) -> None:
        """Start a worker node with the custom resource `name` and wait until the head lists it.

        `ray start --block` exits 1 as soon as any of its node's processes dies; on a shared host
        a port Ray or free_port picked can be taken before it is bound. One CI run (2026-12-04)
        saw node-b's start exit 1 before it joined, log not kept. A node that never joined has
        run nothing, so starting it again on fresh ports is the same test; the first failure's log
        is kept and shown as a warning, and a second failure fails the test with its log."""
        for attempt in range(attempts):
            self.start(name, f"--address={self.gcs}", f"--num-cpus={NODE_CPUS}", "--object-store-memory=200000000",
                       f"--resources={json.dumps({name: 1})}", attempt=attempt)
            try:
                self.wait(lambda nodes: name in self.alive(nodes), f"worker node {name} to join", node=name)
                return
            except NodeExited as exited:
                self.kill_session(self.nodes.pop(name))
                if attempt == attempts - 1:
                    raise
                warnings.warn(f"starting {name} again: {exited}")

    def api(self, path: str):
        request = urllib.request.Request(f"{self.dashboard}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["data"]["result"]["result"]

    def alive(self, nodes: list[dict] | None = None) -> dict[str, str]:
        """Live nodes started here: name (its custom resource, or "head") -> Ray node id."""
        named = {}
        for node in nodes if nodes is not None else self.api("/api/v0/nodes?detail=1&limit=100"):
            if node["state"] == "ALIVE":
                names = [r for r in node["resources_total"] if r in self.nodes] or ["head"] * node["is_head_node"]
                named.update({n: node["node_id"] for n in names})
        return named

    def wait(self, done, what: str, seconds: float = 180, node: str | None = None) -> None:
        """Poll the head's node list until `done`; while waiting on a starting `node`, its
        `ray start --block` exiting ends the wait at once with the tail of its log."""
        deadline = time.monotonic() + seconds
        while not done(self.api("/api/v0/nodes?detail=1&limit=100")):
            if node is not None and (code := self.nodes[node].poll()) is not None:
                log = self.node_logs[node]
                raise NodeExited(f"`ray start` of {node} exited {code} while waiting for {what}; "
                                 f"{log}:\n{log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}; logs in {self.logs}"
            time.sleep(1)

    def ray(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "ray"), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def submit(self, *entrypoint: str, wait: bool = True) -> subprocess.CompletedProcess:
        """`ray job submit` from the repo; retried while the head's job agent is not up yet (until
        then a submission is refused before any job exists, so a retry cannot run it twice)."""
        command = ["job", "submit", "--address", self.dashboard, "--working-dir", str(REPO),
                   *([] if wait else ["--no-wait"]), "--", *entrypoint]
        deadline = time.monotonic() + 180
        while True:
            job = self.ray(*command)
            if "No available agent to submit job" not in job.stdout + job.stderr or time.monotonic() > deadline:
                return job
            time.sleep(5)

    def train_worker_nodes(self) -> list[str]:
        """Node ids of every Ray Train worker actor the cluster has run (live or finished)."""
        actors = self.api("/api/v0/actors?detail=1&limit=1000&filter_keys=class_name&filter_predicates=%3D"
                          "&filter_values=RayTrainWorker")
        return [actor["node_id"] for actor in actors]


@pytest.fixture(scope="module")
def cluster(ray_local, tmp_path_factory, kill_session):
    """Head (0 CPUs) + worker nodes node-a and node-b, one after another; token auth on all."""
    ray_local.shutdown()  # the session's embedded Ray; given back below
    logs = tmp_path_factory.mktemp("multinode-logs")
    port, dashboard = free_port(), free_port()
    temp = Path(tempfile.mkdtemp(prefix="ray-mn-", dir="/tmp"))
    # TMPDIR: what the nodes' processes put in the temp dir (the dashboard's forkserver socket
    # directory, pymp-*, which a SIGKILL leaves behind) goes under `temp`, removed below.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
           "TMPDIR": str(temp)}
    env.pop("RAY_ADDRESS", None)
    local = LocalCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}", env, logs, temp, kill_session)
    try:
        local.start("head", "--head", f"--port={port}", "--num-cpus=0", "--object-store-memory=100000000",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}")
        wait_for_http(f"{local.dashboard}/api/version", seconds=180, token=TOKEN)
        for name in ("node-a", "node-b"):
            local.add_worker(name)
        yield local
    finally:
        for node in reversed(local.nodes.values()):
            kill_session(node)
        shutil.rmtree(temp, ignore_errors=True)
        from phyray.runtime import init_ray

        init_ray(num_cpus=4)


@pytest.fixture(scope="module")
def cluster_study(cluster, study_data, tmp_path_factory):
    """The smoke study submitted to the 3-node cluster, writing the embedded SQLite store. One
    cell (the 32-video one, whose latents the lost-node run trains on): a grid of several is
    test_study's; here what counts is where the job's stages run."""
    out = tmp_path_factory.mktemp("multinode-studies")
    overrides = [*TINY, "data_sizes=['32']", f"output_dir={out}", f"data_dir={study_data}"]
    job = cluster.submit("python", "studies/scaling_law.py", "--config", "configs/studies/smoke.yaml",
                         *[f"--set={o}" for o in overrides])
    assert job.returncode == 0 and "succeeded" in job.stdout, job.stdout[-3000:] + job.stderr[-3000:]
    return out


def test_token_auth_guards_the_dashboard(cluster):
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(f"{cluster.dashboard}/api/version", timeout=5)


def test_job_submit_runs_the_smoke_study_on_the_worker_nodes(cluster, cluster_study):
    client = MlflowClient(f"sqlite:///{cluster_study / 'smoke' / 'mlflow.db'}")
    runs = trial_runs(client, "phyray-study-smoke")
    assert [r.data.tags["phyray.trial"] for r in runs] == ["uniform_motion-DiT-T-32-s0"]
    assert all(r.data.tags["phyray.trial_done"] == "true" for r in runs)
    assert all("eval/ood/vel_err_mean_velocity" in r.data.metrics for r in runs)
    assert len(list((cluster_study / "smoke" / "reports").glob("*/scaling_curves.png"))) == 1
    # Every training worker (the VAE's and the trial's) ran on a worker node, none on the head.
    workers = {cluster.alive()[name] for name in ("node-a", "node-b")}
    ran_on = cluster.train_worker_nodes()
    assert ran_on and set(ran_on) <= workers


def dit_config(study_data: Path, out: Path) -> dict:
    """A 2-worker DiT run on the smoke study's size-32 latents, one worker per worker node."""
    (latents,) = (study_data / "uniform_motion" / "latents").glob("train-32-*")
    return {
        "task": "dit", "name": "dit-multinode", "output_dir": str(out),
        "tracking": {"tracking_uri": f"sqlite:///{out / 'mlflow.db'}", "experiment": "multinode"},
        "data": {"train": str(latents)},
        "model": {"vae": "vae-f4t2c4-local", "dit": "DiT-T"},
        "diffusion": {"cond_frames": 3},
        "optim": {"lr": 2e-3, "warmup_steps": 2},
        "steps": 60, "batch_size": 8, "micro_batch": 4, "log_every": 2, "checkpoint_every": 6,
        "workers": 2, "placement_strategy": "STRICT_SPREAD", "max_failures": 3,
    }


def registered_step(run_dir: Path) -> int:
    """The step of the newest checkpoint Ray Train has registered, the one a restart resumes
    from. A checkpoint's files are written when a worker reports it, but the controller
    registers it only when it next polls every worker, seconds later under load: killed before
    that, a run restarts from the previous registered checkpoint (or from zero)."""
    step = 0
    for path in run_dir.glob("ray/*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(path.read_text())["latest_checkpoint_result"]
        except json.JSONDecodeError:  # being rewritten: read it at the next poll
            continue
        step = max(step, latest["metrics"]["step"] if latest else 0)
    return step


def test_training_survives_a_lost_node_and_resumes_on_a_replacement(cluster, cluster_study, study_data, tmp_path):
    settings = dit_config(study_data, tmp_path / "runs")
    config = tmp_path / "dit.yaml"
    config.write_text(yaml.safe_dump(settings))
    run_dir = tmp_path / "runs" / "dit-multinode"
    job = cluster.submit("phyray", "train", "--config", str(config), wait=False)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    submission = next(line.split("'")[1] for line in job.stdout.splitlines() if "submitted successfully" in line)

    # Kill node-b's processes once the run has a registered checkpoint to come back to.
    deadline = time.monotonic() + 600
    while (registered := registered_step(run_dir)) == 0:
        assert time.monotonic() < deadline, cluster.ray("job", "logs", "--address", cluster.dashboard, submission).stdout[-3000:]
        time.sleep(0.2)
    cluster_nodes = cluster.alive()
    assert {cluster_nodes["node-a"], cluster_nodes["node-b"]} <= set(cluster.train_worker_nodes())  # spread
    client = MlflowClient(settings["tracking"]["tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("multinode").experiment_id], "run_name = 'dit-multinode'")
    killed_at = max(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
    cluster.kill_node("node-b")
    cluster.wait(lambda nodes: "node-b" not in cluster.alive(nodes), "node-b to be marked dead")
    cluster.add_worker("node-c")

    logs = cluster.ray("job", "logs", "--address", cluster.dashboard, "--follow", submission).stdout
    status = cluster.ray("job", "status", "--address", cluster.dashboard, submission).stdout
    assert f"Job '{submission}' succeeded" in status, logs[-3000:]
    (cluster.logs / "dit-job.log").write_text(logs)  # beside the nodes' logs, for a reader

    losses = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    (resumed,) = [m.step for m in client.get_metric_history(run.info.run_id, "train/resumed_at_step")]
    # Resumed from the newest checkpoint registered by the kill, never from zero; every step up to
    # it logged once, the steps after it again by the resumed attempt; finished at 60.
    assert 0 < registered <= resumed <= killed_at and losses[-1] == 60 and client.get_run(run.info.run_id).info.status == "FINISHED"
    assert sorted(set(losses)) == list(range(2, 61, 2))
    assert [s for s in losses if s <= resumed] == list(range(2, resumed + 1, 2))
    assert cluster.alive()["node-c"] in cluster.train_worker_nodes()
    print(f"multi-node timeline: checkpoint of step {registered} registered, node-b killed after step {killed_at}, "
          f"resumed at step {resumed} on node-c, finished at 60")
