"""app.finetune's parts: refusals before any training, labels on the model's turns, resuming,
and publishing with the marker last."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from app.finetune import storage
from app.finetune.dataset import IGNORE, Conversation, load_conversations, tokenize
from app.finetune.errors import FineTuneError
from app.finetune.training import TrainingOptions
from devtools.gcs_emulator import GcsEmulator
from tests.finetune.finetune_samples import FAST_FLAGS, run_finetune


def test_a_dataset_with_errors_stops_before_training(base_model: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "bad.jsonl"
    good = json.dumps({"input_text": "q", "output_text": "a"})
    dataset.write_text("\n".join([good] * 11 + ['{"input_text": "no answer"}']) + "\n")
    output = tmp_path / "out"

    done = run_finetune(
        "train", f"--dataset={dataset}", f"--base={base_model}", f"--output={output}"
    )

    assert done.returncode == 2
    assert "the dataset has errors, so no training started" in done.stderr
    assert "python -m app.tuning validate bad.jsonl" in done.stderr
    assert "line 12" in done.stderr
    assert "loading" not in done.stderr  # the base model was never loaded
    assert not output.exists()


def test_a_missing_output_bucket_is_named_before_training(
    gcs: GcsEmulator, converted_dataset: Path, base_model: Path, tmp_path: Path
) -> None:
    done = run_finetune(
        "train",
        f"--dataset={converted_dataset}",
        f"--base={base_model}",
        "--output=gs://no-such-bucket/model",
        env=gcs.env(),
    )

    assert done.returncode == 2
    assert "bucket gs://no-such-bucket does not exist" in done.stderr
    assert "examples pass" not in done.stderr


def test_an_adapter_folder_as_base_gets_the_inference_apps_message(
    converted_dataset: Path, tmp_path: Path
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")

    done = run_finetune(
        "train", f"--dataset={converted_dataset}", f"--base={adapter}", f"--output={tmp_path / 'o'}"
    )

    assert done.returncode == 2
    assert "--base" in done.stderr
    assert "looks like a LoRA adapter" in done.stderr


def test_only_the_models_turns_and_their_end_are_trained(
    base_model: Path, converted_dataset: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    conversation = load_conversations(converted_dataset)[0]
    example = tokenize(conversation, tokenizer, max_length=4096)
    assert example is not None

    trained = [
        t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE
    ]
    answer = conversation.messages[-1]["content"]
    assert tokenizer.decode(trained) == answer + "<end_of_turn>"
    prompt = tokenizer.apply_chat_template(
        list(conversation.messages[:-1]), tokenize=False, add_generation_prompt=True
    )
    # The ids are what the inference app sends: the chat template's prompt, then the answer.
    assert tokenizer.decode(example.input_ids).startswith(prompt)
    assert tokenize(conversation, tokenizer, max_length=8) is None


def test_multi_turn_chat_trains_every_model_turn(base_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    conversation = Conversation(
        (
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
            {"role": "assistant", "content": "second answer"},
        )
    )
    example = tokenize(conversation, tokenizer, max_length=4096)
    assert example is not None
    spans, current = [], []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label == IGNORE and current:
            spans.append(tokenizer.decode(current))
            current = []
        elif label != IGNORE:
            current.append(token)
    assert spans == ["first answer<end_of_turn>", "second answer<end_of_turn>"]


def test_bad_hyper_parameters_are_all_named() -> None:
    with pytest.raises(FineTuneError) as caught:
        TrainingOptions(learning_rate=0, lora_r=0, lora_dropout=1.5)
    message = str(caught.value)
    assert "--learning-rate must be above 0" in message
    assert "--lora-r must be at least 1" in message
    assert "--lora-dropout must be in [0, 1)" in message


@pytest.mark.slow
def test_a_rerun_resumes_from_the_last_checkpoint(
    converted_dataset: Path, base_model: Path, tmp_path: Path
) -> None:
    common = (
        "train",
        f"--dataset={converted_dataset}",
        f"--base={base_model}",
        f"--output={tmp_path / 'model'}",
        f"--work-dir={tmp_path / 'work'}",
        "--save-steps=2",
        *FAST_FLAGS,
    )
    first = run_finetune(*common, "--max-steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "work" / "checkpoints" / "checkpoint-4").is_dir()

    second = run_finetune(*common, "--max-steps=6")

    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from" in second.stderr
    assert "checkpoint-4" in second.stderr
    marker = json.loads((tmp_path / "model" / storage.MARKER_NAME).read_text())
    assert marker["steps"] == 6
    assert (tmp_path / "model" / "config.json").is_file()


class _Recording:
    """A gcsfs filesystem that records the order objects are written in."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self.written: list[str] = []

    def put_file(self, local: str, remote: str) -> None:
        self.fs.put_file(local, remote)
        self.written.append(remote.rsplit("/", 1)[-1])

    def open(self, name: str, mode: str = "rb") -> Any:
        if "w" in mode:
            self.written.append(name.rsplit("/", 1)[-1])
        return self.fs.open(name, mode)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fs, name)


def test_publishing_replaces_old_objects_and_writes_the_marker_last(
    gcs: GcsEmulator, base_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint)
    gcs.create_bucket("publish")
    fs = gcs.filesystem()
    fs.pipe_file("publish/model/stale-shard.safetensors", b"old")
    fs.pipe_file(f"publish/model/{storage.MARKER_NAME}", b"{}")
    recording = _Recording(gcs.filesystem())
    monkeypatch.setattr(storage, "gcs_filesystem", lambda endpoint_url=None: recording)

    marker = storage.publish_folder(base_model, "gs://publish/model", {"base": "test"})

    assert recording.written[-2:] == ["config.json", storage.MARKER_NAME]
    names = {p.rsplit("/", 1)[-1] for p in fs.find("publish/model")}
    assert "stale-shard.safetensors" not in names
    assert names == {p.name for p in base_model.iterdir()} | {storage.MARKER_NAME}
    assert storage.read_marker("gs://publish/model") == marker
    assert (
        marker["files"]["model.safetensors"]["bytes"]
        == (base_model / "model.safetensors").stat().st_size
    )
