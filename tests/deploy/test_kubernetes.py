"""The Kubernetes manifests: shutdown budgets that outlast the drain, disruption budgets, selectors, probes on
real routes, scaling, locked-down pods, the migrate job.

Static checks only (no cluster, no Docker); the files are loaded by tests/deploy/manifests.py.
"""

from __future__ import annotations

from gateway.main import GRACEFUL_SHUTDOWN_S
from shared.config import Settings
from tests.deploy.manifests import (
    DOCKERFILE,
    POLLER_DRAIN_S,
    SAFETY_FACTOR,
    compose_services,
    containers,
    duration_s,
    gateway_routes,
    k8s,
    k8s_env,
    k8s_one,
    labels_match,
    pod_spec,
    with_real_credentials,
    workloads,
)

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
    port = int(Settings.from_env(with_real_credentials(k8s_env(container))).gateway_port)
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
