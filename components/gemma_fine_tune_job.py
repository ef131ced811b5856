"""A Kubernetes Job on a GKE Autopilot L4 that runs `python -m app.finetune train` once.

The pod runs as its own Kubernetes service account, whose Workload Identity principal may read
objects in the dataset bucket and read and write objects in the model bucket, nothing more.
The Hugging Face token stays in Secret Manager: the pod is told the secret's name and reads
it with its own identity, which holds secretAccessor on that one secret. Pulumi waits for the
Job to complete, so a Cloud Run service that serves its output starts after the model exists.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as kubernetes

from components.gpu_software import L4_SELECTOR
from components.pod_security import restricted_container, restricted_pod

WORK_MOUNT = "/work"
# The Job's name is a label value too: at most 63 characters, DNS label syntax.
JOB_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
# app/finetune/hf_token.py reads the token from the secret this variable names.
HF_TOKEN_SECRET_ENV = "HF_TOKEN_SECRET"  # noqa: S105  # pragma: allowlist secret - a name


@dataclass(frozen=True)
class FineTuneSizing:
    """One L4 pod's CPU, memory and local disk for LoRA on one Gemma 3 size, in bfloat16."""

    cpu: str
    memory: str
    # Base weights, the merged copy, checkpoints and the Hugging Face cache.
    ephemeral_storage: str
    gpus: int = 1


# LoRA in bfloat16 keeps the whole base on the GPU: 1B and 4B fit one 24 GB L4. 12B and 27B
# need more memory than one L4 has and a sharded trainer, which app.finetune does not do.
FINE_TUNE_SIZING: dict[str, FineTuneSizing] = {
    "gemma3-1b": FineTuneSizing(cpu="4", memory="16Gi", ephemeral_storage="30Gi"),
    "gemma3-4b": FineTuneSizing(cpu="8", memory="32Gi", ephemeral_storage="60Gi"),
}


@dataclass(frozen=True)
class GemmaFineTuneJobArgs:
    """Everything one training run needs; `train_args` are app.finetune's flags."""

    project_id: pulumi.Input[str]
    namespace: pulumi.Input[str]
    k8s_provider: pulumi.ProviderResource
    image: pulumi.Input[str]
    job_name: str
    # The pod's own Kubernetes service account (from WorkloadIdentity) and its IAM principal.
    ksa_name: pulumi.Input[str]
    ksa_principal: pulumi.Input[str]
    dataset_uri: str
    base_model: str
    output_uri: str
    variant: str
    train_args: Sequence[str] = ()
    # Secret Manager secret id holding the Hugging Face token; None for a gs:// base.
    hf_token_secret: pulumi.Input[str] | None = None
    # A run that takes longer is stopped (and so is `pulumi up`'s wait for it).
    deadline_seconds: int = 6 * 3600
    # Restarts of the container in the same pod, which keeps /work and so resumes.
    retries: int = 3
    depends_on: Sequence[pulumi.Resource] = ()


def _bucket(uri: str, what: str) -> str:
    bucket = uri.removeprefix("gs://").split("/", 1)[0]
    if not uri.startswith("gs://") or not bucket:
        raise ValueError(f"GemmaFineTuneJob: {what} {uri!r} must be gs://BUCKET/PATH.")
    return bucket


