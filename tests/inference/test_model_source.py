"""Model source: gs:// downloads through the emulator and one actionable message per problem."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from app.inference import model_source
from app.inference.model_source import (
    ModelSourceError,
    gcs_error,
    resolve_model_dir,
    validate_model_dir,
)
from devtools.gcs_emulator import CLIENT_ENV, GcsEmulator
from devtools.ports import free_port
from tests.inference.inference_fixtures import REPO


def _copy_without(source: Path, target: Path, *missing: str) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*missing))
    return target


def test_gs_folder_downloads_identical_files_and_is_cached(
    tiny_model_dir: Path, gcs: GcsEmulator, tmp_path: Path
) -> None:
    uri = gcs.upload_folder(tiny_model_dir, "gs://models/cached-copy")
    local = resolve_model_dir(uri, tmp_path, endpoint_url=gcs.endpoint, max_workers=4)
    for source in tiny_model_dir.iterdir():
        assert (local / source.name).read_bytes() == source.read_bytes(), source.name
    (local / "marker-left-by-test").write_text("x")
    again = resolve_model_dir(uri, tmp_path, endpoint_url=gcs.endpoint)
    assert again == local
    assert (again / "marker-left-by-test").exists()  # reused, not downloaded again


def test_parallel_ranges_reassemble_a_file_bigger_than_one_chunk(
    gcs: GcsEmulator, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_source, "CHUNK_BYTES", 4096)
    uri = gcs.upload_folder(tiny_model_dir, "gs://models/chunked")
    local = resolve_model_dir(uri, tmp_path, endpoint_url=gcs.endpoint, max_workers=8)
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    assert len(weights) > 20 * 4096
    assert (local / "model.safetensors").read_bytes() == weights


def test_single_stream_copy_gives_the_same_folder(
    gcs: GcsEmulator, tiny_model_dir: Path, tmp_path: Path
) -> None:
    uri = gcs.upload_folder(tiny_model_dir, "gs://models/single")
    local = resolve_model_dir(uri, tmp_path, endpoint_url=gcs.endpoint, parallel=False)
    assert (local / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()


def test_adapter_folder_is_rejected_before_download(
    gcs: GcsEmulator, tmp_path: Path, tiny_model_dir: Path
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    shutil.copy(tiny_model_dir / "model.safetensors", adapter / "adapter_model.safetensors")
    uri = gcs.upload_folder(adapter, "gs://models/lora-adapter")
    with pytest.raises(ModelSourceError) as caught:
        resolve_model_dir(uri, tmp_path / "cache", endpoint_url=gcs.endpoint)
    message = str(caught.value)
    assert message.startswith("gs://models/lora-adapter: config.json is missing")
    assert "LoRA adapter" in message
    assert "merged model folder, not the adapter" in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.safetensors"))


def test_gs_path_and_bucket_not_found(gcs: GcsEmulator, tmp_path: Path) -> None:
    gcs.create_bucket("models")
    with pytest.raises(ModelSourceError, match=r"gs://models/no-such-model: path not found"):
        resolve_model_dir("gs://models/no-such-model", tmp_path, endpoint_url=gcs.endpoint)
    with pytest.raises(ModelSourceError, match=r"bucket gs://no-such-bucket does not exist"):
        resolve_model_dir("gs://no-such-bucket/model", tmp_path, endpoint_url=gcs.endpoint)


class _Forbidden(BaseHTTPRequestHandler):
    """Answers like Cloud Storage does for an account without storage.objects.list."""

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": 403,
                    "message": "runner@demo.iam.gserviceaccount.com does not have "
                    "storage.objects.list access to the Google Cloud Storage bucket.",
                    "errors": [{"reason": "forbidden"}],
                }
            }
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def forbidding_storage() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_403_names_the_role_and_the_account(forbidding_storage: str, tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError) as caught:
        resolve_model_dir("gs://private/model", tmp_path, endpoint_url=forbidding_storage)
    message = str(caught.value)
    assert message.startswith("gs://private/model: 403 permission denied")
    assert "roles/storage.objectViewer" in message
    assert "runner@demo.iam.gserviceaccount.com" in message
    assert "gs://private" in message


def test_403_without_an_account_in_the_error_still_says_what_to_grant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(model_source, "_current_account", lambda: "sa@p.iam.gserviceaccount.com")
    error = OSError("Forbidden: b/private/o\nAccess denied.")
    message = str(gcs_error("gs://private/m", error))
    assert "Grant roles/storage.objectViewer on the bucket to sa@p.iam.gserviceaccount.com" in (
        message
    )


def test_local_folder_problems(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="folder does not exist"):
        resolve_model_dir(str(tmp_path / "app" / "model"))
    with pytest.raises(ModelSourceError, match="unsupported scheme"):
        resolve_model_dir("s3://bucket/model")

    no_weights = _copy_without(tiny_model_dir, tmp_path / "no-weights", "*.safetensors")
    with pytest.raises(ModelSourceError, match="no weights"):
        validate_model_dir(no_weights)
    no_tokenizer = _copy_without(tiny_model_dir, tmp_path / "no-tok", "tokenizer*")
    with pytest.raises(ModelSourceError, match="tokenizer files are missing"):
        validate_model_dir(no_tokenizer)

    no_type = _copy_without(tiny_model_dir, tmp_path / "no-type")
    config = json.loads((no_type / "config.json").read_text())
    del config["model_type"]
    (no_type / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSourceError, match=r"config\.json has no model_type key"):
        validate_model_dir(no_type)

    truncated = _copy_without(tiny_model_dir, tmp_path / "truncated")
    (truncated / "config.json").write_text('{"model_type": "gem')
    with pytest.raises(ModelSourceError, match="not valid JSON"):
        validate_model_dir(truncated)

    validate_model_dir(tiny_model_dir)  # the complete folder passes


@pytest.mark.parametrize("case", ["local folder without config.json", "gs:// path not found"])
def test_server_exits_non_zero_with_one_message(
    case: str, tiny_model_dir: Path, gcs: GcsEmulator, tmp_path: Path
) -> None:
    if case.startswith("local"):
        uri = str(_copy_without(tiny_model_dir, tmp_path / "adapter-only", "config.json"))
        expected = "config.json is missing"
    else:
        gcs.create_bucket("models")
        uri = "gs://models/typo-in-path"
        expected = "path not found"
    env = {
        **CLIENT_ENV,
        **gcs.env(),
        "PATH": "/usr/bin:/bin",
        "MODEL_URI": uri,
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "app.inference"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: {uri}: {expected}")
    assert "Traceback" not in result.stderr


def test_missing_model_uri_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.inference"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "MODEL_URI" in result.stderr
    assert "Traceback" not in result.stderr
