"""ChatApp under Pulumi mocks: its backend list, hardened pod, probes and each exposure choice."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes
import pytest

from app.chat.settings import ChatSettings
from components.chat_app import ChatApp, ChatAppArgs, ChatBackend, chat_backends_env
from components.cloud_run_gpu_service import (
    CloudRunGpuService,
    finetuned_gemma,
    prebuilt_gemma,
    vllm_gemma,
)
from components.gemma_on_gke import GemmaOnGke, GemmaOnGkeArgs, PodResources
from stacks.backends import cloud_run_backend, gke_backend
from tests.pulumi_harness import ProgramRun, render

PROJECT = "my-gcp-project"
INVOKER_EMAIL = f"chat-invoker-dev@{PROJECT}.iam.gserviceaccount.com"
PRINCIPAL = (
    "principal://iam.googleapis.com/projects/123456789012/locations/global/"
    "workloadIdentityPools/my-gcp-project.svc.id.goog/subject/ns/gemma-stack/sa/chat-app"
)
LOGIN = "ana:correct-horse-battery,ben:staple-42"
SESSION_KEY = "k" * 48
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"


def all_backends(provider: kubernetes.Provider) -> list[ChatBackend]:
    """One backend of every kind this stack can deploy, built from real components."""
    gemma = GemmaOnGke(
        "gemma",
        GemmaOnGkeArgs(
            namespace="gemma-stack",
            k8s_provider=provider,
            model_id="google/gemma-3-12b-it",
            gpu_count=2,
            tensor_parallel=2,
            max_model_len=16384,
            max_num_seqs=4,
            resources=PodResources("8", "48Gi", "80Gi"),
            ksa_name="gemma",
            ksa_principal="principal://x",
            hf_token=pulumi.Output.secret("hf_x"),
        ),
    )
    invokers = {"chat-app": f"serviceAccount:{INVOKER_EMAIL}"}
    common: dict[str, Any] = {"project_id": PROJECT, "region": "us-central1", "invokers": invokers}
    prebuilt = CloudRunGpuService(
        "gemma-4b", prebuilt_gemma(**common, variant="gemma3-4b", service_name="gemma-4b")
    )
    vllm = CloudRunGpuService(
        "gemma-vllm",
        vllm_gemma(
            **common,
            model_id="google/gemma-3-1b-it",
            max_model_len=8192,
            hf_token_secret="HF_TOKEN",
            service_name="gemma-vllm",
        ),
    )
    sql = CloudRunGpuService(
        "gemma-sql",
        finetuned_gemma(
            **common,
            image="inference:abc",
            model_bucket="team-models",
            model_path="merged/sql",
            service_name="gemma-sql",
        ),
    )
    return [
        ChatBackend.gemini_on_vertex(),
        gke_backend(gemma, id="gemma-gke", label="Gemma 3 12B (GKE)"),
        cloud_run_backend(prebuilt, id="gemma-run", label="Gemma 3 4B (Cloud Run)"),
        cloud_run_backend(vllm, id="gemma-vllm", label="Gemma 3 1B (vLLM, Cloud Run)"),
        cloud_run_backend(sql, id="gemma-sql", label="SQL Gemma (Cloud Run)"),
    ]


def deploy(
    *,
    backends: Callable[[kubernetes.Provider], Sequence[ChatBackend]] = all_backends,
    **changes: Any,
) -> ProgramRun:
    def build() -> None:
        provider = kubernetes.Provider("k8s", kubeconfig="{}")
        values: dict[str, Any] = {
            "project_id": PROJECT,
            "namespace": "gemma-stack",
            "k8s_provider": provider,
            "image": "us-central1-docker.pkg.dev/my-gcp-project/gemma-stack/chat:abc123",
            "ksa_name": "chat-app",
            "ksa_principal": PRINCIPAL,
            "backends": list(backends(provider)),
            "id_token_service_account": INVOKER_EMAIL,
        }
        values.update(changes)
        chat = ChatApp("chat", ChatAppArgs(**values))
        pulumi.export("url", chat.url)
        pulumi.export("hint", chat.access_hint)
        pulumi.export("internalUrl", chat.internal_url)

    return render(build)


def chat_deployment(run: ProgramRun) -> dict[str, Any]:
    (found,) = [r for r in run.of_type(DEPLOYMENT) if r.name == "chat-deployment"]
    return found.inputs


def chat_container(run: ProgramRun) -> dict[str, Any]:
    (box,) = chat_deployment(run)["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = box
    return result


def env_of(run: ProgramRun) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in chat_container(run)["env"]}


def chat_service(run: ProgramRun) -> dict[str, Any]:
    (found,) = [r for r in run.of_type(SERVICE) if r.name == "chat-service"]
    return found.inputs


def test_chat_backends_lists_exactly_the_deployed_backends() -> None:
    run = deploy()
    backends = json.loads(env_of(run)["CHAT_BACKENDS"]["value"])
    assert backends == [
        {
            "id": "gemini",
            "label": "Gemini 2.5 Flash (Vertex AI)",
            "kind": "gemini",
            "model": "gemini-2.5-flash",
            "vertex": True,
            "location": "global",
        },
        {
            "id": "gemma-gke",
            "label": "Gemma 3 12B (GKE)",
            "kind": "openai",
            "model": "google/gemma-3-12b-it",
            "base_url": "http://gemma-service.gemma-stack.svc.cluster.local:8000/v1",
        },
        {
            "id": "gemma-run",
            "label": "Gemma 3 4B (Cloud Run)",
            "kind": "gemini",
            "model": "gemma3:4b",
            "base_url": "https://gemma-4b-a1b2c3d4e5-uc.a.run.app",
            "auth": "google-id-token",
        },
        {
            "id": "gemma-vllm",
            "label": "Gemma 3 1B (vLLM, Cloud Run)",
            "kind": "openai",
            "model": "google/gemma-3-1b-it",
            "base_url": "https://gemma-vllm-a1b2c3d4e5-uc.a.run.app/v1",
            "auth": "google-id-token",
        },
        {
            "id": "gemma-sql",
            "label": "SQL Gemma (Cloud Run)",
            "kind": "openai",
            "model": "gemma-3-finetuned",
            "base_url": "https://gemma-sql-a1b2c3d4e5-uc.a.run.app/v1",
            "auth": "google-id-token",
        },
    ]
    # The chat app's own settings parser accepts exactly this value.
    settings = ChatSettings(chat_backends=env_of(run)["CHAT_BACKENDS"]["value"])
    assert [b.id for b in settings.chat_backends] == [b["id"] for b in backends]


def test_chat_backends_follow_what_is_enabled() -> None:
    run = deploy(backends=lambda _: [ChatBackend.gemini_on_vertex()], id_token_service_account=None)
    env = env_of(run)
    assert [b["id"] for b in json.loads(env["CHAT_BACKENDS"]["value"])] == ["gemini"]
    assert "ID_TOKEN_SERVICE_ACCOUNT" not in env


def test_settings_env_for_the_app() -> None:
    env = {k: v.get("value") for k, v in env_of(deploy()).items()}
    assert env["GOOGLE_CLOUD_PROJECT"] == PROJECT
    assert env["FIRESTORE_DATABASE"] == "chat-app-db"
    assert env["PORT"] == "7860"
    assert env["AUTH_MODE"] == "none"
    assert env["ID_TOKEN_SERVICE_ACCOUNT"] == INVOKER_EMAIL


def test_chat_pod_is_hardened_with_probes_and_limits() -> None:
    run = deploy()
    spec = chat_deployment(run)["spec"]["template"]["spec"]
    box = chat_container(run)
    assert box["command"] == ["python", "-m", "app.chat"]
    assert box["ports"] == [
        {"name": "http", "containerPort": 7860, "protocol": "TCP"},
        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    ]
    assert spec["serviceAccountName"] == "chat-app"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = box["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {m["mountPath"] for m in box["volumeMounts"]} == {"/tmp"}
    for kind in ("requests", "limits"):
        assert set(box["resources"][kind]) >= {"cpu", "memory"}
    # Readiness fails while history writes are stuck; liveness never does (a restart would
    # drop the queue).
    assert box["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    for probe in ("livenessProbe", "startupProbe"):
        assert box[probe]["httpGet"] == {"path": "/livez", "port": "http"}
    # SIGTERM: open requests get SHUTDOWN_GRACE_S, queued writes SHUTDOWN_FLUSH_S, within
    # the pod's grace period.
    env = {e["name"]: e.get("value") for e in box["env"]}
    assert (env["SHUTDOWN_GRACE_S"], env["SHUTDOWN_FLUSH_S"]) == ("15", "30")
    assert spec["terminationGracePeriodSeconds"] == 15 + 30 + 15
    assert "nodeSelector" not in spec  # no GPU for the UI


def test_a_configured_iap_audience_and_retention_reach_the_app() -> None:
    audience = "/projects/123456789012/global/backendServices/42"
    run = deploy(
        exposure="iap",
        iap_domain="chat.example.com",
        iap_audience=audience,
        iap_project_number="123456789012",
        history_ttl_days=30,
    )
    env = {k: v.get("value") for k, v in env_of(run).items()}
    assert env["IAP_AUDIENCE"] == audience
    assert "IAP_PROJECT_NUMBER" not in env
    assert env["HISTORY_TTL_DAYS"] == "30"
    assert "HISTORY_TTL_DAYS" not in {k for k, _ in env_of(deploy()).items()}


def test_internal_exposure_is_cluster_ip_only() -> None:
    run = deploy()
    service = chat_service(run)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["metadata"]["annotations"] == {"gemma-stack/auth": "none"}
    assert service["spec"]["ports"][0]["port"] == 7860
    assert run.of_type("kubernetes:networking.k8s.io/v1:Ingress") == []
    assert run.outputs["hint"] == "kubectl -n gemma-stack port-forward svc/chat-app 7860:7860"
    assert run.outputs["url"] == "http://localhost:7860"
    assert run.outputs["internalUrl"] == "http://chat-app.gemma-stack.svc.cluster.local:7860"
    policy = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "chat-ingress")
    assert policy.inputs["spec"]["podSelector"] == {
        "matchLabels": chat_deployment(run)["spec"]["selector"]["matchLabels"]
    }
    rule, metrics = policy.inputs["spec"]["ingress"]
    assert rule == {"ports": [{"port": 7860, "protocol": "TCP"}]}  # the app port from anywhere
    assert metrics["from"] == [  # the metrics port from Managed Prometheus alone
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gmp-system"}}}
    ]
    assert metrics["ports"] == [{"port": 9090, "protocol": "TCP"}]


def test_iap_exposure_puts_the_app_behind_identity_aware_proxy() -> None:
    run = deploy(
        exposure="iap",
        iap_domain="chat.example.com",
        iap_accessors={"ml-team": "group:ml-team@example.com"},
        iap_project_number="123456789012",
    )
    service = chat_service(run)
    assert service["spec"]["type"] == "ClusterIP"
    annotations = service["metadata"]["annotations"]
    assert json.loads(annotations["cloud.google.com/neg"]) == {"ingress": True}
    backend_config_name = json.loads(annotations["cloud.google.com/backend-config"])["default"]
    (config,) = run.of_type("kubernetes:cloud.google.com/v1:BackendConfig")
    assert config.inputs["metadata"]["name"] == backend_config_name
    assert config.inputs["spec"]["iap"] == {"enabled": True}
    assert config.inputs["spec"]["healthCheck"]["requestPath"] == "/healthz"
    (ingress,) = run.of_type("kubernetes:networking.k8s.io/v1:Ingress")
    ing = ingress.inputs
    assert ing["metadata"]["annotations"]["kubernetes.io/ingress.allow-http"] == "false"
    assert ing["metadata"]["annotations"]["gemma-stack/auth"] == "iap"
    assert ing["spec"]["defaultBackend"]["service"] == {
        "name": "chat-app",
        "port": {"number": 7860},
    }
    (cert,) = run.of_type("kubernetes:networking.gke.io/v1:ManagedCertificate")
    assert cert.inputs["spec"] == {"domains": ["chat.example.com"]}
    assert (
        ing["metadata"]["annotations"]["networking.gke.io/managed-certificates"]
        == cert.inputs["metadata"]["name"]
    )
    (access,) = run.of_type("gcp:iap/webIamMember:WebIamMember")
    assert access.inputs["role"] == "roles/iap.httpsResourceAccessor"
    assert access.inputs["member"] == "group:ml-team@example.com"
    env = {k: v.get("value") for k, v in env_of(run).items()}
    assert env["AUTH_MODE"] == "iap"
    # A first deploy has no audience yet: the app looks it up from the Ingress's backend.
    assert "IAP_AUDIENCE" not in env
    assert env["IAP_PROJECT_NUMBER"] == "123456789012"
    assert env["IAP_BACKEND_SERVICE"] == "gemma-stack-chat-app-7860"
    settings = ChatSettings(
        chat_backends=env["CHAT_BACKENDS"],
        auth_mode="iap",
        iap_project_number=env["IAP_PROJECT_NUMBER"],
        iap_backend_service=env["IAP_BACKEND_SERVICE"],
    )
    assert settings.iap_audience is None
    assert run.outputs["url"] == "https://chat.example.com"
    assert run.outputs["hint"].startswith(
        "Point DNS for chat.example.com at the address of "
        "`kubectl -n gemma-stack get ingress chat-app`"
    )
    assert "chatAllowedUsers" in run.outputs["hint"]  # the config key that exists
    # The app trusts IAP's identity header: only Google's front ends may connect.
    policy = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "chat-ingress")
    rule, metrics = policy.inputs["spec"]["ingress"]
    # Managed Prometheus's collectors alone reach the metrics port.
    assert metrics == {
        "from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gmp-system"}}}
        ],
        "ports": [{"port": 9090, "protocol": "TCP"}],
    }
    assert rule["from"] == [
        {"ipBlock": {"cidr": "130.211.0.0/22"}},
        {"ipBlock": {"cidr": "35.191.0.0/16"}},
    ]
    assert rule["ports"] == [{"port": 7860, "protocol": "TCP"}]
    assert all(s.inputs["spec"]["type"] != "LoadBalancer" for s in run.of_type(SERVICE))


def test_login_exposure_has_app_sign_in_from_a_secret() -> None:
    run = deploy(
        exposure="login",
        login_credentials=pulumi.Output.secret(LOGIN),
        session_key=pulumi.Output.secret(SESSION_KEY),
        allowed_source_ranges=["203.0.113.0/24"],
    )
    service = chat_service(run)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["metadata"]["annotations"]["gemma-stack/auth"] == "app-login"
    assert service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    # The login throttle counts failures per client address, which this keeps.
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    env = env_of(run)
    assert env["AUTH_MODE"]["value"] == "login"
    secret_ref = env["LOGIN_CREDENTIALS"]["valueFrom"]["secretKeyRef"]
    secrets = [r for r in run.of_type("kubernetes:core/v1:Secret") if r.name == "chat-login"]
    (secret,) = secrets
    assert secret_ref == {"name": secret.inputs["metadata"]["name"], "key": "credentials"}
    key_ref = env["SESSION_SECRET"]["valueFrom"]["secretKeyRef"]
    assert key_ref == {"name": secret.inputs["metadata"]["name"], "key": "session-key"}
    assert secret.inputs["stringData"] == {"credentials": LOGIN, "session-key": SESSION_KEY}
    assert secret.input_is_secret("stringData")
    others = [r.inputs for r in run.resources if r is not secret]
    assert "correct-horse-battery" not in json.dumps(others)
    assert SESSION_KEY not in json.dumps(others)
    assert run.outputs["url"] == "http://10.128.0.50:7860"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"exposure": "login"}, "needs login_credentials"),
        ({"exposure": "login", "login_credentials": "a:b"}, "session_key"),
        ({"exposure": "iap"}, "needs iap_domain"),
        ({"exposure": "iap", "iap_domain": "c.example.com"}, "iap_audience or iap_project_number"),
        ({"history_ttl_days": 0}, "at least 1"),
        ({"exposure": "public"}, "exposure must be one of"),
        ({"id_token_service_account": None}, "Google ID tokens"),
        ({"allowed_source_ranges": ["0.0.0.0/0"]}, "exposure 'login' only"),
        ({"iap_accessors": {"x": "user:a@b.c"}}, "exposure 'iap' only"),
    ],
)
def test_unsafe_or_unreachable_exposure_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deploy(**changes)


def test_backend_list_rules() -> None:
    gemini = ChatBackend.gemini_on_vertex()
    with pytest.raises(ValueError, match="unique"):
        chat_backends_env([gemini, gemini])
    with pytest.raises(ValueError, match="at least one backend"):
        chat_backends_env([])
    with pytest.raises(ValueError, match="needs a base_url"):
        ChatBackend(id="x", label="X", kind="openai", model="m")
    with pytest.raises(ValueError, match="lowercase"):
        ChatBackend(id="Bad Id", label="X", kind="gemini", model="m", vertex=True)
    with pytest.raises(ValueError, match="api_key_env"):
        ChatBackend(id="k", label="K", kind="gemini", model="m", auth="api-key")
    keyed = ChatBackend(
        id="k",
        label="K",
        kind="gemini",
        model="gemini-2.5-flash",
        auth="api-key",
        api_key_env="GEMINI_API_KEY",
    )
    assert keyed.to_env() == {
        "id": "k",
        "label": "K",
        "kind": "gemini",
        "model": "gemini-2.5-flash",
        "auth": "api-key",
        "api_key_env": "GEMINI_API_KEY",
    }
