"""One streaming pass over a tuning JSONL file that applies every rule and collects a report."""

from __future__ import annotations

import codecs
import hashlib
import math
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from app.tuning import rules
from app.tuning.rules import Finding, Severity
from app.tuning.tokens import EstimatedTokens, TokenCounter

# Findings kept per rule; the rest are counted, so a broken 100,000-line file stays readable.
KEPT_PER_RULE = 50
# Token lengths up to this are kept in an exact histogram; longer ones only count toward max.
HISTOGRAM_CAP = 1 << 16
# Markers tracked at once, and line numbers remembered per marker.
MAX_MARKERS = 32
# Examples whose tokens are counted together.
TOKEN_BATCH = 256
SAMPLE_LINES = 5


class UnreadableDatasetError(Exception):
    """The dataset file cannot be opened or read at all; the message names the file and why."""


class Histogram:
    """Exact percentiles of non-negative integers in constant memory (one counter per value)."""

    def __init__(self) -> None:
        self.counts = array("I", bytes(4 * (HISTOGRAM_CAP + 1)))
        self.n = 0
        self.max = 0

    def add(self, value: int) -> None:
        self.counts[min(value, HISTOGRAM_CAP)] += 1
        self.n += 1
        self.max = max(self.max, value)

    def percentile(self, p: float) -> int | None:
        """Nearest-rank percentile; None when it falls beyond the histogram (see `max`)."""
        if not self.n:
            return None
        rank = max(1, math.ceil(p / 100 * self.n))
        seen = 0
        for value, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return value if value < HISTOGRAM_CAP else None
        return None

    def summary(self) -> dict[str, int | None]:
        return {
            "count": self.n,
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p99": self.percentile(99),
            "max": self.max if self.n else None,
        }


class SeenExamples:
    """64-bit example hashes and the line each first appeared on, in flat arrays.

    An open-addressing table costs 12 bytes a slot (24 per example at half load), where a
    dict of ints costs about 100: the only state that grows with the file stays small.
    """

    def __init__(self, capacity: int = 1 << 14) -> None:
        self._hashes = array("Q", bytes(8 * capacity))
        self._lines = array("I", bytes(4 * capacity))
        self._mask = capacity - 1
        self.count = 0

    def first_line(self, digest: int, line: int) -> int:
        """The line this hash was first seen on; records `line` if the hash is new."""
        digest = digest or 1  # 0 marks an empty slot
        slot = digest & self._mask
        while self._hashes[slot]:
            if self._hashes[slot] == digest:
                return self._lines[slot]
            slot = (slot + 1) & self._mask
        self._hashes[slot] = digest
        self._lines[slot] = line
        self.count += 1
        if self.count * 2 > self._mask:
            self._grow()
        return line

    def _grow(self) -> None:
        hashes, lines = self._hashes, self._lines
        capacity = 2 * len(hashes)
        self._hashes = array("Q", bytes(8 * capacity))
        self._lines = array("I", bytes(4 * capacity))
        self._mask = capacity - 1
        self.count = 0
        for digest, line in zip(hashes, lines, strict=True):
            if digest:
                self.first_line(digest, line)


@dataclass
class _MarkerUse:
    present: int = 0
    missing: int = 0
    present_lines: list[int] = field(default_factory=list)
    missing_lines: list[int] = field(default_factory=list)


class MarkerTracker:
    """Counts, per marker, the examples that use it and those that don't, keeping a few lines."""

    def __init__(self) -> None:
        self.examples = 0
        self.first_lines: list[int] = []
        self.uses: dict[str, _MarkerUse] = {}

    def add(self, line: int, markers: frozenset[str]) -> None:
        for marker, use in self.uses.items():
            if marker not in markers:
                use.missing += 1
                if len(use.missing_lines) < SAMPLE_LINES:
                    use.missing_lines.append(line)
        for marker in markers:
            known = self.uses.get(marker)
            if known is None:
                if len(self.uses) >= MAX_MARKERS:
                    continue
                # Every earlier example lacked it.
                known = _MarkerUse(missing=self.examples, missing_lines=list(self.first_lines))
                self.uses[marker] = known
            known.present += 1
            if len(known.present_lines) < SAMPLE_LINES:
                known.present_lines.append(line)
        self.examples += 1
        if len(self.first_lines) < SAMPLE_LINES:
            self.first_lines.append(line)

    def findings(self) -> list[Finding]:
        out = []
        for marker, use in sorted(self.uses.items()):
            # A label in one or two free-text inputs is prose, not a prompt format.
            if not use.missing or use.present < 2 or use.present * 10 < self.examples:
                continue
            if use.present >= use.missing:
                lines, which = use.missing_lines, f"missing from {use.missing}"
            else:
                lines, which = use.present_lines, f"present in only {use.present}"
            shown = ", ".join(str(n) for n in lines)
            more = ", ..." if len(lines) < min(use.missing, use.present) else ""
            where = f"line{'s' if len(lines) > 1 else ''} {shown}{more}"
            out.append(
                Finding(
                    "warning",
                    rules.RULE_MARKERS,
                    lines[0],
                    f"prompt marker `{marker}` is used in {use.present} of {self.examples} "
                    f"examples, {which} ({where}); production prompts must use "
                    "exactly the training format, so use it in every example or in none",
                )
            )
        return out


