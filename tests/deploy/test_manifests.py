"""The deployment files agree with the code: variables, commands, routes, shutdown budgets, images, security.

Static checks only (no cluster, no Docker): the files are parsed as YAML and compared with what the processes
read, serve and do. `.ci/validate-deploy` checks them against the Kubernetes schemas and `docker compose config`.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import create_app
from gateway.main import GRACEFUL_SHUTDOWN_S
from poller.worker import RELEASE_TIMEOUT_S
from shared.config import Settings
from shared.dev.simulator.app import create_simulator

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = DEPLOY / "kubernetes"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

IMAGE = "opencode-session-layer"  # our image's name, everywhere (kustomize `images` sets the registry and tag)
THIRD_PARTY_IMAGES = {"postgres", "redis"}  # the only other images: the databases, and psql for the read-only role
# What a poller needs after SIGTERM: its leases released (bounded by RELEASE_TIMEOUT_S), then its pools and
# clients closed. A grace period shorter than twice that risks a SIGKILL that strands leases until they expire.
POLLER_DRAIN_S = RELEASE_TIMEOUT_S + 2.0
SAFETY_FACTOR = 2


# --- loading -------------------------------------------------------------------------------------------------------


def image_name(image: str) -> str:
    """`registry/name:tag@digest` -> `name`."""
    return image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]


@cache
def k8s_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append((path.name, doc))
    return tuple(docs)


def k8s(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents() if doc["kind"] == kind]


def k8s_one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in k8s(kind) if doc["metadata"]["name"] == name]
    return found


def workloads() -> list[dict[str, Any]]:
    return k8s("Deployment") + k8s("Job") + k8s("StatefulSet") + k8s("DaemonSet") + k8s("CronJob")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["spec"])


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def app_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload in workloads():
        for container in containers(workload):
            if image_name(container["image"]) == IMAGE:
                yield workload, container


@cache
def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text(encoding="utf-8")))


@cache
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))


def compose_services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def compose_app_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc for name, svc in compose_services().items() if image_name(interpolate(svc.get("image", ""))) == IMAGE
    }


_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def interpolate(value: Any) -> str:
    """Compose's `${NAME:-default}` with nothing set in the environment: what `docker compose config` yields."""
    text = str(value).replace("$$", "\0")
    text = _VARIABLE.sub(lambda m: m["default"] if m["op"] in (":-", "-") else "", text)
    return text.replace("\0", "$")


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: interpolate(value) for name, value in env.items()}


def duration_s(text: str) -> float:
    """A compose duration: `15s`, `1m30s`, `500ms`, `2h`."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


class _Recorder(Mapping[str, str]):
    """An empty environment that remembers every name Settings.from_env asks for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@cache
def known_variables() -> frozenset[str]:
    recorder = _Recorder()
    Settings.from_env(recorder)
    return frozenset(recorder.asked)


def route_paths(app: Any) -> set[str]:
    return {route.path for route in app.routes}


@cache
def gateway_routes() -> frozenset[str]:
    return frozenset(route_paths(create_app(Settings(gateway_auth=False))))


