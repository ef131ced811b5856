"""Where fineTuneJobs join the platform: one GemmaFineTuneJob per entry, each its own identity."""

from __future__ import annotations

import pulumi

from components.gemma_fine_tune_job import GemmaFineTuneJob, GemmaFineTuneJobArgs
from components.identity import WorkloadIdentity, WorkloadIdentityArgs
from stacks.config import FineTuneJobConfig
from stacks.platform import Gke, Platform


def deploy_fine_tune_jobs(platform: Platform) -> dict[str, GemmaFineTuneJob]:
    """A Job per fineTuneJobs entry, by name; Cloud Run services that serve one wait for it."""
    config = platform.config
    if not config.fine_tune_jobs or platform.gke is None or platform.finetune_image is None:
        return {}
    return {
        job.name: _job(platform, platform.gke, job, platform.finetune_image)
        for job in config.fine_tune_jobs
    }


def _job(
    platform: Platform, gke: Gke, job: FineTuneJobConfig, image: pulumi.Output[str]
) -> GemmaFineTuneJob:
    # No project roles: its grants are on the two buckets and the token secret alone.
    identity = WorkloadIdentity(
        f"finetune-{job.name}",
        WorkloadIdentityArgs(
            project_id=platform.project_id,
            project_number=platform.project_number,
            namespace=gke.namespace_name,
            ksa_name=f"finetune-{job.name}",
            project_roles=(),
            k8s_provider=gke.provider,
            depends_on=[gke.namespace, gke.cluster.cluster],
        ),
    )
    hf_secret = None
    depends = [identity, *platform.services.for_apis("storage", "secretmanager")]
    if job.uses_hugging_face and platform.hf_token is not None:
        hf_secret = platform.hf_token.secret_id
        depends.append(platform.hf_token.version)
    return GemmaFineTuneJob(
        f"finetune-{job.name}",
        GemmaFineTuneJobArgs(
            project_id=platform.project_id,
            namespace=gke.namespace_name,
            k8s_provider=gke.provider,
            image=image,
            job_name=f"finetune-{job.name}",
            ksa_name=identity.ksa_name,
            ksa_principal=identity.principal,
            dataset_uri=job.dataset,
            base_model=job.base_model,
            output_uri=job.output,
            variant=job.variant,
            train_args=job.train_args,
            hf_token_secret=hf_secret,
            depends_on=depends,
        ),
    )
