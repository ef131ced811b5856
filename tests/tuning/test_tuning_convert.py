"""Conversion to Gemma chat-format and Gemini tuning JSONL: exact shapes, round trips, bad input."""

# ruff: noqa: S608 - the SQL strings are training answers, never run

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.tuning.convert import convert_file
from app.tuning.validate import UnreadableDatasetError, validate_file
from tests.tuning.tuning_samples import chat_example, text_example, write_lines

ROOT = Path(__file__).resolve().parents[2]

# The SQL user turn, typed out here so a drift in the code cannot go unnoticed.
SQL_TURN = (
    "Given the <USER_QUERY> and the <SCHEMA>, generate the corresponding SQL command to "
    "retrieve the desired data, considering the query's syntax, semantics, and schema "
    "constraints.\n"
    "\n"
    "<SCHEMA>\n"
    "CREATE TABLE users (id INT, name TEXT);\n"
    "</SCHEMA>\n"
    "\n"
    "<USER_QUERY>\n"
    "How many users are there?\n"
    "</USER_QUERY>"
)


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_text_to_gemma(tmp_path: Path, text_rows: list[object]) -> None:
    out = tmp_path / "gemma.jsonl"
    result = convert_file(write_lines(tmp_path / "t.jsonl", text_rows), "gemma", out)
    assert (result.written, result.errors, result.source_format) == (100, 0, "text")
    records = read_jsonl(out)
    first = text_example(0)
    assert records[0] == {
        "messages": [
            {"role": "user", "content": first["input_text"]},
            {"role": "model", "content": first["output_text"]},
        ]
    }
    check = validate_file(out)
    assert check.format == "gemma"
    assert (check.exit_code, check.examples) == (0, 100)
    # Written through a temporary file, yet with the permissions a plain write would give.
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma.jsonl", "t.jsonl"]


def test_chat_to_gemma_folds_context_into_first_user_turn(
    tmp_path: Path, chat_rows: list[object]
) -> None:
    out = tmp_path / "gemma.jsonl"
    convert_file(write_lines(tmp_path / "c.jsonl", chat_rows), "gemma", out)
    records = read_jsonl(out)
    assert len(records) == 200
    source = chat_example(0)
    messages = source["messages"]
    assert records[0] == {
        "messages": [
            {
                "role": "user",
                "content": f"{source['context']}\n\n{messages[0]['content']}",  # type: ignore[index]
            },
            {"role": "model", "content": messages[1]["content"]},  # type: ignore[index]
            {"role": "user", "content": messages[2]["content"]},  # type: ignore[index]
            {"role": "model", "content": messages[3]["content"]},  # type: ignore[index]
        ]
    }
    assert validate_file(out, "gemma").exit_code == 0


def test_chat_to_gemini_tuning(tmp_path: Path, chat_rows: list[object]) -> None:
    out = tmp_path / "gemini.jsonl"
    convert_file(write_lines(tmp_path / "c.jsonl", chat_rows), "gemini-tuning", out)
    record = read_jsonl(out)[0]
    source = chat_example(0)
    assert record["systemInstruction"] == {
        "role": "system",
        "parts": [{"text": source["context"]}],
    }
    assert record["contents"] == [
        {"role": role, "parts": [{"text": m["content"]}]}  # type: ignore[index]
        for role, m in zip(["user", "model", "user", "model"], source["messages"], strict=True)  # type: ignore[arg-type]
    ]
    check = validate_file(out)
    assert (check.format, check.exit_code) == ("gemini-tuning", 0)


def test_text_to_gemini_has_no_system_instruction(tmp_path: Path, text_rows: list[object]) -> None:
    out = tmp_path / "gemini.jsonl"
    convert_file(write_lines(tmp_path / "t.jsonl", text_rows), "gemini-tuning", out)
    record = read_jsonl(out)[5]
    assert set(record) == {"contents"}
    assert validate_file(out, "gemini-tuning").exit_code == 0


def test_round_trip_gemma_gemini_gemma(tmp_path: Path, chat_rows: list[object]) -> None:
    gemma = tmp_path / "gemma.jsonl"
    gemini = tmp_path / "gemini.jsonl"
    again = tmp_path / "again.jsonl"
    convert_file(write_lines(tmp_path / "c.jsonl", chat_rows), "gemma", gemma)
    assert convert_file(gemma, "gemini-tuning", gemini).source_format == "gemma"
    assert convert_file(gemini, "gemma", again).source_format == "gemini-tuning"
    assert read_jsonl(again) == read_jsonl(gemma)


