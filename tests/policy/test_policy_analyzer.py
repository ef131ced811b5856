"""The pack over gRPC, started exactly as `pulumi preview --policy-pack policy` starts it."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from devtools.processes import ChildProcess
from policy.rules import ALL_RULES
from tests.policy.serving_snippet import SNIPPET
from tests.pulumi_harness import run_snippet

REPO_ROOT = Path(__file__).resolve().parents[2]
MANDATORY = 1  # the proto's EnforcementLevel.MANDATORY
PORT_LINE = re.compile(r"^(\d+)$", re.MULTILINE)


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def _start_pack(stack: str) -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    # The CLI runs the pack's directory with these variables set and reads the port it prints.
    env = {"PULUMI_PROJECT": "gemma-stack", "PULUMI_STACK": stack, "PULUMI_DRY_RUN": "true"}
    with ChildProcess.start(
        "policy pack",
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:0", "policy"],
        env=env,
        cwd=REPO_ROOT,
    ) as pack:
        pack.wait_until(lambda: PORT_LINE.search(pack.output()))
        port = PORT_LINE.search(pack.output())
        assert port, pack.output()
        with grpc.insecure_channel(f"127.0.0.1:{port.group(1)}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)


@pytest.fixture(scope="module")
def prod_pack() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    yield from _start_pack("prod")


def test_pack_announces_every_rule_with_its_level(
    prod_pack: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    info = prod_pack.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "gemma-stack-security"
    levels = {p.name: p.enforcementLevel for p in info.policies}
    assert levels == {
        rule.name: (MANDATORY if rule.enforcement.value == "mandatory" else 0) for rule in ALL_RULES
    }


def test_pack_knows_the_stack_it_previews(prod_pack: analyzer_pb2_grpc.AnalyzerStub) -> None:
    unprotected = analyzer_pb2.AnalyzeRequest(
        type="gcp:firestore/database:Database",
        properties=_struct(
            {"name": "chat-app-db", "deleteProtectionState": "DELETE_PROTECTION_DISABLED"}
        ),
        urn="urn:pulumi:prod::gemma-stack::gcp:firestore/database:Database::db",
        name="db",
    )
    (diagnostic,) = prod_pack.Analyze(unprotected).diagnostics
    assert diagnostic.policyName == "firestore-delete-protection"
    assert diagnostic.enforcementLevel == MANDATORY
    assert "in stack 'prod'" in diagnostic.message
    for dev_pack in _start_pack("dev"):
        assert list(dev_pack.Analyze(unprotected).diagnostics) == []


def test_stack_rule_follows_property_dependencies(
    prod_pack: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    service_urn = "urn:pulumi:prod::gemma-stack::gcp:cloudrunv2/service:Service::svc"
    service = analyzer_pb2.AnalyzerResource(
        type="gcp:cloudrunv2/service:Service",
        properties=_struct({"name": "gemma3-prebuilt", "labels": {}}),
        urn=service_urn,
        name="svc",
    )
    grant = analyzer_pb2.AnalyzerResource(
        type="gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
        properties=_struct(
            {"name": "gemma3-prebuilt", "role": "roles/run.invoker", "member": "allUsers"}
        ),
        urn="urn:pulumi:prod::gemma-stack::gcp:cloudrunv2/serviceIamMember:ServiceIamMember::open",
        name="open",
        propertyDependencies={
            "name": analyzer_pb2.AnalyzerPropertyDependencies(urns=[service_urn])
        },
    )
    response = prod_pack.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=[service, grant]))
    (diagnostic,) = response.diagnostics
    assert diagnostic.policyName == "no-public-cloud-run"
    assert diagnostic.urn == grant.urn
    assert "Cloud Run 'gemma3-prebuilt', which is not marked public" in diagnostic.message


def test_the_serving_components_pass_the_running_pack(
    prod_pack: analyzer_pb2_grpc.AnalyzerStub, tmp_path: Path
) -> None:
    # Every resource of the serving components, as the engine would send them in a preview.
    run = run_snippet(SNIPPET.format(exposure="login", public=False), tmp_path)
    resources = [
        analyzer_pb2.AnalyzerResource(
            type=r.type,
            properties=_struct(r.inputs),
            urn=r.urn,
            name=r.name,
            propertyDependencies={
                key: analyzer_pb2.AnalyzerPropertyDependencies(urns=sorted(urns))
                for key, urns in r.property_dependencies.items()
            },
        )
        for r in run.resources
    ]
    diagnostics = list(
        prod_pack.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=resources)).diagnostics
    )
    for resource in resources:
        request = analyzer_pb2.AnalyzeRequest(
            type=resource.type, properties=resource.properties, urn=resource.urn, name=resource.name
        )
        diagnostics += prod_pack.Analyze(request).diagnostics
    mandatory = [
        f"{d.policyName}: {d.message}" for d in diagnostics if d.enforcementLevel == MANDATORY
    ]
    assert mandatory == []
    advisory = {d.policyName for d in diagnostics}
    assert advisory <= {"k8s-workload-restricted", "gke-dedicated-node-service-account"}
