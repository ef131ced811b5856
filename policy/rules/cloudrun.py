"""Cloud Run rules: private by default, own runtime identity, valid probes, no secret literals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .core import (
    MANDATORY,
    ResourceRule,
    RuleContext,
    StackResource,
    StackRule,
    as_list,
    is_unknown,
)
from .iam import iam_grants, is_compute_default_sa
from .secrets import literal_secret_args, literal_secret_envs

SERVICE = "gcp:cloudrunv2/service:Service"
JOB = "gcp:cloudrunv2/job:Job"
LEGACY_SERVICE = "gcp:cloudrun/service:Service"

# Explicit opt-in to a public endpoint: the CloudRunGpuService component sets this label on
# the Service only when the stack config asks for `public: true`.
PUBLIC_LABEL = "gemma-stack-public"
PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
MAX_STARTUP_PROBE_PERIOD_S = 240

# IAM resources that grant access to a Cloud Run v2 service or job; `name` names the target.
INVOKER_GRANT_TYPES = frozenset(
    {
        "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
        "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding",
        "gcp:cloudrunv2/serviceIamPolicy:ServiceIamPolicy",
        "gcp:cloudrunv2/jobIamMember:JobIamMember",
        "gcp:cloudrunv2/jobIamBinding:JobIamBinding",
        "gcp:cloudrunv2/jobIamPolicy:JobIamPolicy",
        # The v1 API's grants reach the same services; `service` names the target.
        "gcp:cloudrun/iamMember:IamMember",
        "gcp:cloudrun/iamBinding:IamBinding",
        "gcp:cloudrun/iamPolicy:IamPolicy",
    }
)
_TARGET_TYPES = frozenset({SERVICE, JOB, LEGACY_SERVICE})


def containers_of(resource_type: str, props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The containers of a Cloud Run service or job revision template."""
    template = props.get("template") or {}
    if resource_type == JOB:
        template = template.get("template") or {} if isinstance(template, Mapping) else {}
    elif resource_type == LEGACY_SERVICE:
        template = template.get("spec") or {} if isinstance(template, Mapping) else {}
    if not isinstance(template, Mapping):
        return []
    containers = template.get("containers") or []
    return [c for c in containers if isinstance(c, Mapping)] if isinstance(containers, list) else []


def _runtime_template(resource_type: str, props: Mapping[str, Any]) -> Mapping[str, Any]:
    template = props.get("template") or {}
    if resource_type == JOB and isinstance(template, Mapping):
        template = template.get("template") or {}
    return template if isinstance(template, Mapping) else {}


def is_marked_public(props: Mapping[str, Any]) -> bool:
    labels = props.get("labels") or {}
    return isinstance(labels, Mapping) and str(labels.get(PUBLIC_LABEL, "")).lower() == "true"


