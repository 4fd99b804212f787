"""Render the Kubernetes manifests in cluster/ from cluster/values.yaml.

    python cluster/render.py            # rewrite cluster/*.yaml from cluster/values.yaml
    python cluster/render.py --check    # exit 1 naming each file that differs from its rendering

values.yaml is the one place that names the image, namespace, storage and resources. The RayJob
embeds the same cluster spec as the RayCluster (ray_cluster_spec), so the one-shot study and the
long-lived cluster cannot drift apart, and the files' comments are rendered from the values too,
so the kubectl commands in them name the namespace and Secrets the documents use.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

CLUSTER = Path(__file__).resolve().parent
VALUES = CLUSTER / "values.yaml"
# Comments are wrapped to the repo's line length; lines that start with a space (commands,
# examples) are kept as they are.
COMMENT_WIDTH = 100
GENERATED = "Do not edit: rendered by `python cluster/render.py` from cluster/values.yaml."

MLFLOW = "mlflow"  # the MLflow Deployment's, Service's and container's name
MLFLOW_DATA = "/mlflow"  # where the MLflow pod mounts its PVC
MLFLOW_AUTH_DIR = "/etc/mlflow-auth"
# The env var that carries the backend store's DSN from its Secret into --backend-store-uri.
MLFLOW_STORE_ENV = "MLFLOW_BACKEND_STORE_URI"
RAY_UID, RAY_GID = 1000, 100  # the image's user `ray`, group `users`
MLFLOW_UID = 1000  # the MLflow image's user is not fixed: pin one
# The containers' securityContext: no privilege escalation, no Linux capability.
RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
# Stops Ray cleanly (its processes, the node's GCS entry) before the pod goes.
RAY_STOP = {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}}


@dataclass(frozen=True)
class Commented:
    """A value rendered with comment lines before it (before its key, or its `-` in a list)."""

    comment: str
    value: Any


# --- The documents ---------------------------------------------------------------------------


def _secret_env(name: str, secret: str, key: str) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _ray_token_env(values: dict) -> list:
    return [
        {"name": "RAY_AUTH_MODE", "value": "token"},
        _secret_env("RAY_AUTH_TOKEN", values["secrets"]["ray_token"], "auth_token"),
    ]


def mlflow_uri(values: dict) -> str:
    return f"http://{MLFLOW}.{values['namespace']}.svc:{values['mlflow']['port']}"


def _pod_security(uid: int, gid: int, fs_group: int | None = None) -> dict:
    context = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid}
    if fs_group is not None:
        # OnRootMismatch: no recursive chown of the whole volume on every start.
        context |= {"fsGroup": fs_group, "fsGroupChangePolicy": "OnRootMismatch"}
    return context | {"seccompProfile": {"type": "RuntimeDefault"}}


def _guaranteed(group: dict) -> dict:
    """Requests equal to limits (values.yaml says why)."""
    amounts = {"cpu": group["cpu"], "memory": group["memory"]}
    if "gpus" in group:
        amounts["nvidia.com/gpu"] = group["gpus"]
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _ray_pod(values: dict, container: dict, group: dict, shm_comment: str) -> dict:
    """A Ray node's pod spec: the container as given plus what every Ray container has."""
    storage = values["storage"]
    container = {
        **container,
        "env": [
            {"name": "MLFLOW_TRACKING_URI", "value": mlflow_uri(values)},
            Commented(
                "MLflow's basic auth (cluster/mlflow.yaml); the MLflow client reads these two.",
                _secret_env(
                    "MLFLOW_TRACKING_USERNAME", values["secrets"]["mlflow_auth"], "username"
                ),
            ),
            _secret_env("MLFLOW_TRACKING_PASSWORD", values["secrets"]["mlflow_auth"], "password"),
            *_ray_token_env(values),
        ],
        "resources": _guaranteed(group),
        "securityContext": RESTRICTED,
        "lifecycle": RAY_STOP,
        "volumeMounts": [
            {"name": "cluster-storage", "mountPath": storage["mount_path"]},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    return {
        "securityContext": _pod_security(RAY_UID, RAY_GID, fs_group=RAY_GID),
        "containers": [container],
        "volumes": [
            {"name": "cluster-storage", "persistentVolumeClaim": {"claimName": storage["claim"]}},
            Commented(
                shm_comment,
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": group["shm"]}},
            ),
        ],
    }


def ray_cluster_spec(values: dict) -> dict:
    """The Ray cluster, the RayCluster's spec and the RayJob's rayClusterSpec alike."""
    head_container = {
        "name": "ray-head",
        "image": Commented(
            "The image of cluster/values.yaml, built from the repo's Dockerfile.", values["image"]
        ),
        "workingDir": Commented(
            "The image's WORKDIR, explicit: `ray start` runs here, and job drivers started without "
            "a --working-dir inherit it.",
            values["code_dir"],
        ),
        "ports": [
            {"containerPort": 6379, "name": "gcs-server"},
            {"containerPort": 8265, "name": "dashboard"},
            {"containerPort": 10001, "name": "client"},
        ],
    }
    head_pod = _ray_pod(
        values,
        head_container,
        values["head"],
        "Ray's object store lives in /dev/shm (the container default is 64Mi). KubeRay would add "
        "such a volume itself; it is explicit here to size it.",
    )
    head_pod["securityContext"] = Commented(
        f"The image's user `ray` (uid {RAY_UID}, group users); numeric, so that the kubelet can "
        "check runAsNonRoot. fsGroup makes the shared PVC writable by it.",
        head_pod["securityContext"],
    )
    workers = values["gpu_workers"]
    worker_pod = {
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        **_ray_pod(
            values,
            {"name": "ray-worker", "image": Commented("Same image as the head.", values["image"])},
            workers,
            "Shared memory for NCCL (intra-node GPU communication) and Ray's object store (30% of "
            "the pod's memory by default). Memory-backed: what is written here counts against the "
            "pod's memory limit.",
        ),
    }
    worker_pod["securityContext"] = Commented(
        "Pin a GPU model if the cluster has several, e.g. (label depends on your provider):\n"
        "nodeSelector:\n"
        "  nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB\n"
        "Non-root as on the head.",
        worker_pod["securityContext"],
    )
    return {
        "rayVersion": values["ray_version"],
        "authOptions": {"mode": "token", "secretName": values["secrets"]["ray_token"]},
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "version": "v2",
            "upscalingMode": "Default",
            "idleTimeoutSeconds": values["idle_timeout_seconds"],
            "env": _ray_token_env(values),
            "resources": {
                "requests": {"cpu": "500m", "memory": "512Mi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            },
            "securityContext": RESTRICTED,
        },
        "headGroupSpec": Commented(
            "Head: GCS, dashboard, autoscaler and the study driver. num-cpus 0 keeps every task, "
            "actor and training worker off it; it needs no GPU and, lacking the GPU toleration, "
            "stays off GPU nodes.",
            {
                "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                "template": {"spec": head_pod},
            },
        ),
        "workerGroupSpecs": [
            Commented(
                f"One {workers['gpus']}-GPU node per pod (A100 80GB nodes, e.g. "
                "p4de/a2-ultragpu/ND A100 v4). The autoscaler adds pods up to maxReplicas while "
                "Ray Tune has trials waiting for GPUs and removes idle ones after "
                "idleTimeoutSeconds.",
                {
                    "groupName": workers["group"],
                    "replicas": workers["replicas"],
                    "minReplicas": workers["min_replicas"],
                    "maxReplicas": workers["max_replicas"],
                    "rayStartParams": {},
                    "template": {"spec": worker_pod},
                },
            )
        ],
    }


def _metadata(values: dict, name: str, **extra) -> dict:
    return {"name": name, "namespace": values["namespace"], **extra}


def ray_cluster(values: dict) -> dict:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": _metadata(values, "phyray"),
        "spec": ray_cluster_spec(values),
    }


def paper_job(values: dict) -> dict:
    job, code, data = values["paper_job"], values["code_dir"], values["storage"]["mount_path"]
    submitter = {
        "restartPolicy": "Never",
        "securityContext": _pod_security(RAY_UID, RAY_GID),
        "containers": [
            {
                "name": "ray-job-submitter",
                "image": Commented("Same image as the head.", values["image"]),
                "env": _ray_token_env(values),
                "resources": {
                    "requests": {"cpu": "500m", "memory": "200Mi"},
                    "limits": {"cpu": "1", "memory": "1Gi"},
                },
                "securityContext": RESTRICTED,
            }
        ],
    }
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": mlflow_uri(values)}}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": _metadata(values, job["name"]),
        "spec": {
            "submissionMode": Commented(
                "K8sJobMode: a Kubernetes Job (with the head's image) runs `ray job submit` "
                "against the cluster.",
                "K8sJobMode",
            ),
            "entrypoint": Commented(
                "The driver runs on the head node, from the code baked into the image (absolute "
                "paths, so it does not depend on the directory the job starts in). KubeRay pastes "
                "the entrypoint into the submitter's shell command, so no `&&`/`;` here.",
                f"python {code}/studies/scaling_law.py --config {code}/{job['config']} "
                f"--set output_dir={data}/studies --set data_dir={data}/data",
            ),
            "runtimeEnvYAML": yaml.safe_dump(runtime_env, sort_keys=False),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": job["ttl_seconds_after_finished"],
            "submitterPodTemplate": Commented(
                "The pod that runs `ray job submit`. The operator's default one has no "
                "securityContext; this is that default (head image, its resources, restartPolicy "
                "Never) made non-root. The operator fills in the command and the dashboard "
                "address; the token env is explicit as in the Ray pods below.",
                {"spec": submitter},
            ),
            "rayClusterSpec": Commented(
                "Same cluster as cluster/raycluster.yaml (KubeRay needs the spec inline; both "
                "render from one definition in cluster/render.py).",
                ray_cluster_spec(values),
            ),
        },
    }


def shared_storage(values: dict) -> dict:
    storage = values["storage"]
    spec = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": storage["size"]}},
    }
    if storage["class"]:
        spec["storageClassName"] = storage["class"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(values, storage["claim"]),
        "spec": spec,
    }


