"""Each rule has one owner: config and components agree because config asks the component."""

from __future__ import annotations

import json

import pytest

from components.cloud_run_gpu_service import PREBUILT_VARIANTS
from tests.pulumi_harness import run_program, run_program_error

SERVICE = "gcp:cloudrunv2/service:Service"


def _prebuilt(**fields: object) -> dict[str, object]:
    return {"gemma-stack:cloudRunServices": [{"name": "p", "flavour": "prebuilt", **fields}]}


@pytest.mark.parametrize("variant", PREBUILT_VARIANTS)
def test_config_and_component_spell_prebuilt_variants_alike(variant: str) -> None:
    run = run_program(overrides=_prebuilt(variant=variant))
    image = run.one(SERVICE).inputs["template"]["containers"][0]["image"]
    assert image == f"us-docker.pkg.dev/cloudrun/container/gemma/{variant}"


def test_a_variant_the_component_has_no_image_for_is_refused_by_config() -> None:
    error, registered = run_program_error(overrides=_prebuilt(variant="4b"))
    assert "cloudRunServices[p].variant='4b' has no prebuilt image" in str(error)
    assert "gemma3-4b" in str(error)
    assert registered == []


def test_config_accepts_every_cpu_and_memory_spelling_the_component_accepts() -> None:
    run = run_program(overrides=_prebuilt(cpu="8000m", memory="32G"))
    limits = run.one(SERVICE).inputs["template"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "8000m", "memory": "32G", "nvidia.com/gpu": "1"}


def test_a_public_service_warns_once() -> None:
    run = run_program(overrides=_prebuilt(public=True))
    assert len([w for w in run.warnings() if "PUBLIC" in w]) == 1


@pytest.mark.parametrize(
    ("model", "label"),
    [
        ("gemini-2.5-pro", "Gemini 2.5 Pro (Vertex AI)"),
        ("gemini-2.5-flash", "Gemini 2.5 Flash (Vertex AI)"),
        ("gemini-3-flash-lite", "Gemini 3 Flash Lite (Vertex AI)"),
    ],
)
def test_the_gemini_label_follows_the_configured_model(model: str, label: str) -> None:
    run = run_program(overrides={"gemma-stack:geminiModel": model})
    (container,) = run.named("chat-deployment").inputs["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    gemini = json.loads(env["CHAT_BACKENDS"])[0]
    assert (gemini["id"], gemini["label"], gemini["model"]) == ("gemini", label, model)


def test_no_component_imports_another_component() -> None:
    # Wiring components together is the stack's job (stacks/); components share only helpers.
    import ast  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    folder = Path(__file__).resolve().parents[2] / "components"
    components = {
        path.stem for path in folder.glob("*.py") if "pulumi.ComponentResource)" in path.read_text()
    }
    assert {"chat_app", "cloud_run_gpu_service", "gemma_on_gke", "cluster"} <= components
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("components."):
                imported = node.module.removeprefix("components.")  # type: ignore[union-attr]
                assert imported not in components - {path.stem}, f"{path.name} imports {imported}"


def test_the_platform_hands_over_groups_whose_parts_exist_together() -> None:
    import types  # noqa: PLC0415
    import typing  # noqa: PLC0415

    from stacks.platform import Chat, Gke, Platform  # noqa: PLC0415

    def optional(cls: type) -> set[str]:
        hints = typing.get_type_hints(cls)
        return {
            name
            for name, hint in hints.items()
            if typing.get_origin(hint) in (typing.Union, types.UnionType)
            and type(None) in typing.get_args(hint)
        }

    # Each optional part is a whole capability; nothing inside a group is optional except
    # the login secret, which only chatExposure=login has.
    assert optional(Platform) == {"hf_token", "inference_image", "gke", "chat", "finetune_image"}
    assert optional(Gke) == set()
    assert optional(Chat) == {"login"}


@pytest.mark.parametrize(
    ("config_fields", "settings_fields", "message"),
    [
        ({"concurrency": 1001}, {"concurrency": 1001}, "1001 must be within 1..1000."),
        ({"maxInstances": 0}, {"max_instances": 0}, "0 must be at least 1"),
        (
            {"minInstances": 3},
            {"min_instances": 3},
            "3 must be within 0 and the most instances (1)",
        ),
        ({"timeoutSeconds": 4000}, {"timeout_seconds": 4000}, "4000 must be within 1..3600."),
        ({"cpu": "5"}, {"cpu": "5"}, "an L4 instance takes 4, 6, 8 CPUs"),
    ],
)
def test_config_and_component_give_the_same_verdict_on_cloud_run_settings(
    config_fields: dict[str, object], settings_fields: dict[str, object], message: str
) -> None:
    from components.cloud_run_gpu_service import ServiceSettings  # noqa: PLC0415

    error, _ = run_program_error(overrides=_prebuilt(**{"concurrency": 4, **config_fields}))
    settings = ServiceSettings(**{"concurrency": 4, **settings_fields})  # type: ignore[arg-type]
    ((_, component_message),) = settings.problems()
    assert message in component_message
    (key,) = config_fields
    assert f"cloudRunServices[p].{key}={component_message}" in str(error)
