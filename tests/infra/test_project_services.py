"""ProjectServices enables the stack's APIs and never disables them on destroy."""

from __future__ import annotations

from pathlib import Path

from tests.pulumi_harness import run_snippet, run_snippet_error

PROGRAM = """
import pulumi
from components.project_services import ProjectServices, ProjectServicesArgs
apis = ProjectServices("apis", ProjectServicesArgs(project_id="p-123456", apis={apis!r}))
pulumi.export("deps", [s._name for s in apis.for_apis({wanted})])
"""


def test_enables_each_api_once_as_a_child(tmp_path: Path) -> None:
    run = run_snippet(
        PROGRAM.format(apis=("run.googleapis.com", "iam.googleapis.com"), wanted='"run", "iam"'),
        tmp_path,
    )
    component = run.one("gemma-stack:project:ProjectServices", "apis")
    services = run.of_type("gcp:projects/service:Service")
    assert {(s.name, s.inputs["service"]) for s in services} == {
        ("apis-run", "run.googleapis.com"),
        ("apis-iam", "iam.googleapis.com"),
    }
    for service in services:
        assert service.parent == component.urn
        assert service.inputs["disableOnDestroy"] is False
        assert service.inputs["disableDependentServices"] is False
        assert service.inputs["project"] == "p-123456"
    assert run.outputs["deps"] == ["apis-run", "apis-iam"]


def test_asking_for_an_api_that_is_not_enabled_fails(tmp_path: Path) -> None:
    error, _ = run_snippet_error(
        PROGRAM.format(apis=("run.googleapis.com",), wanted='"container"'), tmp_path
    )
    assert isinstance(error, KeyError)
    assert "container.googleapis.com is not enabled" in str(error)


def test_duplicate_apis_are_refused(tmp_path: Path) -> None:
    error, _ = run_snippet_error(
        PROGRAM.format(apis=("run.googleapis.com", "run.googleapis.com"), wanted=""), tmp_path
    )
    assert isinstance(error, ValueError)
    assert "listed twice" in str(error)