def _mlflow_container(values: dict) -> dict:
    namespace, port = values["namespace"], values["mlflow"]["port"]
    auth, database = values["secrets"]["mlflow_auth"], values["secrets"]["mlflow_db"]
    service = f"{MLFLOW}.{namespace}.svc"
    allowed_hosts = [MLFLOW, f"{MLFLOW}.{namespace}", service, f"{service}.cluster.local"]
    allowed_hosts += ["localhost", "127.0.0.1"]
    return {
        "name": MLFLOW,
        "image": values["mlflow"]["image"],
        "command": [
            *("mlflow", "server", "--app-name", "basic-auth"),
            *("--host", "0.0.0.0", "--port", str(port)),
            *("--backend-store-uri", f"$({MLFLOW_STORE_ENV})"),
            *("--artifacts-destination", f"{MLFLOW_DATA}/artifacts", "--serve-artifacts"),
            Commented(
                "MLflow >= 3.5 rejects Host headers other than localhost and private IPs (DNS "
                f'rebinding protection); the Ray pods send "{service}:{port}", port-forward sends '
                f'"127.0.0.1:{port}" or "localhost:{port}".',
                "--allowed-hosts",
            ),
            ",".join(f"{host}:*" for host in allowed_hosts),
        ],
        "env": [
            {"name": "MLFLOW_AUTH_CONFIG_PATH", "value": f"{MLFLOW_AUTH_DIR}/basic_auth.ini"},
            _secret_env("MLFLOW_AUTH_ADMIN_USERNAME", auth, "username"),
            _secret_env("MLFLOW_AUTH_ADMIN_PASSWORD", auth, "password"),
            Commented(
                "Signs the auth app's CSRF tokens; the same key in every server worker.",
                _secret_env("MLFLOW_FLASK_SERVER_SECRET_KEY", auth, "flask_secret_key"),
            ),
            Commented(
                f"The backend store's DSN (PostgreSQL) from Secret {database}, key uri; the "
                "kubelet puts it into --backend-store-uri above, so the password is in no "
                "manifest.",
                _secret_env(MLFLOW_STORE_ENV, database, "uri"),
            ),
            Commented(
                "The uid above has no home directory in the image; Python and MLflow may write "
                "there.",
                {"name": "HOME", "value": "/tmp"},
            ),
        ],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {
            "tcpSocket": {"port": "http"},
            "initialDelaySeconds": 5,
            "periodSeconds": 10,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "http"},
            "initialDelaySeconds": 30,
            "periodSeconds": 30,
        },
        "resources": values["mlflow"]["resources"],
        "securityContext": RESTRICTED,
        "volumeMounts": [
            {"name": "data", "mountPath": MLFLOW_DATA},
            {"name": "auth-config", "mountPath": MLFLOW_AUTH_DIR, "readOnly": True},
        ],
    }


