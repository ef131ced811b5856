"""Run the whole Pulumi program under mocks and record every resource it registers.

Usage from any test::

    from tests.pulumi_harness import run_program, dev_config

    run = run_program()                                  # Pulumi.dev.yaml + a fake hfToken
    run = run_program(overrides={"gemma-stack:gkeGemmaEnabled": False})  # None removes a key
    cluster = run.one("gcp:container/cluster:Cluster")
    assert cluster.inputs["enableAutopilot"] is True
    exc, registered = run_program_error(overrides={...})  # a config that must fail
    run = run_program(quotas={"*": 0})                    # Cloud Quotas invokes answer 0
    run = run_snippet("from components.x import X\n...", tmp_path)  # one component alone
    run = render(lambda: X("x", args))                    # test code as the whole program
    spec = pod_spec(run.one("kubernetes:apps/v1:Deployment"))

Each RecordedResource has `type`, `name`, `urn`, `inputs`, `outputs` (what the mocks
returned), `parent`, `dependencies`, `property_dependencies`, `provider` and `options`
(protect, customTimeouts, ignoreChanges, additionalSecretOutputs, ...). `ProgramRun` adds
`outputs` (stack exports), `secret_outputs`, `calls` (invokes), `logs` (warnings from
`pulumi.log`), and helpers `one`, `of_type`, `named`, `children_of`, `descendants_of`,
`waits_for` (transitive: depends_on, inputs, parent and provider) and `dump`.

The `gcp:cloudquota/getSQuotaInfo` invoke answers from `quotas` (quota ID, or "*" for any,
to a value in the quota's unit; a string makes the invoke fail with that reason, as when the
Cloud Quotas API is off). Quotas not named are plentiful, so the pre-flight check passes.

`inputs` are the engine's camelCase dicts with secrets unwrapped (so a leak of a secret
value is visible to a plain string search) and `secret_paths` lists which input paths
were marked secret. Each run gets a fresh Pulumi runtime (root stack, config, RPC
manager), so many runs in one pytest process do not see each other; `isolated=True`
runs the program in a child interpreter instead and sends the results back, and
`python=PATH` does so with another interpreter (a virtualenv holding only what
`pulumi up` installs).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import pickle
import runpy
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PROJECT = "gemma-stack"
STACK = "dev"
FAKE_HF_TOKEN = "hf_FAKEtokenFORtestsONLY0123456789abcdef"
FAKE_PROJECT_NUMBER = "123456789012"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_SIG_KEY = "4dabf18193072939515e22adb298388d"
_UNSET = object()
QUOTA_INFO = "gcp:cloudquota/getSQuotaInfo:getSQuotaInfo"
PLENTY = 10**15  # more than any stack asks, in any quota unit (bytes included)
QUOTA_REGIONS = ("us-central1", "us-east4", "europe-west1", "europe-west4", "asia-southeast1")
QuotaValues = Mapping[str, "float | str"]


@dataclass
class RecordedResource:
    """One resource registration as the engine saw it."""

    type: str
    name: str
    urn: str
    custom: bool
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    parent: str
    dependencies: set[str]
    property_dependencies: dict[str, set[str]]
    provider: str
    options: dict[str, Any]
    secret_paths: set[str] = field(default_factory=set)

    @property
    def parent_type(self) -> str:
        """The type token of the parent (`pulumi:pulumi:Stack` at top level)."""
        return _type_of_urn(self.parent) if self.parent else ""

    def all_dependencies(self) -> set[str]:
        """URNs this resource waits for, from depends_on and from its inputs."""
        deps = set(self.dependencies)
        for urns in self.property_dependencies.values():
            deps |= urns
        return deps

    def input_is_secret(self, key: str) -> bool:
        """Whether the input `key` (or anything under it) was sent as a secret."""
        return any(p == key or p.startswith(key + ".") for p in self.secret_paths)


@dataclass
class ProgramRun:
    """Everything one run of `__main__.py` registered, called, exported and logged."""

    resources: list[RecordedResource]
    outputs: dict[str, Any]
    secret_outputs: set[str]
    calls: list[tuple[str, dict[str, Any]]]
    logs: list[tuple[str, str]]

    def of_type(self, type_token: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name: str | None = None) -> RecordedResource:
        found = [r for r in self.of_type(type_token) if name is None or r.name == name]
        if len(found) != 1:
            names = [r.name for r in self.of_type(type_token)]
            raise AssertionError(
                f"expected one {type_token} named {name!r}, found {len(found)} among {names}"
            )
        return found[0]

    def named(self, name: str) -> RecordedResource:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected one resource named {name!r}, found {len(found)}")
        return found[0]

    def by_urn(self, urn: str) -> RecordedResource:
        for r in self.resources:
            if r.urn == urn:
                return r
        raise KeyError(urn)

    def children_of(self, parent: RecordedResource) -> list[RecordedResource]:
        return [r for r in self.resources if r.parent == parent.urn]

    def descendants_of(self, parent: RecordedResource) -> list[RecordedResource]:
        out: list[RecordedResource] = []
        todo = [parent.urn]
        while todo:
            urn = todo.pop()
            kids = [r for r in self.resources if r.parent == urn]
            out.extend(kids)
            todo.extend(k.urn for k in kids)
        return out

    def waits_for(self, resource: RecordedResource, other: RecordedResource) -> bool:
        """Whether `resource` waits for `other` (depends_on, inputs, provider).

        Not through the parent: a child does not inherit its component's depends_on.
        """
        seen: set[str] = set()
        todo = [resource.urn]
        while todo:
            urn = todo.pop()
            if urn in seen:
                continue
            seen.add(urn)
            if urn == other.urn:
                return True
            try:
                current = self.by_urn(urn)
            except KeyError:
                continue
            todo.extend(current.all_dependencies())
            if current.provider:
                # A provider reference is "URN::ID"; the provider waits for what it needs.
                todo.append(current.provider.rsplit("::", 1)[0])
        return False

    def warnings(self) -> list[str]:
        return [msg for level, msg in self.logs if level in {"WARNING", "ERROR"}]

    def dump(self, types: Iterable[str] | None = None) -> str:
        """Inputs of all (or some) resources as JSON, for leak searches."""
        wanted = set(types) if types is not None else None
        return json.dumps(
            [r.inputs for r in self.resources if wanted is None or r.type in wanted],
            default=str,
        )


# --------------------------------------------------------------------------- config


# Pulumi.dev.yaml keeps GKE Gemma off (one L4 around the clock is a costly default); tests
# run the stack with every backend on unless they ask for the file exactly as it is.
EVERY_BACKEND = {"gemma-stack:gkeGemmaEnabled": True}


def dev_config(path: Path | None = None, *, every_backend: bool = True) -> dict[str, Any]:
    """The `config:` map of Pulumi.dev.yaml (values as YAML parsed them), by default with
    every backend enabled (EVERY_BACKEND); `every_backend=False` gives the file as it is."""
    data = yaml.safe_load((path or REPO_ROOT / "Pulumi.dev.yaml").read_text())
    config = dict((data or {}).get("config") or {})
    return {**config, **EVERY_BACKEND} if every_backend and path is None else config


def _encode(value: Any) -> str:
    # The engine hands every config value to the program as a string; objects as JSON.
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


# --------------------------------------------------------------------------- mocks


def _type_of_urn(urn: str) -> str:
    return urn.split("::")[2].rsplit("$", maxsplit=1)[-1]


def _jsonable(value: Any, path: str, secret_paths: set[str]) -> Any:
    """Plain data from deserialized inputs: secrets unwrapped and noted, resources by URN."""
    if isinstance(value, dict):
        if value.get(_SIG_KEY) == _SECRET_SIG:
            secret_paths.add(path)
            return _jsonable(value.get("value"), path, secret_paths)
        return {
            k: _jsonable(v, f"{path}.{k}" if path else k, secret_paths) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{path}[{i}]", secret_paths) for i, v in enumerate(value)]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return f"<{type(value).__name__}>"


def _fake_outputs(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:  # noqa: PLR0911
    """Outputs a provider would add after create, for the properties this program reads."""
    project = inputs.get("project") or "my-gcp-project"
    location = inputs.get("location") or inputs.get("region") or "us-central1"
    out = dict(inputs)
    if typ == "gcp:container/cluster:Cluster":
        out.update(
            name=inputs.get("name") or name,
            endpoint="34.118.0.10",
            masterAuth={
                "clusterCaCertificate": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
                "clientCertificate": "",
                "clientKey": "",
            },
            selfLink=f"https://container.googleapis.com/v1/projects/{project}/locations/{location}/clusters/{name}",
        )
        return out
    if typ == "gcp:serviceaccount/account:Account":
        email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
        out.update(
            email=email,
            member=f"serviceAccount:{email}",
            name=f"projects/{project}/serviceAccounts/{email}",
            uniqueId="109876543210987654321",
        )
        return out
    if typ == "gcp:cloudrunv2/service:Service":
        svc = inputs.get("name") or name
        out.update(
            name=svc,
            uri=f"https://{svc}-a1b2c3d4e5-uc.a.run.app",
            urls=[f"https://{svc}-{FAKE_PROJECT_NUMBER}.{location}.run.app"],
        )
        return out
    if typ == "gcp:artifactregistry/repository:Repository":
        repo = inputs.get("repositoryId") or name
        out.update(
            name=repo,
            registryUri=f"{location}-docker.pkg.dev/{project}/{repo}",
        )
        return out
    if typ == "gcp:secretmanager/secret:Secret":
        out.update(name=f"projects/{FAKE_PROJECT_NUMBER}/secrets/{inputs.get('secretId')}")
        return out
    if typ == "gcp:secretmanager/secretVersion:SecretVersion":
        out.update(name=f"{inputs.get('secret')}/versions/1", version="1")
        return out
    if typ == "gcp:storage/bucket:Bucket":
        bucket = inputs.get("name") or f"{name}-a1b2c3"
        out.update(
            name=bucket,
            url=f"gs://{bucket}",
            selfLink=f"https://www.googleapis.com/storage/v1/b/{bucket}",
        )
        return out
    if typ == "gcp:firestore/database:Database":
        out.update(uid="f1a2b3c4-0000-4000-8000-000000000000")
        return out
    if typ.startswith("kubernetes:") and not typ.startswith("kubernetes:helm"):
        meta = dict(inputs.get("metadata") or {})
        meta.setdefault("name", f"{name}-a1b2c3")
        meta.setdefault("namespace", "default")
        out["metadata"] = meta
        if typ == "kubernetes:core/v1:Service":
            spec = dict(inputs.get("spec") or {})
            spec.setdefault("clusterIP", "10.8.0.20")
            out["spec"] = spec
            out["status"] = {"loadBalancer": {"ingress": [{"ip": "10.128.0.50"}]}}
        return out
    if typ == "command:local:Command":
        out.update(stdout="", stderr="")
        return out
    return out


class _RecordingMocks:
    """pulumi Mocks that fake provider outputs and record calls."""

    def __init__(self, project_id: str, quotas: QuotaValues | None = None) -> None:
        self.project_id = project_id
        self.quotas = dict(quotas or {})
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def new_resource(self, args: Any) -> tuple[str, dict[str, Any]]:
        inputs = _jsonable(args.inputs, "", set())
        state = _fake_outputs(args.typ, args.name, inputs)
        return f"{args.name}-id", state

    def call(self, args: Any) -> Any:
        self.calls.append((args.token, _jsonable(args.args, "", set())))
        if args.token == QUOTA_INFO:
            return self._quota_info(args.args)
        if args.token == "gcp:organizations/getProject:getProject":
            project = args.args.get("projectId") or self.project_id
            return {
                "projectId": project,
                "number": FAKE_PROJECT_NUMBER,
                "name": project,
                "id": f"projects/{project}",
            }
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {
                "project": self.project_id,
                "region": "us-central1",
                "zone": "",
                "accessToken": "ya29.fake",
                "id": "client",
            }
        return {}

    def _quota_info(self, args: Mapping[str, Any]) -> Any:
        quota_id = str(args.get("quotaId"))
        value = self.quotas.get(quota_id, self.quotas.get("*", PLENTY))
        if isinstance(value, str):
            return {}, [("quotaId", value)]  # the engine's shape for a failed invoke
        regional = quota_id.lower().endswith("region")
        return {
            "parent": args.get("parent"),
            "service": args.get("service"),
            "quotaId": quota_id,
            "dimensions": ["region"] if regional else [],
            "dimensionsInfos": [
                {
                    "dimensions": {},
                    "applicableLocations": list(QUOTA_REGIONS) if regional else ["global"],
                    "details": [{"value": str(value)}],
                }
            ],
        }

    def register_transform(self, transform: Any) -> None:  # pragma: no cover - API hook
        del transform

    def register_invoke_transform(self, transform: Any) -> None:  # pragma: no cover
        del transform


class _LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelname, record.getMessage()))


def _recorded(
    request: Any, urn: str, inputs: Any, state: Mapping[str, Any] | None
) -> RecordedResource:
    """A RecordedResource from one RegisterResource request (the engine's protobuf message)."""
    secret_paths: set[str] = set()
    plain = _jsonable(inputs, "", secret_paths)
    timeouts = request.customTimeouts
    return RecordedResource(
        type=request.type,
        name=request.name,
        urn=urn,
        custom=bool(request.custom),
        inputs=plain,
        outputs=dict(state or {}),
        parent=request.parent,
        dependencies=set(request.dependencies),
        property_dependencies={k: set(v.urns) for k, v in request.propertyDependencies.items()},
        provider=request.provider,
        options={
            "protect": request.protect if request.HasField("protect") else None,
            "deleteBeforeReplace": request.deleteBeforeReplace,
            "ignoreChanges": list(request.ignoreChanges),
            "replaceOnChanges": list(request.replaceOnChanges),
            "additionalSecretOutputs": list(request.additionalSecretOutputs),
            "retainOnDelete": (
                request.retainOnDelete if request.HasField("retainOnDelete") else None
            ),
            "customTimeouts": {
                "create": timeouts.create,
                "update": timeouts.update,
                "delete": timeouts.delete,
            },
            "aliases": [str(a) for a in request.aliases],
            "version": request.version,
        },
        secret_paths=secret_paths,
    )


def _run_with_pulumi_internals(
    program: Path,
    config: dict[str, str],
    secret_keys: list[str],
    mocks: _RecordingMocks,
    *,
    stack: str,
    logger: logging.Logger,
    on_register: Callable[[Any, Any, Mapping[str, Any] | None, str], None],
) -> dict[str, tuple[Any, bool]]:
    """Run `program` under `mocks` with a fresh Pulumi runtime; return its exports.

    This is the only code that touches Pulumi's private runtime (checked against the Pulumi
    Python SDK 3.272.0): `pulumi.runtime.set_mocks` alone keeps the root stack, config and
    outputs of an earlier run in the same process, and has no hook that sees each
    registration's options. `on_register(request, inputs, state, urn)` gets the engine's
    RegisterResource message, its deserialized inputs, the mock's outputs and the URN.
    Exports map to (value, is_secret). An error the program raises propagates.
    """
    from pulumi.runtime import config as runtime_config  # noqa: PLC0415
    from pulumi.runtime import rpc, settings  # noqa: PLC0415
    from pulumi.runtime.mocks import MockMonitor  # noqa: PLC0415
    from pulumi.runtime.stack import run_pulumi_func  # noqa: PLC0415
    from pulumi.runtime.sync_await import _sync_await  # noqa: PLC0415

    class RecordingMonitor(MockMonitor):  # type: ignore[misc]
        def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - gRPC method name
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                registration = self.resources.get(response.urn)
                inputs = rpc.deserialize_properties(request.object)
                on_register(
                    request, inputs, registration.state if registration else None, response.urn
                )
            return response

    # The runtime is process-global: start every run from a clean root stack and config.
    settings.ROOT.set(None)
    runtime_config.set_all_config(config, secret_keys)
    pulumi.runtime.set_mocks(
        mocks,  # type: ignore[arg-type]
        project=PROJECT,
        stack=stack,
        preview=False,
        logger=logger,
        monitor=RecordingMonitor(mocks),
    )
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()

    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(program), run_name="__main__")))

    exported: dict[str, tuple[Any, bool]] = {}
    root = settings.get_root_resource()
    for key, value in dict(getattr(root, "outputs", {})).items():
        output = pulumi.Output.from_input(value)
        exported[key] = (_sync_await(output.future()), bool(_sync_await(output.is_secret())))
    return exported


