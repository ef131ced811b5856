"""One fine-tuning run, start to finish: check, fetch, train, merge, check again, publish."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.finetune import storage
from app.finetune.dataset import load_conversations, tokenize_all
from app.finetune.errors import FineTuneError
from app.finetune.hf_token import load_hf_token
from app.finetune.training import TrainingOptions, device_and_dtype, train_and_merge
from app.inference.model_source import ModelSourceError, resolve_model_dir, validate_model_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FineTuneRequest:
    dataset: str
    base: str
    output: str
    options: TrainingOptions
    dataset_format: str = "auto"
    # Checkpoints and downloads; the same folder on a rerun resumes training.
    work_dir: Path | None = None


def default_work_dir(request: FineTuneRequest) -> Path:
    key = hashlib.sha256(
        f"{request.dataset}\n{request.base}\n{request.output}".encode()
    ).hexdigest()
    return Path(tempfile.gettempdir()) / "gemma-finetune" / key[:16]


def fine_tune(request: FineTuneRequest) -> dict[str, Any]:
    """Run the whole loop and return the marker written next to the published model."""
    started = time.monotonic()
    work_dir = request.work_dir or default_work_dir(request)
    work_dir.mkdir(parents=True, exist_ok=True)
    storage.check_output_writable(request.output)

    dataset_path = storage.fetch_dataset(request.dataset, work_dir)
    conversations = load_conversations(dataset_path, request.dataset_format)
    logger.info(
        "finetune: %s: %d examples pass app.tuning's checks", request.dataset, len(conversations)
    )

    load_hf_token()
    try:
        base_dir = resolve_model_dir(request.base, work_dir / "base")
    except ModelSourceError as error:
        raise FineTuneError(f"--base {error}") from error
    from transformers import AutoTokenizer  # noqa: PLC0415 - heavy import, after the checks

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if not tokenizer.chat_template:
        raise FineTuneError(
            f"--base {request.base}: the tokenizer has no chat template, so training prompts "
            "would not match what the inference app sends. Use an instruction-tuned Gemma 3 "
            "(for example google/gemma-3-1b-it)."
        )
    examples = tokenize_all(conversations, tokenizer, request.options.max_seq_length)
    if len(examples) < len(conversations):
        logger.warning(
            "finetune: %d examples are longer than --max-seq-length %d tokens and are left out",
            len(conversations) - len(examples),
            request.options.max_seq_length,
        )

    merged_dir = work_dir / "merged"
    result = train_and_merge(base_dir, examples, request.options, work_dir, merged_dir)
    try:
        validate_model_dir(merged_dir, uri=f"merged model for {request.output}")
    except ModelSourceError as error:
        raise FineTuneError(
            f"the merged model failed the inference app's checks: {error}"
        ) from error

    device, dtype = device_and_dtype()
    about = {
        "base": request.base,
        "dataset": request.dataset,
        "dataset_sha256": storage.file_digest(dataset_path),
        "examples": len(examples),
        "options": request.options.as_json(),
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "training_loss": result["training_loss"],
        "steps": result["steps"],
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    marker = storage.publish_folder(merged_dir, request.output, about)
    logger.info(
        "finetune: published %s (%d files) in %.0f s; serve it with MODEL_URI=%s",
        request.output,
        len(marker["files"]),
        time.monotonic() - started,
        request.output,
    )
    return marker
