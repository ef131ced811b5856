"""The whole program under mocks with Pulumi.dev.yaml: what it creates, and its safety rules."""

from __future__ import annotations

import json

import pytest

from components.project_services import STACK_APIS
from tests.pulumi_harness import (
    FAKE_HF_TOKEN,
    FAKE_PROJECT_NUMBER,
    ProgramRun,
    RecordedResource,
    run_program,
)

CHAT_PRINCIPAL = (
    f"principal://iam.googleapis.com/projects/{FAKE_PROJECT_NUMBER}/locations/global/"
    "workloadIdentityPools/my-gcp-project.svc.id.goog/subject/ns/gemma-stack/sa/chat-app"
)
# The Custom Metrics Stackdriver Adapter reads Cloud Monitoring for the vLLM autoscaler.
ADAPTER_PRINCIPAL = (
    f"principal://iam.googleapis.com/projects/{FAKE_PROJECT_NUMBER}/locations/global/"
    "workloadIdentityPools/my-gcp-project.svc.id.goog/subject/ns/custom-metrics/sa/"
    "custom-metrics-stackdriver-adapter"
)
BASIC_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
IAM_TYPES = (
    "gcp:projects/iAMMember:IAMMember",
    "gcp:projects/iAMBinding:IAMBinding",
    "gcp:serviceaccount/iAMMember:IAMMember",
    "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
    "gcp:storage/bucketIAMMember:BucketIAMMember",
    "gcp:secretmanager/secretIamMember:SecretIamMember",
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
)
# Which API each kind of resource needs before it can be created on a fresh project.
API_OF_TYPE = {
    "gcp:container/": "container.googleapis.com",
    "gcp:firestore/": "firestore.googleapis.com",
    "gcp:artifactregistry/": "artifactregistry.googleapis.com",
    "gcp:secretmanager/": "secretmanager.googleapis.com",
    "gcp:serviceaccount/": "iam.googleapis.com",
    "gcp:storage/": "storage.googleapis.com",
    "gcp:projects/iAMMember": "cloudresourcemanager.googleapis.com",
    "gcp:cloudrunv2/": "run.googleapis.com",
    "command:local:Command": "cloudbuild.googleapis.com",
    "kubernetes:": "container.googleapis.com",
    "gcp:monitoring/": "monitoring.googleapis.com",
}


@pytest.fixture(scope="module")
def dev() -> ProgramRun:
    return run_program()


def _api(run: ProgramRun, api: str) -> RecordedResource:
    return next(
        r for r in run.of_type("gcp:projects/service:Service") if r.inputs["service"] == api
    )


def test_registers_the_autopilot_cluster(dev: ProgramRun) -> None:
    cluster = dev.one("gcp:container/cluster:Cluster")
    assert cluster.inputs["enableAutopilot"] is True
    assert cluster.inputs["location"] == "us-central1"
    assert cluster.inputs["network"] == "default"
    assert cluster.inputs["releaseChannel"] == {"channel": "REGULAR"}
    assert cluster.inputs["deletionProtection"] is False  # Pulumi.dev.yaml turns it off
    assert cluster.options["customTimeouts"]["create"] == "40m"
    assert cluster.options["customTimeouts"]["update"] == "60m"


def test_registers_firestore_native(dev: ProgramRun) -> None:
    db = dev.one("gcp:firestore/database:Database")
    assert db.inputs["type"] == "FIRESTORE_NATIVE"
    assert db.inputs["name"] == "chat-app-db-dev"
    assert db.inputs["locationId"] == "nam5"


def test_registers_the_docker_repository(dev: ProgramRun) -> None:
    repo = dev.one("gcp:artifactregistry/repository:Repository")
    assert repo.inputs["format"] == "DOCKER"
    assert repo.inputs["location"] == "us-central1"
    assert dev.outputs["registryUrl"] == "us-central1-docker.pkg.dev/my-gcp-project/gemma-dev"