class GemmaFineTuneJob(pulumi.ComponentResource):
    """LoRA fine-tuning of Gemma 3 as a Kubernetes Job; `model_uri` is its merged model."""

    model_uri: pulumi.Output[str]
    job: kubernetes.batch.v1.Job
    network_policy: kubernetes.networking.v1.NetworkPolicy

    def __init__(
        self,
        name: str,
        args: GemmaFineTuneJobArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gemma-stack:finetune:GemmaFineTuneJob", name, None, opts)
        if not JOB_NAME.match(args.job_name):
            raise ValueError(
                f"GemmaFineTuneJob: job_name {args.job_name!r} must be lowercase letters, digits "
                "and hyphens, starting with a letter, at most 63 characters."
            )
        sizing = FINE_TUNE_SIZING.get(args.variant)
        if sizing is None:
            raise ValueError(
                f"GemmaFineTuneJob: variant {args.variant!r} cannot be fine-tuned on one L4; "
                f"choose one of {', '.join(FINE_TUNE_SIZING)}."
            )
        dataset_bucket = _bucket(args.dataset_uri, "dataset")
        model_bucket = _bucket(args.output_uri, "output")
        if args.output_uri.removeprefix("gs://").strip("/") == model_bucket:
            raise ValueError(
                f"GemmaFineTuneJob: output {args.output_uri!r} needs a folder inside the bucket, "
                f"e.g. gs://{model_bucket}/gemma-tuned."
            )
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        grants: list[pulumi.Resource] = [
            gcp.storage.BucketIAMMember(
                f"{name}-dataset-reader",
                bucket=dataset_bucket,
                role="roles/storage.objectViewer",
                member=args.ksa_principal,
                opts=child,
            ),
            # objectUser: read, create and delete objects (a rerun replaces the old model);
            # no bucket settings, no IAM.
            gcp.storage.BucketIAMMember(
                f"{name}-model-writer",
                bucket=model_bucket,
                role="roles/storage.objectUser",
                member=args.ksa_principal,
                opts=child,
            ),
        ]
        env = [
            kubernetes.core.v1.EnvVarArgs(name="HOME", value=WORK_MOUNT),
            kubernetes.core.v1.EnvVarArgs(name="HF_HOME", value=f"{WORK_MOUNT}/huggingface"),
            kubernetes.core.v1.EnvVarArgs(name="GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", value="false"),
        ]
        if args.hf_token_secret is not None:
            grants.append(
                gcp.secretmanager.SecretIamMember(
                    f"{name}-hf-token-reader",
                    project=args.project_id,
                    secret_id=args.hf_token_secret,
                    role="roles/secretmanager.secretAccessor",
                    member=args.ksa_principal,
                    opts=child,
                )
            )
            env.append(
                kubernetes.core.v1.EnvVarArgs(
                    name=HF_TOKEN_SECRET_ENV,
                    value=pulumi.Output.concat(
                        "projects/", args.project_id, "/secrets/", args.hf_token_secret
                    ),
                )
            )

        limits = {
            "cpu": sizing.cpu,
            "memory": sizing.memory,
            "ephemeral-storage": sizing.ephemeral_storage,
            "nvidia.com/gpu": str(sizing.gpus),
        }
        labels = {
            "app.kubernetes.io/name": args.job_name,
            "app.kubernetes.io/part-of": "gemma-stack",
        }
        command = [
            "python",
            "-m",
            "app.finetune",
            "train",
            f"--dataset={args.dataset_uri}",
            f"--base={args.base_model}",
            f"--output={args.output_uri}",
            f"--work-dir={WORK_MOUNT}/run",
            *args.train_args,
        ]
        container = kubernetes.core.v1.ContainerArgs(
            name="finetune",
            image=args.image,
            command=command,
            env=env,
            resources=kubernetes.core.v1.ResourceRequirementsArgs(
                requests=dict(limits), limits=dict(limits)
            ),
            security_context=restricted_container(),
            volume_mounts=[
                kubernetes.core.v1.VolumeMountArgs(name="work", mount_path=WORK_MOUNT),
                kubernetes.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),  # noqa: S108
            ],
            image_pull_policy="Always",
        )
        self.job = kubernetes.batch.v1.Job(
            f"{name}-job",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=args.job_name, namespace=args.namespace, labels=labels
            ),
            spec=kubernetes.batch.v1.JobSpecArgs(
                backoff_limit=args.retries,
                active_deadline_seconds=args.deadline_seconds,
                template=kubernetes.core.v1.PodTemplateSpecArgs(
                    metadata=kubernetes.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=kubernetes.core.v1.PodSpecArgs(
                        service_account_name=args.ksa_name,
                        automount_service_account_token=False,
                        # OnFailure restarts the container in the same pod: /work survives,
                        # so training resumes from its last checkpoint.
                        restart_policy="OnFailure",
                        node_selector=dict(L4_SELECTOR),
                        security_context=restricted_pod(),
                        containers=[container],
                        volumes=[
                            kubernetes.core.v1.VolumeArgs(
                                name="work",
                                empty_dir=kubernetes.core.v1.EmptyDirVolumeSourceArgs(
                                    size_limit=sizing.ephemeral_storage
                                ),
                            ),
                            kubernetes.core.v1.VolumeArgs(
                                name="tmp",
                                empty_dir=kubernetes.core.v1.EmptyDirVolumeSourceArgs(
                                    size_limit="1Gi"
                                ),
                            ),
                        ],
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=args.k8s_provider,
                depends_on=[*grants, *args.depends_on],
                # Pulumi waits for completion: GPU node provisioning plus the run itself.
                custom_timeouts=pulumi.CustomTimeouts(
                    create=f"{args.deadline_seconds // 60 + 30}m",
                    update=f"{args.deadline_seconds // 60 + 30}m",
                ),
            ),
        )
        # The pod serves nothing: no ingress at all. Egress stays open for Cloud Storage,
        # Secret Manager and the Hugging Face Hub.
        self.network_policy = kubernetes.networking.v1.NetworkPolicy(
            f"{name}-no-ingress",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=f"{args.job_name}-no-ingress", namespace=args.namespace, labels=labels
            ),
            spec=kubernetes.networking.v1.NetworkPolicySpecArgs(
                pod_selector=kubernetes.meta.v1.LabelSelectorArgs(match_labels=labels),
                policy_types=["Ingress"],
            ),
            opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider),
        )
        # Resolves once the Job is complete, so its readers wait for the model.
        output = args.output_uri
        self.model_uri = self.job.id.apply(lambda _id: output)
        self.register_outputs({"modelUri": self.model_uri})
