"""The Hugging Face token, kept in Secret Manager and only ever handled as a Pulumi secret."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp


@dataclass(frozen=True)
class HuggingFaceTokenArgs:
    """The token (a secret Output from `pulumi config set --secret hfToken`) and its secret id."""

    project_id: pulumi.Input[str]
    token: pulumi.Output[str]
    secret_id: str = "HF_TOKEN"  # noqa: S105 - the name of the secret, not its value
    depends_on: Sequence[pulumi.Resource] = ()


class HuggingFaceToken(pulumi.ComponentResource):
    """A Secret Manager secret holding the token; readers get secretAccessor on it alone."""

    secret: gcp.secretmanager.Secret
    version: gcp.secretmanager.SecretVersion
    secret_id: pulumi.Output[str]
    secret_name: pulumi.Output[str]
    token: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: HuggingFaceTokenArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gemma-stack:secrets:HuggingFaceToken", name, None, opts)
        # Mark it secret even if a caller passed a plain Output, so state never holds it in clear.
        self.token = pulumi.Output.secret(args.token)
        self.secret = gcp.secretmanager.Secret(
            f"{name}-secret",
            project=args.project_id,
            secret_id=args.secret_id,
            replication=gcp.secretmanager.SecretReplicationArgs(
                auto=gcp.secretmanager.SecretReplicationAutoArgs()
            ),
            labels={"managed-by": "pulumi", "part-of": "gemma-stack"},
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        self.version = gcp.secretmanager.SecretVersion(
            f"{name}-version",
            secret=self.secret.id,
            secret_data=self.token,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["secretData"]),
        )
        self.secret_id = self.secret.secret_id
        self.secret_name = self.secret.name
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
