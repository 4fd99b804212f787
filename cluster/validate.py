"""Offline checks of the Kubernetes manifests in cluster/, one line per problem.

    python cluster/validate.py                  # every cluster/*.yaml
    python cluster/validate.py --crds DIR       # against your cluster's own KubeRay CRDs
    python cluster/validate.py FILE.yaml ...    # other manifests

The API server drops unknown fields silently, so a misspelt field would surface hours later on a
paid cluster as a setting that never took effect. Three checks catch it here:
- built-in kinds (Namespace, Deployment, Service...) against the Kubernetes JSON schemas that
  kubernetes-validate bundles, in strict mode (unknown fields are errors);
- RayCluster and RayJob against KubeRay's own CRD schemas, made strict the same way, plus the
  rules the operator enforces that the schema does not encode;
- a secure-by-default policy: Ray dashboard and job API cluster-internal with token auth, MLflow
  behind basic auth with its backend store's DSN from a Secret, non-root pods with requests and
  limits, no credential in any manifest.

KubeRay CRDs come from --crds, else $PHYRAY_KUBERAY_CRDS, else the reference copy in
../shared/reference/kuberay-crds-v1.7.0 next to the repository. A directory holds the CRD YAMLs,
e.g. `kubectl get crd rayclusters.ray.io rayjobs.ray.io -o yaml > DIR/kuberay-crds.yaml`.
Exit status: 0 clean, 1 problems found, 2 RayCluster/RayJob documents but no CRDs to check them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[1]
# values.yaml is render.py's input, not a manifest.
MANIFESTS = sorted(path for path in (REPO / "cluster").glob("*.yaml") if path.name != "values.yaml")
CRDS_ENV = "PHYRAY_KUBERAY_CRDS"
SHARED_CRDS = REPO.parent / "shared" / "reference" / "kuberay-crds-v1.7.0"
# A version that current managed clusters run; later ones only add fields, so a manifest valid
# here stays valid there.
KUBERNETES_VERSION = "1.34"
RAY_API = "ray.io/v1"
# The operator's accepted values (rayjob_types.go); the CRD types the field as a free string.
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
# Service types that publish a port outside the cluster.
EXPOSED_SERVICE_TYPES = {"LoadBalancer", "NodePort"}
# Env var names and mapping keys whose value is a credential: it must come from a Secret.
CREDENTIAL_NAME = re.compile(
    r"PASSWORD|PASSWD|TOKEN|SECRET|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE
)
# Keys that name a Secret rather than hold one (secretName, secretKeyRef).
REFERENCE_SUFFIXES = ("Name", "Ref")
# user:password@ inside a URI (a database DSN with its password inline).
URI_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
# jsonschema's messages repeat the offending value; a whole object would swamp the line.
MESSAGE_CHARS = 200


@dataclass(frozen=True)
class Problem:
    file: str
    document: str  # Kind/name
    path: str  # inside the document, e.g. spec.workerGroupSpecs[0].rayStartParams
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.document}: {self.path or '(document)'}: {self.reason}"


def load_documents(path: Path) -> list[dict]:
    """The non-empty YAML documents of a file (the C loader: the CRDs are 2 MB of YAML)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(path.read_text(), Loader=loader) if doc]


def document_name(doc: dict) -> str:
    return f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"


