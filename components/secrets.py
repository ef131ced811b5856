"""Secrets the stack owns (the Hugging Face token, the chat login), kept in Secret Manager."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from components.resource_ids import fixed_id_options


@dataclass(frozen=True)
class StoredSecretArgs:
    """The value (a secret Output, e.g. from `pulumi config set --secret`) and its secret id."""

    project_id: pulumi.Input[str]
    value: pulumi.Output[str]
    secret_id: str
    depends_on: Sequence[pulumi.Resource] = ()


class StoredSecret(pulumi.ComponentResource):
    """A Secret Manager secret holding one value; readers get secretAccessor on it alone."""

    secret: gcp.secretmanager.Secret
    version: gcp.secretmanager.SecretVersion
    secret_id: pulumi.Output[str]
    secret_name: pulumi.Output[str]
    value: pulumi.Output[str]
    stored_value: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: StoredSecretArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gemma-stack:secrets:StoredSecret", name, None, opts)
        # Mark it secret even if a caller passed a plain Output, so state never holds it in clear.
        self.value = pulumi.Output.secret(args.value)
        self.secret = gcp.secretmanager.Secret(
            f"{name}-secret",
            project=args.project_id,
            secret_id=args.secret_id,
            replication=gcp.secretmanager.SecretReplicationArgs(
                auto=gcp.secretmanager.SecretReplicationAutoArgs()
            ),
            labels={"managed-by": "pulumi", "part-of": "gemma-stack"},
            opts=fixed_id_options(
                pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
            ),
        )
        self.version = gcp.secretmanager.SecretVersion(
            f"{name}-version",
            secret=self.secret.id,
            secret_data=self.value,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["secretData"]),
        )
        self.secret_id = self.secret.secret_id
        self.secret_name = self.secret.name
        # Read back from the version, so whatever copies it waits until Secret Manager has it.
        stored: pulumi.Output[str] = self.version.secret_data.apply(lambda data: data or "")
        self.stored_value = pulumi.Output.secret(stored)
        self.register_outputs({"secretId": self.secret_id, "secretName": self.secret_name})

    def grant_access(
        self, name: str, member: pulumi.Input[str]
    ) -> gcp.secretmanager.SecretIamMember:
        """Let one principal read this secret (and no other secret)."""
        return gcp.secretmanager.SecretIamMember(
            name,
            project=self.secret.project,
            secret_id=self.secret.secret_id,
            role="roles/secretmanager.secretAccessor",
            member=member,
            opts=pulumi.ResourceOptions(parent=self),
        )