# --------------------------------------------------------------------------- running


def _full_config(
    config: Mapping[str, Any] | None,
    overrides: Mapping[str, Any] | None,
    hf_token: str | object | None,
) -> tuple[dict[str, str], list[str]]:
    values = dict(dev_config() if config is None else config)
    values.update(overrides or {})
    secret_keys: list[str] = []
    token = FAKE_HF_TOKEN if hf_token is _UNSET else hf_token
    if token is not None and "gemma-stack:hfToken" not in values:
        values["gemma-stack:hfToken"] = token
    if "gemma-stack:hfToken" in values:
        secret_keys.append("gemma-stack:hfToken")
    # Overrides set to None remove a key, like `pulumi config rm`.
    encoded = {k: _encode(v) for k, v in values.items() if v is not None}
    return encoded, [k for k in secret_keys if k in encoded]


def _run_in_process(
    config: dict[str, str],
    secret_keys: list[str],
    program: Path,
    stack: str = STACK,
    quotas: QuotaValues | None = None,
) -> tuple[ProgramRun | None, BaseException | None, list[RecordedResource]]:
    recorded: list[RecordedResource] = []
    mocks = _RecordingMocks(config.get("gcp:project", "my-gcp-project"), quotas)
    logger = logging.getLogger(f"pulumi-harness-{id(recorded)}")
    logger.propagate = False
    capture = _LogCapture()
    logger.addHandler(capture)

    def record(request: Any, inputs: Any, state: Mapping[str, Any] | None, urn: str) -> None:
        recorded.append(_recorded(request, urn, inputs, state))

    cwd = Path.cwd()
    os.chdir(program.parent)  # Pulumi runs the program from the project directory.
    sys.path.insert(0, str(program.parent))
    try:
        exports = _run_with_pulumi_internals(
            program, config, secret_keys, mocks, stack=stack, logger=logger, on_register=record
        )
    except Exception as exc:
        return None, exc, recorded
    finally:
        os.chdir(cwd)
        sys.path.remove(str(program.parent))
        logger.removeHandler(capture)

    exported = {key: _jsonable(value, key, set()) for key, (value, _) in exports.items()}
    secret_outputs = {key for key, (_, secret) in exports.items() if secret}
    run = ProgramRun(
        resources=recorded,
        outputs=exported,
        secret_outputs=secret_outputs,
        calls=mocks.calls,
        logs=capture.records,
    )
    return run, None, recorded


