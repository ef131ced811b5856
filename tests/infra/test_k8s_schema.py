"""Every Kubernetes object the serving components render passes the Kubernetes OpenAPI schema.

GKE's REGULAR channel moves through several minors a year, so each object is validated
(strictly: unknown fields fail) against every minor from 1.33 up to the newest that the
installed kubernetes-validate ships (1.37 at the time of writing). GKE's own CRDs
(BackendConfig, ManagedCertificate) are not in that schema set; they are checked against
the fields of their published CRDs below, and Managed Prometheus's PodMonitoring against its
published CRD's schema (tests/infra/crd_schemas.py).
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pulumi
import pulumi_kubernetes as kubernetes
import pytest

from components.chat_app import ChatApp, ChatAppArgs, ChatBackend
from components.custom_metrics_adapter import CustomMetricsAdapter, CustomMetricsAdapterArgs
from components.gemma_on_gke import GemmaOnGke, GemmaOnGkeArgs, PodResources
from stacks.gemma_sizing import GEMMA_SIZING
from tests.infra.crd_schemas import STACK_CRD_SCHEMAS, cel_rule_failures
from tests.pulumi_harness import manifests_from_resources, render, schema_failures

OLDEST_MINOR = 33
NEWEST_MINOR = int(kubernetes_validate.latest_version().split(".")[1])
MINORS = [f"1.{m}" for m in range(OLDEST_MINOR, NEWEST_MINOR + 1)]

# Fields of GKE's BackendConfig (cloud.google.com/v1) and ManagedCertificate
# (networking.gke.io/v1) CRDs; anything else is a typo GKE would drop or reject.
_GKE_CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "BackendConfig": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "iap": {
                "type": "object",
                "additionalProperties": False,
                "required": ["enabled"],
                "properties": {
                    "enabled": {"type": "boolean"},
                    "oauthclientCredentials": {
                        "type": "object",
                        "properties": {"secretName": {"type": "string"}},
                        "required": ["secretName"],
                    },
                },
            },
            "healthCheck": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "checkIntervalSec": {"type": "integer"},
                    "timeoutSec": {"type": "integer"},
                    "healthyThreshold": {"type": "integer"},
                    "unhealthyThreshold": {"type": "integer"},
                    "type": {"enum": ["HTTP", "HTTPS", "HTTP2"]},
                    "requestPath": {"type": "string", "pattern": "^/"},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                },
            },
            "timeoutSec": {"type": "integer", "minimum": 1, "maximum": 86400},
            "cdn": {"type": "object"},
            "connectionDraining": {"type": "object"},
            "customRequestHeaders": {"type": "object"},
            "customResponseHeaders": {"type": "object"},
            "logging": {"type": "object"},
            "securityPolicy": {"type": "object"},
            "sessionAffinity": {"type": "object"},
        },
    },
    "ManagedCertificate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["domains"],
        "properties": {
            "domains": {
                "type": "array",
                "minItems": 1,
                "maxItems": 100,
                "items": {"type": "string", "maxLength": 63 * 4, "pattern": r"^[a-z0-9.-]+$"},
            }
        },
    },
}


def build_everything() -> None:
    """Each serving component in each shape it can render."""
    provider = kubernetes.Provider("k8s", kubeconfig="{}")
    CustomMetricsAdapter(
        "adapter",
        CustomMetricsAdapterArgs(
            k8s_provider=provider,
            namespace="custom-metrics",
            ksa_name="custom-metrics-stackdriver-adapter",
        ),
    )
    for variant, sizing in GEMMA_SIZING.items():
        from_gcs = sizing.tensor_parallel > 1
        GemmaOnGke(
            f"gke-{variant}",
            GemmaOnGkeArgs(
                namespace="gemma-stack",
                k8s_provider=provider,
                model_id=sizing.default_model_id,
                gpu_count=sizing.gpu_count,
                tensor_parallel=sizing.tensor_parallel,
                max_model_len=sizing.max_model_len,
                max_num_seqs=sizing.max_num_seqs,
                resources=PodResources(sizing.cpu, sizing.memory, sizing.ephemeral_storage),
                ksa_name="gemma",
                ksa_principal="principal://example",
                hf_token=None if from_gcs else pulumi.Output.secret("hf_x"),
                gcs_bucket="team-models" if from_gcs else None,
                gcs_path=f"models/{variant}" if from_gcs else "",
                # Fixed for the GCS variants, autoscaled (with an HPA) for the others.
                max_replicas=1 if from_gcs else 3,
            ),
        )
    backends = [ChatBackend.gemini_on_vertex()]
    for exposure, extra in (
        ("internal", {}),
        (
            "iap",
            {
                "iap_domain": "chat.example.com",
                "iap_static_ip_name": "chat-ip",
                "iap_project_number": "123456789012",
            },
        ),
        (
            "login",
            {
                "login_credentials": pulumi.Output.secret("ana:pw"),
                "session_key": pulumi.Output.secret("k" * 48),
            },
        ),
    ):
        ChatApp(
            f"chat-{exposure}",
            ChatAppArgs(
                project_id="my-gcp-project",
                namespace="gemma-stack",
                k8s_provider=provider,
                image="chat:abc",
                ksa_name="chat-app",
                ksa_principal="principal://example",
                backends=backends,
                exposure=exposure,  # type: ignore[arg-type]
                system_prompt="You are Gemma.",
                **extra,
            ),
        )


def manifests() -> list[dict[str, Any]]:
    return manifests_from_resources(render(build_everything).resources)


_MANIFESTS = manifests()


def test_every_kind_the_components_render_is_covered() -> None:
    kinds = {m["kind"] for m in _MANIFESTS}
    assert kinds == {
        "Deployment",
        "Service",
        "Secret",
        "Ingress",
        "NetworkPolicy",
        "BackendConfig",
        "ManagedCertificate",
        "PodMonitoring",
        "HorizontalPodAutoscaler",
        "ClusterRole",
        "ClusterRoleBinding",
        "RoleBinding",
        "APIService",
    }
    assert len(MINORS) >= 2
    assert MINORS[-1] == f"1.{NEWEST_MINOR}"


@pytest.mark.parametrize("minor", MINORS)
def test_kubernetes_objects_pass_the_openapi_schema(minor: str) -> None:
    core = [m for m in _MANIFESTS if m["kind"] not in _GKE_CRD_SCHEMAS | STACK_CRD_SCHEMAS.keys()]
    assert len(core) >= 12
    assert schema_failures(core, minor) == []


@pytest.mark.parametrize("kind", sorted(_GKE_CRD_SCHEMAS))
def test_gke_custom_resources_match_their_crd_fields(kind: str) -> None:
    objects = [m for m in _MANIFESTS if m["kind"] == kind]
    assert objects
    for manifest in objects:
        jsonschema.validate(manifest["spec"], _GKE_CRD_SCHEMAS[kind])
        assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}


@pytest.mark.parametrize("kind", sorted(STACK_CRD_SCHEMAS))
def test_custom_resources_match_their_published_crd_schema(kind: str) -> None:
    api_version, schema = STACK_CRD_SCHEMAS[kind]
    objects = [m for m in _MANIFESTS if m["kind"] == kind]
    assert objects
    for manifest in objects:
        assert manifest["apiVersion"] == api_version
        assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}
        jsonschema.validate(manifest["spec"], schema)
        assert cel_rule_failures(kind, manifest["spec"]) == []


def test_crd_checks_catch_broken_pod_monitorings() -> None:
    monitoring = next(m for m in _MANIFESTS if m["kind"] == "PodMonitoring")
    _, schema = STACK_CRD_SCHEMAS["PodMonitoring"]
    typo = copy.deepcopy(monitoring["spec"])
    typo["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, schema)
    no_port = copy.deepcopy(monitoring["spec"])
    del no_port["endpoints"][0]["port"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(no_port, schema)
    slow = copy.deepcopy(monitoring["spec"])
    slow["endpoints"][0].update(interval="10s", timeout="1m")
    jsonschema.validate(slow, schema)
    assert cel_rule_failures("PodMonitoring", slow) == [
        "endpoints[0]: scrape timeout exceeds the interval"
    ]


def test_schema_check_catches_a_broken_object() -> None:
    deployment = next(m for m in _MANIFESTS if m["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo of resources
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, MINORS[-1], strict=True)
    (failure,) = schema_failures([broken], MINORS[-1])
    assert "'resource'" in failure
    bad_config = {"iap": {"enable": True}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad_config, _GKE_CRD_SCHEMAS["BackendConfig"])
