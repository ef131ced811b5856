"""Exact token counts from a real model folder (local and gs:// through a GCS emulator)."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gcp_storage_emulator.server import create_server
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from app.inference.model_source import gcs_filesystem
from app.tuning.convert import convert_file, sql_user_turn
from app.tuning.tokens import ModelTokens, TokenizerError
from app.tuning.validate import validate_file
from devtools.tiny_model import build_tiny_gemma3
from tests.tuning.tuning_samples import chat_example, write_lines

ROOT = Path(__file__).resolve().parents[2]
# The tiny model's tokenizer has never seen these letters together: one token per character,
# four times what the chars/4 estimate expects.
RARE = "ZQXJ"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gemma3(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def gcs_endpoint(tiny_model: Path) -> Iterator[str]:
    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket="models")
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._api._httpd.server_address[1]}"
        fs = gcs_filesystem(endpoint)
        for file in tiny_model.iterdir():
            fs.put_file(str(file), f"models/sql-gemma/{file.name}")
        yield endpoint
    finally:
        server.stop()


def test_counts_match_the_model_tokenizer(tiny_model: Path) -> None:
    counter = ModelTokens(str(tiny_model))
    reference = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    for text in ("SELECT name FROM users;", RARE * 10, "héllo wörld"):
        assert counter.count(text) == len(reference.encode(text, add_special_tokens=False).ids)
    assert counter.exact
    assert counter.count(RARE * 10) == 40


def test_cli_tokenizer_finds_what_the_estimate_misses(tiny_model: Path, tmp_path: Path) -> None:
    rows: list[object] = [chat_example(i) for i in range(200)]
    rows[7]["messages"][1]["content"] = RARE * 300  # type: ignore[index]
    dataset = write_lines(tmp_path / "chat.jsonl", rows)

    def validate(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.tuning", "validate", str(dataset), *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    estimated = validate()
    assert estimated.returncode == 0, estimated.stdout  # 1,200 chars: about 300 tokens

    exact = validate("--tokenizer", str(tiny_model), "--json")
    assert exact.returncode == 2, exact.stdout + exact.stderr
    report = json.loads(exact.stdout)
    assert report["tokens"] == {"exact": True, "method": f"exact: tokenizer from {tiny_model}"}
    assert report["findings"] == [
        {
            "severity": "error",
            "rule": "tokens",
            "line": 8,
            "message": "assistant turn 1 has 1,200 tokens; each assistant turn may have at "
            "most 1,024",
        }
    ]


def test_cli_tokenizer_folder_missing(tmp_path: Path) -> None:
    dataset = write_lines(tmp_path / "c.jsonl", [chat_example(i) for i in range(20)])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.tuning",
            "validate",
            str(dataset),
            "--tokenizer",
            str(tmp_path / "no-model"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: --tokenizer ")
    assert "folder does not exist" in result.stderr
    assert result.stdout == ""


def test_tokenizer_from_gs_through_the_emulator(
    gcs_endpoint: str, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    counter = ModelTokens("gs://models/sql-gemma", cache_dir=tmp_path / "cache")
    local = ModelTokens(str(tiny_model))
    assert counter.description == "exact: tokenizer from gs://models/sql-gemma"
    for text in ("SELECT COUNT(*) FROM orders;", RARE * 7):
        assert counter.count(text) == local.count(text)
    with pytest.raises(TokenizerError, match="gs://models/missing"):
        ModelTokens("gs://models/missing", cache_dir=tmp_path / "cache")


def test_gemma_output_renders_with_the_gemma3_chat_template(
    tiny_model: Path, tmp_path: Path
) -> None:
    rows = [chat_example(i) for i in range(20)]
    out = tmp_path / "gemma.jsonl"
    convert_file(write_lines(tmp_path / "c.jsonl", rows), "gemma", out)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    messages = json.loads(out.read_text().splitlines()[0])["messages"]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<bos><start_of_turn>user\n"
        "You are a SQL assistant for the sales database.\n\n"
        "How many orders did customer 0 place?<end_of_turn>\n"
        "<start_of_turn>model\nSELECT COUNT(*) FROM orders WHERE id = 0;<end_of_turn>\n"
        "<start_of_turn>user\nAnd their total spend?<end_of_turn>\n"
        "<start_of_turn>model\nSELECT SUM(total) FROM orders WHERE id = 0;<end_of_turn>\n"
    )
    assert validate_file(out, counter=ModelTokens(str(tiny_model))).errors == 0


def test_sql_turn_matches_what_the_inference_app_sends() -> None:
    from app.inference.protocol_generate import sql_user_turn as served_turn  # noqa: PLC0415

    schema = "CREATE TABLE users (id INT, name TEXT);\nCREATE TABLE orders (id INT);"
    question = "Which users have no orders?"
    assert sql_user_turn(schema, question) == served_turn(question, schema)