def test_sql_builds_brief_user_turn_via_cli(tmp_path: Path) -> None:
    rows: list[object] = [
        {
            "schema": "CREATE TABLE users (id INT, name TEXT);",
            "question": "How many users are there?" if i == 0 else f"Who is user {i}?",
            "sql": "SELECT COUNT(*) FROM users;"
            if i == 0
            else f"SELECT name FROM users WHERE id={i};",
        }
        for i in range(100)
    ]
    rows[1] = {
        "schema": "CREATE TABLE t (a INT);",
        "question": "All a?",
        "output_text": "SELECT a FROM t;",
    }
    out = tmp_path / "sql.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.tuning",
            "convert",
            str(write_lines(tmp_path / "s.jsonl", rows)),
            "--to",
            "gemma",
            str(out),
            "--sql",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wrote 100 examples" in result.stdout
    assert "checked" in result.stdout
    records = read_jsonl(out)
    assert records[0] == {
        "messages": [
            {"role": "user", "content": SQL_TURN},
            {"role": "model", "content": "SELECT COUNT(*) FROM users;"},
        ]
    }
    assert records[1]["messages"][1] == {"role": "model", "content": "SELECT a FROM t;"}  # type: ignore[index]
    # The SQL turn's tags are used the same way in every example.
    assert validate_file(out).findings == []


def test_sql_missing_fields_name_the_line(tmp_path: Path) -> None:
    rows: list[object] = [{"schema": "s", "question": f"q{i}", "sql": "x"} for i in range(20)]
    rows[4] = {"schema": "s", "sql": "x"}
    rows[9] = {"schema": "s", "question": "q"}
    result = convert_file(
        write_lines(tmp_path / "s.jsonl", rows), "gemma", tmp_path / "o.jsonl", sql=True
    )
    assert [(f.line, f.message) for f in result.findings] == [
        (5, "missing required field `question`"),
        (10, "missing required field `sql` (or `output_text`)"),
    ]


def test_bad_input_leaves_out_untouched(tmp_path: Path, text_rows: list[object]) -> None:
    text_rows[41] = {"input_text": "", "output_text": "x"}
    text_rows[76] = "not json"
    out = tmp_path / "out.jsonl"
    out.write_text("previous run\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.tuning",
            "convert",
            str(write_lines(tmp_path / "t.jsonl", text_rows)),
            "--to",
            "gemini-tuning",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "line 42  [empty] `input_text` is empty" in result.stdout
    assert "line 77  [json] not valid JSON" in result.stdout
    assert out.read_text() == "previous run\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "t.jsonl"]


def test_refuses_to_overwrite_its_input(tmp_path: Path, text_rows: list[object]) -> None:
    source = write_lines(tmp_path / "t.jsonl", text_rows)
    before = source.read_bytes()
    with pytest.raises(UnreadableDatasetError, match="is the input file"):
        convert_file(source, "gemma", source)
    assert source.read_bytes() == before


def test_unwritable_out_leaves_no_partial_file(tmp_path: Path, text_rows: list[object]) -> None:
    source = write_lines(tmp_path / "t.jsonl", text_rows)
    out = tmp_path / "out"
    out.mkdir()  # the final rename onto a directory fails after every line converted
    with pytest.raises(IsADirectoryError):
        convert_file(source, "gemma", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "t.jsonl"]


def test_refuses_a_hard_link_to_its_input(tmp_path: Path, text_rows: list[object]) -> None:
    source = write_lines(tmp_path / "t.jsonl", text_rows)
    link = tmp_path / "link.jsonl"
    link.hardlink_to(source)
    with pytest.raises(UnreadableDatasetError, match="is the input file"):
        convert_file(source, "gemma", link)


def test_text_that_is_not_unicode_is_reported_not_written(
    tmp_path: Path, text_rows: list[object]
) -> None:
    text_rows[3] = '{"input_text": "cut emoji \\ud83d", "output_text": "x"}'
    out = tmp_path / "out.jsonl"
    result = convert_file(write_lines(tmp_path / "t.jsonl", text_rows), "gemini-tuning", out)
    assert [(f.line, f.rule) for f in result.findings] == [(4, "fields")]
    assert not out.exists()
