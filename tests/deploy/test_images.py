"""One image for every process: its commands are console scripts or modules, it installs what the package
needs and runs as the non-root user the pods expect.

Static checks only (no cluster, no Docker); the files are loaded by tests/deploy/manifests.py.
"""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.deploy.manifests import (
    DOCKERFILE,
    IMAGE,
    ROOT,
    THIRD_PARTY_IMAGES,
    app_containers,
    assert_runnable,
    compose_app_services,
    containers,
    image_name,
    interpolate,
    kustomization,
    pod_spec,
    workloads,
)

# --- commands and images -------------------------------------------------------------------------------------------


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
