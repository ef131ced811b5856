"""Workload Identity for a Kubernetes service account, bound directly to its IAM principal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as kubernetes

from components.resource_ids import fixed_id_options


def workload_principal(
    project_id: pulumi.Input[str],
    project_number: pulumi.Input[str],
    namespace: pulumi.Input[str],
    ksa: pulumi.Input[str],
) -> pulumi.Output[str]:
    """Return the IAM principal of a Kubernetes service account under direct Workload Identity."""
    return pulumi.Output.concat(
        "principal://iam.googleapis.com/projects/",
        project_number,
        "/locations/global/workloadIdentityPools/",
        project_id,
        ".svc.id.goog/subject/ns/",
        namespace,
        "/sa/",
        ksa,
    )


@dataclass(frozen=True)
class WorkloadIdentityArgs:
    """Inputs for a Kubernetes service account and the project roles its principal holds."""

    project_id: pulumi.Input[str]
    project_number: pulumi.Input[str]
    namespace: pulumi.Input[str]
    ksa_name: str
    # Bound at project level to the KSA principal; resource-level grants use `principal`.
    project_roles: Sequence[str]
    k8s_provider: pulumi.ProviderResource
    depends_on: Sequence[pulumi.Resource] = ()


_BASIC_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})


class WorkloadIdentity(pulumi.ComponentResource):
    """A Kubernetes service account whose principal holds project roles, with no GSA and no key."""

    ksa: kubernetes.core.v1.ServiceAccount
    ksa_name: pulumi.Output[str]
    principal: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: WorkloadIdentityArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gemma-stack:identity:WorkloadIdentity", name, None, opts)
        basic = sorted(_BASIC_ROLES.intersection(args.project_roles))
        if basic:
            raise ValueError(
                f"WorkloadIdentity {name!r}: basic roles {basic} are never granted; "
                "name the predefined roles the workload needs instead."
            )
        if not args.ksa_name:
            raise ValueError(f"WorkloadIdentity {name!r}: ksa_name must not be empty.")

        self.ksa = kubernetes.core.v1.ServiceAccount(
            f"{name}-ksa",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=args.ksa_name,
                namespace=args.namespace,
                labels={"app.kubernetes.io/part-of": "gemma-stack"},
            ),
            # Pods must not get an API token they never use.
            automount_service_account_token=False,
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=args.k8s_provider,
                depends_on=list(args.depends_on),
            ),
        )
        self.ksa_name = self.ksa.metadata.apply(lambda m: m.name or args.ksa_name)
        self.principal = workload_principal(
            args.project_id, args.project_number, args.namespace, args.ksa_name
        )
        self.role_bindings: list[gcp.projects.IAMMember] = [
            gcp.projects.IAMMember(
                f"{name}-{role.removeprefix('roles/').replace('.', '-')}",
                project=args.project_id,
                role=role,
                member=self.principal,
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
            )
            for role in args.project_roles
        ]
        self.register_outputs({"ksaName": self.ksa_name, "principal": self.principal})


@dataclass(frozen=True)
class ImpersonatedServiceAccountArgs:
    """A service account that only the named principals may impersonate."""

    project_id: pulumi.Input[str]
    account_id: str
    display_name: str
    # Principals (e.g. a WorkloadIdentity's `principal`) that may mint ID tokens as it;
    # roles/iam.serviceAccountOpenIdTokenCreator gives no access tokens.
    impersonators: Sequence[pulumi.Input[str]]
    depends_on: Sequence[pulumi.Resource] = ()


class ImpersonatedServiceAccount(pulumi.ComponentResource):
    """A keyless service account that workloads impersonate, e.g. to mint Cloud Run ID tokens.

    A Kubernetes service account under direct Workload Identity federation gets access
    tokens but no ID tokens; Cloud Run wants an ID token. So the workload asks IAM
    Credentials for an ID token of this account, which holds roles/run.invoker on the
    services it may call (granted where those services are created).
    """

    account: gcp.serviceaccount.Account
    email: pulumi.Output[str]
    member: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: ImpersonatedServiceAccountArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gemma-stack:identity:ImpersonatedServiceAccount", name, None, opts)
        if not 6 <= len(args.account_id) <= 30:
            raise ValueError(
                f"ImpersonatedServiceAccount {name!r}: account_id {args.account_id!r} must be "
                "6 to 30 characters."
            )
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        self.account = gcp.serviceaccount.Account(
            f"{name}-account",
            project=args.project_id,
            account_id=args.account_id,
            display_name=args.display_name,
            opts=fixed_id_options(child),
        )
        self.email = self.account.email
        self.member = self.account.member
        self.token_creators = [
            gcp.serviceaccount.IAMMember(
                f"{name}-token-creator-{index}",
                service_account_id=self.account.name,
                role="roles/iam.serviceAccountOpenIdTokenCreator",
                member=impersonator,
                opts=child,
            )
            for index, impersonator in enumerate(args.impersonators)
        ]
        self.register_outputs({"email": self.email, "member": self.member})
