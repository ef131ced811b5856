"""Recorded Kubernetes inputs become manifests checkov can read, with secrets redacted."""

from __future__ import annotations

from types import SimpleNamespace

from tests.policy.manifests import ScanResult, Skip, checkov_object
from tests.pulumi_harness import manifests_from_resources


def _recorded(type_: str, inputs: dict, outputs: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(type=type_, inputs=inputs, outputs=outputs or {})


def test_inputs_become_manifests() -> None:
    deployment = _recorded(
        "kubernetes:apps/v1:Deployment",
        {"metadata": {"namespace": "gemma-stack"}, "spec": {"replicas": 1.0}},
        {"metadata": {"name": "chat-app-a1b2c3", "namespace": "default"}},
    )
    secret = _recorded(
        "kubernetes:core/v1:Secret",
        {"metadata": {"name": "hf-secret"}, "stringData": {"hf_api_token": "hf_real"}},
    )
    namespace = _recorded(
        "kubernetes:core/v1:Namespace", {}, {"metadata": {"name": "ns", "namespace": "default"}}
    )
    others = [
        _recorded("pulumi:providers:kubernetes", {"kubeconfig": "{}"}),
        _recorded("gcp:cloudrunv2/service:Service", {"name": "x"}),
    ]
    rendered = manifests_from_resources([deployment, secret, namespace, *others])
    assert [m["kind"] for m in rendered] == ["Deployment", "Secret", "Namespace"]
    assert rendered[0]["apiVersion"] == "apps/v1"
    assert rendered[0]["metadata"] == {"namespace": "gemma-stack", "name": "chat-app-a1b2c3"}
    assert rendered[0]["spec"]["replicas"] == 1
    assert isinstance(rendered[0]["spec"]["replicas"], int)
    assert rendered[1]["apiVersion"] == "v1"
    assert rendered[1]["stringData"] == {"hf_api_token": "<redacted>"}
    assert rendered[2]["metadata"] == {"name": "ns"}


def test_findings_split_into_justified_unjustified_and_stale() -> None:
    result = ScanResult(
        failed=[
            ("CKV_K8S_43", "Deployment.gemma-stack.chat-app", "Image should use digest"),
            ("CKV_K8S_35", "Deployment.gemma-stack.chat-app", "Secrets as files"),
        ]
    )
    skips = [
        Skip("CKV_K8S_43", "pinned tags", ("*",)),
        Skip("CKV_K8S_35", "env from secretKeyRef", ("Deployment/gemma-service",)),
        Skip("CKV_K8S_15", "no longer needed", ("*",)),
    ]
    unjustified, justified, stale = result.split(skips)
    assert [f[0] for f in justified] == ["CKV_K8S_43"]
    assert [f[0] for f in unjustified] == ["CKV_K8S_35"]  # the skip names another object
    assert [s.check_id for s in stale] == ["CKV_K8S_35", "CKV_K8S_15"]
    assert checkov_object("Pod.gemma-stack.chat-app.app.kubernetes.io/name-chat-app") == (
        "Pod/chat-app"
    )
