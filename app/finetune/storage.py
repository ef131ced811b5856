"""Where the fine-tuning program reads datasets and writes merged models: gs:// or a local path.

A published folder is complete only once its marker object, ``finetune-complete.json``, exists:
the marker is deleted before anything else is written and uploaded last, after every weight
and config file, so a reader that waits for it never sees a half-written model. The inference
app's model-folder check refuses a folder without ``config.json``, so ``config.json`` goes up
just before the marker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from app.finetune.errors import FineTuneError
from app.inference.model_source import ModelSourceError, gcs_error, gcs_filesystem

logger = logging.getLogger(__name__)

MARKER_NAME = "finetune-complete.json"
# Uploaded just before the marker: without it the inference app refuses the folder.
LAST_BEFORE_MARKER = "config.json"


def is_gs(uri: str) -> bool:
    return uri.startswith("gs://")


def split_gs(uri: str) -> tuple[str, str]:
    """``gs://bucket/some/path`` -> (``bucket``, ``some/path``); the path may be empty."""
    bucket, _, path = uri.removeprefix("gs://").strip("/").partition("/")
    if not bucket:
        raise FineTuneError(f"{uri}: no bucket name; write gs://BUCKET/PATH.")
    return bucket, path.strip("/")


def fetch_dataset(uri: str, work_dir: Path) -> Path:
    """A local copy of the dataset file ``uri`` (a local path is used in place)."""
    if not is_gs(uri):
        if "://" in uri:
            raise FineTuneError(f"{uri}: unsupported scheme; give a local JSONL file or gs://.")
        return Path(uri).expanduser()
    bucket, path = split_gs(uri)
    if not path or path.endswith("/"):
        raise FineTuneError(f"{uri}: name the JSONL file, e.g. gs://{bucket}/train.jsonl.")
    target = work_dir / "dataset" / Path(path).name
    target.parent.mkdir(parents=True, exist_ok=True)
    fs = gcs_filesystem()
    try:
        fs.get_file(f"{bucket}/{path}", str(target))
    except FileNotFoundError as error:
        raise FineTuneError(
            f"{uri}: no such object. Upload the converted dataset there "
            f"(gcloud storage cp train.jsonl {uri}) or fix --dataset."
        ) from error
    except Exception as error:
        raise FineTuneError(str(gcs_error(uri, error))) from error
    return target


def read_marker(uri: str, endpoint_url: str | None = None) -> dict[str, Any] | None:
    """The completion marker of a published model, or None when it is not (yet) complete."""
    try:
        if is_gs(uri):
            bucket, path = split_gs(uri)
            fs = gcs_filesystem(endpoint_url)
            name = f"{bucket}/{path}/{MARKER_NAME}"
            if not fs.exists(name):
                return None
            raw = fs.cat_file(name)
        else:
            marker = Path(uri) / MARKER_NAME
            if not marker.is_file():
                return None
            raw = marker.read_bytes()
    except (FileNotFoundError, ModelSourceError):
        return None
    try:
        found = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return found if isinstance(found, dict) else None


def check_output_writable(uri: str) -> None:
    """Fail before training, not after it, when the output cannot be written."""
    if not is_gs(uri):
        if "://" in uri:
            raise FineTuneError(f"{uri}: unsupported scheme; use gs://BUCKET/PATH or a folder.")
        parent = Path(uri).expanduser().resolve().parent
        if not parent.is_dir():
            raise FineTuneError(f"{uri}: the folder {parent} does not exist; create it first.")
        return
    bucket, path = split_gs(uri)
    if not path:
        raise FineTuneError(
            f"{uri}: give a folder inside the bucket, e.g. gs://{bucket}/gemma-tuned, so the "
            "model does not mix with the bucket's other objects."
        )
    fs = gcs_filesystem()
    probe = f"{bucket}/{path}.write-check"
    try:
        with fs.open(probe, "wb") as handle:
            handle.write(b"checked by app.finetune before training\n")
        fs.rm_file(probe)
    except Exception as error:
        raise write_error(uri, bucket, error) from error


def write_error(uri: str, bucket: str, error: BaseException) -> FineTuneError:
    text = str(error)
    if "Forbidden" in text or "403" in text or isinstance(error, PermissionError):
        return FineTuneError(
            f"{uri}: 403 permission denied writing to gs://{bucket}. Grant the training "
            "job's service account roles/storage.objectUser on that bucket (GemmaFineTuneJob "
            "does this for the bucket named in its output)."
        )
    if "404" in text or isinstance(error, FileNotFoundError):
        return FineTuneError(
            f"{uri}: bucket gs://{bucket} does not exist (or is in another project). "
            "Create it or fix --output."
        )
    return FineTuneError(str(gcs_error(uri, error)))


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish_folder(folder: Path, uri: str, about: dict[str, Any]) -> dict[str, Any]:
    """Write ``folder`` to ``uri`` with the marker last; return the marker's content."""
    files = sorted(
        (p for p in folder.rglob("*") if p.is_file()),
        key=lambda p: (p.name == LAST_BEFORE_MARKER, p.relative_to(folder).as_posix()),
    )
    marker = {
        **about,
        "files": {
            p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": file_digest(p)}
            for p in files
        },
    }
    body = json.dumps(marker, indent=2, sort_keys=True).encode()
    if is_gs(uri):
        _publish_gs(files, folder, uri, body)
    else:
        _publish_local(folder, Path(uri).expanduser(), body)
    return marker


def _publish_gs(files: list[Path], folder: Path, uri: str, marker: bytes) -> None:
    bucket, path = split_gs(uri)
    fs = gcs_filesystem()
    total = sum(p.stat().st_size for p in files)
    try:
        # The old marker goes first, then the old objects: nothing vouches for a mixed folder.
        if fs.exists(f"{bucket}/{path}/{MARKER_NAME}"):
            fs.rm_file(f"{bucket}/{path}/{MARKER_NAME}")
        old = [p for p in fs.find(f"{bucket}/{path}/") if not p.endswith("/")]
        if old:
            logger.info("finetune: replacing %d objects under %s", len(old), uri)
            for name in sorted(old, key=lambda n: not n.endswith(f"/{LAST_BEFORE_MARKER}")):
                fs.rm_file(name)
        done = 0
        for local in files:
            relative = local.relative_to(folder).as_posix()
            fs.put_file(str(local), f"{bucket}/{path}/{relative}")
            done += local.stat().st_size
            logger.info(
                "finetune: uploaded %s (%.0f%% of %.1f MB)",
                relative,
                100 * done / total,
                total / 1e6,
            )
        with fs.open(f"{bucket}/{path}/{MARKER_NAME}", "wb") as handle:
            handle.write(marker)
    except FineTuneError:
        raise
    except Exception as error:
        raise write_error(uri, bucket, error) from error


def _publish_local(folder: Path, target: Path, marker: bytes) -> None:
    # A rename within one filesystem is atomic; the old folder goes only once the new one is whole.
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shutil.copytree(folder, staging, dirs_exist_ok=True)
        (staging / MARKER_NAME).write_bytes(marker)
        if target.exists():
            retired = target.with_name(f".{target.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            target.rename(retired)
            staging.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
