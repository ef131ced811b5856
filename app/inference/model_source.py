"""Turn a model URI (gs://, local folder or Hugging Face repo id) into a validated local folder.

transformers never sees a ``gs://`` string (it would take it for a malformed Hub repo id):
buckets are downloaded to a local cache first, many byte ranges in parallel. Every problem
becomes one ``ModelSourceError`` whose message names the URI, what is missing and the likely
fix (a gs:// path handed to transformers, a 403 on the bucket, a folder without config.json).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
CHUNK_BYTES = 32 * 1024 * 1024
_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMPLETE_MARKER = ".download-complete.json"


class ModelSourceError(Exception):
    """A model folder cannot be used; ``str()`` is the one message to show the user."""


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "gemma-stack-models"


def resolve_model_dir(
    uri: str,
    cache_dir: Path | None = None,
    *,
    max_workers: int = 16,
    parallel: bool = True,
    endpoint_url: str | None = None,
) -> Path:
    """Return a local folder holding a complete merged model for ``uri``.

    ``gs://bucket/path`` is downloaded under ``cache_dir`` (reused when the objects did not
    change); an existing folder is used in place; ``namespace/name`` is fetched from the
    Hugging Face Hub. ``parallel=False`` copies one file at a time in one stream (the
    benchmark's baseline). ``endpoint_url`` overrides the Cloud Storage endpoint; by default
    ``STORAGE_EMULATOR_HOST`` is honoured.
    """
    uri = uri.strip()
    if not uri:
        raise ModelSourceError(
            "MODEL_URI is empty: set it to gs://BUCKET/PATH of the merged model folder, "
            "a local folder, or a Hugging Face repo id like google/gemma-3-1b-it."
        )
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    if uri.startswith("gs://"):
        local = download_gcs_folder(
            uri, cache_dir, max_workers=max_workers, parallel=parallel, endpoint_url=endpoint_url
        )
    elif "://" in uri:
        raise ModelSourceError(
            f"{uri}: unsupported scheme; use gs://BUCKET/PATH, a local folder or a Hugging Face "
            "repo id."
        )
    else:
        path = Path(uri).expanduser()
        if path.is_dir():
            local = path
        elif _HF_REPO_ID.match(uri) and not uri.startswith((".", "/")):
            local = _download_hf(uri, cache_dir)
        else:
            raise ModelSourceError(
                f"{uri}: folder does not exist. Mount or copy the merged model folder there, or "
                "set MODEL_URI to gs://BUCKET/PATH so the server downloads it at start-up."
            )
    validate_model_dir(local, uri=uri)
    return local


def validate_model_dir(path: Path, uri: str | None = None) -> None:
    """Raise ``ModelSourceError`` unless ``path`` is a complete merged model folder."""
    path = Path(path)
    name = uri or str(path)
    if not path.is_dir():
        raise ModelSourceError(
            f"{name}: folder does not exist. Mount or copy the merged model folder there."
        )
    check_file_names({p.name for p in path.iterdir() if p.is_file()}, name)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelSourceError(
            f"{name}: config.json is not valid JSON ({error}); the upload may be truncated. "
            "Copy the merged model folder again."
        ) from error
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ModelSourceError(
            f"{name}: config.json has no model_type key, so transformers cannot tell which "
            "model it is. Save the merged model with save_pretrained() (it writes model_type, "
            'e.g. "gemma3_text") and upload that config.json.'
        )


def check_file_names(files: set[str], name: str) -> None:
    """Check a folder's file names (top level) before anything is downloaded or loaded."""
    if "config.json" not in files:
        hint = (
            "this looks like a LoRA adapter (adapter_config.json found); "
            if "adapter_config.json" in files
            else ""
        )
        raise ModelSourceError(
            f"{name}: config.json is missing ({hint}found: {_listing(files)}). Upload the merged "
            "model folder, not the adapter: merge the adapter into the base model "
            "(model.merge_and_unload()), save_pretrained() the result and its tokenizer, "
            "and copy that whole folder."
        )
    if not any(fnmatch.fnmatch(f, pattern) for f in files for pattern in WEIGHT_PATTERNS):
        raise ModelSourceError(
            f"{name}: no weights (model.safetensors or pytorch_model.bin) next to config.json "
            f"(found: {_listing(files)}). Upload the merged model's weight files too."
        )
    if not any(f in files for f in TOKENIZER_FILES) or "tokenizer_config.json" not in files:
        raise ModelSourceError(
            f"{name}: tokenizer files are missing (need tokenizer_config.json and "
            f"tokenizer.json or tokenizer.model; found: {_listing(files)}). Save the tokenizer "
            "with tokenizer.save_pretrained() into the merged folder and upload it."
        )


def _listing(files: set[str]) -> str:
    shown = sorted(f for f in files if not f.startswith("."))
    return ", ".join(shown[:8]) + (" ..." if len(shown) > 8 else "") if shown else "nothing"


# --- Cloud Storage ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Object:
    path: str  # bucket/key
    relative: str
    size: int
    etag: str


def gcs_filesystem(endpoint_url: str | None = None) -> Any:
    """A gcsfs filesystem; anonymous when an emulator endpoint is used."""
    # The core class skips gcsfs's zonal/HNS bucket-type probe over gRPC, which stalls
    # for a minute against emulators and is not needed to read objects; the switch also
    # spares importing the gRPC clients.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    from gcsfs.core import GCSFileSystem  # noqa: PLC0415 - heavy import, only for gs://

    endpoint = endpoint_url or os.environ.get("STORAGE_EMULATOR_HOST") or None
    if endpoint and not endpoint.startswith(("http://", "https://")):
        endpoint = f"http://{endpoint}"
    token = "anon" if endpoint else None
    return GCSFileSystem(endpoint_url=endpoint, token=token, skip_instance_cache=True)


def download_gcs_folder(
    uri: str,
    cache_dir: Path,
    *,
    max_workers: int = 16,
    parallel: bool = True,
    endpoint_url: str | None = None,
) -> Path:
    """Copy ``gs://bucket/prefix`` into ``cache_dir`` and return the local folder."""
    bucket_and_prefix = uri.removeprefix("gs://").strip("/")
    bucket = bucket_and_prefix.split("/", 1)[0]
    if not bucket:
        raise ModelSourceError(f"{uri}: no bucket name; use gs://BUCKET/PATH/TO/MODEL.")
    fs = gcs_filesystem(endpoint_url)
    objects = _list_objects(fs, uri, bucket, bucket_and_prefix)
    # Fail before downloading gigabytes of an adapter or a half-uploaded folder.
    check_file_names({o.relative for o in objects if "/" not in o.relative}, uri)
    digest = hashlib.sha256(
        json.dumps([(o.relative, o.size, o.etag) for o in objects]).encode()
    ).hexdigest()
    dest = Path(cache_dir) / re.sub(r"[^\w.-]+", "_", bucket_and_prefix)
    marker = dest / _COMPLETE_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("digest") == digest:
        logger.info("model: %s already in cache at %s", uri, dest)
        return dest

    total = sum(o.size for o in objects)
    logger.info(
        "model: downloading %d files (%.1f MB) from %s to %s",
        len(objects),
        total / 1e6,
        uri,
        dest,
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    started = time.monotonic()
    try:
        progress = _Progress(total)
        if parallel:
            _download_parallel(fs, objects, staging, progress, max_workers)
        else:
            for obj in objects:
                target = staging / obj.relative
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(obj.path, str(target))
                progress.add(obj.size)
        (staging / _COMPLETE_MARKER).write_text(json.dumps({"uri": uri, "digest": digest}))
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    except ModelSourceError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise gcs_error(uri, error) from error
    seconds = time.monotonic() - started
    logger.info(
        "model: downloaded %.1f MB in %.1f s (%.0f MB/s)",
        total / 1e6,
        seconds,
        total / 1e6 / max(seconds, 1e-9),
    )
    return dest


def _list_objects(fs: Any, uri: str, bucket: str, bucket_and_prefix: str) -> list[_Object]:
    try:
        found = fs.find(bucket_and_prefix, detail=True)
    except FileNotFoundError:
        found = {}
    except Exception as error:
        raise gcs_error(uri, error) from error
    prefix = bucket_and_prefix.rstrip("/") + "/"
    objects = [
        _Object(
            path=path,
            relative=path[len(prefix) :],
            size=int(info.get("size") or 0),
            etag=str(info.get("etag") or info.get("generation") or ""),
        )
        for path, info in sorted(found.items())
        if path.startswith(prefix) and info.get("type") != "directory" and not path.endswith("/")
    ]
    if not objects:
        try:
            bucket_exists = fs.exists(bucket)
        except Exception as error:
            raise gcs_error(uri, error) from error
        if not bucket_exists:
            raise ModelSourceError(
                f"{uri}: bucket gs://{bucket} does not exist (or is in another project). "
                "Check the bucket name in MODEL_URI."
            )
        raise ModelSourceError(
            f"{uri}: path not found: no objects under it. Check the path in MODEL_URI "
            f"(gsutil ls gs://{bucket}/) and upload the merged model folder there."
        )
    return objects


class _Progress:
    """Logs download progress at most every few seconds, from any thread."""

    def __init__(self, total: int, every_s: float = 5.0) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.every_s = every_s
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        with self.lock:
            self.done += nbytes
            now = time.monotonic()
            if now - self.last >= self.every_s:
                self.last = now
                logger.info(
                    "model: %.0f%% (%.1f of %.1f MB)",
                    100 * self.done / self.total,
                    self.done / 1e6,
                    self.total / 1e6,
                )


def _download_parallel(
    fs: Any, objects: list[_Object], staging: Path, progress: _Progress, max_workers: int
) -> None:
    # Large weight files dominate: split every file into byte ranges written with pwrite, so
    # one 2 GB safetensors file downloads over many connections at once.
    jobs: list[tuple[_Object, int, int]] = []
    for obj in objects:
        target = staging / obj.relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as handle:
            handle.truncate(obj.size)
        jobs.extend(
            (obj, start, min(start + CHUNK_BYTES, obj.size))
            for start in range(0, max(obj.size, 1), CHUNK_BYTES)
        )

    def fetch(job: tuple[_Object, int, int]) -> None:
        obj, start, end = job
        if end <= start:
            return
        data = fs.cat_file(obj.path, start=start, end=end)
        if len(data) != end - start:
            raise ModelSourceError(
                f"gs://{obj.path}: got {len(data)} bytes for range {start}-{end}; the object "
                "changed during download. Restart the server to download it again."
            )
        fd = os.open(staging / obj.relative, os.O_WRONLY)
        try:
            os.pwrite(fd, data, start)
        finally:
            os.close(fd)
        progress.add(len(data))

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="gcs") as pool:
        for _ in pool.map(fetch, jobs):
            pass


def gcs_error(uri: str, error: BaseException) -> ModelSourceError:
    """Map a gcsfs/google-auth exception to one actionable message."""
    text = str(error)
    if isinstance(error, ModelSourceError):
        return error
    if "Forbidden" in text or "403" in text or isinstance(error, PermissionError):
        named = re.search(r"([\w.+-]+@[\w.-]+) does not have", text)
        account = named.group(1) if named else _current_account()
        bucket = uri.removeprefix("gs://").split("/", 1)[0]
        return ModelSourceError(
            f"{uri}: 403 permission denied reading the bucket. Grant roles/storage.objectViewer "
            f"on the bucket to {account}: gcloud storage buckets add-iam-policy-binding "
            f"gs://{bucket} --member=serviceAccount:{account} "
            "--role=roles/storage.objectViewer"
        )
    if isinstance(error, FileNotFoundError) or "404" in text or "Not Found" in text:
        return ModelSourceError(
            f"{uri}: path not found. Check the bucket and path in MODEL_URI and that the "
            "merged model folder was uploaded there."
        )
    if "credentials" in text.lower() or "DefaultCredentialsError" in type(error).__name__:
        return ModelSourceError(
            f"{uri}: no Google Cloud credentials found. On Cloud Run or GKE, run the service as "
            "a service account that can read the bucket; locally, run "
            "`gcloud auth application-default login`."
        )
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return ModelSourceError(
        f"{uri}: download failed ({type(error).__name__}: {first_line}). Check network access "
        "to Cloud Storage and that the path exists."
    )


def _current_account() -> str:
    """The service account this process runs as, or a hint where to find it."""
    try:
        import google.auth  # noqa: PLC0415

        credentials, _ = google.auth.default()
        email = getattr(credentials, "service_account_email", None)
        if email and email != "default":
            return str(email)
    except Exception:  # noqa: S110 - best effort; the hint below still helps
        pass
    try:
        import urllib.request  # noqa: PLC0415

        request = urllib.request.Request(
            "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/"
            "default/email",
            headers={"Metadata-Flavor": "Google"},
        )
        with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310
            return str(response.read().decode())
    except Exception:
        return "the service account this server runs as"


# --- Hugging Face Hub -------------------------------------------------------------------


def _download_hf(repo_id: str, cache_dir: Path) -> Path:
    try:
        from huggingface_hub import snapshot_download  # noqa: PLC0415
        from huggingface_hub.errors import (  # noqa: PLC0415
            GatedRepoError,
            RepositoryNotFoundError,
        )
    except ImportError as error:  # pragma: no cover - transformers depends on it
        raise ModelSourceError(f"{repo_id}: huggingface_hub is not installed") from error
    try:
        return Path(
            snapshot_download(
                repo_id,
                cache_dir=str(cache_dir / "huggingface"),
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"],
            )
        )
    except GatedRepoError as error:
        raise ModelSourceError(
            f"{repo_id}: the Hugging Face repo is gated. Accept its license on the Hub and set "
            "HF_TOKEN (from Secret Manager) for this server."
        ) from error
    except RepositoryNotFoundError as error:
        raise ModelSourceError(
            f"{repo_id}: no such Hugging Face repo (or it is private: set HF_TOKEN)."
        ) from error
    except Exception as error:
        raise ModelSourceError(
            f"{repo_id}: download from the Hugging Face Hub failed "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            "Check network access and HF_TOKEN, or copy the model to gs:// and use that URI."
        ) from error
