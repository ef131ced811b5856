"""A Pulumi program with every serving component, for running the pack over them."""

# Every flavour of CloudRunGpuService and both GemmaOnGke model sources next to one ChatApp.
SNIPPET = """
import pulumi
import pulumi_kubernetes as k8s
from components.chat_app import ChatApp, ChatAppArgs, ChatBackend
from components.cloud_run_gpu_service import (
    CloudRunGpuService, ServiceSettings, finetuned_gemma, prebuilt_gemma, vllm_gemma,
)
from components.gemma_on_gke import GemmaOnGke, GemmaOnGkeArgs, PodResources
from stacks.backends import cloud_run_backend, gke_backend

provider = k8s.Provider("k8s", kubeconfig="{{}}")
invoker = {{"chat": "serviceAccount:chat-invoker@my-gcp-project.iam.gserviceaccount.com"}}
common = dict(project_id="my-gcp-project", region="us-central1", invokers=invoker)
runs = [
    CloudRunGpuService("prebuilt", prebuilt_gemma(
        variant="gemma3-1b", settings=ServiceSettings(public={public}), **common)),
    CloudRunGpuService("vllm-hf", vllm_gemma(
        model_id="google/gemma-3-1b-it", max_model_len=8192, hf_token_secret="HF_TOKEN", **common)),
    CloudRunGpuService("vllm-gcs", vllm_gemma(
        model_id="gemma-sql", max_model_len=8192, model_bucket="models", model_path="sql",
        **common)),
    CloudRunGpuService("sql", finetuned_gemma(
        image="us-central1-docker.pkg.dev/my-gcp-project/gemma-stack/inference:abc",
        model_bucket="models", model_path="gemma-3-1b-sql", **common)),
]
gemma = [
    GemmaOnGke(name, GemmaOnGkeArgs(
        namespace="gemma-stack", k8s_provider=provider, model_id="google/gemma-3-12b-it",
        gpu_count=2, tensor_parallel=2, max_model_len=16384, max_num_seqs=4,
        resources=PodResources(cpu="8", memory="48Gi", ephemeral_storage="64Gi"),
        ksa_name=name, ksa_principal="principal://iam.googleapis.com/x", service_name=name,
        **extra))
    for name, extra in [
        ("gemma-hf", dict(hf_token=pulumi.Output.secret("hf_FAKEtokenFORtestsONLY0123456789ab"))),
        ("gemma-gcs", dict(gcs_bucket="models", gcs_path="gemma-3-12b")),
    ]
]
ChatApp("chat", ChatAppArgs(
    project_id="my-gcp-project", namespace="gemma-stack", k8s_provider=provider,
    image="us-central1-docker.pkg.dev/my-gcp-project/gemma-stack/chat:abc",
    ksa_name="chat-app", ksa_principal="principal://iam.googleapis.com/y",
    backends=[ChatBackend.gemini_on_vertex(), gke_backend(gemma[0], id="gke", label="GKE")]
    + [cloud_run_backend(r, id=r._name, label=r._name) for r in runs],
    id_token_service_account="chat-invoker@my-gcp-project.iam.gserviceaccount.com",
    exposure="{exposure}",
    login_credentials=pulumi.Output.secret("ana:pw") if "{exposure}" == "login" else None,
    session_key=pulumi.Output.secret("k" * 48) if "{exposure}" == "login" else None,
    iap_domain="chat.example.com" if "{exposure}" == "iap" else None,
    iap_project_number="123456789012" if "{exposure}" == "iap" else None,
))
"""