def _execute(
    config: Mapping[str, Any] | None,
    overrides: Mapping[str, Any] | None,
    hf_token: str | object | None,
    isolated: bool,
    program: Path | None,
    *,
    stack: str = STACK,
    quotas: QuotaValues | None = None,
    python: Path | None = None,
) -> tuple[ProgramRun | None, BaseException | None, list[RecordedResource]]:
    encoded, secret_keys = _full_config(config, overrides, hf_token)
    main = program or REPO_ROOT / "__main__.py"
    if not isolated and python is None:
        return _run_in_process(encoded, secret_keys, main, stack, quotas)
    payload = pickle.dumps((encoded, secret_keys, str(main), stack, dict(quotas or {})))
    env = dict(os.environ)
    if python is not None:
        # Only that interpreter's packages: nothing leaks in from the test environment.
        env.pop("PYTHONPATH", None)
        env["VIRTUAL_ENV"] = str(python.parent.parent)
    proc = subprocess.run(
        [str(python or sys.executable), "-m", "tests.pulumi_harness"],
        input=payload,
        capture_output=True,
        cwd=REPO_ROOT,
        env=env,
        check=False,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"isolated program run failed:\n{proc.stderr.decode()}")
    result: tuple[ProgramRun | None, BaseException | None, list[RecordedResource]]
    result = pickle.loads(proc.stdout)  # noqa: S301 - our own child process
    return result


