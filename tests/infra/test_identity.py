"""Workload Identity binds roles to the KSA principal; impersonation is scoped to one GSA."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest

from components.identity import workload_principal
from tests.pulumi_harness import run_snippet, run_snippet_error

PRINCIPAL = (
    "principal://iam.googleapis.com/projects/42/locations/global/workloadIdentityPools/"
    "proj-1.svc.id.goog/subject/ns/apps/sa/reader"
)

MINTER = "id-token-minter@proj-1.iam.gserviceaccount.com"

PROGRAM = """
import pulumi
import pulumi_kubernetes as k8s
from components.identity import ImpersonatedServiceAccount, ImpersonatedServiceAccountArgs
from components.identity import WorkloadIdentity, WorkloadIdentityArgs
provider = k8s.Provider("k8s", kubeconfig="{{}}")
wi = WorkloadIdentity("reader", WorkloadIdentityArgs(
    project_id="proj-1", project_number="42", namespace="apps", ksa_name="reader",
    project_roles={roles!r}, k8s_provider=provider,
))
gsa = ImpersonatedServiceAccount("minter", ImpersonatedServiceAccountArgs(
    project_id="proj-1", account_id="id-token-minter", display_name="mints",
    impersonators=[wi.principal],
))
pulumi.export("principal", wi.principal)
pulumi.export("ksaName", wi.ksa_name)
pulumi.export("minter", gsa.email)
"""


@pulumi.runtime.test
def test_workload_principal_format() -> pulumi.Output[None]:
    return workload_principal("proj-1", "42", "apps", "reader").apply(
        lambda p: None if p == PRINCIPAL else pytest.fail(p)
    )


def test_binds_each_project_role_to_the_principal(tmp_path: Path) -> None:
    run = run_snippet(
        PROGRAM.format(roles=("roles/aiplatform.user", "roles/datastore.user")), tmp_path
    )
    component = run.one("gemma-stack:identity:WorkloadIdentity")
    bindings = run.of_type("gcp:projects/iAMMember:IAMMember")
    assert sorted(
        (b.inputs["role"], b.inputs["member"], b.inputs["project"]) for b in bindings
    ) == [
        ("roles/aiplatform.user", PRINCIPAL, "proj-1"),
        ("roles/datastore.user", PRINCIPAL, "proj-1"),
    ]
    assert all(b.parent == component.urn for b in bindings)
    assert run.outputs["principal"] == PRINCIPAL
    assert run.outputs["ksaName"] == "reader"


def test_creates_the_ksa_with_the_cluster_provider_and_no_token_mount(tmp_path: Path) -> None:
    run = run_snippet(PROGRAM.format(roles=()), tmp_path)
    ksa = run.one("kubernetes:core/v1:ServiceAccount")
    assert ksa.inputs["metadata"]["name"] == "reader"
    assert ksa.inputs["metadata"]["namespace"] == "apps"
    assert ksa.inputs["automountServiceAccountToken"] is False
    assert ksa.provider.startswith(run.one("pulumi:providers:kubernetes").urn)
    assert ksa.name == "reader-ksa"
    assert not run.of_type("gcp:serviceaccount/key:Key")


def test_impersonation_is_granted_on_that_account_only(tmp_path: Path) -> None:
    run = run_snippet(PROGRAM.format(roles=()), tmp_path)
    account = run.one("gcp:serviceaccount/account:Account")
    assert account.inputs["accountId"] == "id-token-minter"
    grant = run.one("gcp:serviceaccount/iAMMember:IAMMember")
    assert grant.inputs == {
        "serviceAccountId": f"projects/proj-1/serviceAccounts/{MINTER}",
        "role": "roles/iam.serviceAccountOpenIdTokenCreator",
        "member": PRINCIPAL,
    }
    assert run.outputs["minter"] == MINTER


def test_basic_roles_are_refused(tmp_path: Path) -> None:
    error, registered = run_snippet_error(PROGRAM.format(roles=("roles/editor",)), tmp_path)
    assert isinstance(error, ValueError)
    assert "basic roles ['roles/editor'] are never granted" in str(error)
    assert not [r for r in registered if r.type == "gcp:projects/iAMMember:IAMMember"]
