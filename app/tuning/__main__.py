"""Command line: `python -m app.tuning validate|convert` for supervised-tuning JSONL datasets."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from app.tuning import rules
from app.tuning.convert import WRITERS, convert_file
from app.tuning.report import render_json, render_text
from app.tuning.tokens import EstimatedTokens, ModelTokens, TokenCounter, TokenizerError
from app.tuning.validate import UnreadableDatasetError, validate_file

EXIT_CLEAN, EXIT_WARNINGS, EXIT_ERRORS = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.tuning",
        description="Check and convert supervised-tuning JSONL datasets before a tuning run.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser(
        "validate",
        help="check every line against the documented formats and limits",
        description="Exit codes: 0 clean, 1 warnings only, 2 errors or unreadable input.",
        epilog="rules, as named in the report:\n"
        + "\n".join(f"  {rule:<13} {what}" for rule, what in rules.RULES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("file", type=Path, help="JSONL dataset, one example per line")
    check.add_argument(
        "--format",
        choices=("auto", *rules.FORMATS),
        default="auto",
        help="dataset format (default: detected from the first example)",
    )
    check.add_argument(
        "--eval", action="store_true", help="the file is an evaluation dataset (10-250 examples)"
    )
    check.add_argument(
        "--tokenizer",
        metavar="MODEL_URI",
        help="local folder or gs://bucket/path of a model whose tokenizer counts tokens "
        "(default: an estimate)",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")

    conv = commands.add_parser(
        "convert",
        help="write Gemma chat-format or Gemini supervised-tuning JSONL",
        description="Writes OUT only when every input line converts, then checks OUT.",
    )
    conv.add_argument("file", type=Path, help="text or chat JSONL dataset")
    conv.add_argument("--to", required=True, choices=tuple(WRITERS), help="output format")
    conv.add_argument("out", type=Path, help="output JSONL file")
    conv.add_argument(
        "--sql",
        action="store_true",
        help="build the SQL user turn from `schema` and `question`; the answer is `sql` "
        "(or `output_text`)",
    )
    conv.add_argument(
        "--format",
        choices=("auto", *rules.FORMATS),
        default="auto",
        help="input format (default: detected from the first example)",
    )
    return parser


def _validate(args: argparse.Namespace) -> int:
    counter: TokenCounter = EstimatedTokens()
    if args.tokenizer:
        try:
            counter = ModelTokens(args.tokenizer)
        except TokenizerError as err:
            print(f"error: --tokenizer {err}", file=sys.stderr)
            return EXIT_ERRORS
    report = validate_file(args.file, args.format, eval_set=args.eval, counter=counter)
    print(render_json(report) if args.json else render_text(report))
    return report.exit_code


def _convert(args: argparse.Namespace) -> int:
    try:
        result = convert_file(args.file, args.to, args.out, sql=args.sql, fmt=args.format)
    except OSError as err:
        print(f"error: cannot write {args.out}: {err.strerror}", file=sys.stderr)
        return EXIT_ERRORS
    if result.errors:
        errors = f"{result.errors:,} error{'' if result.errors == 1 else 's'}"
        print(f"{args.file}: not converted; {errors}, {args.out} not written:")
        for finding in result.findings:
            print(f"  line {finding.line}  [{finding.rule}] {finding.message}")
        if result.errors > len(result.findings):
            print(f"  ... and {result.errors - len(result.findings):,} more")
        return EXIT_ERRORS
    print(
        f"wrote {result.written:,} examples from {args.file} ({result.source_format}) "
        f"to {args.out} ({args.to})"
    )
    check = validate_file(args.out, args.to)
    if check.exit_code == EXIT_ERRORS:
        print(f"{args.out} is written but fails its own checks; fix the input and convert again:")
        print(render_text(check))
        return EXIT_ERRORS
    print(f"checked {args.out}: {check.errors:,} errors, {check.warnings:,} warnings")
    for finding in check.sorted_findings("warning")[:10]:
        where = "file" if finding.line == 0 else f"line {finding.line}"
        print(f"  {where}  [{finding.rule}] {finding.message}")
    return EXIT_CLEAN


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _validate(args) if args.command == "validate" else _convert(args)
    except UnreadableDatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERRORS
    except BrokenPipeError:
        return EXIT_ERRORS


if __name__ == "__main__":
    sys.exit(main())