def mlflow_documents(values: dict) -> list:
    labels = {"app": MLFLOW}
    basic_auth = (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{MLFLOW_DATA}/basic_auth.db\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    pod = {
        "securityContext": Commented(
            "A fixed non-root uid, whatever user the image defaults to. fsGroup makes the PVC "
            "writable by it.",
            _pod_security(MLFLOW_UID, MLFLOW_UID, fs_group=MLFLOW_UID),
        ),
        "containers": [_mlflow_container(values)],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "mlflow-data"}},
            {"name": "auth-config", "configMap": {"name": "mlflow-auth"}},
        ],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": values["namespace"]}},
        Commented(
            "Where the auth app keeps its users: a SQLite file on the PVC, beside the artifacts. "
            "It reads its database URI from this file only, so PostgreSQL here would put the "
            "password into a ConfigMap; its default, a relative sqlite path, would land in the "
            "image's working directory, read-only to a non-root user.",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _metadata(values, "mlflow-auth"),
                "data": {"basic_auth.ini": basic_auth},
            },
        ),
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _metadata(values, "mlflow-data"),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": values["mlflow"]["storage"]}},
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(values, MLFLOW, labels=labels),
            "spec": {
                "replicas": 1,
                "strategy": Commented(
                    "ReadWriteOnce volume (artifacts, the auth app's SQLite users): never two "
                    "servers at once.",
                    {"type": "Recreate"},
                ),
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(values, MLFLOW),
            "spec": {
                "type": "ClusterIP",
                "selector": labels,
                "ports": [{"name": "http", "port": values["mlflow"]["port"], "targetPort": "http"}],
            },
        },
    ]


