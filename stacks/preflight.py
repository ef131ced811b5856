"""Pre-flight quota checks: what the stack asks of Cloud Run and Compute Engine, read against
the project's quotas before any resource, and so any GPU, is requested.

Quota IDs and units are the Cloud Quotas API's (`gcloud beta quotas info list
--service=run.googleapis.com`, and the same for compute.googleapis.com): Cloud Run's "Total
Nvidia L4 GPU allocation, per project per region", with and without zonal redundancy, CPU
allocation in milli-vCPU and memory allocation in bytes, each per region; Compute Engine's L4
and all-regions GPU quotas, which GKE Autopilot's L4 nodes count against like any VM. A fresh
project has no Cloud Run L4 quota at all until it is requested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from components.cloud_run_gpu_service import GPUS_PER_INSTANCE
from components.quota_requests import QuotaIncrease, QuotaRequests, QuotaRequestsArgs
from stacks.config import StackConfig

RUN = "run.googleapis.com"
COMPUTE = "compute.googleapis.com"
QUOTAS_API = "cloudquotas.googleapis.com"
GIB = 2**30
CONSOLE_QUOTAS = "https://console.cloud.google.com/iam-admin/quotas?project={project}"
_EMAIL_PLACEHOLDER = "YOU@example.com"


@dataclass(frozen=True)
class Quota:
    """One quota a first deploy can run short of, and how to show its unit to people."""

    service: str
    quota_id: str
    title: str
    unit: str
    per_unit: int  # quota units in one shown unit: 1000 milli-vCPU make one vCPU
    regional: bool = True


CLOUD_RUN_L4 = Quota(
    RUN,
    "NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion",
    "Cloud Run L4 GPUs without zonal redundancy",
    "L4",
    1,
)
CLOUD_RUN_L4_ZONAL = Quota(
    RUN, "NvidiaL4GpuAllocPerProjectRegion", "Cloud Run L4 GPUs with zonal redundancy", "L4", 1
)
CLOUD_RUN_CPU = Quota(RUN, "CpuAllocPerProjectRegion", "Cloud Run CPU", "vCPU", 1000)
CLOUD_RUN_MEMORY = Quota(RUN, "MemAllocPerProjectRegion", "Cloud Run memory", "GiB", GIB)
COMPUTE_L4 = Quota(COMPUTE, "NVIDIA-L4-GPUS-per-project-region", "Compute Engine L4 GPUs", "L4", 1)
COMPUTE_ALL_GPUS = Quota(
    COMPUTE, "GPUS-ALL-REGIONS-per-project", "Compute Engine GPUs", "GPU", 1, False
)


@dataclass(frozen=True)
class QuotaNeed:
    """How much of one quota the stack asks for, in the quota's own unit, and who asks."""

    quota: Quota
    region: str | None  # None for a global quota
    amount: int
    asked_by: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"in {self.region}" if self.region else "across all regions"


@dataclass(frozen=True)
class Shortfall:
    """A need the project's quota cannot hold."""

    need: QuotaNeed
    have: float


class QuotaShortfall(pulumi.RunError):
    """The project lacks quota for this stack; as a `pulumi.RunError`, `pulumi up` prints only
    the message, which says what to request and how."""


def quota_needs(config: StackConfig) -> tuple[QuotaNeed, ...]:
    """What the enabled backends ask for at most: every Cloud Run instance at max scale, and
    the GKE Gemma pod's GPUs (its Deployment recreates, so it never holds two sets)."""
    parts: dict[Quota, list[tuple[int, str]]] = {}

    def add(quota: Quota, amount: int, asked_by: str) -> None:
        parts.setdefault(quota, []).append((amount, asked_by))

    for service in config.enabled_cloud_run_services:
        n = service.max_instances
        gpus = CLOUD_RUN_L4_ZONAL if service.gpu_zonal_redundancy else CLOUD_RUN_L4
        add(
            gpus,
            n * GPUS_PER_INSTANCE,
            f"{service.name}: {n} max instance(s) x {GPUS_PER_INSTANCE} L4",
        )
        add(
            CLOUD_RUN_CPU,
            n * round(service.cpu_count * 1000),
            f"{service.name}: {n} x {service.cpu} vCPU",
        )
        add(
            CLOUD_RUN_MEMORY,
            n * round(service.memory_gib * GIB),
            f"{service.name}: {n} x {service.memory}",
        )
    gemma = config.gke_gemma
    if gemma.enabled:
        asked_by = f"GKE Gemma {gemma.variant}: {gemma.gpu_count} L4"
        add(COMPUTE_L4, gemma.gpu_count, asked_by)
        add(COMPUTE_ALL_GPUS, gemma.gpu_count, asked_by)
    return tuple(
        QuotaNeed(
            quota=quota,
            region=config.region if quota.regional else None,
            amount=sum(amount for amount, _ in asks),
            asked_by=tuple(who for _, who in asks),
        )
        for quota, asks in parts.items()
    )


