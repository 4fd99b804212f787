"""The KubeRay/Kubernetes manifests in cluster/: schema-valid (built-in kinds against Kubernetes'
JSON schemas, RayCluster/RayJob against KubeRay's CRDs, strictly) and secure by default; and the
validation itself catches a misspelt field, a wrong type and a missing required field."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def _import_validate():
    """cluster/validate.py is a script, not part of the package: import it from its file."""
    spec = importlib.util.spec_from_file_location("cluster_validate", CLUSTER / "validate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


validate = _import_validate()


def _documents() -> dict[str, dict]:
    """Kind -> the first document of that kind across cluster/*.yaml."""
    found = {}
    for path in validate.MANIFESTS:
        for doc in validate.load_documents(path):
            found.setdefault(doc["kind"], doc)
    return found


DOCUMENTS = _documents()


@pytest.fixture(scope="module")
def crd_validators():
    directory = validate.crd_directory()
    if directory is None:
        pytest.skip(
            f"no KubeRay CRDs at {validate.SHARED_CRDS}; set {validate.CRDS_ENV} to a directory "
            "holding the output of `kubectl get crd rayclusters.ray.io rayjobs.ray.io -o yaml`"
        )
    return validate.crd_validators(directory)


def _validators_for(kind: str, request) -> dict | None:
    """The CRD validators where the kind needs them (so built-in kinds run without CRDs)."""
    return request.getfixturevalue("crd_validators") if kind.startswith("Ray") else None


def _problems(doc: dict, crd_validators=None) -> list[tuple[str, str]]:
    if doc["apiVersion"].startswith("ray.io/"):
        return list(validate.ray_problems(doc, crd_validators))
    return list(validate.builtin_problems(doc))


def _copy_at(doc: dict, path: list) -> tuple[dict, dict | list]:
    """A deep copy of the document and, in it, the node holding path's last part."""
    changed = copy.deepcopy(doc)
    parent = changed
    for part in path[:-1]:
        parent = parent[part]
    return changed, parent


def _set(doc: dict, path: list, value) -> dict:
    changed, parent = _copy_at(doc, path)
    parent[path[-1]] = value
    return changed


def _rename(doc: dict, path: list, new_key: str) -> dict:
    changed, parent = _copy_at(doc, path)
    parent[new_key] = parent.pop(path[-1])
    return changed


def _delete(doc: dict, path: list) -> dict:
    changed, parent = _copy_at(doc, path)
    del parent[path[-1]]
    return changed


def test_every_manifest_kind_has_a_case():
    """Every kind in cluster/ is covered by the mutation cases below, so a new one is not missed."""
    assert set(DOCUMENTS) == set(MISSPELT) == set(WRONG_TYPE)
    assert {"RayCluster", "RayJob", "Deployment", "Service"} <= set(DOCUMENTS)


def test_builtin_kinds_are_valid():
    problems = [
        f"{path.name}: {validate.document_name(doc)}: {where}: {reason}"
        for path in validate.MANIFESTS
        for doc in validate.load_documents(path)
        if not doc["apiVersion"].startswith("ray.io/")
        for where, reason in validate.builtin_problems(doc)
    ]
    assert not problems


def test_ray_kinds_are_valid(crd_validators):
    problems = [
        f"{path.name}: {validate.document_name(doc)}: {where}: {reason}"
        for path in validate.MANIFESTS
        for doc in validate.load_documents(path)
        if doc["apiVersion"].startswith("ray.io/")
        for where, reason in validate.ray_problems(doc, crd_validators)
    ]
    assert not problems


def test_strict_schema_follows_the_api_server(tmp_path):
    """A CRD directory as `kubectl get crd A B -o yaml` writes it (a List): unlisted properties
    are errors except under x-kubernetes-preserve-unknown-fields, and int-or-string takes both."""
    fields = {
        "known": {"type": "string"},
        "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {}},
        "quantity": {"x-kubernetes-int-or-string": True},
    }
    top = {name: {"type": "string"} for name in ("apiVersion", "kind")}
    top["spec"] = {"type": "object", "properties": fields}
    schema = {"type": "object", "properties": top}
    crd = {
        "kind": "CustomResourceDefinition",
        "spec": {
            "group": "ray.io",
            "names": {"kind": "RayJob"},
            "versions": [{"name": "v1", "schema": {"openAPIV3Schema": schema}}],
        },
    }
    (tmp_path / "crds.yaml").write_text(yaml.safe_dump({"kind": "List", "items": [crd]}))
    validators = validate.crd_validators(tmp_path)
    job = {"apiVersion": "ray.io/v1", "kind": "RayJob"}
    spec = {"known": "x", "open": {"anything": 1}, "quantity": "8Gi"}
    assert list(validate.ray_problems({**job, "spec": spec}, validators)) == []
    assert list(validate.ray_problems({**job, "spec": {**spec, "quantity": 8}}, validators)) == []
    wrong = {**job, "spec": {**spec, "knwon": "x", "quantity": [8]}}
    assert [where for where, _ in validate.ray_problems(wrong, validators)] == [
        "spec.knwon",
        "spec.quantity",
    ]


def test_command_line_reports_one_line_per_problem(crd_validators, tmp_path):
    """`python cluster/validate.py` is clean on today's manifests, and on a broken copy exits 1
    with one line per problem naming the file, the document, the path and the reason."""
    command = [
        sys.executable,
        str(CLUSTER / "validate.py"),
        "--crds",
        str(validate.crd_directory()),
    ]
    clean = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout == ""

    broken = tmp_path.resolve() / "rayjob-typo.yaml"
    text = (CLUSTER / "rayjob-paper.yaml").read_text()
    broken.write_text(text.replace("shutdownAfterJobFinishes:", "shutdownAfterJobFinish:"))
    result = subprocess.run([*command, str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{broken}: RayJob/phyray-paper: spec.shutdownAfterJobFinish: "
        "unknown field (the API server would drop it silently)",
        f"{broken}: RayJob/phyray-paper: spec.ttlSecondsAfterFinished: "
        "has no effect without shutdownAfterJobFinishes: true",
    ]


HEAD = ["spec", "headGroupSpec", "template", "spec"]  # the RayCluster's head pod
HEAD_CONTAINER = [*HEAD, "containers", 0]
JOB_HEAD_CONTAINER = ["spec", "rayClusterSpec", *HEAD_CONTAINER[1:]]  # the RayJob's
MLFLOW = ["spec", "template", "spec", "containers", 0]  # the Deployment's container

# Kind -> (path of a field, misspelling of its last part).
MISSPELT = {
    "Namespace": (["metadata", "name"], "nmae"),
    "ConfigMap": (["data"], "dat"),
    "PersistentVolumeClaim": (["spec", "accessModes"], "accesModes"),
    "Deployment": ([*MLFLOW, "readinessProbe"], "readinesProbe"),
    "Service": (["spec", "selector"], "selectors"),
    "RayCluster": (["spec", "workerGroupSpecs", 0, "rayStartParams"], "rayStartParms"),
    "RayJob": (["spec", "shutdownAfterJobFinishes"], "shutdownAfterJobFinish"),
}
# Kind -> (path, a value of the wrong type).
WRONG_TYPE = {
    "Namespace": (["metadata", "labels"], "phyray"),
    "ConfigMap": (["data"], ["basic_auth.ini"]),
    "PersistentVolumeClaim": (["spec", "accessModes"], "ReadWriteOnce"),
    "Deployment": (["spec", "replicas"], "two"),
    "Service": (["spec", "ports", 0, "port"], "five-thousand"),
    "RayCluster": (["spec", "workerGroupSpecs", 0, "replicas"], "two"),
    "RayJob": ([*JOB_HEAD_CONTAINER, "resources", "limits", "cpu"], ["8"]),
}
# Kind -> path of a required field.
REQUIRED = {
    "Deployment": ["spec", "selector"],
    "Service": ["spec", "ports", 0, "port"],
    "RayCluster": ["spec", "workerGroupSpecs", 0, "groupName"],
    "RayJob": [*JOB_HEAD_CONTAINER, "name"],
}


@pytest.mark.parametrize("kind", sorted(MISSPELT))
def test_misspelt_field_is_caught(kind, request):
    path, misspelling = MISSPELT[kind]
    doc = _rename(DOCUMENTS[kind], path, misspelling)
    expected = validate.dotted([*path[:-1], misspelling])
    assert (expected, "unknown field (the API server would drop it silently)") in _problems(
        doc, _validators_for(kind, request)
    )


@pytest.mark.parametrize("kind", sorted(WRONG_TYPE))
def test_wrong_type_is_caught(kind, request):
    path, value = WRONG_TYPE[kind]
    problems = _problems(_set(DOCUMENTS[kind], path, value), _validators_for(kind, request))
    assert [where for where, _ in problems] == [validate.dotted(path)], problems


@pytest.mark.parametrize("kind", sorted(REQUIRED))
def test_missing_required_field_is_caught(kind, request):
    path = REQUIRED[kind]
    problems = _problems(_delete(DOCUMENTS[kind], path), _validators_for(kind, request))
    assert (validate.dotted(path[:-1]), f"{path[-1]!r} is a required property") in problems


def test_unknown_kind_is_caught():
    doc = {"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "mlflow"}}
    assert [where for where, _ in validate.builtin_problems(doc)] == ["apiVersion"]


@pytest.mark.parametrize(
    "spec_change, path",
    [
        ({"submissionMode": "K8sJob"}, "spec.submissionMode"),
        ({"shutdownAfterJobFinishes": False}, "spec.ttlSecondsAfterFinished"),
    ],
)
def test_ray_job_rules_beyond_the_schema(crd_validators, spec_change, path):
    """The schema takes any string as submission mode and a TTL without shutdown (SOURCE.md)."""
    doc = copy.deepcopy(DOCUMENTS["RayJob"])
    doc["spec"].update(spec_change)
    assert [where for where, _ in validate.ray_problems(doc, crd_validators)] == [path]


# --- Secure by default (issue 20, part 5) ----------------------------------------------------


def test_manifests_are_secure_by_default():
    problems = [
        str(p)
        for path in validate.MANIFESTS
        for doc in validate.load_documents(path)
        for p in validate.policy_problems(doc)
    ]
    assert not problems


@pytest.mark.parametrize(
    "kind, change, path",
    [
        ("Service", lambda d: _set(d, ["spec", "type"], "LoadBalancer"), "spec.type"),
        ("Service", lambda d: _set(d, ["spec", "type"], "NodePort"), "spec.type"),
        (
            "RayCluster",
            lambda d: _set(d, ["spec", "headGroupSpec", "serviceType"], "LoadBalancer"),
            "spec.headGroupSpec.serviceType",
        ),
        ("RayCluster", lambda d: _delete(d, ["spec", "authOptions"]), "spec.authOptions"),
        (
            "RayJob",
            lambda d: _set(d, ["spec", "rayClusterSpec", "authOptions", "mode"], "disabled"),
            "spec.rayClusterSpec.authOptions",
        ),
        (
            "RayJob",
            lambda d: _delete(d, ["spec", "submitterPodTemplate"]),
            "spec.submitterPodTemplate",
        ),
        (
            "RayCluster",
            lambda d: _set(d, [*HEAD_CONTAINER, "securityContext", "privileged"], True),
            "spec.headGroupSpec.template.spec.containers[0].securityContext.privileged",
        ),
        (
            "RayCluster",
            lambda d: _delete(d, [*HEAD, "securityContext", "runAsNonRoot"]),
            "spec.headGroupSpec.template.spec.containers[0].securityContext",
        ),
        (
            "Deployment",
            lambda d: _set(d, [*MLFLOW, "securityContext", "runAsNonRoot"], False),
            "spec.template.spec.containers[0].securityContext",
        ),
        (
            "Deployment",
            lambda d: _delete(d, [*MLFLOW, "resources", "limits"]),
            "spec.template.spec.containers[0].resources.limits",
        ),
        (
            "RayCluster",
            lambda d: _delete(d, [*HEAD_CONTAINER, "resources", "requests", "memory"]),
            "spec.headGroupSpec.template.spec.containers[0].resources.requests",
        ),
        (
            "RayCluster",
            lambda d: _delete(d, ["spec", "autoscalerOptions", "resources", "limits"]),
            "spec.autoscalerOptions.resources.limits",
        ),
        (
            "RayCluster",
            lambda d: _set(
                d, [*HEAD_CONTAINER, "env", 4], {"name": "RAY_AUTH_TOKEN", "value": "abc123"}
            ),
            "spec.headGroupSpec.template.spec.containers[0].env[4].value",
        ),
        (
            "Deployment",
            lambda d: _set(d, [*MLFLOW, "command", 9], "postgresql://u:pw@db/mlflow"),
            "spec.template.spec.containers[0].command[9]",
        ),
        (
            "Deployment",
            lambda d: _set(d, [*MLFLOW, "command", 3], "mlflow-app"),
            "spec.template.spec.containers[0].command",
        ),
        (
            "Deployment",
            lambda d: _set(
                d, [*MLFLOW, "env", 2], {"name": "MLFLOW_AUTH_ADMIN_PASSWORD", "value": "x"}
            ),
            "spec.template.spec.containers[0].env",
        ),
    ],
)
def test_insecure_change_is_caught(kind, change, path):
    problems = list(validate.policy_problems(change(DOCUMENTS[kind])))
    assert path in [where for where, _ in problems], problems


def test_secret_with_values_is_caught():
    secret = yaml.safe_load(
        "{apiVersion: v1, kind: Secret, metadata: {name: s}, stringData: {auth_token: x}}"
    )
    assert "data" in [where for where, _ in validate.policy_problems(secret)]