# --- The files' header comments --------------------------------------------------------------


def _secret_commands(values: dict) -> str:
    """The kubectl commands that create the Secrets (cluster/README.md, section 2)."""
    namespace, secrets = values["namespace"], values["secrets"]
    return (
        f"  kubectl -n {namespace} create secret generic {secrets['ray_token']} "
        "--from-literal=auth_token=$(openssl rand -hex 32)\n"
        f"  (and Secrets {secrets['mlflow_auth']} for MLflow's basic auth and "
        f"{secrets['mlflow_db']}\n"
        "  for its database, as cluster/mlflow.yaml says)\n"
    )


def mlflow_header(values: dict) -> str:
    namespace, port = values["namespace"], values["mlflow"]["port"]
    auth, database = values["secrets"]["mlflow_auth"], values["secrets"]["mlflow_db"]
    return (
        f"MLflow tracking server for phyray, reached by the Ray pods at {mlflow_uri(values)}.\n"
        "  kubectl apply -f cluster/mlflow.yaml\n"
        f"  kubectl -n {namespace} create secret generic {auth} --from-literal=username=admin \\\n"
        "    --from-literal=password=$(openssl rand -hex 24) "
        "--from-literal=flask_secret_key=$(openssl rand -hex 32)\n"
        f"  kubectl -n {namespace} create secret generic {database} \\\n"
        "    --from-literal=uri='postgresql://USER:PASSWORD@HOST:5432/mlflow'\n"
        f"  kubectl -n {namespace} port-forward svc/{MLFLOW} {port}:{port}     "
        f"# then open http://127.0.0.1:{port}\n"
        f"Basic auth (--app-name basic-auth): every request needs the user and password of Secret "
        f"{auth}; the server creates that admin user on its first start. The Ray pods take the "
        "same pair as MLFLOW_TRACKING_USERNAME/PASSWORD, and so must a client outside "
        "(cluster/README.md).\n"
        "Artifacts are proxied through the server (--serve-artifacts), so the Ray pods need no "
        f"bucket credentials: they upload plots, reports and checkpoints over HTTP to "
        f"{MLFLOW_DATA}/artifacts.\n"
        f"Backend store: the PostgreSQL database whose DSN is in Secret {database} (key uri), one "
        "you run (a managed PostgreSQL, or an operator's cluster), empty at first: MLflow creates "
        "its tables on its first start. Percent-encode special characters in the password. The "
        "image is MLflow's -full variant, which has the PostgreSQL drivers (cluster/values.yaml).\n"
        "Alternative without a database server, for one user: a SQLite file on this pod's PVC,\n"
        f"  --from-literal=uri=sqlite:///{MLFLOW_DATA}/mlflow.db\n"
        "For the artifacts, an object store scales further: --artifacts-destination "
        "s3://bucket/mlflow, its credentials on this pod only.\n"
    )