def dotted(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


# --- KubeRay CRDs ----------------------------------------------------------------------------


def crd_directory(explicit: str | os.PathLike | None = None) -> Path | None:
    """Where the KubeRay CRDs are, or None when nowhere. A directory named explicitly (argument or
    environment) must exist: a typo there must not turn the check into a silent skip."""
    named = explicit or os.environ.get(CRDS_ENV)
    if named:
        if not Path(named).is_dir():
            raise FileNotFoundError(f"KubeRay CRD directory {named} does not exist")
        return Path(named)
    return SHARED_CRDS if SHARED_CRDS.is_dir() else None


def _strict(schema: dict) -> dict:
    """A copy of an OpenAPI schema node that rejects unlisted properties, as a strict API-server
    field validation would. Like the API server's pruning, `x-kubernetes-preserve-unknown-fields`
    keeps one node open, and nodes nested under it that list properties are strict again."""
    strict = dict(schema)
    if "properties" in schema:
        strict["properties"] = {name: _strict(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            strict["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            strict[key] = _strict(schema[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            strict[key] = [_strict(sub) for sub in schema[key]]
    # Quantities and ports: the extension alone means "integer or string" to the API server.
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in schema:
        strict.pop("type", None)
        strict["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return strict


@lru_cache(maxsize=4)
def crd_validators(directory: Path) -> dict[tuple[str, str], jsonschema.Validator]:
    """(apiVersion, kind) -> strict validator, for every ray.io CRD in the directory's YAMLs
    (plain CRDs or the `List` that `kubectl get crd ... -o yaml` prints for several)."""
    validators = {}
    for path in sorted(directory.glob("*.y*ml")):
        for doc in load_documents(path):
            for crd in doc.get("items", []) if doc.get("kind") == "List" else [doc]:
                if (
                    crd.get("kind") != "CustomResourceDefinition"
                    or crd["spec"]["group"] != "ray.io"
                ):
                    continue
                for version in crd["spec"]["versions"]:
                    if version["name"] == "v1":
                        schema = _strict(version["schema"]["openAPIV3Schema"])
                        validators[(RAY_API, crd["spec"]["names"]["kind"])] = (
                            jsonschema.Draft202012Validator(schema)
                        )
    if not validators:
        raise FileNotFoundError(f"no ray.io v1 CustomResourceDefinition in {directory}/*.yaml")
    return validators


def _schema_problems(error: jsonschema.ValidationError) -> Iterator[tuple[str, str]]:
    """(path, reason) lines for one jsonschema error; an unknown field is named in the path."""
    if error.validator == "additionalProperties" and error.validator_value is False:
        for name in sorted(set(error.instance) - set(error.schema.get("properties", {}))):
            yield (
                dotted([*error.absolute_path, name]),
                "unknown field (the API server would drop it silently)",
            )
        return
    message = error.message
    if len(message) > MESSAGE_CHARS:
        message = message[:MESSAGE_CHARS] + "..."
    yield dotted(error.absolute_path), message


def _ray_rules(doc: dict) -> Iterator[tuple[str, str]]:
    """KubeRay rules that the CRD schema leaves out (SOURCE.md of the reference CRDs)."""
    if doc.get("kind") != "RayJob":
        return
    spec = doc.get("spec") or {}
    mode = spec.get("submissionMode", "K8sJobMode")
    if isinstance(mode, str) and mode not in SUBMISSION_MODES:
        yield "spec.submissionMode", f"{mode!r} is not one of {sorted(SUBMISSION_MODES)}"
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    if isinstance(ttl, int) and ttl > 0 and spec.get("shutdownAfterJobFinishes") is not True:
        yield "spec.ttlSecondsAfterFinished", "has no effect without shutdownAfterJobFinishes: true"


def ray_problems(doc: dict, validators: dict) -> Iterator[tuple[str, str]]:
    validator = validators.get((doc.get("apiVersion"), doc.get("kind")))
    if validator is None:
        yield (
            "apiVersion",
            f"no KubeRay CRD for {doc.get('apiVersion')} {doc.get('kind')} (expected {RAY_API})",
        )
        return
    for error in sorted(validator.iter_errors(doc), key=lambda e: dotted(e.absolute_path)):
        yield from _schema_problems(error)
    yield from _ray_rules(doc)


# --- Built-in kinds --------------------------------------------------------------------------


def builtin_problems(doc: dict, version: str = KUBERNETES_VERSION) -> Iterator[tuple[str, str]]:
    """kubernetes-validate stops at the first error of a document: fix it and run again."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        yield from _schema_problems(error)
    except kubernetes_validate.SchemaNotFoundError as error:
        # An unknown kind or apiVersion is a typo too (or a CRD this tool knows nothing of).
        yield "apiVersion", error.message


# --- Secure by default -----------------------------------------------------------------------


def _at(node: Any, *keys) -> Any:
    """node[key][key]..., or None where a key is missing or the node has another type: the schema
    check reports a malformed document, the policy check must not crash on it."""
    for key in keys:
        if isinstance(node, dict) and isinstance(key, str):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return None
    return node


def _ray_cluster_specs(doc: dict) -> Iterator[tuple[str, dict]]:
    if doc.get("kind") == "RayCluster":
        yield "spec", _at(doc, "spec") or {}
    elif doc.get("kind") == "RayJob" and isinstance(_at(doc, "spec", "rayClusterSpec"), dict):
        yield "spec.rayClusterSpec", doc["spec"]["rayClusterSpec"]


def pod_specs(doc: dict) -> Iterator[tuple[str, dict]]:
    """(path, pod spec) of every pod a document brings about."""
    templates = []  # paths of pod templates
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        templates.append(["spec", "template"])
    for path, cluster in _ray_cluster_specs(doc):
        prefix = path.split(".")
        templates.append([*prefix, "headGroupSpec", "template"])
        for index in range(len(_at(cluster, "workerGroupSpecs") or [])):
            templates.append([*prefix, "workerGroupSpecs", index, "template"])
    if doc.get("kind") == "RayJob":
        templates.append(["spec", "submitterPodTemplate"])
    for template in templates:
        if isinstance(pod := _at(doc, *template, "spec"), dict):
            yield dotted([*template, "spec"]), pod


def containers(doc: dict) -> Iterator[tuple[str, dict, dict]]:
    """(path, container, its pod spec) of every container, init containers included, of every
    pod a document brings about."""
    for pod_path, pod in pod_specs(doc):
        for field in ("initContainers", "containers"):
            for index, container in enumerate(pod.get(field) or []):
                yield f"{pod_path}.{field}[{index}]", container, pod


def _exposure_problems(doc: dict) -> Iterator[tuple[str, str]]:
    """The Ray dashboard and job API (and MLflow) stay cluster-internal; Ray asks for its token."""
    if doc.get("kind") == "Service" and _at(doc, "spec", "type") in EXPOSED_SERVICE_TYPES:
        yield "spec.type", f"{doc['spec']['type']} exposes the service outside the cluster"
    for path, cluster in _ray_cluster_specs(doc):
        if _at(cluster, "headGroupSpec", "serviceType") in EXPOSED_SERVICE_TYPES:
            yield f"{path}.headGroupSpec.serviceType", "exposes the Ray dashboard and job API"
        if _at(cluster, "headGroupSpec", "enableIngress"):
            yield f"{path}.headGroupSpec.enableIngress", "exposes the Ray dashboard and job API"
        if _at(cluster, "authOptions", "mode") != "token" or not _at(
            cluster, "authOptions", "secretName"
        ):
            yield (
                f"{path}.authOptions",
                "Ray token auth off, or its token not from a Secret (secretName)",
            )


def _resource_problems(path: str, resources: Any) -> Iterator[tuple[str, str]]:
    # Requests place the pod; limits keep one runaway trial from starving its node's neighbours.
    for bound in ("requests", "limits"):
        given = _at(resources, bound) or {}
        if missing := [name for name in ("cpu", "memory") if name not in given]:
            yield f"{path}.resources.{bound}", f"no {' and '.join(missing)} {bound}"


def _mlflow_problems(path: str, container: dict) -> Iterator[tuple[str, str]]:
    command = [
        str(part) for part in (container.get("command") or []) + (container.get("args") or [])
    ]
    if command[:2] != ["mlflow", "server"]:
        return
    # Each argument mapped to the one after it: the value of an option.
    options = dict(zip(command, command[1:]))
    if options.get("--app-name") != "basic-auth":
        yield (
            f"{path}.command",
            "mlflow server without --app-name basic-auth: open to anyone in the cluster",
        )
    from_secret = {
        env.get("name")
        for env in container.get("env") or []
        if _at(env, "valueFrom", "secretKeyRef")
    }
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        if name not in from_secret:
            yield f"{path}.env", f"{name} not taken from a Secret"
    # The store's DSN holds the database's password: an env var from a Secret, which the kubelet
    # substitutes into the command as $(NAME).
    store = re.fullmatch(r"\$\((\w+)\)", options.get("--backend-store-uri", ""))
    if store is None or store[1] not in from_secret:
        yield (
            f"{path}.command",
            "--backend-store-uri not taken from a Secret ($(NAME), NAME from a secretKeyRef)",
        )


def _container_problems(doc: dict) -> Iterator[tuple[str, str]]:
    """Every container non-root, with requests and limits; MLflow behind basic auth, its
    backend store from a Secret."""
    if (
        doc.get("kind") == "RayJob"
        and _at(doc, "spec", "submissionMode") in (None, "K8sJobMode")
        and _at(doc, "spec", "submitterPodTemplate") is None
    ):
        yield "spec.submitterPodTemplate", "missing: the operator's default has no securityContext"
    for path, cluster in _ray_cluster_specs(doc):
        # The autoscaler sidecar: its securityContext defaults to the head pod's.
        if isinstance(autoscaler := cluster.get("autoscalerOptions"), dict):
            yield from _resource_problems(f"{path}.autoscalerOptions", autoscaler.get("resources"))
    for path, container, pod in containers(doc):
        non_root = _at(container, "securityContext", "runAsNonRoot")
        if (_at(pod, "securityContext", "runAsNonRoot") if non_root is None else non_root) is not True:
            yield f"{path}.securityContext", "runAsNonRoot is not true (pod or container)"
        yield from _resource_problems(path, _at(container, "resources"))
        yield from _mlflow_problems(path, container)


def _walk(node: Any, path: list) -> Iterator[tuple[list, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, [*path, key])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, [*path, index])


def _literal_problems(doc: dict) -> Iterator[tuple[str, str]]:
    """Anywhere in the document: no privileged container and no credential written out."""
    if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
        yield "data", "a Secret's values in a manifest (create it with kubectl, cluster/README.md)"
    for path, value in _walk(doc, []):
        key = path[-1] if path else None
        if key == "privileged" and value is True:
            yield dotted(path), "privileged container"
        elif (
            isinstance(value, dict)
            and CREDENTIAL_NAME.search(str(value.get("name")))
            and value.get("value")
        ):
            yield dotted([*path, "value"]), f"{value['name']} inline (use valueFrom.secretKeyRef)"
        elif (
            isinstance(key, str)
            and CREDENTIAL_NAME.search(key)
            and not key.endswith(REFERENCE_SUFFIXES)
            and isinstance(value, str)
            and value
        ):
            yield dotted(path), "credential inline (take it from a Secret)"
        elif isinstance(value, str) and URI_WITH_PASSWORD.search(value):
            yield dotted(path), "URI with a password inline (take it from a Secret)"


def policy_problems(doc: dict) -> Iterator[tuple[str, str]]:
    """The secure-by-default properties of issue 20, part 5."""
    yield from _exposure_problems(doc)
    yield from _container_problems(doc)
    yield from _literal_problems(doc)


# --- Driver ----------------------------------------------------------------------------------


def validate(paths: list[Path], crds: Path | None) -> tuple[list[Problem], list[str]]:
    """(problems, documents not checked against a schema for want of CRDs)."""
    validators = crd_validators(crds) if crds else None
    problems, unchecked = [], []
    for path in paths:
        shown = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
        for doc in load_documents(path):
            if str(doc.get("apiVersion", "")).startswith("ray.io/"):
                if validators is None:
                    unchecked.append(f"{shown}: {document_name(doc)}")
                    found = list(_ray_rules(doc))
                else:
                    found = list(ray_problems(doc, validators))
            else:
                found = list(builtin_problems(doc))
            found += policy_problems(doc)
            problems += [
                Problem(shown, document_name(doc), where, reason) for where, reason in found
            ]
    return problems, unchecked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "manifests", nargs="*", type=Path, default=MANIFESTS, help="default: cluster/*.yaml"
    )
    parser.add_argument(
        "--crds", help=f"directory of KubeRay CRD YAMLs (default: ${CRDS_ENV}, else {SHARED_CRDS})"
    )
    args = parser.parse_args(argv)
    problems, unchecked = validate(
        [path.resolve() for path in args.manifests], crd_directory(args.crds)
    )
    for problem in problems:
        print(problem)
    if unchecked:
        hint = f"no KubeRay CRDs; pass --crds DIR or set {CRDS_ENV}"
        print(f"not checked against a CRD schema ({hint}): {', '.join(unchecked)}", file=sys.stderr)
    return 1 if problems else 2 if unchecked else 0


if __name__ == "__main__":
    sys.exit(main())
