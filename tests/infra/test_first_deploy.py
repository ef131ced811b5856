"""What a first `pulumi up` on a fresh project, and later updates and destroys, depend on."""

from __future__ import annotations

import pytest

from tests.pulumi_harness import ProgramRun, dev_config, run_program, run_program_error

ACCOUNT = "gcp:serviceaccount/account:Account"
CLUSTER = "gcp:container/cluster:Cluster"
# Resources whose id is fixed by us: two stacks in one project must not share one.
FIXED_ID_INPUTS = {
    ACCOUNT: "accountId",
    "gcp:secretmanager/secret:Secret": "secretId",
    "gcp:artifactregistry/repository:Repository": "repositoryId",
    "gcp:firestore/database:Database": "name",
    CLUSTER: "name",
}


@pytest.fixture(scope="module")
def dev() -> ProgramRun:
    return run_program()


def _fixed_ids(run: ProgramRun) -> set[tuple[str, str]]:
    return {
        (r.type, r.inputs[key])
        for r in run.resources
        for typ, key in FIXED_ID_INPUTS.items()
        if r.type == typ
    }


# ------------------------------------------------------------------ org policy: node accounts


def test_autopilot_nodes_run_as_their_own_account_with_the_node_role(dev: ProgramRun) -> None:
    cluster = dev.one(CLUSTER)
    nodes = dev.named("gke-nodes")
    assert nodes.inputs["accountId"] == "gemma-nodes-dev"
    email = "gemma-nodes-dev@my-gcp-project.iam.gserviceaccount.com"
    defaults = cluster.inputs["clusterAutoscaling"]["autoProvisioningDefaults"]
    assert defaults["serviceAccount"] == email
    assert defaults["oauthScopes"] == ["https://www.googleapis.com/auth/cloud-platform"]
    grants = [
        r
        for r in dev.of_type("gcp:projects/iAMMember:IAMMember")
        if r.inputs["member"] == f"serviceAccount:{email}"
    ]
    assert [g.inputs["role"] for g in grants] == ["roles/container.defaultNodeServiceAccount"]
    assert all(dev.waits_for(cluster, g) for g in grants)


