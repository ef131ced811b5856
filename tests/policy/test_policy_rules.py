"""Every policy rule, each with one resource that passes and one that fails with its message."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from policy.rules import (
    ALL_RULES,
    RESOURCE_RULES,
    RuleContext,
    StackResource,
    cloudrun,
    evaluate,
    firestore,
    iam,
    kubernetes,
)
from policy.rules.core import MANDATORY

PROD = RuleContext(stack="prod")
DEV = RuleContext(stack="dev")

RUN_SERVICE = "gcp:cloudrunv2/service:Service"
RUN_JOB = "gcp:cloudrunv2/job:Job"
RUN_MEMBER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
RUN_BINDING = "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
K8S_JOB = "kubernetes:batch/v1:Job"
K8S_SERVICE = "kubernetes:core/v1:Service"


# --------------------------------------------------------------------------- resources


def run_service(**overrides: Any) -> dict[str, Any]:
    """A Cloud Run v2 GPU service as CloudRunGpuService renders it: private, own SA."""
    props: dict[str, Any] = {
        "name": "gemma-vllm",
        "location": "us-central1",
        "labels": {"app": "gemma-vllm"},
        "template": {
            "serviceAccount": "gemma-vllm-run@my-project.iam.gserviceaccount.com",
            "nodeSelector": {"accelerator": "nvidia-l4"},
            "containers": [
                {
                    "name": "vllm",
                    "image": "vllm/vllm-openai:v0.9.0",
                    "args": ["--model=/models/gemma", "--max-model-len=8192"],
                    "envs": [
                        {"name": "MODEL_ID", "value": "google/gemma-3-1b-it"},
                        {"name": "MAX_TOKENS", "value": "1024"},
                        {
                            "name": "HF_TOKEN",
                            "valueSource": {"secretKeyRef": {"secret": "HF_TOKEN", "version": "1"}},
                        },
                    ],
                    "resources": {"limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}},
                    "startupProbe": {
                        "httpGet": {"path": "/health"},
                        "periodSeconds": 240,
                        "timeoutSeconds": 10,
                        "failureThreshold": 4,
                    },
                }
            ],
        },
    }
    props.update(overrides)
    return props


def deployment(labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A hardened GPU Deployment like GemmaOnGke's: probes, limits, selector, secret ref."""
    labels = labels or {"app.kubernetes.io/name": "gemma-service"}
    limits = {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    return {
        "metadata": {"name": "gemma", "namespace": "gemma", "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:v0.9.0",
                            "args": ["--model=google/gemma-3-1b-it", "--max-model-len=8192"],
                            "env": [
                                {"name": "HF_HOME", "value": "/cache/huggingface"},
                                {
                                    "name": "HF_TOKEN",
                                    "valueFrom": {
                                        "secretKeyRef": {"name": "hf-secret", "key": "hf_api_token"}
                                    },
                                },
                            ],
                            "resources": {"requests": dict(limits), "limits": dict(limits)},
                            "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}},
                            "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}},
                            "securityContext": {"allowPrivilegeEscalation": False},
                        }
                    ],
                },
            },
        },
    }