def run_program(
    config: Mapping[str, Any] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    hf_token: str | object | None = _UNSET,
    isolated: bool = False,
    program: Path | None = None,
    stack: str = STACK,
    quotas: QuotaValues | None = None,
    python: Path | None = None,
) -> ProgramRun:
    """Run `__main__.py` under mocks (preview=False) and return what it registered.

    config: full config map (namespaced keys such as `gcp:project`); default Pulumi.dev.yaml.
    overrides: keys merged over it; a value of None removes the key.
    hf_token: the secret `gemma-stack:hfToken` (default a fake token; None leaves it unset).
    stack: the stack name the program sees (`pulumi.get_stack()`).
    quotas: what the Cloud Quotas invokes answer (see the module docstring); default plenty.
    python: run in a child process of this interpreter (e.g. another virtualenv's python).
    """
    run, error, _ = _execute(
        config, overrides, hf_token, isolated, program, stack=stack, quotas=quotas, python=python
    )
    if error is not None:
        raise error
    assert run is not None
    return run


def run_program_error(
    config: Mapping[str, Any] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    hf_token: str | object | None = _UNSET,
    isolated: bool = False,
    quotas: QuotaValues | None = None,
) -> tuple[BaseException, list[RecordedResource]]:
    """Run a program that must fail; return the error and whatever was registered first."""
    _, error, recorded = _execute(config, overrides, hf_token, isolated, None, quotas=quotas)
    if error is None:
        raise AssertionError("the program ran without error")
    return error, recorded


