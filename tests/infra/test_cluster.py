"""The GKE Autopilot cluster, and the Kubernetes provider that reaches it via the gcloud plugin."""

from __future__ import annotations

import json

import pytest

from tests.pulumi_harness import ProgramRun, run_program


@pytest.fixture(scope="module")
def dev() -> ProgramRun:
    return run_program()


def test_cluster_is_autopilot_on_the_default_network(dev: ProgramRun) -> None:
    cluster = dev.one("gcp:container/cluster:Cluster")
    assert cluster.inputs["name"] == "gemma-dev"
    assert cluster.inputs["enableAutopilot"] is True
    assert cluster.inputs["location"] == "us-central1"
    assert cluster.inputs["network"] == "default"
    assert cluster.inputs["project"] == "my-gcp-project"
    assert cluster.options["customTimeouts"] == {"create": "40m", "update": "60m", "delete": "40m"}
    assert cluster.parent_type == "gemma-stack:cluster:AutopilotCluster"


def test_release_channel_and_deletion_protection_come_from_config() -> None:
    run = run_program(
        overrides={
            "gemma-stack:clusterReleaseChannel": "stable",
            "gemma-stack:clusterDeletionProtection": None,  # unset: protected by default
            "gemma-stack:clusterName": "team-llm",
        }
    )
    cluster = run.one("gcp:container/cluster:Cluster")
    assert cluster.inputs["releaseChannel"] == {"channel": "STABLE"}
    assert cluster.inputs["deletionProtection"] is True
    assert run.outputs["clusterName"] == "team-llm"


def test_kubeconfig_uses_the_exec_plugin_and_holds_no_credential(dev: ProgramRun) -> None:
    provider = dev.one("pulumi:providers:kubernetes")
    assert provider.parent_type == "gemma-stack:cluster:AutopilotCluster"
    kubeconfig = json.loads(provider.inputs["kubeconfig"])
    (cluster,) = kubeconfig["clusters"]
    assert cluster["cluster"]["server"] == "https://34.118.0.10"
    assert cluster["cluster"]["certificate-authority-data"]
    (user,) = kubeconfig["users"]
    assert user["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"
    assert set(user["user"]) == {"exec"}  # no token, no client key


def test_kubernetes_objects_use_the_cluster_provider(dev: ProgramRun) -> None:
    provider = dev.one("pulumi:providers:kubernetes")
    k8s = [r for r in dev.resources if r.type.startswith("kubernetes:")]
    assert k8s
    assert all(r.provider.startswith(provider.urn + "::") for r in k8s)


def test_workloads_namespace_enforces_baseline_pod_security(dev: ProgramRun) -> None:
    namespace = dev.named("workloads-namespace")
    labels = namespace.inputs["metadata"]["labels"]
    assert namespace.inputs["metadata"]["name"] == "gemma-stack"
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_no_cluster_when_nothing_runs_on_gke() -> None:
    run = run_program(
        overrides={"gemma-stack:gkeGemmaEnabled": False, "gemma-stack:chatAppEnabled": False}
    )
    assert not run.of_type("gcp:container/cluster:Cluster")
    assert not [r for r in run.resources if r.type.startswith("kubernetes:")]
    assert "clusterName" not in run.outputs