def _startup_probe_period(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del context
    messages = []
    for container in containers_of(resource_type, props):
        probe = container.get("startupProbe")
        if not isinstance(probe, Mapping):
            continue
        name = container.get("name") or "container"
        period = probe.get("periodSeconds")
        timeout = probe.get("timeoutSeconds")
        if isinstance(period, int | float) and period > MAX_STARTUP_PROBE_PERIOD_S:
            messages.append(
                f"Startup probe of {name!r} has periodSeconds={period:g}; Cloud Run rejects a "
                f"period over {MAX_STARTUP_PROBE_PERIOD_S} s. Keep periodSeconds at or below "
                f"{MAX_STARTUP_PROBE_PERIOD_S} and raise failureThreshold to allow a longer "
                "model load (total = period x failureThreshold)."
            )
        delay = probe.get("initialDelaySeconds")
        if isinstance(delay, int | float) and delay > MAX_STARTUP_PROBE_PERIOD_S:
            messages.append(
                f"Startup probe of {name!r} has initialDelaySeconds={delay:g}; Cloud Run "
                f"allows at most {MAX_STARTUP_PROBE_PERIOD_S} s. Use up to "
                f"{MAX_STARTUP_PROBE_PERIOD_S} s of initial delay plus failureThreshold x "
                "periodSeconds for the rest of the model load."
            )
        if (
            isinstance(period, int | float)
            and isinstance(timeout, int | float)
            and timeout > period
        ):
            messages.append(
                f"Startup probe of {name!r} has timeoutSeconds={timeout:g} over "
                f"periodSeconds={period:g}; Cloud Run requires timeout <= period."
            )
    return messages


def _dedicated_service_account(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del context
    account = _runtime_template(resource_type, props).get("serviceAccount")
    if is_unknown(account):
        return []  # an email computed from a service account created in this stack
    if not account:
        return [
            f"{resource_type} sets no template.serviceAccount, so it runs as the Compute "
            "Engine default service account (Editor on the project). Create a dedicated "
            "service account with only the roles this service needs and set it as "
            "template.serviceAccount."
        ]
    if is_compute_default_sa(str(account)):
        return [
            f"{resource_type} runs as the Compute Engine default service account {account}. "
            "Use a dedicated service account for this service instead."
        ]
    return []


def _no_secret_literals(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del context
    messages = []
    for container in containers_of(resource_type, props):
        name = container.get("name") or "container"
        for env_name in literal_secret_envs(as_list(container.get("envs"))):
            messages.append(
                f"Container {name!r} sets {env_name} as a literal env value. Keep the value in "
                "Secret Manager and reference it with envs[].valueSource.secretKeyRef "
                "(secret + version); grant the runtime service account "
                "roles/secretmanager.secretAccessor on that secret only."
            )
        args = as_list(container.get("args")) + as_list(container.get("commands"))
        for flag in literal_secret_args(args):
            messages.append(
                f"Container {name!r} passes a credential on its command line ({flag}). Read it "
                "from an env var that references Secret Manager instead."
            )
    return messages


def _grant_target(
    grant: StackResource, by_urn: Mapping[str, StackResource], targets: Sequence[StackResource]
) -> StackResource | None:
    """The service or job an IAM grant applies to, found through its `name` input."""
    key = "service" if grant.type.startswith("gcp:cloudrun/") else "name"
    for urn in grant.property_dependencies.get(key, ()):
        found = by_urn.get(urn)
        if found is not None and found.type in _TARGET_TYPES:
            return found
    wanted = grant.props.get(key)
    if isinstance(wanted, str) and wanted and not is_unknown(wanted):
        short = wanted.rsplit("/", 1)[-1]
        for target in targets:
            target_name = target.props.get("name")
            if isinstance(target_name, str) and target_name.rsplit("/", 1)[-1] == short:
                return target
    return None


def _service_name(service: StackResource) -> str:
    name = service.props.get("name")
    if isinstance(name, str) and name and not is_unknown(name):
        return name.rsplit("/", 1)[-1]
    return service.name


def _public_access(
    resources: Sequence[StackResource], context: RuleContext
) -> list[tuple[str, str]]:
    by_urn = {r.urn: r for r in resources if r.urn}
    targets = [r for r in resources if r.type in _TARGET_TYPES]
    found: list[tuple[str, str]] = []

    def refuse(what: str, target: StackResource | None, urn: str) -> None:
        if target is not None and is_marked_public(target.props):
            name = _service_name(target)
            if name in context.approved_public:
                return
            found.append(
                (
                    f"{what} Cloud Run {name!r}, which the stack marks public (`public: true`) "
                    "but the policy owner has not approved: anyone on the internet could run "
                    "GPU inference at your cost. Set `public: false` and grant "
                    "roles/run.invoker to named principals, or have the policy owner add "
                    f"{name!r} to this rule's publicCloudRunServices config.",
                    urn,
                )
            )
            return
        where = f"Cloud Run {_service_name(target)!r}" if target else "a Cloud Run service or job"
        found.append(
            (
                f"{what} {where}, which is not marked public: anyone could run GPU inference "
                "at your cost. Grant roles/run.invoker to named principals (such as the chat "
                "app's identity) instead. A deliberate public endpoint needs `public: true` "
                f"in the stack config (the service then carries the label {PUBLIC_LABEL}: "
                '"true") and the policy owner\'s approval in publicCloudRunServices.',
                urn,
            )
        )

    for service in targets:
        if service.props.get("invokerIamDisabled") is True:
            refuse("invokerIamDisabled turns off the invoker check of", service, service.urn)
    for grant in resources:
        if grant.type not in INVOKER_GRANT_TYPES:
            continue
        public = sorted({m for _, m in iam_grants(grant.type, grant.props)} & PUBLIC_MEMBERS)
        if public:
            target = _grant_target(grant, by_urn, targets)
            refuse(f"{grant.name!r} grants {' and '.join(public)} access to", target, grant.urn)
    return found


NO_PUBLIC_CLOUD_RUN = StackRule(
    name="no-public-cloud-run",
    description=(
        "No allUsers/allAuthenticatedUsers (or invokerIamDisabled) on Cloud Run services or "
        f'jobs, unless the service carries the label {PUBLIC_LABEL}: "true" and the policy '
        "owner lists it in publicCloudRunServices."
    ),
    enforcement=MANDATORY,
    check=_public_access,
    remediation=(
        "Grant roles/run.invoker to named principals; a public endpoint needs `public: true` "
        "and approval in publicCloudRunServices."
    ),
)

CLOUD_RUN_STARTUP_PROBE_PERIOD = ResourceRule(
    name="cloud-run-startup-probe-period",
    description=(
        f"Cloud Run startup probes use periodSeconds and initialDelaySeconds <= "
        f"{MAX_STARTUP_PROBE_PERIOD_S}, and timeoutSeconds <= periodSeconds."
    ),
    enforcement=MANDATORY,
    check=_startup_probe_period,
    resource_types=frozenset({SERVICE, JOB, LEGACY_SERVICE}),
    remediation="Lower periodSeconds and raise failureThreshold instead.",
)

CLOUD_RUN_DEDICATED_SERVICE_ACCOUNT = ResourceRule(
    name="cloud-run-dedicated-service-account",
    description="Cloud Run services and jobs run as a dedicated service account.",
    enforcement=MANDATORY,
    check=_dedicated_service_account,
    resource_types=frozenset({SERVICE, JOB}),
    remediation="Set template.serviceAccount to a service account made for this service.",
)

CLOUD_RUN_NO_SECRET_LITERALS = ResourceRule(
    name="cloud-run-secrets-by-reference",
    description="Tokens and keys reach Cloud Run containers only as Secret Manager references.",
    enforcement=MANDATORY,
    check=_no_secret_literals,
    resource_types=frozenset({SERVICE, JOB}),
    remediation="Use envs[].valueSource.secretKeyRef instead of envs[].value.",
)

RESOURCE_RULES = [
    CLOUD_RUN_STARTUP_PROBE_PERIOD,
    CLOUD_RUN_DEDICATED_SERVICE_ACCOUNT,
    CLOUD_RUN_NO_SECRET_LITERALS,
]
STACK_RULES = [NO_PUBLIC_CLOUD_RUN]