def test_nodes_may_pull_from_the_stacks_repository_only(dev: ProgramRun) -> None:
    member = "serviceAccount:gemma-nodes-dev@my-gcp-project.iam.gserviceaccount.com"
    readers = [
        r
        for r in dev.of_type("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
        if r.inputs["member"] == member
    ]
    assert [(r.inputs["repository"], r.inputs["role"]) for r in readers] == [
        ("gemma-dev", "roles/artifactregistry.reader")
    ]
    assert dev.waits_for(dev.one(CLUSTER), readers[0])


def test_nothing_runs_as_the_default_compute_account(dev: ProgramRun) -> None:
    text = str([r.inputs for r in dev.resources])
    assert "-compute@developer.gserviceaccount.com" not in text
    assert (
        "serviceAccount"
        in dev.one(CLUSTER).inputs["clusterAutoscaling"]["autoProvisioningDefaults"]
    )


def test_the_compute_api_is_enabled_before_the_cluster(dev: ProgramRun) -> None:
    compute = dev.named("apis-compute")
    assert compute.inputs["service"] == "compute.googleapis.com"
    assert dev.waits_for(dev.one(CLUSTER), compute)


# ----------------------------------------------------------------------- updates and destroy


def test_cluster_timeouts_are_at_least_the_providers_defaults(dev: ProgramRun) -> None:
    timeouts = dev.one(CLUSTER).options["customTimeouts"]
    assert timeouts == {"create": "40m", "update": "60m", "delete": "40m"}


def test_two_stacks_in_one_project_share_no_fixed_id() -> None:
    dev_ids = _fixed_ids(run_program(stack="dev"))
    prod_ids = _fixed_ids(run_program(stack="prod"))
    assert len(dev_ids) >= 8  # 4 accounts, a secret, the repository, database and cluster
    assert dev_ids.isdisjoint(prod_ids)
    assert ("gcp:firestore/database:Database", "chat-app-db-prod") in prod_ids
    assert ("gcp:secretmanager/secret:Secret", "HF_TOKEN-prod") in prod_ids
    assert (ACCOUNT, "gemma3-prebuilt-prod-run") in prod_ids


def test_id_suffix_and_explicit_ids_override_the_stack_name() -> None:
    run = run_program(
        stack="dev",
        overrides={
            "gemma-stack:idSuffix": "Team_A",
            "gemma-stack:artifactRepository": "images",
        },
    )
    ids = _fixed_ids(run)
    assert ("gcp:artifactregistry/repository:Repository", "images") in ids
    assert (CLUSTER, "gemma-team-a") in ids
    assert (ACCOUNT, "chat-invoker-team-a") in ids


def test_a_long_stack_name_still_gives_valid_distinct_account_ids() -> None:
    one = _fixed_ids(run_program(stack="feature-branch-with-a-long-name-1"))
    two = _fixed_ids(run_program(stack="feature-branch-with-a-long-name-2"))
    accounts = {i for t, i in one if t == ACCOUNT}
    assert all(6 <= len(a) <= 30 for a in accounts)
    assert one.isdisjoint(two)


def test_a_bad_id_suffix_is_refused_with_the_fix() -> None:
    error, registered = run_program_error(overrides={"gemma-stack:idSuffix": "9lives"})
    assert "idSuffix='9lives' must start with a letter" in str(error)
    assert "pulumi config set idSuffix" in str(error)
    assert registered == []


def test_fixed_id_resources_are_replaced_delete_first(dev: ProgramRun) -> None:
    # With a fixed id, create-before-delete would ask for a name still in use: a 409.
    for resource in dev.resources:
        if resource.type in FIXED_ID_INPUTS:
            assert resource.options["deleteBeforeReplace"], resource.name


# ------------------------------------------------------------------------ cheap, correct defaults


def test_the_dev_stack_keeps_no_gpu_running_around_the_clock() -> None:
    run = run_program(dev_config(every_backend=False))
    deployments = run.of_type("kubernetes:apps/v1:Deployment")
    assert [d.name for d in deployments] == ["chat-deployment"]
    assert "nvidia.com/gpu" not in str(deployments[0].inputs)
    (service,) = run.of_type("gcp:cloudrunv2/service:Service")
    scaling = service.inputs["template"]["scaling"]
    assert scaling.get("minInstanceCount", 0) == 0  # scales to zero when idle
    assert scaling["maxInstanceCount"] == 1


def test_zero_quota_stops_the_dev_stack_as_it_is_before_any_resource() -> None:
    error, registered = run_program_error(dev_config(every_backend=False), quotas={"*": 0})
    assert "Cloud Run L4 GPUs" in str(error)
    assert "gcloud beta quotas preferences create" in str(error)
    assert registered == []


def test_the_stacks_own_chat_image_is_pulled_if_not_present_and_a_configured_one_always() -> None:
    def policy(run: ProgramRun) -> str:
        deployment = run.named("chat-deployment")
        (container,) = deployment.inputs["spec"]["template"]["spec"]["containers"]
        return str(container["imagePullPolicy"])

    assert policy(run_program()) == "IfNotPresent"
    configured = run_program(overrides={"gemma-stack:chatImage": "us-docker.pkg.dev/p/r/chat:v1"})
    assert policy(configured) == "Always"


def test_destroy_waits_for_the_iap_ingress_and_its_load_balancer() -> None:
    run = run_program(
        overrides={
            "gemma-stack:chatExposure": "iap",
            "gemma-stack:chatDomain": "chat.example.com",
            "gemma-stack:chatAllowedUsers": ["user:ana@example.com"],
        }
    )
    ingress = run.one("kubernetes:networking.k8s.io/v1:Ingress")
    annotations = ingress.inputs["metadata"]["annotations"]
    # skipAwait would also skip the delete wait, leaving the load balancer behind.
    assert "pulumi.com/skipAwait" not in annotations
    assert annotations["pulumi.com/waitFor"] == "jsonpath={.metadata.name}"
    assert ingress.options["customTimeouts"]["delete"] == "20m"


def test_an_output_says_how_to_reach_the_gke_gemma_service(dev: ProgramRun) -> None:
    command = dev.outputs["gemmaAccessCommand"]
    assert command.startswith("kubectl -n gemma-stack port-forward svc/gemma-service 8000:8000 & ")
    assert "localhost:8000/v1/chat/completions" in command
    assert '"model":"google/gemma-3-1b-it"' in command


@pytest.mark.parametrize(
    ("cpu", "memory", "fix"),
    [
        ("4", "32Gi", "set cpu to 8 or more, or set memory to 16Gi"),
        ("4000m", "17Gi", "set cpu to 6 or more, or set memory to 16Gi"),
        ("6", "32Gi", "set cpu to 8 or more, or set memory to 24Gi"),
        ("8", "48Gi", "lower memory, or set memory to 32Gi"),
        ("2", "16Gi", "takes 4, 6, 8 CPUs"),
        ("8", "8Gi", "needs at least 16Gi"),
    ],
)
def test_cpu_memory_pairs_cloud_run_refuses_stop_the_deploy_with_the_fix(
    cpu: str, memory: str, fix: str
) -> None:
    service = {"name": "gemma3-prebuilt", "flavour": "prebuilt", "cpu": cpu, "memory": memory}
    error, registered = run_program_error(overrides={"gemma-stack:cloudRunServices": [service]})
    assert "cloudRunServices[gemma3-prebuilt]." in str(error)
    assert fix in str(error)
    assert registered == []


@pytest.mark.parametrize(("cpu", "memory"), [("4", "16Gi"), ("4000m", "16384Mi"), ("8", "32G")])
def test_cpu_memory_pairs_cloud_run_accepts_deploy_in_any_spelling(cpu: str, memory: str) -> None:
    service = {"name": "gemma3-prebuilt", "flavour": "prebuilt", "cpu": cpu, "memory": memory}
    run = run_program(overrides={"gemma-stack:cloudRunServices": [service]})
    limits = run.one("gcp:cloudrunv2/service:Service").inputs["template"]["containers"][0]
    assert limits["resources"]["limits"]["cpu"] == cpu
