"""The Google Cloud APIs the stack uses, enabled up front so a new project deploys in one go."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

# The APIs the reference deployments enable, plus iamcredentials, which mints the chat app's
# ID tokens for Cloud Run, and compute, which GKE needs before a cluster can be created.
STACK_APIS: tuple[str, ...] = (
    "compute.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "container.googleapis.com",
    "firestore.googleapis.com",
    "aiplatform.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "storage.googleapis.com",
    # Dashboards and alert policies.
    "monitoring.googleapis.com",
)


@dataclass(frozen=True)
class ProjectServicesArgs:
    """Which project, and which APIs to enable there."""

    project_id: pulumi.Input[str]
    apis: Sequence[str] = STACK_APIS


class ProjectServices(pulumi.ComponentResource):
    """Enabled APIs; other resources take `for_apis(...)` as `depends_on`."""

    services: dict[str, gcp.projects.Service]

    def __init__(
        self,
        name: str,
        args: ProjectServicesArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gemma-stack:project:ProjectServices", name, None, opts)
        if len(set(args.apis)) != len(args.apis):
            raise ValueError(f"ProjectServices {name!r}: an API is listed twice in {args.apis}.")
        self.services = {
            api: gcp.projects.Service(
                f"{name}-{api.split('.')[0]}",
                project=args.project_id,
                service=api,
                # Other stacks and people use these APIs too; destroying ours must not break them.
                disable_on_destroy=False,
                disable_dependent_services=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for api in args.apis
        }
        self.register_outputs({"apis": list(self.services)})

    def for_apis(self, *short_names: str) -> list[pulumi.Resource]:
        """The Service resources for e.g. `for_apis("container", "iam")`, to use as depends_on."""
        found: list[pulumi.Resource] = []
        for short in short_names:
            api = short if "." in short else f"{short}.googleapis.com"
            if api not in self.services:
                raise KeyError(f"{api} is not enabled by this ProjectServices")
            found.append(self.services[api])
        return found