def storage_header(values: dict) -> str:
    mount = values["storage"]["mount_path"]
    return (
        f"Shared storage for every Ray pod of the phyray cluster, mounted at {mount}. phyray's "
        "studies keep their datasets, VAE checkpoints, latents, trial checkpoints and Ray "
        "Train/Tune state there, so all pods must see the same files: study configs (or --set) "
        f"must put `output_dir` and `data_dir` under {mount}.\n"
        "Needs a storage class that supports ReadWriteMany (NFS, CephFS, EFS, Filestore, Azure "
        "Files...): `storage.class` in cluster/values.yaml.\n"
        "  kubectl apply -f cluster/mlflow.yaml -f cluster/storage.yaml   "
        "# mlflow.yaml creates the namespace\n"
    )


def _ray_release(values: dict) -> str:
    """'2.60' of '2.60.0'."""
    return ".".join(values["ray_version"].split(".")[:2])


def raycluster_header(values: dict) -> str:
    storage, token = values["storage"], values["secrets"]["ray_token"]
    return (
        f"A long-lived, autoscaling Ray cluster for phyray (Ray {_ray_release(values)}; "
        'KubeRay >= 1.6 as written, for an older one see "Token auth" below). Submit studies to '
        "it with `ray job submit` (cluster/README.md); cluster/rayjob-paper.yaml is the one-shot "
        "alternative that brings up the same cluster for one study and deletes it afterwards.\n"
        "  kubectl apply -f cluster/mlflow.yaml -f cluster/storage.yaml     "
        "# namespace, MLflow, shared PVC\n"
        f"{_secret_commands(values)}"
        "  kubectl apply -f cluster/raycluster.yaml\n"
        "\n"
        "Token auth (Ray >= 2.52): every Ray process and every client (`ray job submit`, the "
        f"dashboard) must present the token in Secret {token} (key auth_token); create it as "
        "above before applying. `authOptions` (KubeRay >= 1.6) has the operator inject "
        "RAY_AUTH_MODE/RAY_AUTH_TOKEN into every Ray container (it leaves ones already set, like "
        "the explicit env below, alone) and lets the operator itself talk to the dashboard. On an "
        "older KubeRay, delete `authOptions`: the explicit env below (and in autoscalerOptions) "
        "then enables token auth on its own.\n"
        "\n"
        f"Storage: every pod mounts PVC {storage['claim']} (cluster/storage.yaml) at "
        f"{storage['mount_path']}. The study's datasets, checkpoints and Ray Train/Tune state "
        "must live there, so a study run here needs `output_dir` and `data_dir` under it "
        f"(--set output_dir={storage['mount_path']}/studies "
        f"--set data_dir={storage['mount_path']}/data).\n"
    )


def rayjob_header(values: dict) -> str:
    namespace, job = values["namespace"], values["paper_job"]
    return (
        f"The paper's scaling study as one KubeRay RayJob (KubeRay >= 1.6, Ray "
        f"{_ray_release(values)}): KubeRay creates a Ray cluster like cluster/raycluster.yaml, "
        "submits the study once the head is up, and deletes the cluster ttlSecondsAfterFinished "
        f"({job['ttl_seconds_after_finished']} s) after the study ends (the dashboard and logs "
        f"stay up that long; idle GPU workers already go after {values['idle_timeout_seconds']} "
        "s). Prerequisites and commands, as in cluster/README.md:\n"
        "  kubectl apply -f cluster/mlflow.yaml -f cluster/storage.yaml\n"
        f"{_secret_commands(values)}"
        "  kubectl apply -f cluster/rayjob-paper.yaml\n"
        f"  kubectl -n {namespace} get rayjob {job['name']} -w                   # status\n"
        f"  kubectl -n {namespace} logs -f job/{job['name']}                     "
        "# the study's output\n"
        "Rerunning the study (delete and re-apply) skips its finished trials: they are on the "
        "shared PVC and in MLflow.\n"
        "\n"
        "authOptions (in rayClusterSpec) is required here, not optional as in raycluster.yaml: "
        "with it the operator puts the token into the submitter pod and authenticates its own "
        "job-status queries to the dashboard; with the env vars alone it would get 401s and never "
        "see the job finish.\n"
    )