@dataclass
class Report:
    """Everything `validate` found, plus the counts and length percentiles for the summary."""

    path: str
    format: str | None
    eval_set: bool
    token_method: str
    tokens_exact: bool
    lines: int = 0
    examples: int = 0
    invalid_examples: int = 0
    author_fields: int = 0
    errors: int = 0
    warnings: int = 0
    findings: list[Finding] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Histogram] = field(default_factory=dict)
    seconds: float = 0.0
    _kept: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def add(self, finding: Finding) -> None:
        if finding.severity == "error":
            self.errors += 1
        else:
            self.warnings += 1
        key = f"{finding.severity}:{finding.rule}"
        kept = self._kept.get(key, 0)
        if kept < KEPT_PER_RULE:
            self.findings.append(finding)
            self._kept[key] = kept + 1
        else:
            self.left_out[key] = self.left_out.get(key, 0) + 1

    def stat(self, name: str, value: int) -> None:
        hist = self.stats.get(name)
        if hist is None:
            hist = self.stats[name] = Histogram()
        hist.add(value)

    @property
    def exit_code(self) -> int:
        """0 clean, 1 warnings only, 2 errors."""
        if self.errors:
            return 2
        return 1 if self.warnings else 0

    def sorted_findings(self, severity: Severity) -> list[Finding]:
        return sorted(
            (f for f in self.findings if f.severity == severity), key=lambda f: (f.line, f.rule)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "format": self.format,
            "eval": self.eval_set,
            "tokens": {"exact": self.tokens_exact, "method": self.token_method},
            "lines": self.lines,
            "examples": self.examples,
            "invalid_examples": self.invalid_examples,
            "author_fields": self.author_fields,
            "errors": self.errors,
            "warnings": self.warnings,
            "exit_code": self.exit_code,
            "findings": [
                {"severity": f.severity, "rule": f.rule, "line": f.line, "message": f.message}
                for f in [*self.sorted_findings("error"), *self.sorted_findings("warning")]
            ],
            "left_out": self.left_out,
            "stats": {name: hist.summary() for name, hist in self.stats.items()},
            "seconds": round(self.seconds, 3),
        }


