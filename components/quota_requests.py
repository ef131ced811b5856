"""Quota increase requests filed through the Cloud Quotas API, one per quota the stack lacks."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp


@dataclass(frozen=True)
class QuotaIncrease:
    """The value one quota should have, in the quota's own unit (milli-vCPU, bytes, GPUs)."""

    service: str
    quota_id: str
    preferred_value: int
    region: str | None = None  # None for a global quota such as GPUS-ALL-REGIONS-per-project


@dataclass(frozen=True)
class QuotaRequestsArgs:
    """Which project, whom Google may ask about the requests, and what to request."""

    project_id: str
    contact_email: str
    increases: tuple[QuotaIncrease, ...]
    justification: str = "gemma-stack: serving Gemma 3 on NVIDIA L4 GPUs"


class QuotaRequests(pulumi.ComponentResource):
    """One `SQuotaPreference` per increase; Google grants or refuses each on its own time."""

    preferences: list[gcp.cloudquota.SQuotaPreference]

    def __init__(
        self,
        name: str,
        args: QuotaRequestsArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gemma-stack:quota:QuotaRequests", name, None, opts)
        if not args.increases:
            raise ValueError(f"QuotaRequests {name!r}: nothing to request.")
        for increase in args.increases:
            if increase.preferred_value < 1:
                raise ValueError(
                    f"QuotaRequests {name!r}: {increase.quota_id} needs a preferred value of "
                    f"at least 1, got {increase.preferred_value}."
                )
        self.preferences = [
            gcp.cloudquota.SQuotaPreference(
                f"{name}-{_slug(increase)}",
                parent=f"projects/{args.project_id}",
                service=increase.service,
                quota_id=increase.quota_id,
                dimensions={"region": increase.region} if increase.region else None,
                quota_config=gcp.cloudquota.SQuotaPreferenceQuotaConfigArgs(
                    preferred_value=str(increase.preferred_value)
                ),
                contact_email=args.contact_email,
                justification=args.justification,
                # Dropping a request from the stack once it is granted must not hand quota back.
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
            )
            for increase in args.increases
        ]
        self.register_outputs({"preferences": [p.name for p in self.preferences]})


def _slug(increase: QuotaIncrease) -> str:
    text = f"{increase.quota_id}-{increase.region or 'global'}".lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")