def quota_value(
    dimensions_infos: Sequence[gcp.cloudquota.outputs.GetSQuotaInfoDimensionsInfoResult],
    region: str | None,
) -> float:
    """The limit in force for `region` (None: a global quota); inf when unlimited, 0 when the
    project has none there."""
    chosen = None
    for info in dimensions_infos:
        dimensions = info.dimensions or {}
        if region is not None and dimensions.get("region") == region:
            chosen = info
            break
        # An entry without dimensions applies wherever no region-specific entry overrides it.
        locations = info.applicable_locations or ()
        if not dimensions and chosen is None and (region is None or region in locations):
            chosen = info
    values = [float(d.value) for d in (chosen.details or ()) if d.value] if chosen else []
    if not values:
        return 0.0
    return math.inf if values[0] < 0 else values[0]


def read_quota(project: str, need: QuotaNeed) -> float:
    """Ask the Cloud Quotas API; raises when it cannot answer (API off, no permission)."""
    info = gcp.cloudquota.get_s_quota_info(
        parent=f"projects/{project}", service=need.quota.service, quota_id=need.quota.quota_id
    )
    return quota_value(info.dimensions_infos or (), need.region)


def _shown(quota: Quota, amount: float) -> str:
    return f"{amount / quota.per_unit:g} {quota.unit}"


def shortfall_message(
    project: str,
    shortfalls: Sequence[Shortfall],
    *,
    email: str | None = None,
    filed: bool = False,
    enforced: bool = True,
) -> str:
    """One message for every shortfall: need, have, and the command that asks for more."""
    count = len(shortfalls)
    lines = [
        f"Pre-flight: project {project} has too little quota for this stack "
        f"({count} shortfall{'s' if count != 1 else ''}):"
    ]
    for short in shortfalls:
        need, quota = short.need, short.need.quota
        lines.append(
            f"  - {quota.title} {need.where} ({quota.service} {quota.quota_id}): the stack "
            f"needs {_shown(quota, need.amount)} ({'; '.join(need.asked_by)}), the project "
            f"has {_shown(quota, short.have)}."
        )
        dimensions = f" --dimensions=region={need.region}" if need.region else ""
        lines.append(
            f"    gcloud beta quotas preferences create --project={project} "
            f"--service={quota.service} --quota-id={quota.quota_id} "
            f"--preferred-value={need.amount}{dimensions} --email={email or _EMAIL_PLACEHOLDER}"
        )
    lines.append(
        f"Or open {CONSOLE_QUOTAS.format(project=project)} and filter by the quota ID. "
        "Grants take minutes to days."
    )
    if filed:
        lines.append("requestQuota=true filed these requests (Cloud Quotas preferences).")
    if enforced:
        lines.append(
            f"Nothing {'else ' if filed else ''}was created. Run `pulumi up` again once granted; "
            "`pulumi config set preflight warn` deploys anyway (the GPU backends then fail "
            "until the quota arrives)."
        )
    else:
        lines.append("preflight=warn: deploying anyway; the GPU backends fail until it arrives.")
    return "\n".join(lines)


def _unread_line(unread: Sequence[tuple[QuotaNeed, Exception]]) -> str:
    ids = ", ".join(need.quota.quota_id for need, _ in unread)
    first = unread[0][1]
    # Provider errors run to several lines; the first one names the cause.
    reason = (str(first).strip().splitlines() or [type(first).__name__])[0][:300]
    return (
        f"Pre-flight: the Cloud Quotas API could not answer, so {ids} went unchecked "
        f"({reason}); enable {QUOTAS_API} and grant roles/cloudquotas.viewer to check them, "
        "or `pulumi config set preflight off`."
    )


def check_quotas(config: StackConfig) -> None:
    """Read each needed quota and stop (enforce) or warn (warn) on any shortfall.

    Call it before any resource is registered: enforce then leaves nothing behind, except the
    quota requests themselves with requestQuota=true.
    """
    preflight = config.preflight
    if preflight.mode == "off":
        return
    shortfalls: list[Shortfall] = []
    unread: list[tuple[QuotaNeed, Exception]] = []
    for need in quota_needs(config):
        try:
            have = read_quota(config.project, need)
        except Exception as exc:  # "cannot tell" must never block a deploy
            unread.append((need, exc))
            continue
        if have < need.amount:
            shortfalls.append(Shortfall(need, have))
    if unread:
        pulumi.log.warn(_unread_line(unread))
    if not shortfalls:
        return
    email = preflight.contact_email
    filed = preflight.request_quota and email is not None
    if preflight.request_quota and email is not None:
        _file_requests(config.project, email, shortfalls)
    enforced = preflight.mode == "enforce"
    message = shortfall_message(
        config.project, shortfalls, email=email, filed=filed, enforced=enforced
    )
    if enforced:
        raise QuotaShortfall(message)
    pulumi.log.warn(message)


def _file_requests(project: str, email: str, shortfalls: Sequence[Shortfall]) -> QuotaRequests:
    return QuotaRequests(
        "quota-requests",
        QuotaRequestsArgs(
            project_id=project,
            contact_email=email,
            increases=tuple(
                QuotaIncrease(
                    service=s.need.quota.service,
                    quota_id=s.need.quota.quota_id,
                    preferred_value=s.need.amount,
                    region=s.need.region,
                )
                for s in shortfalls
            ),
        ),
    )
