"""The ConfigMap holds every setting that is not a credential, and the poller's metrics port is reachable."""

from __future__ import annotations

from tests.deploy.manifests import compose_app_services, compose_env, containers, k8s, k8s_one, known_variables

CREDENTIALS = {  # the Secret's, per process
    "REDIS_URL",
    "DATABASE_URL",
    "GATEWAY_AUTH_SECRET",
    "GATEWAY_AUTH_SECRET_PREVIOUS",
    "OPENCODE_SERVER_PASSWORD",
}
PER_REPLICA = {"POLLER_ID"}  # the pod's name, set in the Deployment


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