# File name -> (header comment, documents), each a function of the values.
FILES: dict[str, tuple[Callable[[dict], str], Callable[[dict], list]]] = {
    "mlflow.yaml": (mlflow_header, mlflow_documents),
    "storage.yaml": (storage_header, lambda values: [shared_storage(values)]),
    "raycluster.yaml": (raycluster_header, lambda values: [ray_cluster(values)]),
    "rayjob-paper.yaml": (rayjob_header, lambda values: [paper_job(values)]),
}


# --- YAML with comments ----------------------------------------------------------------------


STR_TAG = "tag:yaml.org,2002:str"


class _Dumper(yaml.SafeDumper):
    """Block style with lists indented under their key, as Kubernetes' docs write manifests, and
    no anchors: a value used twice (RESTRICTED) is written out twice."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data):
        return True


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    if "\n" in text:
        style = "|"  # a config file or runtime env, readable as it is
    elif len(text) > COMMENT_WIDTH // 2 and " " in text:
        style = ">"  # a long command, folded over lines
    elif dumper.resolve(yaml.ScalarNode, text, (True, False)) != STR_TAG:
        style = '"'  # "8", "0", "true": plain, they would read as a number or boolean
    else:
        style = None
    return dumper.represent_scalar(STR_TAG, text, style=style)


_Dumper.add_representer(str, _represent_str)


def _strip(node: Any, path: tuple, comments: dict) -> Any:
    """The plain value of a node with Commented parts; comments gets path -> comment."""
    if isinstance(node, Commented):
        comments[path] = node.comment
        return _strip(node.value, path, comments)
    if isinstance(node, dict):
        return {key: _strip(value, (*path, key), comments) for key, value in node.items()}
    if isinstance(node, list):
        return [_strip(value, (*path, index), comments) for index, value in enumerate(node)]
    return node


def _positions(node: yaml.Node, path: tuple = ()) -> dict:
    """path -> (line, column) where a comment for it goes: its key's, or its item's `-`."""
    found = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found[(*path, key.value)] = (key.start_mark.line, key.start_mark.column)
            found |= _positions(value, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found[(*path, index)] = (item.start_mark.line, item.start_mark.column - len("- "))
            found |= _positions(item, (*path, index))
    return found


def comment_lines(comment: str, indent: int = 0) -> list[str]:
    lines = []
    for line in comment.splitlines():
        if line.startswith(" ") or not line:
            lines.append(f"{' ' * indent}# {line}".rstrip())
        else:
            # Names like phyray-mlflow-auth and paths stay whole.
            parts = textwrap.wrap(
                line,
                COMMENT_WIDTH - indent - len("# "),
                break_long_words=False,
                break_on_hyphens=False,
            )
            lines += [f"{' ' * indent}# {part}" for part in parts]
    return lines


def dump_document(document: Any) -> str:
    comments = {}
    plain = _strip(document, (), comments)
    text = yaml.dump(plain, Dumper=_Dumper, sort_keys=False, width=COMMENT_WIDTH)
    lines = text.splitlines()
    positions = _positions(yaml.compose(text, Loader=yaml.SafeLoader))
    document_comment = comments.pop((), None)
    # From the bottom up, so that the line numbers above stay right.
    for path in sorted(comments, key=lambda path: positions[path], reverse=True):
        line, column = positions[path]
        lines[line:line] = comment_lines(comments[path], column)
    if document_comment:
        lines[:0] = comment_lines(document_comment)
    return "\n".join(lines) + "\n"


def render(values: dict) -> dict[str, str]:
    """File name -> its text."""
    rendered = {}
    for name, (header, documents) in FILES.items():
        text = "\n".join(comment_lines(f"{GENERATED}\n\n{header(values)}")) + "\n"
        rendered[name] = text + "---\n".join(dump_document(doc) for doc in documents(values))
    return rendered


def load_values(path: Path = VALUES) -> dict:
    return yaml.safe_load(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file differs"
    )
    parser.add_argument("--values", type=Path, default=VALUES, help="default: cluster/values.yaml")
    parser.add_argument("--out", type=Path, default=CLUSTER, help="default: cluster/")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render(load_values(args.values)).items():
        path = args.out / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not args.check:
            # A temporary name, then a rename: no half-written manifest if the run is cut short.
            partial = path.with_name(path.name + ".partial")
            partial.write_text(text)
            partial.replace(path)
    for name in stale:
        change = "differs from its rendering" if args.check else "rewritten"
        print(f"{args.out / name}: {change} (from {args.values})")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