def k8s_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment a container starts with, the Secret's placeholders and a pod name filled in."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) <= {"configMapRef", "secretRef"}, source
        if "configMapRef" in source:
            env.update(k8s_one("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(k8s_one("Secret", source["secretRef"]["name"])["stringData"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            key = ref["secretKeyRef"]
            env[item["name"]] = k8s_one("Secret", key["name"])["stringData"][key["key"]]
        elif "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            env[item["name"]] = k8s_one("ConfigMap", key["name"])["data"][key["key"]]
        elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = "opencode-poller-6d8f9c7b5d-x2x9z"
        else:
            pytest.fail(f"unexpected env source {item}")
    return env


# --- every file is there and parses --------------------------------------------------------------------------------


def test_manifests_parse_and_name_themselves():
    assert k8s_documents(), "no manifests under deploy/kubernetes/"
    for filename, doc in k8s_documents():
        assert {"apiVersion", "kind", "metadata"} <= set(doc), filename
        assert doc["metadata"].get("name"), filename
        assert "namespace" not in doc["metadata"], f"{filename}: kustomization.yaml sets the namespace"


def test_kustomization_lists_every_manifest_and_packages_the_role_files():
    listed = {DEPLOY / path for path in kustomization()["resources"]}
    assert listed == set(MANIFESTS.glob("*.y*ml"))
    generated = {gen["name"]: gen for gen in kustomization()["configMapGenerator"]}
    files = {name: [DEPLOY / f for f in gen["files"]] for name, gen in generated.items()}
    assert files["opencode-redis-acl"] == [DEPLOY / "redis-acl.conf"]
    assert files["opencode-postgres-readonly"] == [DEPLOY / "postgres-readonly.sql"]
    for paths in files.values():
        assert all(path.is_file() for path in paths), paths
    # The migrate Job runs the packaged SQL: it mounts the generated ConfigMap (kustomize adds the hash).
    job_volumes = [
        v["configMap"]["name"] for v in pod_spec(k8s_one("Job", "opencode-migrate"))["volumes"] if "configMap" in v
    ]
    assert "opencode-postgres-readonly" in job_volumes


def test_compose_bind_mounts_exist():
    for name, service in compose_services().items():
        for volume in service.get("volumes", []):
            source = interpolate(volume).split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source}"


# --- configuration -------------------------------------------------------------------------------------------------


def test_known_variables_are_read_from_config():
    # A sanity check of the recorder itself, with a few names the issue lists.
    assert {"REDIS_URL", "DATABASE_URL", "OPENCODE_URL", "POLLER_ID", "GATEWAY_AUTH_SECRET"} <= known_variables()


def test_kubernetes_sets_only_variables_the_config_knows():
    seen = set()
    for workload, container in app_containers():
        names = set(k8s_env(container))
        unknown = names - known_variables()
        assert not unknown, f"{workload['metadata']['name']}/{container['name']}: {sorted(unknown)}"
        seen |= names
    for config_map in k8s("ConfigMap"):
        assert set(config_map["data"]) <= known_variables(), config_map["metadata"]["name"]
    assert {"REDIS_URL", "DATABASE_URL", "GATEWAY_AUTH_SECRET", "POLLER_ID"} <= seen


def test_compose_sets_only_variables_the_config_knows():
    for name, service in compose_app_services().items():
        unknown = set(compose_env(service)) - known_variables()
        assert not unknown, f"{name}: {sorted(unknown)}"


def test_every_app_container_starts_with_valid_settings():
    for workload, container in app_containers():
        settings = Settings.from_env(k8s_env(container))  # raises ConfigError naming a bad value
        if container["command"] == ["opencode-gateway"]:
            assert settings.gateway_host == "0.0.0.0" and settings.gateway_auth
            create_app(settings)  # auth configured: no ConfigError
        if workload["metadata"]["name"] == "opencode-poller":
            assert settings.replica_id.startswith("opencode-poller-")
    for name, service in compose_app_services().items():
        settings = Settings.from_env(compose_env(service))
        if name == "gateway":
            assert settings.gateway_host == "0.0.0.0" and settings.gateway_auth
            create_app(settings)


def test_secret_holds_only_marked_placeholders():
    (secret,) = k8s("Secret")
    assert "data" not in secret, "placeholders go in stringData, readable"
    for key, value in secret["stringData"].items():
        assert "CHANGE-ME" in value, f"{key} is not marked as a placeholder"
    # Secret references resolve (k8s_env looks each one up) for every container, third-party ones included.
    for workload in workloads():
        for container in containers(workload):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in k8s_one("Secret", ref["name"])["stringData"], ref


def test_each_process_gets_its_own_least_privilege_credentials():
    env = {container["name"]: k8s_env(container) for _, container in app_containers()}
    assert env["gateway"]["REDIS_URL"].startswith("redis://opencode-gateway:")
    assert env["poller"]["REDIS_URL"].startswith("redis://opencode-poller:")
    assert env["gateway"]["DATABASE_URL"].startswith("postgresql://opencode_gateway:")
    services = compose_app_services()
    assert compose_env(services["gateway"])["REDIS_URL"].startswith("redis://opencode-gateway:")
    assert compose_env(services["poller"])["REDIS_URL"].startswith("redis://opencode-poller:")
    assert compose_env(services["gateway"])["DATABASE_URL"].startswith("postgresql://opencode_gateway:")
    users = {
        line.split()[1]
        for line in (DEPLOY / "redis-acl.conf").read_text(encoding="utf-8").splitlines()
        if line.startswith("user ")
    }
    assert {"opencode-gateway", "opencode-poller"} <= users
    assert "ROLE opencode_gateway" in (DEPLOY / "postgres-readonly.sql").read_text(encoding="utf-8")


# --- commands and images -------------------------------------------------------------------------------------------


@cache
def console_scripts() -> frozenset[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return frozenset(pyproject["project"]["scripts"])


def assert_runnable(command: list[str], where: str) -> None:
    if command[0] == "python":
        assert command[1] == "-m" and importlib.util.find_spec(command[2]) is not None, where
    else:
        assert command[0] in console_scripts(), f"{where}: {command[0]} is not a console script"


def test_commands_are_console_scripts_or_modules():
    for workload, container in app_containers():
        assert_runnable(container["command"], f"{workload['metadata']['name']}/{container['name']}")
    for name, service in compose_app_services().items():
        assert_runnable(service["command"], name)
    cmd = re.search(r"^CMD (.+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert cmd, "the Dockerfile has no CMD"
    assert_runnable(yaml.safe_load(cmd[1]), "Dockerfile CMD")


def test_one_image_for_every_process():
    for workload in workloads():
        for container in containers(workload):
            name = image_name(container["image"])
            assert name == IMAGE or name in THIRD_PARTY_IMAGES, container["image"]
    app_images = {container["image"] for _, container in app_containers()}
    assert app_images == {IMAGE}, "kustomization.yaml's `images` sets registry and tag for all of them at once"
    assert [image["name"] for image in kustomization()["images"]] == [IMAGE]
    commands = {tuple(container["command"]) for _, container in app_containers()}
    assert {("opencode-poller",), ("opencode-gateway",), ("opencode-sessions", "migrate")} <= commands

    services = compose_app_services()
    assert {"migrate", "poller", "gateway", "opencode"} <= set(services)
    assert len({interpolate(svc["image"]) for svc in services.values()}) == 1
    assert all(svc.get("build") for svc in services.values()), "each builds the image it names, whichever starts first"


def test_dockerfile_installs_what_the_package_needs():
    text = DOCKERFILE.read_text(encoding="utf-8")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    copied = {
        src.rstrip("/")
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE)
        for src in line.split()[:-1]
    }
    packages = {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    data_dirs = {f.split("/")[0] for files in pyproject["tool"]["setuptools"]["data-files"].values() for f in files}
    assert packages | data_dirs | {"pyproject.toml", pyproject["project"]["readme"]} <= copied
    installs_project = re.search(r"(pip (wheel|install)|uv build --wheel)[^\n]* \.$", text, re.MULTILINE)
    assert installs_project, "installs the project, not editable"
    assert "-e ." not in text and "--editable" not in text
    dockerignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for path in copied:
        assert f"!{path}" in dockerignore or f"!{path}/" in dockerignore, f".dockerignore leaves out {path}"


def test_image_runs_as_the_non_root_user_the_pods_expect():
    user = re.findall(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert user, "USER must be numeric (uid:gid) for runAsNonRoot to verify it"
    uid, gid = (int(x) for x in user[-1])
    assert uid != 0 and gid != 0
    for workload, container in app_containers():
        security = {**pod_spec(workload).get("securityContext", {}), **container.get("securityContext", {})}
        assert (security.get("runAsUser"), security.get("runAsGroup")) == (uid, gid), container["name"]


# --- shutdown, disruption, probes, scaling -------------------------------------------------------------------------


def test_poller_grace_period_outlasts_its_drain():
    spec = pod_spec(k8s_one("Deployment", "opencode-poller"))
    assert spec["terminationGracePeriodSeconds"] >= SAFETY_FACTOR * POLLER_DRAIN_S
    poller = compose_services()["poller"]
    assert duration_s(poller["stop_grace_period"]) >= SAFETY_FACTOR * POLLER_DRAIN_S
    assert poller.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert "STOPSIGNAL SIGTERM" in DOCKERFILE.read_text(encoding="utf-8")


def test_gateway_grace_period_outlasts_prestop_and_graceful_shutdown():
    spec = pod_spec(k8s_one("Deployment", "opencode-gateway"))
    (container,) = spec["containers"]
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    sleep_s = float(pre_stop["exec"]["command"][1]) if "exec" in pre_stop else 0.0
    assert spec["terminationGracePeriodSeconds"] > sleep_s + GRACEFUL_SHUTDOWN_S + 5
    assert duration_s(compose_services()["gateway"]["stop_grace_period"]) > GRACEFUL_SHUTDOWN_S


def labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, "only matchLabels is used here"
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def test_disruption_budgets_select_their_deployment_only():
    deployments = {d["metadata"]["name"]: d for d in k8s("Deployment")}
    pdbs = {p["metadata"]["name"]: p for p in k8s("PodDisruptionBudget")}
    assert "opencode-poller" in pdbs
    for name, pdb in pdbs.items():
        selected = [
            d
            for d in deployments.values()
            if labels_match(pdb["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert [d["metadata"]["name"] for d in selected] == [name]
        assert pdb["spec"]["selector"] == deployments[name]["spec"]["selector"]
        # A budget that allows no disruption at all blocks every node drain.
        assert pdb["spec"].get("maxUnavailable", 0) >= 1 or pdb["spec"]["minAvailable"] < 2


def test_deployment_selectors_match_their_templates_and_not_each_other():
    deployments = k8s("Deployment")
    for deployment in deployments:
        for other in deployments:
            matches = labels_match(deployment["spec"]["selector"], other["spec"]["template"]["metadata"]["labels"])
            assert matches == (other is deployment), (deployment["metadata"]["name"], other["metadata"]["name"])


def test_poller_replicas():
    assert k8s_one("Deployment", "opencode-poller")["spec"]["replicas"] >= 2


def test_gateway_probes_hit_real_routes():
    (container,) = pod_spec(k8s_one("Deployment", "opencode-gateway"))["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    readiness, liveness = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert readiness["path"] == "/readyz" and liveness["path"] == "/healthz"
    for probe in (readiness, liveness):
        assert probe["path"] in gateway_routes()
        assert probe["port"] in ports or probe["port"] in ports.values()
    port = int(Settings.from_env(k8s_env(container)).gateway_port)
    assert port in ports.values()
    # /metrics needs an admin token when auth is on: it is no probe, and no scrape annotation promises otherwise.
    assert "/metrics" in gateway_routes()


def test_poller_has_no_http_probe():
    (container,) = pod_spec(k8s_one("Deployment", "opencode-poller"))["containers"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert "httpGet" not in container.get(probe, {}), "the poller serves no HTTP"


def test_gateway_service_and_autoscaler_target_the_gateway():
    deployment = k8s_one("Deployment", "opencode-gateway")
    (container,) = pod_spec(deployment)["containers"]
    port_names = {port["name"] for port in container["ports"]}
    (service,) = k8s("Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    (hpa,) = k8s("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "opencode-gateway"}
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the HPA owns the gateway's replica count"
    assert container["resources"]["requests"]["cpu"], "a CPU utilisation target needs a CPU request"


def test_pods_are_locked_down():
    for workload in workloads():
        spec = pod_spec(workload)
        pod_security = spec.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, workload["metadata"]["name"]
        assert pod_security.get("seccompProfile") == {"type": "RuntimeDefault"}
        assert spec.get("automountServiceAccountToken") is False
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            security = container.get("securityContext", {})
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{where}: {bound}"


def test_migrate_job_runs_migrate_then_the_read_only_role():
    job = k8s_one("Job", "opencode-migrate")
    spec = pod_spec(job)
    assert [c["command"] for c in spec["initContainers"]] == [["opencode-sessions", "migrate"]]
    (role,) = spec["containers"]
    assert "/deploy/postgres-readonly.sql" in " ".join(role["command"])
    assert "ON_ERROR_STOP=1" in " ".join(role["command"])
    assert spec["restartPolicy"] in ("OnFailure", "Never")


# --- docker compose ------------------------------------------------------------------------------------------------


def test_compose_poller_scales():
    poller = compose_services()["poller"]
    assert poller["deploy"]["replicas"] == 2
    assert "container_name" not in poller and "ports" not in poller and "POLLER_ID" not in compose_env(poller)
    assert "hostname" not in poller, "every replica needs its own hostname, hence its own POLLER_ID"


def test_compose_dependencies_wait_for_the_right_conditions():
    services = compose_services()
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for dependency, how in (service.get("depends_on") or {}).items():
            assert how["condition"] in conditions, f"{name} -> {dependency}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s missing healthcheck"
            if how["condition"] == "service_completed_successfully":
                assert services[dependency].get("restart", "no") == "no", f"{dependency} is a one-shot"
    for name in ("poller", "gateway"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == depends["postgres"]["condition"] == "service_healthy"
    assert services["gateway"]["depends_on"]["db-roles"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["opencode-sessions", "migrate"]


def test_compose_redis_persists():
    redis = compose_services()["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(interpolate(v).split(":")[1] == "/data" for v in redis["volumes"])
    postgres = compose_services()["postgres"]
    assert any(":/var/lib/postgresql" in v for v in postgres["volumes"])
    assert set(compose()["volumes"]) >= {"redis-data", "postgres-data"}


def test_compose_healthchecks_hit_real_routes():
    services = compose_services()
    gateway_check = " ".join(services["gateway"]["healthcheck"]["test"])
    assert re.findall(r"http://127\.0\.0\.1:8080(/\w+)", gateway_check) == ["/readyz"]
    assert "/readyz" in gateway_routes()
    opencode = services["opencode"]
    assert opencode["command"][:3] == ["python", "-m", "shared.dev.simulator"]
    port = opencode["command"][opencode["command"].index("--port") + 1]
    (path,) = re.findall(rf"http://127\.0\.0\.1:{port}(/[\w/]+)", " ".join(opencode["healthcheck"]["test"]))
    assert path in route_paths(create_simulator())
    assert compose_env(services["poller"])["OPENCODE_URL"] == f"http://opencode:{port}"


def test_compose_app_containers_are_locked_down():
    for name, service in compose_app_services().items():
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert "user" not in service or service["user"] not in ("root", "0", "0:0"), name