def container_of(props: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = props["spec"]["template"]["spec"]["containers"][0]
    return container


def only_messages(rule: Any, resource_type: str, props: dict[str, Any], ctx: RuleContext = PROD):
    return rule.validate(resource_type, props, ctx)


# --------------------------------------------------------------------------- pack shape


def test_every_rule_has_a_level_a_unique_name_and_a_fix() -> None:
    names = [rule.name for rule in ALL_RULES]
    assert len(names) == len(set(names))
    for rule in ALL_RULES:
        assert rule.enforcement.value in {"mandatory", "advisory"}
        assert rule.remediation, rule.name
    advisory = {r.name for r in ALL_RULES if r.enforcement is not MANDATORY}
    assert advisory == {"k8s-workload-restricted", "gke-dedicated-node-service-account"}


# --------------------------------------------------------------------------- IAM


def test_service_account_keys_are_refused() -> None:
    rule = iam.NO_SERVICE_ACCOUNT_KEYS
    account = {"accountId": "chat", "displayName": "chat"}
    assert only_messages(rule, "gcp:serviceaccount/account:Account", account) == []
    (message,) = only_messages(
        rule, "gcp:serviceaccount/key:Key", {"serviceAccountId": "chat@p.iam"}
    )
    assert "long-lived service account key" in message
    assert "Workload Identity" in message
    assert only_messages(rule, "gcp:storage/hmacKey:HmacKey", {"serviceAccountEmail": "x"})


@pytest.mark.parametrize(
    ("resource_type", "props"),
    [
        ("gcp:projects/iAMMember:IAMMember", {"role": "roles/editor", "member": "user:a@b.c"}),
        (
            "gcp:storage/bucketIAMBinding:BucketIAMBinding",
            {"bucket": "models", "role": "roles/owner", "members": ["group:ml@b.c"]},
        ),
        (
            RUN_MEMBER,
            {"name": "gemma", "role": "roles/viewer", "member": "serviceAccount:x@p.iam"},
        ),
        (
            "gcp:projects/iAMPolicy:IAMPolicy",
            {
                "project": "p",
                "policyData": json.dumps(
                    {"bindings": [{"role": "roles/owner", "members": ["user:a@b.c"]}]}
                ),
            },
        ),
    ],
)
def test_basic_roles_are_refused_on_projects_buckets_and_services(
    resource_type: str, props: dict[str, Any]
) -> None:
    (message,) = only_messages(iam.NO_BASIC_ROLES, resource_type, props)
    assert "grants basic role roles/" in message
    assert "predefined role" in message


def test_predefined_roles_pass_the_basic_role_rule() -> None:
    props = {"role": "roles/datastore.user", "member": "principal://iam.googleapis.com/x"}
    assert only_messages(iam.NO_BASIC_ROLES, "gcp:projects/iAMMember:IAMMember", props) == []
    # Removing a member is not a grant.
    remove = {"role": "roles/editor", "member": "user:a@b.c", "project": "p"}
    assert (
        only_messages(iam.NO_BASIC_ROLES, "gcp:projects/iamMemberRemove:IamMemberRemove", remove)
        == []
    )


def test_nothing_is_granted_to_the_compute_default_service_account() -> None:
    rule = iam.NO_COMPUTE_DEFAULT_SA_GRANTS
    dedicated = {
        "role": "roles/logging.logWriter",
        "member": "serviceAccount:build@p.iam.gserviceaccount.com",
    }
    assert only_messages(rule, "gcp:projects/iAMMember:IAMMember", dedicated) == []
    default = {
        "role": "roles/artifactregistry.writer",
        "members": ["serviceAccount:123456789012-compute@developer.gserviceaccount.com"],
    }
    (message,) = only_messages(
        rule, "gcp:artifactregistry/repositoryIamBinding:RepositoryIamBinding", default
    )
    assert "Compute Engine default service account" in message
    assert "dedicated service account" in message


def test_gke_nodes_should_not_run_as_the_compute_default_service_account() -> None:
    rule = iam.GKE_NODE_SERVICE_ACCOUNT
    cluster = "gcp:container/cluster:Cluster"
    dedicated = {
        "enableAutopilot": True,
        "clusterAutoscaling": {
            "autoProvisioningDefaults": {"serviceAccount": "gke-nodes@p.iam.gserviceaccount.com"}
        },
    }
    assert only_messages(rule, cluster, dedicated) == []
    (message,) = only_messages(rule, cluster, {"enableAutopilot": True})
    assert "Compute Engine default service account" in message
    assert "clusterAutoscaling.autoProvisioningDefaults.serviceAccount" in message


# --------------------------------------------------------------------------- Cloud Run


def _grant(members: list[str], *, service_urn: str = "urn:svc") -> StackResource:
    return StackResource(
        type=RUN_BINDING,
        name="gemma-vllm-invokers",
        props={"name": "gemma-vllm", "role": "roles/run.invoker", "members": members},
        urn="urn:grant",
        property_dependencies={"name": frozenset({service_urn})},
    )


def _service(props: dict[str, Any]) -> StackResource:
    return StackResource(type=RUN_SERVICE, name="gemma-vllm", props=props, urn="urn:svc")


def test_cloud_run_invokers_must_be_named_principals() -> None:
    rule = cloudrun.NO_PUBLIC_CLOUD_RUN
    named = _grant(["principal://iam.googleapis.com/projects/1/locations/global/x"])
    assert rule.validate([_service(run_service()), named], PROD) == []

    ((message, urn),) = rule.validate([_service(run_service()), _grant(["allUsers"])], PROD)
    assert urn == "urn:grant"
    assert "grants allUsers access to Cloud Run 'gemma-vllm', which is not marked public" in message
    assert "`public: true`" in message


APPROVED = RuleContext(stack="prod", approved_public=frozenset({"gemma-vllm"}))


def test_a_public_service_needs_the_label_and_the_policy_owners_approval() -> None:
    rule = cloudrun.NO_PUBLIC_CLOUD_RUN
    public = run_service(labels={cloudrun.PUBLIC_LABEL: "true"})
    assert rule.validate([_service(public), _grant(["allUsers"])], APPROVED) == []
    # Marked public by the stack alone: the policy owner has not signed off.
    ((message, _),) = rule.validate([_service(public), _grant(["allUsers"])], PROD)
    assert "marks public (`public: true`) but the policy owner has not approved" in message
    assert "publicCloudRunServices" in message
    # Approval without the label (an accident in the stack) is not enough either.
    assert rule.validate([_service(run_service()), _grant(["allUsers"])], APPROVED)
    # The label on another service does not open this one.
    other = StackResource(type=RUN_SERVICE, name="other", props=public, urn="urn:other")
    found = rule.validate(
        [other, _service(run_service()), _grant(["allAuthenticatedUsers"])], APPROVED
    )
    assert len(found) == 1
    assert "allAuthenticatedUsers" in found[0][0]


def test_public_grants_are_matched_to_their_service_by_name_without_dependencies() -> None:
    rule = cloudrun.NO_PUBLIC_CLOUD_RUN
    grant = StackResource(
        type=RUN_MEMBER,
        name="gemma-public",
        props={
            "name": "projects/p/locations/us-central1/services/gemma-vllm",
            "role": "roles/run.invoker",
            "member": "allUsers",
        },
    )
    public = run_service(labels={cloudrun.PUBLIC_LABEL: "true"})
    assert rule.validate([StackResource(RUN_SERVICE, "svc", public), grant], APPROVED) == []
    assert len(rule.validate([StackResource(RUN_SERVICE, "svc", run_service()), grant])) == 1
    # A grant whose target cannot be found is refused rather than trusted.
    ((message, _),) = rule.validate([grant], APPROVED)
    assert "a Cloud Run service or job" in message


def test_job_grants_and_disabled_invoker_checks_count_as_public() -> None:
    rule = cloudrun.NO_PUBLIC_CLOUD_RUN
    job_grant = StackResource(
        type="gcp:cloudrunv2/jobIamMember:JobIamMember",
        name="tune-public",
        props={"name": "tune", "role": "roles/run.invoker", "member": "allUsers"},
    )
    assert len(rule.validate([job_grant])) == 1
    open_service = _service(run_service(invokerIamDisabled=True))
    ((message, _),) = rule.validate([open_service])
    assert "invokerIamDisabled" in message
    marked = _service(run_service(invokerIamDisabled=True, labels={cloudrun.PUBLIC_LABEL: "true"}))
    assert rule.validate([marked], APPROVED) == []
    assert rule.validate([marked], PROD)


def test_cloud_run_startup_probe_period_is_at_most_240_seconds() -> None:
    rule = cloudrun.CLOUD_RUN_STARTUP_PROBE_PERIOD
    assert only_messages(rule, RUN_SERVICE, run_service()) == []
    slow = run_service()
    slow["template"]["containers"][0]["startupProbe"]["periodSeconds"] = 300
    (message,) = only_messages(rule, RUN_SERVICE, slow)
    assert "periodSeconds=300" in message
    assert "raise failureThreshold" in message
    bad_timeout = run_service()
    bad_timeout["template"]["containers"][0]["startupProbe"].update(
        periodSeconds=10, timeoutSeconds=30
    )
    (message,) = only_messages(rule, RUN_SERVICE, bad_timeout)
    assert "timeout <= period" in message
    long_delay = run_service()
    long_delay["template"]["containers"][0]["startupProbe"]["initialDelaySeconds"] = 600
    (message,) = only_messages(rule, RUN_SERVICE, long_delay)
    assert "initialDelaySeconds=600" in message


def test_cloud_run_runs_as_a_dedicated_service_account() -> None:
    rule = cloudrun.CLOUD_RUN_DEDICATED_SERVICE_ACCOUNT
    assert only_messages(rule, RUN_SERVICE, run_service()) == []
    no_account = run_service()
    del no_account["template"]["serviceAccount"]
    (message,) = only_messages(rule, RUN_SERVICE, no_account)
    assert "runs as the Compute" in message
    default = run_service()
    default["template"]["serviceAccount"] = "123-compute@developer.gserviceaccount.com"
    assert only_messages(rule, RUN_SERVICE, default)
    job = {
        "template": {
            "template": {"containers": [], "serviceAccount": "tune@p.iam.gserviceaccount.com"}
        }
    }
    assert only_messages(rule, RUN_JOB, job) == []


def test_cloud_run_secrets_come_from_secret_manager() -> None:
    rule = cloudrun.CLOUD_RUN_NO_SECRET_LITERALS
    assert only_messages(rule, RUN_SERVICE, run_service()) == []
    leaky = run_service()
    leaky["template"]["containers"][0]["envs"].append(
        {"name": "HUGGING_FACE_HUB_TOKEN", "value": "hf_abcdefghijklmnopqrstuvwxyz0123456789"}
    )
    (message,) = only_messages(rule, RUN_SERVICE, leaky)
    assert "sets HUGGING_FACE_HUB_TOKEN as a literal env value" in message
    assert "valueSource.secretKeyRef" in message
    flag = run_service()
    flag["template"]["containers"][0]["args"].append("--hf-token=hf_abc")
    (message,) = only_messages(rule, RUN_SERVICE, flag)
    assert "--hf-token" in message


# --------------------------------------------------------------------------- Kubernetes


def test_gpu_pods_need_the_accelerator_selector_and_a_gpu_limit() -> None:
    rule = kubernetes.GPU_SCHEDULING
    assert only_messages(rule, DEPLOYMENT, deployment()) == []
    no_selector = deployment()
    del no_selector["spec"]["template"]["spec"]["nodeSelector"]
    (message,) = only_messages(rule, DEPLOYMENT, no_selector)
    assert "cloud.google.com/gke-accelerator" in message
    assert "Autopilot rejects" in message
    # The engine sends numbers as floats: 1.0 and "1" are the same count.
    floats = deployment()
    container_of(floats)["resources"]["requests"]["nvidia.com/gpu"] = 1.0
    assert only_messages(rule, DEPLOYMENT, floats) == []
    unequal = deployment()
    container_of(unequal)["resources"]["requests"]["nvidia.com/gpu"] = "2"
    (message,) = only_messages(rule, DEPLOYMENT, unequal)
    assert "must be equal" in message
    request_only = deployment()
    del container_of(request_only)["resources"]["limits"]["nvidia.com/gpu"]
    (message,) = only_messages(rule, DEPLOYMENT, request_only)
    assert "without a limit" in message


def test_every_container_has_cpu_memory_and_both_probes() -> None:
    rule = kubernetes.RESOURCES_AND_PROBES
    assert only_messages(rule, DEPLOYMENT, deployment()) == []
    bare = deployment()
    del container_of(bare)["resources"]["limits"]["memory"]
    del container_of(bare)["livenessProbe"]
    messages = only_messages(rule, DEPLOYMENT, bare)
    assert any("has no limits.memory" in m for m in messages)
    assert any("has no livenessProbe" in m for m in messages)
    # A batch Job runs to completion and serves nothing: resources yes, probes no.
    job = {"spec": {"template": copy.deepcopy(deployment()["spec"]["template"])}}
    (job_container,) = job["spec"]["template"]["spec"]["containers"]
    del job_container["livenessProbe"], job_container["readinessProbe"]
    assert only_messages(rule, K8S_JOB, job) == []
    del job_container["resources"]["requests"]["cpu"]
    (message,) = only_messages(rule, K8S_JOB, job)
    assert "has no requests.cpu" in message


def test_tokens_reach_pods_only_through_secret_references() -> None:
    rule = kubernetes.SECRETS_BY_REFERENCE
    assert only_messages(rule, DEPLOYMENT, deployment()) == []
    leaky = deployment()
    container_of(leaky)["env"].append({"name": "GEMINI_API_KEY", "value": "AIza-not-a-real-key"})
    (message,) = only_messages(rule, DEPLOYMENT, leaky)
    assert "sets GEMINI_API_KEY as a literal env value" in message
    assert "secretKeyRef" in message
    # Names that only mention a credential are not one.
    innocent = deployment()
    container_of(innocent)["env"] += [
        {"name": name, "value": "x"}
        for name in ("ID_TOKEN_SERVICE_ACCOUNT", "HF_TOKEN_PATH", "MAX_TOKENS", "SECRET_NAME")
    ]
    # A credential name holding the path of a mounted secret file is the right way round.
    innocent_env = container_of(innocent)["env"]
    innocent_env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/sa.json"})
    assert only_messages(rule, DEPLOYMENT, innocent) == []
    # So is the resource name of a Secret Manager secret the pod reads with its own identity.
    innocent_env.append({"name": "HF_TOKEN_SECRET", "value": "projects/p/secrets/hf-token"})
    assert only_messages(rule, DEPLOYMENT, innocent) == []
    innocent_env.pop()
    # ...but a token pasted in place of the path is still a literal.
    innocent_env[-1]["value"] = "s3cr3t-value"
    assert only_messages(rule, DEPLOYMENT, innocent)
    # A token pasted under an innocent name is caught by its shape.
    pasted = deployment()
    container_of(pasted)["env"].append(
        {"name": "EXTRA", "value": "hf_abcdefghijklmnopqrstuvwxyz0123456789"}
    )
    assert only_messages(rule, DEPLOYMENT, pasted)


def test_the_chat_app_runs_restricted() -> None:
    rule = kubernetes.CHAT_APP_HARDENED
    chat = deployment({"app.kubernetes.io/name": "chat-app"})
    assert only_messages(rule, DEPLOYMENT, chat) == []
    rooted = copy.deepcopy(chat)
    del rooted["spec"]["template"]["spec"]["securityContext"]
    del container_of(rooted)["securityContext"]
    (message,) = only_messages(rule, DEPLOYMENT, rooted)
    assert "may run as root" in message
    assert "allows privilege escalation" in message
    assert "RuntimeDefault seccomp" in message
    # Other workloads get the same findings, but only as advice.
    assert only_messages(rule, DEPLOYMENT, deployment()) == []
    assert only_messages(kubernetes.WORKLOAD_HARDENED, DEPLOYMENT, deployment()) == []
    other = deployment()
    del other["spec"]["template"]["spec"]["securityContext"]
    (advice,) = only_messages(kubernetes.WORKLOAD_HARDENED, DEPLOYMENT, other)
    assert "may run as root" in advice


def test_a_load_balancer_needs_an_authentication_layer() -> None:
    rule = kubernetes.LOAD_BALANCER_AUTH

    def lb(annotations: dict[str, str]) -> dict[str, Any]:
        return {
            "metadata": {"name": "chat", "annotations": annotations},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 7860}]},
        }

    assert only_messages(rule, K8S_SERVICE, lb({"gemma-stack/auth": "app-login"})) == []
    internal = {"networking.gke.io/load-balancer-type": "Internal"}
    assert only_messages(rule, K8S_SERVICE, lb(internal)) == []
    cluster_ip = {"metadata": {"name": "chat"}, "spec": {"type": "ClusterIP"}}
    assert only_messages(rule, K8S_SERVICE, cluster_ip) == []
    (message,) = only_messages(rule, K8S_SERVICE, lb({}))
    assert "public LoadBalancer with no authentication layer" in message
    assert "gemma-stack/auth: app-login" in message
    # IAP cannot sit in front of a network load balancer, so claiming it does not count.
    (message,) = only_messages(rule, K8S_SERVICE, lb({"gemma-stack/auth": "iap"}))
    assert "IAP cannot front a LoadBalancer Service" in message


