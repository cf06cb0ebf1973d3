"""The deployment files parse, list each other, and set only variables the config knows, each process its own
credentials.

Static checks only (no cluster, no Docker); the files are loaded by tests/deploy/manifests.py.
"""

from __future__ import annotations

from gateway.app import create_app
from shared.config import Settings
from tests.deploy.manifests import (
    DEPLOY,
    MANIFESTS,
    REAL_CREDENTIAL,
    ROOT,
    app_containers,
    compose_app_services,
    compose_env,
    compose_services,
    containers,
    interpolate,
    k8s,
    k8s_documents,
    k8s_env,
    k8s_one,
    known_variables,
    kustomization,
    pod_spec,
    with_real_credentials,
    workloads,
)

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
    # The shipped credentials are placeholders every process refuses (tests/deploy/test_security.py): real ones
    # stand in, and compose has none (its credentials come from the environment).
    real_secret = {"GATEWAY_AUTH_SECRET": REAL_CREDENTIAL}
    for workload, container in app_containers():
        settings = Settings.from_env(with_real_credentials(k8s_env(container)))  # raises ConfigError naming it
        if container["command"] == ["opencode-gateway"]:
            assert settings.gateway_host == "0.0.0.0" and settings.gateway_auth
            create_app(settings)  # auth configured: no ConfigError
        if workload["metadata"]["name"] == "opencode-poller":
            assert settings.replica_id.startswith("opencode-poller-")
    for name, service in compose_app_services().items():
        settings = Settings.from_env({**compose_env(service), **real_secret})
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
                if ref and not ref.get("optional"):
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