def run_snippet(
    code: str,
    folder: Path,
    *,
    config: Mapping[str, Any] | None = None,
) -> ProgramRun:
    """Run a small Pulumi program (e.g. one component) written to `folder/__main__.py`.

    The repo root is importable, so `from components.x import X` works. Config defaults to
    just `gcp:project`; no hfToken is set.
    """
    main = folder / "__main__.py"
    main.write_text(code)
    sys.path.insert(0, str(REPO_ROOT))
    try:
        return run_program(
            {"gcp:project": "my-gcp-project"} if config is None else config,
            hf_token=None,
            program=main,
        )
    finally:
        sys.path.remove(str(REPO_ROOT))


def run_snippet_error(code: str, folder: Path) -> tuple[BaseException, list[RecordedResource]]:
    """Like run_snippet, for a program that must fail."""
    main = folder / "__main__.py"
    main.write_text(code)
    sys.path.insert(0, str(REPO_ROOT))
    try:
        _, error, recorded = _execute(
            {"gcp:project": "my-gcp-project"}, None, None, isolated=False, program=main
        )
    finally:
        sys.path.remove(str(REPO_ROOT))
    if error is None:
        raise AssertionError("the program ran without error")
    return error, recorded


_BUILD_MODULE = "_pulumi_harness_build"


