"""IAM rules: no service account keys, no basic roles, nothing granted to the default compute SA."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from .core import ADVISORY, MANDATORY, ResourceRule, RuleContext, as_list, as_mapping, is_unknown

BASIC_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
# PROJECT_NUMBER-compute@developer.gserviceaccount.com, which holds Editor in most projects.
COMPUTE_DEFAULT_SA = re.compile(r"^\d+-compute@developer\.gserviceaccount\.com$")

SERVICE_ACCOUNT_KEY_TYPES = frozenset(
    {
        "gcp:serviceaccount/key:Key",
        # An HMAC key for a service account is a long-lived credential just like a JSON key.
        "gcp:storage/hmacKey:HmacKey",
    }
)


def _grant_kind(resource_type: str) -> str:
    """'member', 'binding' or 'policy' for IAM grant resources; '' for anything else."""
    kind = resource_type.rsplit(":", 1)[-1].lower()
    if kind.endswith("iammemberremove"):
        return ""
    for suffix in ("member", "binding", "policy"):
        if kind.endswith("iam" + suffix):
            return suffix
    return ""


def iam_grants(resource_type: str, props: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (role, member) pair an IAM member, binding or policy resource grants."""
    kind = _grant_kind(resource_type)
    if kind == "member":
        return [(str(props.get("role", "")), str(props.get("member", "")))]
    if kind == "binding":
        return [(str(props.get("role", "")), str(m)) for m in as_list(props.get("members"))]
    if kind == "policy":
        return _policy_grants(props.get("policyData"))
    return []


def _policy_grants(policy_data: Any) -> list[tuple[str, str]]:
    if isinstance(policy_data, str):
        if is_unknown(policy_data) or not policy_data.strip():
            return []
        try:
            policy_data = json.loads(policy_data)
        except json.JSONDecodeError:
            return []
    if not isinstance(policy_data, Mapping):
        return []
    grants: list[tuple[str, str]] = []
    for entry in as_list(policy_data.get("bindings")):
        binding = as_mapping(entry)
        role = str(binding.get("role", ""))
        grants.extend((role, str(member)) for member in as_list(binding.get("members")))
    return grants


def is_compute_default_sa(member_or_email: str) -> bool:
    email = member_or_email.split(":", 1)[1] if ":" in member_or_email else member_or_email
    return bool(COMPUTE_DEFAULT_SA.match(email))


def _no_service_account_keys(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del props, context
    return [
        f"{resource_type} creates a long-lived service account key. Delete it: workloads on "
        "GKE authenticate through Workload Identity and Cloud Run services through their "
        "runtime service account, so no key file is ever needed."
    ]


def _no_basic_roles(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del context
    return [
        f"{resource_type} grants basic role {role} to {member}. Basic roles span every "
        "service in the project; grant the predefined role the workload needs instead "
        "(for example roles/run.invoker, roles/datastore.user, roles/storage.objectViewer)."
        for role, member in iam_grants(resource_type, props)
        if role in BASIC_ROLES
    ]


def _no_compute_default_sa_grants(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del context
    return [
        f"{resource_type} grants {role} to the Compute Engine default service account "
        f"({member}). That account is shared by every VM and defaults to Editor; create a "
        "dedicated service account for the workload and grant the role to it instead."
        for role, member in iam_grants(resource_type, props)
        if is_compute_default_sa(member)
    ]


def _gke_node_service_account(
    resource_type: str, props: Mapping[str, Any], context: RuleContext
) -> list[str]:
    del resource_type, context
    if props.get("enableAutopilot") is True:
        path = "clusterAutoscaling.autoProvisioningDefaults.serviceAccount"
        autoscaling = as_mapping(props.get("clusterAutoscaling"))
        account = as_mapping(autoscaling.get("autoProvisioningDefaults")).get("serviceAccount")
    else:
        path = "nodeConfig.serviceAccount"
        account = as_mapping(props.get("nodeConfig")).get("serviceAccount")
    if is_unknown(account) or (account and not is_compute_default_sa(str(account))):
        return []
    return [
        "GKE nodes run as the Compute Engine default service account. Pods cannot use it "
        "(Workload Identity hides the node's credentials), but node logs, metrics and image "
        "pulls do. Create a service account with roles/container.defaultNodeServiceAccount "
        f"and set it as {path}."
    ]


NO_SERVICE_ACCOUNT_KEYS = ResourceRule(
    name="no-service-account-keys",
    description="No service account keys (JSON or HMAC): use Workload Identity or runtime SAs.",
    enforcement=MANDATORY,
    check=_no_service_account_keys,
    resource_types=SERVICE_ACCOUNT_KEY_TYPES,
    remediation="Remove the key resource; bind roles to the workload's own identity.",
)

NO_BASIC_ROLES = ResourceRule(
    name="no-basic-roles",
    description="No basic roles (owner, editor, viewer) on any project, bucket or service.",
    enforcement=MANDATORY,
    check=_no_basic_roles,
    remediation="Replace roles/owner, roles/editor or roles/viewer by a predefined role.",
)

NO_COMPUTE_DEFAULT_SA_GRANTS = ResourceRule(
    name="no-compute-default-sa-grants",
    description="No roles granted to the Compute Engine default service account.",
    enforcement=MANDATORY,
    check=_no_compute_default_sa_grants,
    remediation="Grant the role to a dedicated service account for the workload.",
)

GKE_NODE_SERVICE_ACCOUNT = ResourceRule(
    name="gke-dedicated-node-service-account",
    description="GKE nodes should run as a dedicated, minimal service account.",
    enforcement=ADVISORY,
    check=_gke_node_service_account,
    resource_types=frozenset({"gcp:container/cluster:Cluster"}),
    remediation="Set the node service account to one holding container.defaultNodeServiceAccount.",
)

RULES = [
    NO_SERVICE_ACCOUNT_KEYS,
    NO_BASIC_ROLES,
    NO_COMPUTE_DEFAULT_SA_GRANTS,
    GKE_NODE_SERVICE_ACCOUNT,
]
