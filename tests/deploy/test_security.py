"""Safe defaults of the deployment files: no usable credential shipped, placeholders refused by every process and
by the migrate Job's role step, the Redis `default` user off in compose, and every gateway limit settable where the
others are.

Static checks only (no cluster, no Docker); the files are loaded by tests/deploy/manifests.py.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from gateway.app import create_app
from shared.config import PLACEHOLDER_PATTERN, Settings, is_placeholder
from shared.errors import ConfigError
from tests.deploy.manifests import (
    COMPOSE_FILE,
    DEPLOY,
    ROOT,
    app_containers,
    compose_app_services,
    compose_env,
    compose_services,
    containers,
    k8s,
    k8s_env,
    k8s_one,
    with_real_credentials,
)

CREDENTIALS = (
    "POSTGRES_PASSWORD",
    "GATEWAY_DB_PASSWORD",
    "REDIS_POLLER_PASSWORD",
    "REDIS_GATEWAY_PASSWORD",
    "GATEWAY_AUTH_SECRET",
)
GATEWAY_LIMITS = (
    "GATEWAY_ALLOWED_HOSTS",
    "GATEWAY_HEADER_TIMEOUT_MS",
    "GATEWAY_KEEPALIVE_TIMEOUT_S",
    "GATEWAY_MAX_CONNECTIONS",
    "GATEWAY_MAX_HEADER_BYTES",
    "GATEWAY_MAX_STREAMS_PER_TOKEN",
    "GATEWAY_STREAM_BUFFER_BYTES",
    "GATEWAY_WRITE_TIMEOUT_MS",
    "GATEWAY_MAX_RESPONSE_BYTES",
)


def _gateway_env_k8s() -> dict[str, str]:
    (env,) = [k8s_env(c) for _, c in app_containers() if c["command"] == ["opencode-gateway"]]
    return env


def test_compose_requires_every_credential_and_ships_none():
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    for name in CREDENTIALS:
        uses = re.findall(rf"\$\{{{name}(:?[-?])?[^}}]*\}}", text)
        assert uses, f"{name} is not used"
        assert re.findall(rf"\$\{{{name}:\?", text) and not re.findall(rf"\$\{{{name}:?-", text), name
    for name, service in compose_app_services().items():
        for variable, value in compose_env(service).items():
            assert "CHANGE-ME" not in value, f"{name}: {variable} has a placeholder default"


def test_compose_turns_the_redis_default_user_off_and_checks_health_as_another():
    redis = compose_services()["redis"]
    command = " ".join(redis["command"])
    assert "--user default off" in command
    assert "--include /tmp/opencode-acl.conf" in command
    check = " ".join(redis["healthcheck"]["test"])
    assert "--user opencode-gateway" in check


def test_the_gateway_refuses_the_shipped_placeholder_secret():
    with pytest.raises(ConfigError, match=r"GATEWAY_AUTH_SECRET=.* placeholder"):
        create_app(Settings.from_env(_gateway_env_k8s()))


def test_every_process_refuses_each_shipped_placeholder():
    """Each credential a container gets from the shipped Secret is refused on its own, naming its variable: the
    Redis URLs share their passwords with the ACL ConfigMap's, so a Redis loaded as shipped is never reachable."""
    refused = set()
    for workload, container in app_containers():
        shipped = k8s_env(container)
        real = with_real_credentials(shipped)
        Settings.from_env(real)
        for name in (name for name, value in shipped.items() if is_placeholder(value)):
            with pytest.raises(ConfigError, match=rf"^{name}=.* placeholder") as caught:
                Settings.from_env({**real, name: shipped[name]})
            assert "CHANGE-ME-" not in caught.value.message  # the masked value, not the password
            refused.add((workload["metadata"]["name"], name))
    assert {
        ("opencode-migrate", "DATABASE_URL"),
        ("opencode-poller", "REDIS_URL"),
        ("opencode-poller", "DATABASE_URL"),
        ("opencode-gateway", "REDIS_URL"),
        ("opencode-gateway", "DATABASE_URL"),
        ("opencode-gateway", "GATEWAY_AUTH_SECRET"),
    } <= refused


def test_the_migrate_job_refuses_a_placeholder_gateway_role_password():
    """The role step sets the gateway's PostgreSQL password from the Secret; postgres-readonly.sql raises, before
    any change, on the same markers the processes refuse (tests/shared/roles run it against PostgreSQL)."""
    text = (DEPLOY / "postgres-readonly.sql").read_text(encoding="utf-8")
    sql = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    (pattern,) = re.findall(r"\)\s+~ '([^']*)' THEN", sql)
    assert pattern == PLACEHOLDER_PATTERN
    guard = sql.index(pattern)
    assert "RAISE EXCEPTION" in sql[guard : sql.index("END", guard)]
    assert guard < sql.index("CREATE ROLE") and guard < sql.index("ALTER ROLE opencode_gateway PASSWORD")
    (role_step,) = [c for c in containers(k8s_one("Job", "opencode-migrate")) if "psql" in " ".join(c["command"])]
    assert is_placeholder(k8s_env(role_step)["GATEWAY_DB_PASSWORD"])  # as shipped: refused
    assert "gateway_password=" in " ".join(role_step["command"]) and "ON_ERROR_STOP=1" in " ".join(role_step["command"])


def test_the_gateway_refuses_compose_without_a_secret():
    services = compose_app_services()
    with pytest.raises(ConfigError, match="GATEWAY_AUTH_SECRET is not set"):
        create_app(Settings.from_env(compose_env(services["gateway"])))


def test_every_gateway_limit_is_in_the_config_map_compose_and_the_readme():
    (config_map,) = k8s("ConfigMap")
    compose_gateway = compose_env(compose_services()["gateway"])
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in GATEWAY_LIMITS:
        assert name in config_map["data"], f"{name} is not in the ConfigMap"
        assert name in compose_gateway, f"{name} is not in compose's gateway environment"
        assert f"| `{name}` |" in readme, f"{name} has no row in the README's configuration table"
    defaults = Settings.from_env({})
    configured = Settings.from_env({k: v for k, v in config_map["data"].items() if k in GATEWAY_LIMITS})
    assert replace(configured, replica_id=defaults.replica_id) == defaults, "the ConfigMap's values are the defaults"


def test_rotating_the_gateway_secret_needs_only_a_key_in_the_secret():
    """The gateway reads the rotated-out secret from an optional key: absent (as shipped) it is unset."""
    refs = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for _, container in app_containers()
        for item in container.get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    previous = refs["GATEWAY_AUTH_SECRET_PREVIOUS"]
    assert previous == {
        "name": refs["GATEWAY_AUTH_SECRET"]["name"],
        "key": "gateway-auth-secret-previous",
        "optional": True,
    }
    (secret,) = k8s("Secret")
    assert previous["key"] not in secret["stringData"]
    gateway = [c for _, c in app_containers() if any(i["name"] == "GATEWAY_AUTH_SECRET" for i in c.get("env", []))]
    assert gateway and all("GATEWAY_AUTH_SECRET_PREVIOUS" not in k8s_env(c) for c in gateway)
