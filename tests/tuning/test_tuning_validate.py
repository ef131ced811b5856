"""Each dataset rule: valid files pass; a broken fixture names the right line and exit code."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.tuning.__main__ import main
from app.tuning.report import render_text
from app.tuning.rules import RULES
from app.tuning.validate import Report, validate_file
from tests.tuning.tuning_samples import chat_example, text_example, write_lines

ROOT = Path(__file__).resolve().parents[2]


def found(report: Report) -> set[tuple[str, str, int]]:
    return {(f.severity, f.rule, f.line) for f in report.findings}


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.tuning", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def report_line(text: str, line: int, rule: str) -> str:
    """The report row for a finding; fails if the report does not point at that line."""
    rows = [
        r for r in text.splitlines() if r.strip().startswith(f"line {line} ") and f"[{rule}]" in r
    ]
    assert rows, f"no [{rule}] row for line {line} in:\n{text}"
    return rows[0]


def test_brief_text_example_is_clean(tmp_path: Path, text_rows: list[object]) -> None:
    report = validate_file(write_lines(tmp_path / "train.jsonl", text_rows))
    assert report.format == "text"
    assert report.findings == []
    assert report.exit_code == 0
    assert report.examples == 100
    assert report.stats["input_text tokens"].summary()["count"] == 100


def test_brief_chat_example_is_clean(tmp_path: Path, chat_rows: list[object]) -> None:
    report = validate_file(write_lines(tmp_path / "chat.jsonl", chat_rows))
    assert report.format == "chat"
    assert report.findings == []
    assert report.exit_code == 0
    assert report.author_fields == 800
    assert report.stats["turns per example"].summary() == {
        "count": 200,
        "p50": 4,
        "p90": 4,
        "p99": 4,
        "max": 4,
    }


def test_cli_clean_file_exits_0(tmp_path: Path, text_rows: list[object]) -> None:
    result = run_cli("validate", write_lines(tmp_path / "t.jsonl", text_rows))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 0 errors, 0 warnings" in result.stdout
    assert "estimated" in result.stdout  # says the counts are not exact


def test_cli_invalid_json_names_line_and_exits_2(tmp_path: Path, text_rows: list[object]) -> None:
    text_rows[6] = '{"input_text": "question: x", "output_text": '
    result = run_cli("validate", write_lines(tmp_path / "t.jsonl", text_rows))
    assert result.returncode == 2
    row = report_line(result.stdout, 7, "json")
    assert "not valid JSON" in row
    errors, warnings = (
        result.stdout.split("Warnings", 1)
        if "Warnings" in result.stdout
        else (
            result.stdout,
            "",
        )
    )
    assert "[json]" in errors
    assert "[json]" not in warnings


def test_cli_warnings_only_exit_1_and_json(tmp_path: Path, text_rows: list[object]) -> None:
    text_rows[49] = text_rows[2]
    result = run_cli("validate", "--json", write_lines(tmp_path / "t.jsonl", text_rows))
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["exit_code"] == 1
    assert data["errors"] == 0
    assert data["findings"] == [
        {
            "severity": "warning",
            "rule": "duplicate",
            "line": 50,
            "message": "duplicate of the example on line 3",
        }
    ]
    assert data["tokens"]["exact"] is False
    assert set(data["stats"]["output_text tokens"]) == {"count", "p50", "p90", "p99", "max"}


@pytest.mark.parametrize(
    "args",
    [("validate", "missing.jsonl"), ("convert", "missing.jsonl", "--to", "gemma", "out.jsonl")],
)
def test_cli_missing_file_is_a_clear_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run_cli(*[str(tmp_path / a) if a.endswith(".jsonl") else a for a in args])
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'missing.jsonl'}: no such file"
    assert result.stdout == ""
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_directory_is_a_clear_exit_2(tmp_path: Path) -> None:
    result = run_cli("validate", tmp_path)
    assert result.returncode == 2
    assert "is a directory" in result.stderr


def test_cli_chat_turns_rule(tmp_path: Path, chat_rows: list[object]) -> None:
    bad = chat_example(5)
    bad["messages"] = bad["messages"][:3]  # type: ignore[index]
    chat_rows[7] = bad
    result = run_cli("validate", "--format", "chat", write_lines(tmp_path / "c.jsonl", chat_rows))
    assert result.returncode == 2
    row = report_line(result.stdout, 8, "turns")
    assert "must end with a turn by 'assistant' (the answer to learn)" in row


# (description, line index to replace (0-based), replacement, expected findings, exit code)
TEXT_CASES = [
    ("not an object", 6, ["a", "b"], {("error", "json", 7)}, 2),
    ("blank line", 6, "", {("error", "json", 7)}, 2),
    ("not UTF-8", 3, b'{"input_text": "\xff\xfe", "output_text": "x"}', {("error", "json", 4)}, 2),
    (
        "missing output_text",
        11,
        {"input_text": "question: a\ncontext: b"},
        {("error", "fields", 12)},
        2,
    ),
    (
        "input_text not a string",
        11,
        {"input_text": 5, "output_text": "x"},
        {("error", "fields", 12)},
        2,
    ),
    (
        "whitespace-only output_text",
        32,
        {"input_text": "question: a\ncontext: b", "output_text": "  \n"},
        {("error", "empty", 33)},
        2,
    ),
    (
        "output_text over 1,024 tokens",
        39,
        {"input_text": "question: a\ncontext: b", "output_text": "SELECT 1; " * 500},
        {("warning", "tokens", 40)},
        1,
    ),
    (
        "input_text over 8,192 tokens",
        40,
        {"input_text": "question: a\ncontext: " + "b" * 40_000, "output_text": "x"},
        {("warning", "tokens", 41)},
        1,
    ),
    ("duplicate", 49, text_example(2), {("warning", "duplicate", 50)}, 1),
    ("no known format", 0, {"prompt": "hi", "completion": "there"}, {("error", "format", 1)}, 2),
]


@pytest.mark.parametrize(
    ("index", "replacement", "expected", "code"),
    [case[1:] for case in TEXT_CASES],
    ids=[case[0] for case in TEXT_CASES],
)
def test_text_rule_fixture(  # noqa: PLR0917 - pytest passes fixtures and parameters by name
    tmp_path: Path,
    text_rows: list[object],
    index: int,
    replacement: object,
    expected: set[tuple[str, str, int]],
    code: int,
) -> None:
    if replacement == "":
        text_rows.insert(index, replacement)  # a blank line is not an example: keep 100 of them
    else:
        text_rows[index] = replacement
    report = validate_file(write_lines(tmp_path / "t.jsonl", text_rows), "auto")
    assert found(report) == expected
    assert report.exit_code == code
    severity, rule, line = next(iter(expected))
    heading = "Errors" if severity == "error" else "Warnings"
    text = render_text(report)
    assert report_line(text.split(f"{heading} (")[1], line, rule)


def test_marker_used_inconsistently(tmp_path: Path, text_rows: list[object]) -> None:
    for index in (19, 69):
        text_rows[index] = {"input_text": f"orders of customer {index}?", "output_text": "x"}
    report = validate_file(write_lines(tmp_path / "t.jsonl", text_rows))
    assert found(report) == {("warning", "markers", 20)}
    messages = [f.message for f in report.findings]
    assert any("`question:` is used in 98 of 100" in m and "lines 20, 70" in m for m in messages)
    assert any("`context:`" in m for m in messages)
    assert report.exit_code == 1


def test_marker_in_a_minority_points_at_those_lines(tmp_path: Path) -> None:
    rows = [{"input_text": f"orders of customer {i}?", "output_text": f"{i}"} for i in range(100)]
    for index in range(3, 100, 7):  # 14 of 100: above the 10% a stray prose label stays under
        rows[index] = {"input_text": f"question: orders of {index}?", "output_text": "x"}
    report = validate_file(write_lines(tmp_path / "t.jsonl", rows))
    assert found(report) == {("warning", "markers", 4)}
    assert "present in only 14 (lines 4, 11, 18, 25, 32, ...)" in report.findings[0].message


def test_free_text_label_once_is_not_a_marker(tmp_path: Path, text_rows: list[object]) -> None:
    text_rows[5] = {"input_text": "question: x\ncontext: y\nNote: ignore", "output_text": "z"}
    report = validate_file(write_lines(tmp_path / "t.jsonl", text_rows))
    assert report.findings == []


CHAT_CASES = [
    (
        "authors do not alternate",
        4,
        {
            "messages": [
                {"author": "user", "content": "a"},
                {"author": "user", "content": "b"},
                {"author": "assistant", "content": "c"},
            ]
        },
        {("error", "turns", 5)},
    ),
    (
        "starts with assistant",
        4,
        {
            "messages": [
                {"author": "assistant", "content": "a"},
                {"author": "user", "content": "b"},
                {"author": "assistant", "content": "c"},
            ]
        },
        {("error", "turns", 5)},
    ),
    (
        "unknown author",
        9,
        {
            "messages": [
                {"author": "system", "content": "a"},
                {"author": "assistant", "content": "c"},
            ]
        },
        {("error", "fields", 10), ("error", "turns", 10)},
    ),
    ("messages missing", 9, {"context": "x"}, {("error", "fields", 10)}),
    ("messages not a list", 9, {"messages": "hi"}, {("error", "fields", 10)}),
    (
        "empty content",
        14,
        {"messages": [{"author": "user", "content": ""}, {"author": "assistant", "content": "c"}]},
        {("error", "empty", 15)},
    ),
    (
        "empty context",
        14,
        {
            "context": " ",
            "messages": [
                {"author": "user", "content": "a"},
                {"author": "assistant", "content": "c"},
            ],
        },
        {("error", "empty", 15)},
    ),
]


@pytest.mark.parametrize(
    ("index", "replacement", "expected"),
    [case[1:] for case in CHAT_CASES],
    ids=[case[0] for case in CHAT_CASES],
)
def test_chat_rule_fixture(
    tmp_path: Path,
    chat_rows: list[object],
    index: int,
    replacement: object,
    expected: set[tuple[str, str, int]],
) -> None:
    chat_rows[index] = replacement
    report = validate_file(write_lines(tmp_path / "c.jsonl", chat_rows), "chat")
    assert found(report) == expected
    assert report.exit_code == 2


def test_chat_token_limits_with_estimate_are_warnings(
    tmp_path: Path, chat_rows: list[object]
) -> None:
    long_answer = chat_example(1)
    long_answer["messages"][1]["content"] = "SELECT 1; " * 500  # type: ignore[index]
    long_example = chat_example(2)
    long_example["context"] = "schema " * 6_000
    chat_rows[3], chat_rows[8] = long_answer, long_example
    report = validate_file(write_lines(tmp_path / "c.jsonl", chat_rows))
    assert found(report) == {("warning", "tokens", 4), ("warning", "tokens", 9)}
    messages = sorted(f.message for f in report.findings)
    assert "assistant turn 1 has 1,250 tokens (estimated)" in messages[0]
    assert "context plus messages have 10,5" in messages[1]


def test_chat_author_total(tmp_path: Path) -> None:
    rows = [chat_example(i) for i in range(2_600)]  # 4 author fields each
    report = validate_file(write_lines(tmp_path / "c.jsonl", rows))
    assert ("error", "author-total", 2_501) in found(report)
    assert report.author_fields == 10_400
    assert report.exit_code == 2


@pytest.mark.parametrize(
    ("count", "eval_set", "expected", "code"),
    [
        (5, False, {("error", "count", 0)}, 2),
        (50, False, {("warning", "count", 0)}, 1),
        (600, False, {("warning", "count", 0)}, 1),
        (10_001, False, {("error", "count", 0)}, 2),
        (9, True, {("error", "count", 0)}, 2),
        (40, True, set(), 0),
        (251, True, {("error", "count", 0)}, 2),
    ],
)
def test_example_counts(
    tmp_path: Path, count: int, eval_set: bool, expected: set[object], code: int
) -> None:
    rows = [text_example(i) for i in range(count)]
    report = validate_file(write_lines(tmp_path / "t.jsonl", rows), eval_set=eval_set)
    assert found(report) == expected
    assert report.exit_code == code


def test_eval_set_must_be_text(tmp_path: Path) -> None:
    rows = [chat_example(i) for i in range(20)]
    report = validate_file(write_lines(tmp_path / "c.jsonl", rows), eval_set=True)
    assert found(report) == {("error", "format", 0)}


def test_findings_beyond_the_cap_are_counted(tmp_path: Path) -> None:
    rows: list[object] = ["{broken"] * 120
    report = validate_file(write_lines(tmp_path / "t.jsonl", rows), "text")
    assert (report.errors, report.warnings) == (120, 0)
    assert report.left_out == {"error:json": 70}
    assert "... and 70 more [json] errors" in render_text(report)


def test_gemma_and_gemini_formats_are_checked(tmp_path: Path) -> None:
    gemma = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "model", "content": "a"}]}
        for i in range(100)
    ]
    gemma[4] = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    }
    report = validate_file(write_lines(tmp_path / "g.jsonl", gemma))
    assert report.format == "gemma"
    assert found(report) == {("error", "fields", 5)}

    gemini = [
        {
            "contents": [
                {"role": "user", "parts": [{"text": f"q{i}"}]},
                {"role": "model", "parts": [{"text": "a"}]},
            ]
        }
        for i in range(100)
    ]
    gemini[6] = {
        "contents": [{"role": "user", "parts": []}, {"role": "model", "parts": [{"text": "a"}]}]
    }
    gemini[7] = {"systemInstruction": "be brief", "contents": gemini[0]["contents"]}  # type: ignore[index]
    report = validate_file(write_lines(tmp_path / "m.jsonl", gemini))
    assert report.format == "gemini-tuning"
    assert found(report) == {("error", "fields", 7), ("error", "fields", 8)}


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    dataset = write_lines(tmp_path / "t.jsonl", [text_example(i) for i in range(4_100)])
    terminal, pipe = FakeTerminal(), io.StringIO()
    validate_file(dataset, progress_stream=terminal)
    validate_file(dataset, progress_stream=pipe)
    assert "\rvalidating: line 2,048 (" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r\033[K")  # the meter is erased before the report
    assert pipe.getvalue() == ""


def test_byte_order_mark_is_a_warning_not_a_json_error(
    tmp_path: Path, text_rows: list[object]
) -> None:
    dataset = write_lines(tmp_path / "t.jsonl", text_rows)
    dataset.write_bytes(b"\xef\xbb\xbf" + dataset.read_bytes())
    report = validate_file(dataset)
    assert found(report) == {("warning", "json", 1)}
    assert report.examples == 100


def test_mixed_formats_name_the_odd_line(tmp_path: Path, text_rows: list[object]) -> None:
    text_rows[60] = chat_example(1)
    report = validate_file(write_lines(tmp_path / "t.jsonl", text_rows))
    assert found(report) == {("error", "fields", 61), ("error", "format", 61)}
    assert any(
        "looks like a chat example in a text dataset (format from line 1)" in f.message
        for f in report.findings
    )


# "utf-16" is what PowerShell's `>` writes (with a byte-order mark); the others have none.
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32-le"])
def test_cli_utf16_file_is_one_clear_exit_2(
    tmp_path: Path, text_rows: list[object], encoding: str
) -> None:
    dataset = write_lines(tmp_path / "t.jsonl", text_rows)
    dataset.write_bytes(dataset.read_text().encode(encoding))
    result = run_cli("validate", dataset)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(f"error: {dataset} is UTF-16 or UTF-32 text")
    assert "save it as UTF-8" in result.stderr
    assert result.stdout == ""


# (line content, the message's start, how it says what to do)
MESSAGE_CASES = [
    (
        b'{"input_text": "caf\xe9", "output_text": "x"}',
        "not UTF-8 text (byte 0xe9 at byte 20)",
        "save the file as UTF-8",
    ),
    (
        '[{"input_text": "a", "output_text": "b"}]',
        "each line must be a JSON object, got array",
        "write each element on its own line",
    ),
    ("[", "not valid JSON", "looks like pretty-printed JSON"),
    (
        '{"input_text": "\\ud83d", "output_text": "x"}',
        "`input_text` has an unpaired surrogate escape (\\ud83d)",
        "fix the text",
    ),
]


@pytest.mark.parametrize(("content", "problem", "advice"), MESSAGE_CASES)
def test_line_messages_say_what_is_wrong_and_what_to_do(
    tmp_path: Path, text_rows: list[object], content: object, problem: str, advice: str
) -> None:
    text_rows[8] = content
    report = validate_file(write_lines(tmp_path / "t.jsonl", text_rows))
    (finding,) = report.findings
    assert (finding.severity, finding.line) == ("error", 9)
    assert finding.message.startswith(problem), finding.message
    assert advice in finding.message


@pytest.mark.parametrize(
    ("fmt", "record", "advice"),
    [
        (
            "chat",
            {"messages": [{"author": "system", "content": "be brief"}]},
            "put a system prompt in the example's `context` field instead",
        ),
        (
            "gemma",
            {"messages": [{"role": "system", "content": "be brief"}]},
            "Gemma has no system role",
        ),
        (
            "gemini-tuning",
            {"contents": [{"role": "system", "parts": [{"text": "be brief"}]}]},
            "put a system prompt in `systemInstruction` instead",
        ),
        (
            "gemma",
            {"messages": [{"role": "assistant", "content": "a"}]},
            "this format calls the answering turn 'model'",
        ),
    ],
)
def test_a_wrong_role_says_where_it_belongs(
    tmp_path: Path, fmt: str, record: dict[str, object], advice: str
) -> None:
    report = validate_file(write_lines(tmp_path / "d.jsonl", [record]), fmt)
    assert advice in next(f.message for f in report.findings if f.rule == "fields")


def test_help_lists_every_rule_the_report_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    shown = capsys.readouterr().out
    for rule, what in RULES.items():
        assert f"  {rule:<13} {what}" in shown
