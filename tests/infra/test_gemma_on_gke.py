"""GemmaOnGke under Pulumi mocks: GPUs, probes, sizing, token handling and the GCS model path."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes
import pytest

from components.gemma_on_gke import GemmaOnGke, GemmaOnGkeArgs, PodResources
from stacks.gemma_sizing import GEMMA_SIZING, GemmaSizing
from tests.pulumi_harness import ProgramRun, RecordedResource, pod_spec, render

TOKEN = "hf_SERVINGtestTOKENvalue0123456789"
PRINCIPAL = (
    "principal://iam.googleapis.com/projects/123456789012/locations/global/"
    "workloadIdentityPools/my-gcp-project.svc.id.goog/subject/ns/gemma-stack/sa/gemma"
)


def gemma_args(sizing: GemmaSizing, **changes: Any) -> GemmaOnGkeArgs:
    values: dict[str, Any] = {
        "namespace": "gemma-stack",
        "k8s_provider": kubernetes.Provider("k8s", kubeconfig="{}"),
        "model_id": sizing.default_model_id,
        "gpu_count": sizing.gpu_count,
        "tensor_parallel": sizing.tensor_parallel,
        "max_model_len": sizing.max_model_len,
        "max_num_seqs": sizing.max_num_seqs,
        "resources": PodResources(sizing.cpu, sizing.memory, sizing.ephemeral_storage),
        "ksa_name": "gemma",
        "ksa_principal": PRINCIPAL,
        "hf_token": pulumi.Output.secret(TOKEN),
    }
    values.update(changes)
    return GemmaOnGkeArgs(**values)


def deploy(sizing: GemmaSizing, **changes: Any) -> ProgramRun:
    def build() -> None:
        gemma = GemmaOnGke("gemma", gemma_args(sizing, **changes))
        pulumi.export("url", gemma.url)
        pulumi.export("serviceName", gemma.service_name)
        pulumi.export("model", gemma.served_model_name)

    return render(build)


def gemma_pod(run: ProgramRun) -> dict[str, Any]:
    return pod_spec(run.one("kubernetes:apps/v1:Deployment"))


def container(run: ProgramRun) -> dict[str, Any]:
    containers = gemma_pod(run)["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def flag(args: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name} must appear exactly once in {args}"
    return values[0]


VARIANTS = sorted(GEMMA_SIZING)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_requests_its_l4s_with_the_l4_selector(variant: str) -> None:
    sizing = GEMMA_SIZING[variant]
    run = deploy(sizing)
    spec, vllm = gemma_pod(run), container(run)
    assert spec["nodeSelector"] == {
        "cloud.google.com/gke-accelerator": "nvidia-l4",
        "cloud.google.com/gke-gpu-driver-version": "latest",
    }
    for kind in ("requests", "limits"):
        res = vllm["resources"][kind]
        assert res["nvidia.com/gpu"] == str(sizing.gpu_count)
        assert res["cpu"] == sizing.cpu
        assert res["memory"] == sizing.memory
        # Autopilot's 1 GiB default ephemeral storage cannot hold any Gemma download.
        assert res["ephemeral-storage"] == sizing.ephemeral_storage
        assert not res["ephemeral-storage"].endswith("Mi")


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_caps_context_and_parallelism(variant: str) -> None:
    sizing = GEMMA_SIZING[variant]
    args = container(deploy(sizing))["args"]
    assert flag(args, "max-model-len") == str(sizing.max_model_len)
    assert int(flag(args, "max-model-len")) < 131_072  # the 128K default exhausts an L4
    assert flag(args, "tensor-parallel-size") == str(sizing.tensor_parallel)
    assert flag(args, "max-num-seqs") == str(sizing.max_num_seqs)
    # `vllm serve MODEL`: the model is the first argument, never the deprecated --model.
    assert args[0] == sizing.default_model_id
    assert not any(a.startswith("--model=") or a == "--model" for a in args)
    assert flag(args, "served-model-name") == sizing.default_model_id
    assert flag(args, "port") == "8000"


@pytest.mark.parametrize("variant", VARIANTS)
def test_shared_memory_volume_only_when_tensor_parallel(variant: str) -> None:
    sizing = GEMMA_SIZING[variant]
    run = deploy(sizing)
    shm = [v for v in gemma_pod(run)["volumes"] if v["name"] == "dshm"]
    mounts = [m for m in container(run)["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    if sizing.tensor_parallel > 1:
        assert shm == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]
        assert len(mounts) == 1
    else:
        assert shm == []
        assert mounts == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_allow_download_and_load_then_check_health(variant: str) -> None:
    run = deploy(GEMMA_SIZING[variant])
    vllm = container(run)
    startup, ready, live = (vllm[p] for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    for probe in (startup, ready, live):
        assert probe["httpGet"] == {"path": "/health", "port": "http"}
    budget_min = startup["periodSeconds"] * startup["failureThreshold"] / 60
    assert 30 <= budget_min <= 60
    assert ready["periodSeconds"] <= 15
    assert live["failureThreshold"] * live["periodSeconds"] >= 60  # no kill on one slow reply
    deployment = run.one("kubernetes:apps/v1:Deployment").inputs
    # Autopilot GPU node provisioning alone takes 10-15 min.
    assert deployment["spec"]["progressDeadlineSeconds"] >= 1200
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_pulumi_up_does_not_wait_for_gpus() -> None:
    run = deploy(GEMMA_SIZING["gemma-3-12b-it"])
    for token in ("kubernetes:apps/v1:Deployment", "kubernetes:core/v1:Service"):
        annotations = run.one(token).inputs["metadata"]["annotations"]
        assert annotations["pulumi.com/skipAwait"] == "true"


def test_service_and_outputs_give_the_in_cluster_endpoint() -> None:
    run = deploy(GEMMA_SIZING["gemma-3-1b-it"])
    service = run.one("kubernetes:core/v1:Service").inputs
    assert service["metadata"]["name"] == "gemma-service"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    labels = run.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["metadata"][
        "labels"
    ]
    assert service["spec"]["selector"] == labels
    assert run.outputs == {
        "url": "http://gemma-service.gemma-stack.svc.cluster.local:8000/v1",
        "serviceName": "gemma-service",
        "model": "google/gemma-3-1b-it",
    }


def test_only_pods_of_the_namespace_may_call_the_model_server() -> None:
    run = deploy(GEMMA_SIZING["gemma-3-1b-it"])
    policy = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy").inputs
    labels = run.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]["metadata"][
        "labels"
    ]
    assert policy["metadata"]["namespace"] == "gemma-stack"
    assert policy["spec"]["podSelector"] == {"matchLabels": labels}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    # An empty pod selector in `from` means: every pod of this namespace, none outside it;
    # outside it only Managed Prometheus's collectors, which scrape /metrics.
    assert rule["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gmp-system"}}},
    ]
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]


def test_hf_token_reaches_the_pod_only_through_a_secret_key_ref() -> None:
    run = deploy(GEMMA_SIZING["gemma-3-4b-it"])
    secret = run.one("kubernetes:core/v1:Secret")
    assert secret.inputs["metadata"]["name"] == "hf-secret"
    assert secret.inputs["stringData"] == {"hf_api_token": TOKEN}
    assert secret.input_is_secret("stringData")
    env = {e["name"]: e for e in container(run)["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-secret", "key": "hf_api_token"}},
    }
    assert all("value" not in e for e in env.values() if "TOKEN" in e["name"])
    others = [r for r in run.resources if r.type != "kubernetes:core/v1:Secret"]
    assert TOKEN not in json.dumps([r.inputs for r in others])
    deployment = run.one("kubernetes:apps/v1:Deployment")
    assert run.waits_for(deployment, secret)


def test_pod_runs_hardened() -> None:
    run = deploy(GEMMA_SIZING["gemma-3-12b-it"])
    spec, vllm = gemma_pod(run), container(run)
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "gemma"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = vllm["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] != 0
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # A read-only root needs writable places for the HF cache, vLLM caches and /tmp.
    mounts = {m["mountPath"]: m["name"] for m in vllm["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    for path in (env["HF_HOME"], env["VLLM_CACHE_ROOT"], env["HOME"]):
        assert any(path.startswith(m) for m in mounts), path
    assert "/tmp" in mounts
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/cache"]]["emptyDir"]["sizeLimit"] == "80Gi"


def test_gcs_model_mounts_the_bucket_read_only_and_grants_that_bucket_only() -> None:
    run = deploy(
        GEMMA_SIZING["gemma-3-1b-it"],
        model_id="gemma-3-1b-sql",
        hf_token=None,
        gcs_bucket="team-models",
        gcs_path="merged/gemma-3-1b-sql",
    )
    template = run.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]
    assert template["metadata"]["annotations"] == {
        "gke-gcsfuse/volumes": "true",
        "gemma-stack/cuda": "13.0",
    }
    model = next(v for v in template["spec"]["volumes"] if v["name"] == "model")
    assert model["csi"]["driver"] == "gcsfuse.csi.storage.gke.io"
    assert model["csi"]["readOnly"] is True
    assert model["csi"]["volumeAttributes"]["bucketName"] == "team-models"
    vllm = container(run)
    mount = next(m for m in vllm["volumeMounts"] if m["name"] == "model")
    assert mount == {"name": "model", "mountPath": "/models", "readOnly": True}
    assert vllm["args"][0] == "/models/merged/gemma-3-1b-sql"
    assert flag(vllm["args"], "served-model-name") == "gemma-3-1b-sql"
    assert {e["name"]: e.get("value") for e in vllm["env"]}["HF_HUB_OFFLINE"] == "1"
    grants = [r for r in run.resources if "IAM" in r.type or "iam" in r.type.lower()]
    assert [(g.type, g.inputs) for g in grants] == [
        (
            "gcp:storage/bucketIAMMember:BucketIAMMember",
            {"bucket": "team-models", "role": "roles/storage.objectViewer", "member": PRINCIPAL},
        )
    ]
    assert run.of_type("kubernetes:core/v1:Secret") == []
    assert run.waits_for(run.one("kubernetes:apps/v1:Deployment"), grants[0])


def test_hugging_face_model_has_no_fuse_volume_and_no_bucket_grant() -> None:
    run = deploy(GEMMA_SIZING["gemma-3-4b-it"])
    template = run.one("kubernetes:apps/v1:Deployment").inputs["spec"]["template"]
    assert template["metadata"]["annotations"] == {"gemma-stack/cuda": "13.0"}
    assert all("csi" not in v for v in template["spec"]["volumes"])
    assert run.of_type("gcp:storage/bucketIAMMember:BucketIAMMember") == []


def test_every_child_belongs_to_the_component() -> None:
    run = deploy(GEMMA_SIZING["gemma-3-1b-it"], gcs_bucket="b", gcs_path="m", hf_token=None)
    component = run.one("gemma-stack:gke:GemmaOnGke")
    children: list[RecordedResource] = run.children_of(component)
    assert {c.type for c in children} == {
        "kubernetes:apps/v1:Deployment",
        "kubernetes:core/v1:Service",
        "kubernetes:networking.k8s.io/v1:NetworkPolicy",
        "kubernetes:monitoring.googleapis.com/v1:PodMonitoring",
        "gcp:storage/bucketIAMMember:BucketIAMMember",
    }
    assert all(c.name.startswith("gemma-") for c in children)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"gpu_count": 3, "tensor_parallel": 3}, "not an Autopilot L4 shape"),
        ({"tensor_parallel": 1}, "must equal gpu_count"),
        ({"max_model_len": 131_073 * 2}, "exhausts an L4"),
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"hf_token": None}, "needs hf_token"),
        ({"gcs_bucket": "b", "gcs_path": "gs://b/m"}, "no gs:// prefix"),
    ],
)
def test_impossible_settings_fail_before_any_resource(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        deploy(GEMMA_SIZING["gemma-3-12b-it"], **changes)
