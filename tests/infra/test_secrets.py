"""The stack's secrets live in Secret Manager, marked secret everywhere, granted per secret."""

from __future__ import annotations

import json
from pathlib import Path

from tests.pulumi_harness import FAKE_HF_TOKEN, run_program, run_snippet


def test_token_is_stored_as_a_secret_version() -> None:
    run = run_program()
    secret = run.one("gcp:secretmanager/secret:Secret")
    assert secret.inputs["secretId"] == "HF_TOKEN-dev"
    assert secret.inputs["replication"] == {"auto": {}}
    assert secret.parent_type == "gemma-stack:secrets:StoredSecret"
    version = run.one("gcp:secretmanager/secretVersion:SecretVersion")
    assert version.input_is_secret("secretData")
    assert "secretData" in version.options["additionalSecretOutputs"]
    assert run.outputs["hfTokenSecret"] == "HF_TOKEN-dev"
    assert FAKE_HF_TOKEN not in json.dumps(run.outputs)


def test_no_secret_without_a_token_when_no_backend_needs_one() -> None:
    run = run_program(
        overrides={"gemma-stack:gkeGemmaModelUri": "gs://my-models/gemma-3-1b-sql"},
        hf_token=None,
    )
    assert not run.of_type("gcp:secretmanager/secret:Secret")
    assert "hfTokenSecret" not in run.outputs


def test_plain_token_input_is_still_marked_secret_and_access_is_per_secret(tmp_path: Path) -> None:
    run = run_snippet(
        """
import pulumi
from components.secrets import StoredSecret, StoredSecretArgs
token = StoredSecret("hf", StoredSecretArgs(
    project_id="p-123456", value=pulumi.Output.from_input("hf_plain"), secret_id="HF_TOKEN"))
token.grant_access("hf-reader", "serviceAccount:svc@p-123456.iam.gserviceaccount.com")
pulumi.export("token", token.value)
pulumi.export("stored", token.stored_value)
""",
        tmp_path,
    )
    assert run.one("gcp:secretmanager/secretVersion:SecretVersion").input_is_secret("secretData")
    assert {"token", "stored"} <= run.secret_outputs
    grant = run.one("gcp:secretmanager/secretIamMember:SecretIamMember")
    assert grant.inputs["role"] == "roles/secretmanager.secretAccessor"
    assert grant.inputs["secretId"] == "HF_TOKEN"
    assert grant.inputs["member"] == "serviceAccount:svc@p-123456.iam.gserviceaccount.com"


def test_login_credentials_live_in_secret_manager_and_reach_the_pod_by_reference() -> None:
    run = run_program(
        overrides={
            "gemma-stack:chatExposure": "login",
            "gemma-stack:chatLoginPassword": "s3cret-pw",
        }
    )
    secrets = {s.inputs["secretId"] for s in run.of_type("gcp:secretmanager/secret:Secret")}
    assert secrets == {"HF_TOKEN-dev", "chat-login-dev", "chat-session-key-dev"}
    holders = sorted(r.name for r in run.resources if "s3cret-pw" in json.dumps(r.inputs))
    assert holders == ["chat-login", "chat-login-credentials-version"]
    assert run.named("chat-login").type == "kubernetes:core/v1:Secret"
    assert run.named("chat-login").input_is_secret("stringData")
    (container,) = run.named("chat-deployment").inputs["spec"]["template"]["spec"]["containers"]
    (credentials,) = [e for e in container["env"] if e["name"] == "LOGIN_CREDENTIALS"]
    assert "secretKeyRef" in credentials["valueFrom"]
    # Session cookies are signed with a key kept in Secret Manager too (derived from the
    # password unless chatSessionKey is set), so every replica and restart accepts them.
    (session_key,) = [e for e in container["env"] if e["name"] == "SESSION_SECRET"]
    assert session_key["valueFrom"]["secretKeyRef"]["key"] == "session-key"
    stored_key = run.named("chat-session-key-version")
    assert stored_key.input_is_secret("secretData")
    derived = stored_key.inputs["secretData"]
    assert len(derived) >= 32
    assert "s3cret-pw" not in derived
    assert run.named("chat-login").inputs["stringData"]["session-key"] == derived
    assert run.outputs["chatLoginSecret"] == "chat-login-dev"
    assert run.outputs["chatLoginUser"] == "chat"
