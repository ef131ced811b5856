"""The whole loop offline: convert, upload, train, publish to gs://, serve, ask a trained prompt."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from app.finetune.storage import MARKER_NAME
from devtools.gcs_emulator import GcsEmulator
from tests.finetune.finetune_samples import FAST_FLAGS, QUESTIONS_AND_SQL, SCHEMA, run_finetune
from tests.inference.inference_fixtures import start_inference


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_converted_dataset_trains_a_model_the_inference_app_serves_from_gs(
    gcs: GcsEmulator, converted_dataset: Path, base_model: Path, tmp_path: Path
) -> None:
    gcs.create_bucket("tuning-data")
    gcs.filesystem().put_file(str(converted_dataset), "tuning-data/sql/train.jsonl")
    base_uri = gcs.upload_folder(base_model, "gs://base-models/tiny-gemma3")
    output = "gs://tuned-models/gemma-sql"
    gcs.create_bucket("tuned-models")

    trained = run_finetune(
        "train",
        "--dataset=gs://tuning-data/sql/train.jsonl",
        f"--base={base_uri}",
        f"--output={output}",
        "--epochs=120",
        *FAST_FLAGS,
        f"--work-dir={tmp_path / 'work'}",
        env=gcs.env(),
    )
    assert trained.returncode == 0, trained.stderr[-4000:]
    assert "10 examples pass app.tuning's checks" in trained.stderr
    assert "finetune: step 120 of 120 (100%)" in trained.stderr

    fs = gcs.filesystem()
    published = {p.rsplit("/", 1)[-1] for p in fs.find("tuned-models/gemma-sql")}
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER_NAME} <= published
    assert not any(name.startswith("adapter_") for name in published)  # merged, not an adapter
    marker = json.loads(fs.cat_file(f"tuned-models/gemma-sql/{MARKER_NAME}"))
    assert marker["base"] == base_uri
    assert marker["dataset"] == "gs://tuning-data/sql/train.jsonl"
    assert marker["examples"] == 10
    assert marker["files"]["config.json"]["bytes"] > 0

    with start_inference({"MODEL_URI": output, **gcs.env()}, tmp_path) as server:
        server.wait_ready()
        for question, sql in (QUESTIONS_AND_SQL[3], QUESTIONS_AND_SQL[8]):
            reply = httpx.post(
                f"{server.url}/generate",
                json={"type": "sql", "prompt": question, "schema": SCHEMA, "max_tokens": 64},
                timeout=120,
            )
            assert reply.status_code == 200, reply.text
            assert reply.json() == {"response": sql}