def test_enables_every_api_and_never_disables_on_destroy(dev: ProgramRun) -> None:
    services = dev.of_type("gcp:projects/service:Service")
    # Cloud Quotas too, so the pre-flight can read quotas from the second deploy on.
    assert {s.inputs["service"] for s in services} == {*STACK_APIS, "cloudquotas.googleapis.com"}
    assert {
        "cloudbuild.googleapis.com",
        "artifactregistry.googleapis.com",
        "container.googleapis.com",
        "firestore.googleapis.com",
        "aiplatform.googleapis.com",
        "run.googleapis.com",
        "secretmanager.googleapis.com",
        "iam.googleapis.com",
        "cloudresourcemanager.googleapis.com",
        "storage.googleapis.com",
    } <= set(STACK_APIS)
    assert all(s.inputs["disableOnDestroy"] is False for s in services)
    assert all(s.inputs["project"] == "my-gcp-project" for s in services)


def test_every_resource_waits_for_the_api_it_needs(dev: ProgramRun) -> None:
    checked = 0
    for resource in dev.resources:
        if not resource.custom or resource.type.startswith("pulumi:providers:"):
            continue
        api = next(
            (a for prefix, a in API_OF_TYPE.items() if resource.type.startswith(prefix)), None
        )
        if api is None:
            # Services enable the APIs; a Sleep (waiting out IAM propagation) calls none.
            assert resource.type in {"gcp:projects/service:Service", "time:index/sleep:Sleep"}, (
                resource.type
            )
            continue
        assert dev.waits_for(resource, _api(dev, api)), f"{resource.name} does not wait for {api}"
        checked += 1
    assert checked >= 15


def test_project_number_lookup_waits_for_resource_manager_api(dev: ProgramRun) -> None:
    calls = [c for c in dev.calls if c[0] == "gcp:organizations/getProject:getProject"]
    assert calls == [("gcp:organizations/getProject:getProject", {"projectId": "my-gcp-project"})]


def test_registers_the_hf_token_secret_as_a_secret(dev: ProgramRun) -> None:
    secret = dev.one("gcp:secretmanager/secret:Secret")
    assert secret.inputs["secretId"] == "HF_TOKEN-dev"
    version = dev.one("gcp:secretmanager/secretVersion:SecretVersion")
    assert version.inputs["secretData"] == FAKE_HF_TOKEN
    assert version.input_is_secret("secretData")
    assert dev.outputs["hfTokenSecret"] == "HF_TOKEN-dev"


def test_binds_chat_roles_to_the_workload_identity_principal(dev: ProgramRun) -> None:
    bindings = {
        (b.inputs["role"], b.inputs["member"])
        for b in dev.of_type("gcp:projects/iAMMember:IAMMember")
        if b.inputs["member"].startswith("principal://")
    }
    assert bindings == {
        ("roles/aiplatform.user", CHAT_PRINCIPAL),
        ("roles/datastore.user", CHAT_PRINCIPAL),
        ("roles/monitoring.viewer", ADAPTER_PRINCIPAL),
    }
    ksa = dev.named("chat-app-ksa")
    assert ksa.inputs["metadata"]["name"] == "chat-app"
    assert ksa.inputs["metadata"]["namespace"] == "gemma-stack"
    assert dev.outputs["chatPrincipal"] == CHAT_PRINCIPAL


def test_principal_bindings_wait_for_the_cluster_that_creates_the_pool(dev: ProgramRun) -> None:
    cluster = dev.one("gcp:container/cluster:Cluster")
    for binding in dev.of_type("gcp:projects/iAMMember:IAMMember"):
        if binding.inputs["member"].startswith("principal://"):
            assert dev.waits_for(binding, cluster), binding.name


def test_has_dedicated_service_accounts_and_no_keys(dev: ProgramRun) -> None:
    accounts = {a.inputs["accountId"] for a in dev.of_type("gcp:serviceaccount/account:Account")}
    assert {"gemma-build-dev", "gemma-nodes-dev", "chat-invoker-dev"} <= accounts
    assert len(accounts) >= 2
    assert not [r for r in dev.resources if r.type.startswith("gcp:serviceaccount/key:")]
    assert not [r for r in dev.resources if "HmacKey" in r.type or "/key:Key" in r.type]


def test_no_basic_roles_and_no_public_members(dev: ProgramRun) -> None:
    for resource in dev.resources:
        if resource.type in IAM_TYPES:
            assert resource.inputs["role"] not in BASIC_ROLES, resource.name
            members = resource.inputs.get("members") or [resource.inputs.get("member")]
            assert not {"allUsers", "allAuthenticatedUsers"} & set(members), resource.name