@functools.cache
def _build_program() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="pulumi-harness-"))
    (folder / "__main__.py").write_text(f"import {_BUILD_MODULE}\n\n{_BUILD_MODULE}.build()\n")
    return folder / "__main__.py"


def render(build: Callable[[], None], *, project: str = "my-gcp-project") -> ProgramRun:
    """Run `build` (code that creates components and exports) as a whole Pulumi program.

    The config holds only `gcp:project`; no hfToken is set. Unlike run_snippet, `build` is
    ordinary test code, so it can close over the test's values.
    """
    module = types.ModuleType(_BUILD_MODULE)
    module.__dict__["build"] = build
    sys.modules[_BUILD_MODULE] = module
    try:
        return run_program({"gcp:project": project}, hf_token=None, program=_build_program())
    finally:
        del sys.modules[_BUILD_MODULE]


def pod_spec(workload: RecordedResource) -> dict[str, Any]:
    """The pod spec of a recorded Deployment (spec.template.spec)."""
    spec: dict[str, Any] = workload.inputs["spec"]["template"]["spec"]
    return spec


def schema_failures(manifests: Iterable[Mapping[str, Any]], minor: str) -> list[str]:
    """Each manifest the Kubernetes `minor` OpenAPI schema rejects (strict: no unknown field)."""
    import kubernetes_validate  # noqa: PLC0415 - only the schema tests need it

    failures = []
    for manifest in manifests:
        try:
            kubernetes_validate.validate(dict(manifest), minor, strict=True)
        except kubernetes_validate.ValidationError as err:
            name = f"{manifest['kind']}/{manifest['metadata'].get('name')}"
            failures.append(f"{name}: {err.message} at {list(err.path)}")
    return failures


