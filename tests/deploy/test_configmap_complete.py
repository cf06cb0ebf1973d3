"""The ConfigMap holds every setting that is not a credential, every README variable reaches the process that
reads it (compose and Kubernetes), and the poller's metrics port is reachable."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import (
    compose_app_services,
    compose_env,
    containers,
    k8s,
    k8s_env_names,
    k8s_one,
    known_variables,
    readme_variables,
)

CREDENTIALS = {  # the Secret's, per process
    "REDIS_URL",
    "DATABASE_URL",
    "GATEWAY_AUTH_SECRET",
    "GATEWAY_AUTH_SECRET_PREVIOUS",
    "OPENCODE_SERVER_PASSWORD",
}
PER_REPLICA = {"POLLER_ID"}  # the pod's name, set in the Deployment
CLI_ONLY = {"GATEWAY_URL", "GATEWAY_TOKEN"}  # `opencode-sessions watch`'s options, read by no process
SHARED = {"REDIS_URL", "DATABASE_URL", "LOG_LEVEL", "LOG_FORMAT"}  # read by every process
# Left unset in compose on purpose: each replica then makes up a unique one (hostname-pid-random), as --scale needs.
UNSET_IN_COMPOSE = {"poller": PER_REPLICA}


def process_variables(process: str) -> set[str]:
    """The README variables a process reads: the gateway its GATEWAY_* ones, the poller every other one."""
    gateway = {name for name in readme_variables() if name.startswith("GATEWAY_")} - CLI_ONLY
    return gateway | SHARED if process == "gateway" else set(readme_variables()) - gateway - CLI_ONLY


def test_the_configmap_holds_every_setting_but_the_credentials():
    (config_map,) = k8s("ConfigMap")
    assert set(config_map["data"]) == known_variables() - CREDENTIALS - PER_REPLICA


def test_the_poller_metrics_port_is_exposed_in_kubernetes_and_compose():
    port = int(k8s("ConfigMap")[0]["data"]["POLLER_METRICS_PORT"])
    (poller,) = containers(k8s_one("Deployment", "opencode-poller"))
    assert {"name": "metrics", "containerPort": port} in poller["ports"]
    service = compose_app_services()["poller"]
    assert int(compose_env(service)["POLLER_METRICS_PORT"]) == port
    assert str(port) in [str(p) for p in service["expose"]]


def test_the_readme_lists_every_variable_the_config_reads():
    assert readme_variables() - CLI_ONLY == known_variables()


@pytest.mark.parametrize(("process", "deployment"), [("poller", "opencode-poller"), ("gateway", "opencode-gateway")])
def test_every_readme_variable_of_a_process_reaches_it(process, deployment):
    """A variable a process reads but compose or the Deployment never passes is one an operator sets for nothing
    (compose's poller lacked the event path's five; the Deployments never read OPENCODE_SERVER_PASSWORD)."""
    wanted = process_variables(process)
    assert wanted >= SHARED and len(wanted) > len(SHARED), wanted
    in_compose = set(compose_env(compose_app_services()[process]))
    assert not wanted - UNSET_IN_COMPOSE.get(process, set()) - in_compose, f"compose's {process} lacks them"
    (container,) = containers(k8s_one("Deployment", deployment))
    assert not wanted - k8s_env_names(container), f"the {deployment} Deployment lacks them"


def test_opencode_credentials_come_from_optional_secret_keys():
    """The pollers read OpenCode's password (and a credentialed OPENCODE_SERVERS) from keys an operator adds;
    as shipped they are absent, so the pods start without them and the ConfigMap's OPENCODE_SERVERS holds."""
    (secret,) = k8s("Secret")
    (container,) = containers(k8s_one("Deployment", "opencode-poller"))
    refs = {item["name"]: item["valueFrom"].get("secretKeyRef") for item in container["env"] if "valueFrom" in item}
    for name in ("OPENCODE_SERVER_PASSWORD", "OPENCODE_SERVERS"):
        ref = refs[name]
        assert ref is not None and ref["name"] == secret["metadata"]["name"] and ref["optional"] is True, name
        assert ref["key"] not in secret["stringData"], f"{name}: an optional key is shipped absent"
