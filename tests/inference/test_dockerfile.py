"""The inference image: non-root, PORT-aware, health-checked, and never carrying a model."""

from __future__ import annotations

import re

from tests.inference.inference_fixtures import REPO

APP = REPO / "app" / "inference"


def _instructions() -> list[tuple[str, str]]:
    text = (APP / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]


def test_runs_as_non_root_and_starts_the_server() -> None:
    steps = _instructions()
    users = [arg for op, arg in steps if op == "USER"]
    assert users
    assert users[-1] not in {"root", "0"}
    assert steps[-1] == ("CMD", '["python", "-m", "app.inference"]')
    env = " ".join(arg for op, arg in steps if op == "ENV")
    assert "PORT=8080" in env
    assert "HOST=0.0.0.0" in env


def test_health_check_uses_port_and_health_route() -> None:
    checks = [arg for op, arg in _instructions() if op == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "/health" in checks[0]
    assert "os.environ.get('PORT'" in checks[0]


def test_no_model_in_the_image() -> None:
    steps = _instructions()
    copies = [arg for op, arg in steps if op in {"COPY", "ADD"}]
    assert all("gs://" not in c and "model" not in c.split()[0] for c in copies)
    ignored = (APP / ".dockerignore").read_text()
    assert "**/*.safetensors" in ignored
    assert "**/*.bin" in ignored
    # The layout RULES.md fixes for every app image.
    assert ("WORKDIR", "/srv") in steps
    assert any(re.search(r"touch /srv/app/__init__.py", arg) for op, arg in steps if op == "RUN")


def test_no_compiler_needed_because_nothing_compiles() -> None:
    sources = "\n".join(p.read_text() for p in APP.glob("*.py"))
    assert "torch.compile(" not in sources


def test_torch_is_built_for_the_cuda_the_stack_checks_against_cloud_runs_driver() -> None:
    from components.gpu_software import CLOUD_RUN_L4_DRIVER, INFERENCE_IMAGE_CUDA  # noqa: PLC0415

    steps = _instructions()
    (torch_cuda,) = [
        arg.split("=", 1)[1] for op, arg in steps if op == "ARG" and "TORCH_CUDA" in arg
    ]
    assert torch_cuda == f"cu{INFERENCE_IMAGE_CUDA[0]}{INFERENCE_IMAGE_CUDA[1]}"
    (install,) = [arg for op, arg in steps if op == "RUN" and "torch==" in arg]
    assert "/whl/${TORCH_CUDA}" in install
    assert CLOUD_RUN_L4_DRIVER.runs(INFERENCE_IMAGE_CUDA)


def test_the_build_context_carries_no_test_code() -> None:
    # `COPY . /srv/app/inference/` ships every file here, so test and tool code must live elsewhere.
    modules = {path.relative_to(APP).as_posix(): path.read_text() for path in APP.rglob("*.py")}
    assert "__main__.py" in modules  # the walk sees the app itself
    for name, source in modules.items():
        assert not re.search(r"tiny_model|test_|_test\.py|conftest", name), name
        imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", source, flags=re.MULTILINE)
        foreign = [m for m in imports if m.split(".")[0] in {"tests", "devtools", "bench"}]
        assert foreign == [], f"{name} imports {foreign}"
        assert "build_tiny_gemma3" not in source, name