_REDACTED = "<redacted>"


def _api_version_and_kind(type_token: str) -> tuple[str, str]:
    # kubernetes:apps/v1:Deployment -> ("apps/v1", "Deployment"); core/v1 -> "v1".
    _, group_version, kind = type_token.split(":")
    return group_version.removeprefix("core/"), kind


def manifests_from_resources(resources: Iterable[Any]) -> list[dict[str, Any]]:
    """Kubernetes objects (apiVersion/kind/metadata/spec...) from recorded `kubernetes:*` inputs.

    Names and namespaces the program left to the provider come from the recorded outputs;
    Secret values are redacted so no token is written to disk.
    """
    manifests = []
    for resource in resources:
        if not resource.type.startswith("kubernetes:") or resource.type.startswith(
            ("kubernetes:helm", "kubernetes:yaml", "kubernetes:kustomize")
        ):
            continue
        api_version, kind = _api_version_and_kind(resource.type)
        manifest = _whole_numbers(copy.deepcopy(dict(resource.inputs)))
        manifest["apiVersion"] = manifest.get("apiVersion") or api_version
        manifest["kind"] = manifest.get("kind") or kind
        metadata = dict(manifest.get("metadata") or {})
        recorded = (resource.outputs or {}).get("metadata") or {}
        # Cluster-scoped objects have no namespace.
        keys = ("name",) if kind == "Namespace" else ("name", "namespace")
        for key in keys:
            if not metadata.get(key) and recorded.get(key):
                metadata[key] = recorded[key]
        manifest["metadata"] = metadata
        if kind == "Secret":
            for key in ("data", "stringData"):
                if isinstance(manifest.get(key), dict):
                    manifest[key] = dict.fromkeys(manifest[key], _REDACTED)
        manifests.append(manifest)
    return manifests


def _whole_numbers(value: Any) -> Any:
    # The engine sends every number as a float; manifests say `port: 8000`, not 8000.0.
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _child_main() -> None:
    # Import by package name so pickled results name `tests.pulumi_harness`, not `__main__`.
    sys.path.insert(0, str(REPO_ROOT))
    from tests import pulumi_harness  # noqa: PLC0415, PLW0406 - as a package, not __main__

    encoded, secret_keys, main, stack, quotas = pickle.loads(sys.stdin.buffer.read())  # noqa: S301
    run, error, recorded = pulumi_harness._run_in_process(
        encoded, secret_keys, Path(main), stack, quotas
    )
    try:
        blob = pickle.dumps((run, error, recorded))
    except Exception:
        blob = pickle.dumps((run, RuntimeError(f"{type(error).__name__}: {error}"), recorded))
    sys.stdout.buffer.write(blob)
    sys.stdout.flush()
    # Skip interpreter teardown of gRPC threads; the result is already written.
    os._exit(0)


if __name__ == "__main__":
    _child_main()
