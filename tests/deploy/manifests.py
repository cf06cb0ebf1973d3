"""The deployment files loaded for the tests (Kubernetes manifests, compose, kustomization) and what the code reads.

Static only (no cluster, no Docker): the files are parsed as YAML and compared with what the processes read, serve
and do. `.ci/validate-deploy` checks them against the Kubernetes schemas and `docker compose config`.
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
from poller.worker import RELEASE_TIMEOUT_S
from shared.config import Settings

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
            values = k8s_one("Secret", key["name"])["stringData"]
            if key["key"] in values or not key.get("optional"):  # Kubernetes leaves an optional one unset
                env[item["name"]] = values[key["key"]]
        elif "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            env[item["name"]] = k8s_one("ConfigMap", key["name"])["data"][key["key"]]
        elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = "opencode-poller-6d8f9c7b5d-x2x9z"
        else:
            pytest.fail(f"unexpected env source {item}")
    return env


def k8s_env_names(container: dict[str, Any]) -> set[str]:
    """Every variable a container can be given: its ConfigMaps' keys and each `env` entry, optional ones included
    (k8s_env leaves out an optional Secret key the shipped Secret lacks, as Kubernetes does)."""
    names = {item["name"] for item in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= set(k8s_one("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            names |= set(k8s_one("Secret", source["secretRef"]["name"])["stringData"])
    return names


PLACEHOLDER = re.compile(r"CHANGE-ME[\w-]*")
REAL_CREDENTIAL = "a-real-credential-of-more-than-32-bytes-0123456789"


def with_real_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """The environment with each CHANGE-ME placeholder replaced, as an operator would before applying it."""
    return {name: PLACEHOLDER.sub(REAL_CREDENTIAL, value) for name, value in env.items()}


_TABLE_ROW = re.compile(r"^\| (`[A-Z0-9_]+`(?: / `[A-Z0-9_]+`)*) \|", re.MULTILINE)


@cache
def readme_variables() -> frozenset[str]:
    """The variables of the README's configuration table (`A` / `B` rows count as both)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return frozenset(name.strip("` ") for row in _TABLE_ROW.findall(section) for name in row.split(" / "))


@cache
def console_scripts() -> frozenset[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return frozenset(pyproject["project"]["scripts"])


def assert_runnable(command: list[str], where: str) -> None:
    if command[0] == "python":
        assert command[1] == "-m" and importlib.util.find_spec(command[2]) is not None, where
    else:
        assert command[0] in console_scripts(), f"{where}: {command[0]} is not a console script"


def labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, "only matchLabels is used here"
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())
