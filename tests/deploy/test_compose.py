"""docker-compose.yml: scaling, dependencies that wait for the right conditions, persistence, healthchecks on
real routes, locked-down containers.

Static checks only (no cluster, no Docker); the files are loaded by tests/deploy/manifests.py.
"""

from __future__ import annotations

import re

from shared.dev.simulator.app import create_simulator
from tests.deploy.manifests import (
    compose,
    compose_app_services,
    compose_env,
    compose_services,
    gateway_routes,
    interpolate,
    route_paths,
)

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
    command = " ".join(redis["command"]).split()  # a shell line: it writes the ACL file, then execs redis-server
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