def test_chat_principal_may_mint_tokens_only_for_chat_invoker(dev: ProgramRun) -> None:
    creators = dev.of_type("gcp:serviceaccount/iAMMember:IAMMember")
    assert [
        (c.inputs["role"], c.inputs["member"], c.inputs["serviceAccountId"]) for c in creators
    ] == [
        (
            "roles/iam.serviceAccountOpenIdTokenCreator",
            CHAT_PRINCIPAL,
            "projects/my-gcp-project/serviceAccounts/chat-invoker-dev@my-gcp-project.iam.gserviceaccount.com",
        )
    ]
    project_roles = {b.inputs["role"] for b in dev.of_type("gcp:projects/iAMMember:IAMMember")}
    assert "roles/iam.serviceAccountOpenIdTokenCreator" not in project_roles


def test_token_value_appears_only_in_secret_manager_and_the_pod_secret(dev: ProgramRun) -> None:
    holders = {
        r.name: r for r in dev.resources if FAKE_HF_TOKEN in json.dumps(r.inputs, default=str)
    }
    # Secret Manager holds the token; GKE's vLLM reads it through a Kubernetes Secret filled
    # from that version. Both inputs are Pulumi secrets, so state keeps them encrypted.
    assert set(holders) == {"hf-token-version", "gemma-hf-token"}
    assert holders["hf-token-version"].input_is_secret("secretData")
    assert holders["gemma-hf-token"].type == "kubernetes:core/v1:Secret"
    assert holders["gemma-hf-token"].input_is_secret("stringData")
    leak_prone = ("kubernetes:", "gcp:cloudrunv2", "gcp:cloudrun/", "command:", "gcp:cloudbuild")
    assert FAKE_HF_TOKEN not in dev.dump(
        t
        for t in {r.type for r in dev.resources}
        if t.startswith(leak_prone) and t != "kubernetes:core/v1:Secret"
    )
    assert FAKE_HF_TOKEN not in json.dumps(dev.outputs)


def test_children_are_parented_to_their_components(dev: ProgramRun) -> None:
    top_level = {r.name for r in dev.resources if r.parent_type == "pulumi:pulumi:Stack"}
    components = {r.name for r in dev.resources if not r.custom}
    # Only components and the namespaces shared by a component and its identity (the
    # workloads' and the metrics adapter's) sit at the top of the stack.
    assert top_level - components <= {"workloads-namespace", "custom-metrics-namespace"}
    for resource in dev.resources:
        if resource.custom and resource.parent_type.startswith("gemma-stack:"):
            parent = dev.by_urn(resource.parent)
            assert resource.name.startswith(parent.name + "-"), resource.name


def test_exports_what_a_user_needs(dev: ProgramRun) -> None:
    outputs = dev.outputs
    assert outputs["projectId"] == "my-gcp-project"
    assert outputs["region"] == "us-central1"
    assert outputs["clusterName"] == "gemma-dev"
    assert outputs["firestoreDatabase"] == "chat-app-db-dev"
    assert (
        outputs["buildServiceAccount"] == "gemma-build-dev@my-gcp-project.iam.gserviceaccount.com"
    )
    assert (
        outputs["chatInvokerServiceAccount"]
        == "chat-invoker-dev@my-gcp-project.iam.gserviceaccount.com"
    )
    assert outputs["chatImage"].startswith(
        "us-central1-docker.pkg.dev/my-gcp-project/gemma-dev/chat:"
    )
    assert outputs["clusterCredentialsCommand"] == (
        "gcloud container clusters get-credentials gemma-dev "
        "--region us-central1 --project my-gcp-project"
    )
    assert all(key[0].islower() and "_" not in key for key in outputs)


def test_program_runs_repeat_identically_in_one_process(dev: ProgramRun) -> None:
    again = run_program()

    def snapshot(run: ProgramRun) -> list[str]:
        return sorted(json.dumps([r.type, r.name, r.inputs], sort_keys=True) for r in run.resources)

    assert snapshot(again) == snapshot(dev)
    assert again.outputs == dev.outputs


def test_isolated_run_matches_in_process_run(dev: ProgramRun) -> None:
    isolated = run_program(isolated=True)
    assert sorted((r.type, r.name) for r in isolated.resources) == sorted(
        (r.type, r.name) for r in dev.resources
    )
