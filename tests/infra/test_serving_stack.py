"""The whole program under mocks: what the serving backends add to the default dev stack."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from stacks.gemma_sizing import GEMMA_SIZING
from tests.infra.crd_schemas import STACK_CRD_SCHEMAS
from tests.pulumi_harness import (
    ProgramRun,
    RecordedResource,
    manifests_from_resources,
    pod_spec,
    run_program,
    schema_failures,
)

IAM_MEMBER_TYPES = (
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
    "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding",
    "gcp:cloudrunv2/serviceIamPolicy:ServiceIamPolicy",
)
CHAT_INVOKER = "serviceAccount:chat-invoker-dev@my-gcp-project.iam.gserviceaccount.com"
SQL_SERVICE = {
    "name": "gemma-sql",
    "flavour": "finetuned",
    "modelUri": "gs://my-gcp-project-models/gemma-3-1b-sql",
}


@pytest.fixture(scope="module")
def dev() -> ProgramRun:
    return run_program()


def gpu_deployments(run: ProgramRun) -> list[RecordedResource]:
    return [
        d
        for d in run.of_type("kubernetes:apps/v1:Deployment")
        if any(
            "nvidia.com/gpu" in (c.get("resources") or {}).get("limits", {})
            for c in pod_spec(d)["containers"]
        )
    ]


def chat_backends(run: ProgramRun) -> list[dict[str, Any]]:
    (container,) = pod_spec(run.named("chat-deployment"))["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    backends: list[dict[str, Any]] = json.loads(env["CHAT_BACKENDS"])
    return backends


def test_gemma_runs_on_l4_gpus_with_probes_and_a_bounded_context(dev: ProgramRun) -> None:
    (deployment,) = gpu_deployments(dev)
    spec = pod_spec(deployment)
    assert spec["nodeSelector"] == {
        "cloud.google.com/gke-accelerator": "nvidia-l4",
        "cloud.google.com/gke-gpu-driver-version": "latest",
    }
    (vllm,) = spec["containers"]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # Gemma 3's default 128K context would exhaust an L4's KV cache.
    assert f"--max-model-len={GEMMA_SIZING['gemma-3-1b-it'].max_model_len}" in vllm["args"]
    assert vllm["startupProbe"]["httpGet"]["path"] == "/health"
    # Download and load get minutes, not seconds, before the kubelet gives up.
    startup = vllm["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 15 * 60
    assert vllm["readinessProbe"]["httpGet"]["path"] == "/health"
    assert vllm["livenessProbe"]
    # `pulumi up` does not wait for GPUs that may take hours to appear.
    assert deployment.inputs["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    assert deployment.inputs["spec"]["progressDeadlineSeconds"] >= 15 * 60


def test_the_token_reaches_vllm_by_secret_reference_only(dev: ProgramRun) -> None:
    (deployment,) = gpu_deployments(dev)
    (vllm,) = pod_spec(deployment)["containers"]
    (token,) = [e for e in vllm["env"] if e["name"] == "HF_TOKEN"]
    assert token == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-secret", "key": "hf_api_token"}},
    }


def test_model_and_chat_have_cluster_internal_services(dev: ProgramRun) -> None:
    services = {
        s.inputs["metadata"]["name"]: s.inputs["spec"]
        for s in dev.of_type("kubernetes:core/v1:Service")
    }
    assert services["gemma-service"]["ports"][0]["port"] == 8000
    assert services["chat-app"]["ports"][0]["port"] == 7860
    assert {spec.get("type", "ClusterIP") for spec in services.values()} == {"ClusterIP"}


def test_cloud_run_serves_gemma_on_one_l4(dev: ProgramRun) -> None:
    (service,) = dev.of_type("gcp:cloudrunv2/service:Service")
    template = service.inputs["template"]
    assert template["nodeSelector"] == {"accelerator": "nvidia-l4"}
    (container,) = template["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["cpuIdle"] is False
    assert template["gpuZonalRedundancyDisabled"] is True
    assert container["startupProbe"]["periodSeconds"] <= 240


def test_cloud_run_is_invoked_only_by_named_principals(dev: ProgramRun) -> None:
    bindings = [r for t in IAM_MEMBER_TYPES for r in dev.of_type(t)]
    assert [(b.inputs["role"], b.inputs["member"]) for b in bindings] == [
        ("roles/run.invoker", CHAT_INVOKER)
    ]
    everything = dev.dump()
    assert "allUsers" not in everything
    assert "allAuthenticatedUsers" not in everything


def test_each_cloud_run_service_has_its_own_runtime_account() -> None:
    run = run_program(
        overrides={
            "gemma-stack:cloudRunServices": [{"name": "a", "flavour": "prebuilt"}, SQL_SERVICE]
        }
    )
    accounts = [
        s.inputs["template"]["serviceAccount"]
        for s in run.of_type("gcp:cloudrunv2/service:Service")
    ]
    assert len(accounts) == 2
    assert len(set(accounts)) == 2


def test_chat_app_runs_as_its_own_non_root_identity(dev: ProgramRun) -> None:
    spec = pod_spec(dev.named("chat-deployment"))
    assert spec["serviceAccountName"] == "chat-app"
    assert dev.named("chat-app-ksa").inputs["metadata"]["name"] == "chat-app"
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]
    assert container["livenessProbe"]


def test_chat_backends_are_exactly_the_deployed_ones(dev: ProgramRun) -> None:
    backends = chat_backends(dev)
    assert [b["id"] for b in backends] == ["gemini", "gemma-gke", "gemma3-prebuilt"]
    by_id = {b["id"]: b for b in backends}
    assert by_id["gemini"]["vertex"] is True
    assert by_id["gemma-gke"]["base_url"] == dev.outputs["gemmaEndpoint"]
    assert by_id["gemma-gke"]["kind"] == "openai"
    prebuilt = by_id["gemma3-prebuilt"]
    assert prebuilt["base_url"] == dev.outputs["cloudRunUrls"]["gemma3-prebuilt"]
    assert prebuilt["kind"] == "gemini"
    assert prebuilt["auth"] == "google-id-token"


def test_switching_backends_off_removes_them_from_the_chat_app() -> None:
    run = run_program(
        overrides={"gemma-stack:gkeGemmaEnabled": "false", "gemma-stack:cloudRunServices": None}
    )
    assert [b["id"] for b in chat_backends(run)] == ["gemini"]
    assert not gpu_deployments(run)
    assert not run.of_type("gcp:cloudrunv2/service:Service")
    assert "gemmaEndpoint" not in run.outputs


def test_finetuned_service_reads_its_bucket_only_and_joins_the_chat() -> None:
    run = run_program(overrides={"gemma-stack:cloudRunServices": [SQL_SERVICE]})
    (service,) = run.of_type("gcp:cloudrunv2/service:Service")
    (container,) = service.inputs["template"]["containers"]
    env = {e["name"]: e.get("value") for e in container["envs"]}
    assert env["MODEL_URI"] == "gs://my-gcp-project-models/gemma-3-1b-sql"
    assert container["image"] == run.outputs["inferenceImage"]
    readers = [
        (b.inputs["bucket"], b.inputs["role"], b.inputs["member"])
        for b in run.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
        if b.inputs["bucket"] == "my-gcp-project-models"
    ]
    assert readers == [
        (
            "my-gcp-project-models",
            "roles/storage.objectViewer",
            f"serviceAccount:{service.inputs['template']['serviceAccount']}",
        )
    ]
    assert "gemma-sql" in [b["id"] for b in chat_backends(run)]


def test_a_public_service_is_explicit_and_warned_about() -> None:
    run = run_program(
        overrides={
            "gemma-stack:cloudRunServices": [
                {"name": "open", "flavour": "prebuilt", "public": True}
            ]
        }
    )
    members = {b.inputs["member"] for b in run.of_type(IAM_MEMBER_TYPES[0])}
    assert "allUsers" in members
    assert any("open" in w and "public" in w for w in run.warnings())


@pytest.mark.parametrize("minor", ["1.33", kubernetes_validate.latest_version()])
def test_every_kubernetes_object_of_the_stack_passes_the_schema(
    dev: ProgramRun, minor: str
) -> None:
    objects = manifests_from_resources(dev.resources)
    assert {m["kind"] for m in objects} >= {"Namespace", "ServiceAccount", "Deployment", "Service"}
    # Custom resources are checked against their CRDs' schemas in test_k8s_schema.py.
    core = [m for m in objects if m["kind"] not in STACK_CRD_SCHEMAS]
    assert {m["kind"] for m in objects} - {m["kind"] for m in core} == {"PodMonitoring"}
    assert schema_failures(core, minor) == []


def test_workloads_start_only_after_their_images_and_secrets_exist() -> None:
    vllm_hf = {"name": "gemma-vllm", "flavour": "vllm", "model": "google/gemma-3-1b-it"}
    run = run_program(overrides={"gemma-stack:cloudRunServices": [SQL_SERVICE, vllm_hf]})
    services = {s.inputs["name"]: s for s in run.of_type("gcp:cloudrunv2/service:Service")}
    # Cloud Run refuses a revision whose image is not pushed yet, or whose secret has no
    # version; the chat pods would sit in ImagePullBackOff while Cloud Build still runs.
    assert run.waits_for(services["gemma-sql"], run.named("inference-image-build"))
    assert run.waits_for(services["gemma-vllm"], run.named("hf-token-version"))
    assert run.waits_for(run.named("chat-deployment"), run.named("chat-image-build"))
    assert not run.waits_for(services["gemma-vllm"], run.named("inference-image-build"))


def test_iap_audience_from_config_makes_the_app_verify_iap_headers() -> None:
    audience = "/projects/123456789012/global/backendServices/4242424242"
    iap = {
        "gemma-stack:chatExposure": "iap",
        "gemma-stack:chatAllowedUsers": ["group:ml-team@example.com"],
        "gemma-stack:chatDomain": "chat.example.com",
    }
    first = run_program(overrides=iap)
    (container,) = pod_spec(first.named("chat-deployment"))["containers"]
    first_env = {e["name"]: e.get("value") for e in container["env"]}
    # A first deploy knows no audience: the app looks it up, so it may list backend services.
    assert "IAP_AUDIENCE" not in first_env
    assert first_env["IAP_PROJECT_NUMBER"] == first.outputs["projectNumber"]
    assert first_env["IAP_BACKEND_SERVICE"] == "gemma-stack-chat-app-7860"
    assert any(r.inputs.get("role") == "roles/compute.viewer" for r in first.resources)
    run = run_program(overrides={**iap, "gemma-stack:chatIapAudience": audience})
    # IAP's API is enabled for this exposure only, before anyone is granted access through it.
    (iap_api,) = [
        s
        for s in run.of_type("gcp:projects/service:Service")
        if s.inputs["service"] == "iap.googleapis.com"
    ]
    (access,) = run.of_type("gcp:iap/webIamMember:WebIamMember")
    assert access.inputs["member"] == "group:ml-team@example.com"
    assert run.waits_for(access, iap_api)
    (container,) = pod_spec(run.named("chat-deployment"))["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["IAP_AUDIENCE"] == audience
    assert env["AUTH_MODE"] == "iap"