def _ingress(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat", "annotations": annotations},
        "spec": {"defaultBackend": {"service": {"name": "chat-app", "port": {"number": 7860}}}},
    }


def test_an_ingress_needs_an_authentication_layer() -> None:
    rule = kubernetes.LOAD_BALANCER_AUTH
    assert only_messages(rule, kubernetes.INGRESS, _ingress({"gemma-stack/auth": "iap"})) == []
    internal = {"kubernetes.io/ingress.class": "gce-internal"}
    assert only_messages(rule, kubernetes.INGRESS, _ingress(internal)) == []
    (message,) = only_messages(rule, kubernetes.INGRESS, _ingress({}))
    assert "external HTTPS load balancer with no authentication layer" in message


def test_an_ingress_that_claims_iap_must_have_it() -> None:
    rule = kubernetes.IAP_CONFIGURED
    ingress = StackResource(
        kubernetes.INGRESS, "chat-ingress", _ingress({"gemma-stack/auth": "iap"})
    )

    def service(annotations: dict[str, str]) -> StackResource:
        props = {"metadata": {"name": "chat-app", "annotations": annotations}}
        return StackResource(K8S_SERVICE, "chat-service", props)

    def backend_config(iap: bool) -> StackResource:
        props = {"metadata": {"name": "chat-app-iap"}, "spec": {"iap": {"enabled": iap}}}
        return StackResource(kubernetes.BACKEND_CONFIG, "chat-iap", props)

    wired = service({"cloud.google.com/backend-config": '{"default": "chat-app-iap"}'})
    assert rule.validate([ingress, wired, backend_config(True)]) == []
    ((message, _),) = rule.validate([ingress, wired, backend_config(False)])
    assert "references no BackendConfig with spec.iap.enabled: true" in message
    assert len(rule.validate([ingress, service({}), backend_config(True)])) == 1