class Progress:
    """A one-line progress meter on a terminal; silent when stderr is a file or a pipe."""

    def __init__(self, total_bytes: int, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.total = max(total_bytes, 1)
        self.last = 0.0

    def update(self, lines: int, done_bytes: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        pct = 100 * done_bytes / self.total
        self.stream.write(f"\rvalidating: line {lines:,} ({pct:.0f}%)")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.last:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _example_hash(key: tuple[str, ...]) -> int:
    # 64-bit digests: a false duplicate among 10^5 examples has odds of about 1 in 10^9.
    digest = hashlib.blake2b("\x1e".join(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _check_tokens(
    fmt: str, line: int, counts: list[tuple[str, int]], counter: TokenCounter, report: Report
) -> None:
    # Estimated counts can be off either way, so an estimated overage is a warning.
    hard: Severity = "error" if counter.exact else "warning"
    how = "" if counter.exact else " (estimated)"
    if fmt == "text":
        n_in, n_out = counts[0][1], counts[1][1]
        report.stat("input_text tokens", n_in)
        report.stat("output_text tokens", n_out)
        for name, n, limit in (
            ("input_text", n_in, rules.MAX_INPUT_TEXT_TOKENS),
            ("output_text", n_out, rules.MAX_OUTPUT_TEXT_TOKENS),
        ):
            if n > limit:
                report.add(
                    Finding(
                        "warning",
                        rules.RULE_TOKENS,
                        line,
                        f"`{name}` has {n:,} tokens{how}; beyond {limit:,} the excess is "
                        "truncated during tuning",
                    )
                )
        return
    total = sum(n for _, n in counts)
    model_turns = [n for kind, n in counts if kind == "model"]
    report.stat("example tokens", total)
    report.stat("turns per example", sum(1 for kind, _ in counts if kind != "context"))
    for n in model_turns:
        report.stat("model turn tokens", n)
    turn_name = "assistant" if fmt == "chat" else "model"
    if fmt == "chat":
        if total > rules.MAX_CHAT_EXAMPLE_TOKENS:
            report.add(
                Finding(
                    hard,
                    rules.RULE_TOKENS,
                    line,
                    f"context plus messages have {total:,} tokens{how}; a chat example may "
                    f"have at most {rules.MAX_CHAT_EXAMPLE_TOKENS:,}",
                )
            )
        turn_severity = hard
    else:
        # The converted formats carry the source limits forward as warnings.
        prompt = sum(n for kind, n in counts if kind != "model")
        if prompt > rules.MAX_INPUT_TEXT_TOKENS:
            report.add(
                Finding(
                    "warning",
                    rules.RULE_TOKENS,
                    line,
                    f"the prompt side (system and user turns) has {prompt:,} tokens{how}; "
                    f"the source limit is {rules.MAX_INPUT_TEXT_TOKENS:,}",
                )
            )
        turn_severity = "warning"
    for i, n in enumerate(model_turns):
        if n > rules.MAX_ASSISTANT_TOKENS:
            report.add(
                Finding(
                    turn_severity,
                    rules.RULE_TOKENS,
                    line,
                    f"{turn_name} turn {i + 1} has {n:,} tokens{how}; each {turn_name} turn may "
                    f"have at most {rules.MAX_ASSISTANT_TOKENS:,}",
                )
            )


def _check_count(report: Report) -> None:
    n = report.examples
    if report.eval_set:
        low, high = rules.EVAL_EXAMPLES
        if not low <= n <= high:
            report.add(
                Finding(
                    "error",
                    rules.RULE_COUNT,
                    0,
                    f"an evaluation dataset needs {low}-{high} examples; this one has {n:,}",
                )
            )
        return
    if n < rules.MIN_EXAMPLES:
        report.add(
            Finding(
                "error",
                rules.RULE_COUNT,
                0,
                f"a tuning dataset needs at least {rules.MIN_EXAMPLES} examples; "
                f"this one has {n:,}",
            )
        )
    elif n > rules.MAX_EXAMPLES:
        report.add(
            Finding(
                "error",
                rules.RULE_COUNT,
                0,
                f"a tuning dataset may have at most {rules.MAX_EXAMPLES:,} examples; this one "
                f"has {n:,}",
            )
        )
    elif not rules.RECOMMENDED_EXAMPLES[0] <= n <= rules.RECOMMENDED_EXAMPLES[1]:
        low, high = rules.RECOMMENDED_EXAMPLES
        report.add(
            Finding(
                "warning",
                rules.RULE_COUNT,
                0,
                f"{n:,} examples; {low}-{high} are recommended (chat tasks: 200+)",
            )
        )


def open_dataset(path: Path) -> BinaryIO:
    """Opens a dataset for reading lines as bytes; refuses files that are not UTF-8 at all."""
    try:
        stream = path.open("rb")
    except FileNotFoundError as err:
        raise UnreadableDatasetError(f"{path}: no such file") from err
    except IsADirectoryError as err:
        raise UnreadableDatasetError(f"{path} is a directory; give a JSONL file") from err
    except OSError as err:
        raise UnreadableDatasetError(f"{path} cannot be read: {err.strerror}") from err
    # Windows tools often save UTF-16; split on b"\n" it would give one error per line.
    start = stream.peek(2)[:2]  # a UTF-16/32 byte-order mark, or ASCII's zero high byte
    if start in {codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE} or b"\x00" in start:
        stream.close()
        raise UnreadableDatasetError(
            f"{path} is UTF-16 or UTF-32 text, not UTF-8; save it as UTF-8 (in PowerShell: "
            "Get-Content IN | Set-Content -Encoding utf8 OUT)"
        )
    return stream


class _Pass:
    """The state of one pass: the report so far, duplicate hashes and marker use."""

    def __init__(self, report: Report, counter: TokenCounter) -> None:
        self.report = report
        self.counter = counter
        self.parse: rules.Parser | None = (
            None if report.format is None else rules.PARSERS[report.format]
        )
        self.seen = SeenExamples()
        self.markers = MarkerTracker()
        self.author_limit_reported = False
        self.format_line = 0
        # Token counting waits for a batch, so a real tokenizer encodes many texts per call.
        self.pending: list[tuple[int, list[tuple[str, str]]]] = []

    def _count_tokens(self) -> None:
        texts = [text for _, example in self.pending for _, text in example]
        counts = iter(self.counter.count_batch(texts))
        fmt = self.report.format or ""
        for line, example in self.pending:
            paired = [(kind, next(counts)) for kind, _ in example]
            _check_tokens(fmt, line, paired, self.counter, self.report)
        self.pending.clear()

    def error(self, rule: str, line: int, message: str) -> None:
        self.report.add(Finding("error", rule, line, message))

    def line(self, line: int, raw: bytes) -> None:
        report = self.report
        report.lines = line
        if not raw.strip():
            self.error(rules.RULE_JSON, line, rules.BLANK_LINE)
            return
        report.examples += 1
        if line == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
            report.add(
                Finding(
                    "warning",
                    rules.RULE_JSON,
                    line,
                    "the file starts with a UTF-8 byte-order mark, which strict JSONL readers "
                    "reject; save it as UTF-8 without BOM",
                )
            )
        obj = self._load(line, raw)
        if obj is None:
            report.invalid_examples += 1
            return
        if self.parse is None:
            detected = rules.detect_format(obj)
            if detected is None:
                report.invalid_examples += 1
                self.error(rules.RULE_FORMAT, line, rules.UNKNOWN_FORMAT)
                return
            report.format = detected
            self.format_line = line
            self.parse = rules.PARSERS[detected]
        example = self.parse(obj, line)
        if example.findings:
            looks_like = rules.detect_format(obj)
            if looks_like not in {None, report.format}:
                if self.format_line:
                    hint = (
                        f"in a {report.format} dataset (format from line {self.format_line}); "
                        "use one format per file"
                    )
                else:
                    hint = f"not {report.format} as --format says; check --format"
                example.findings.append(
                    Finding(
                        "error",
                        rules.RULE_FORMAT,
                        line,
                        f"this line looks like a {looks_like} example {hint}",
                    )
                )
        self._example(line, report.format or "", example)

    def _load(self, line: int, raw: bytes) -> dict[str, Any] | None:
        obj, problem = rules.load_example(raw)
        if obj is None:
            self.error(rules.RULE_JSON, line, problem)
        return obj

    def _example(self, line: int, fmt: str, example: rules.Example) -> None:
        report = self.report
        for finding in example.findings:
            report.add(finding)
        report.author_fields += example.author_fields
        if (
            fmt == "chat"
            and report.author_fields > rules.MAX_CHAT_AUTHOR_FIELDS
            and not self.author_limit_reported
        ):
            self.author_limit_reported = True
            self.error(
                rules.RULE_AUTHOR_TOTAL,
                line,
                f"the dataset passes {rules.MAX_CHAT_AUTHOR_FIELDS:,} author fields at this "
                f"line; a chat dataset may have at most {rules.MAX_CHAT_AUTHOR_FIELDS:,} in total",
            )
        if any(f.severity == "error" for f in example.findings):
            report.invalid_examples += 1
            return
        self.pending.append((line, example.texts))
        if len(self.pending) >= TOKEN_BATCH:
            self._count_tokens()
        digest = _example_hash(example.key)
        first = self.seen.first_line(digest, line)
        if first != line:
            report.add(
                Finding(
                    "warning",
                    rules.RULE_DUPLICATE,
                    line,
                    f"duplicate of the example on line {first}",
                )
            )
        self.markers.add(line, rules.prompt_markers(example.prompt))

    def finish(self) -> None:
        report = self.report
        self._count_tokens()
        if report.eval_set and report.format == "chat":
            self.error(
                rules.RULE_FORMAT,
                0,
                "evaluation datasets are text only (`input_text`/`output_text`)",
            )
        for finding in self.markers.findings():
            report.add(finding)
        _check_count(report)


def validate_file(
    path: Path | str,
    fmt: str = "auto",
    *,
    eval_set: bool = False,
    counter: TokenCounter | None = None,
    progress_stream: TextIO | None = None,
) -> Report:
    """Validates a JSONL dataset in one pass; raises UnreadableDatasetError if it can't be read."""
    path = Path(path)
    counter = counter or EstimatedTokens()
    started = time.perf_counter()
    report = Report(
        path=str(path),
        format=None if fmt == "auto" else fmt,
        eval_set=eval_set,
        token_method=counter.description,
        tokens_exact=counter.exact,
    )
    state = _Pass(report, counter)
    with open_dataset(path) as stream:
        progress = Progress(_size(path), progress_stream)
        done = 0
        try:
            for line, raw in enumerate(stream, 1):
                done += len(raw)
                if not line % 2048:
                    progress.update(line, done)
                state.line(line, raw)
        except OSError as err:
            raise UnreadableDatasetError(f"{path} could not be read: {err}") from err
        finally:
            progress.close()
    state.finish()
    report.seconds = time.perf_counter() - started
    return report


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