# --------------------------------------------------------------------------- Firestore


def test_firestore_delete_protection_stays_on_outside_dev() -> None:
    rule = firestore.FIRESTORE_DELETE_PROTECTION
    on = {"name": "chat-app-db", "deleteProtectionState": "DELETE_PROTECTION_ENABLED"}
    off = {"name": "chat-app-db", "deleteProtectionState": "DELETE_PROTECTION_DISABLED"}
    assert only_messages(rule, firestore.DATABASE, on, PROD) == []
    (message,) = only_messages(rule, firestore.DATABASE, off, PROD)
    assert "delete protection off" in message
    assert "'prod'" in message
    assert only_messages(rule, firestore.DATABASE, off, DEV) == []
    assert only_messages(rule, firestore.DATABASE, off, RuleContext(stack="dev-alice")) == []
    assert only_messages(rule, firestore.DATABASE, off, RuleContext(stack="devops")) != []
    listed = RuleContext(stack="sandbox", dev_stacks=frozenset({"sandbox"}))
    assert only_messages(rule, firestore.DATABASE, off, listed) == []


# --------------------------------------------------------------------------- the runner


def test_evaluate_reports_rule_level_and_resource() -> None:
    resources = [
        StackResource(RUN_SERVICE, "svc", run_service(), urn="urn:svc"),
        StackResource("gcp:serviceaccount/key:Key", "leak", {}, urn="urn:key"),
    ]
    (violation,) = evaluate(resources, PROD)
    assert violation.rule == "no-service-account-keys"
    assert violation.enforcement is MANDATORY
    assert violation.resource == "urn:key"
    assert "[mandatory] no-service-account-keys on urn:key" in str(violation)
    assert {r.name for r in RESOURCE_RULES} >= {"no-basic-roles", "k8s-resources-and-probes"}
