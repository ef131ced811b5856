"""Renders a validation report for people (line-numbered, errors apart from warnings) or as JSON."""

from __future__ import annotations

import json

from app.tuning.rules import Severity
from app.tuning.validate import Report


def _where(line: int) -> str:
    return "file" if line == 0 else f"line {line}"


def render_text(report: Report) -> str:
    out = [
        f"{report.path}: {report.format or 'unknown'} dataset"
        + (" (evaluation)" if report.eval_set else "")
    ]
    sections: tuple[tuple[Severity, str], ...] = (("error", "Errors"), ("warning", "Warnings"))
    for severity, title in sections:
        found = report.sorted_findings(severity)
        total = report.errors if severity == "error" else report.warnings
        if not total:
            continue
        out += ["", f"{title} ({total:,}):"]
        width = max(len(_where(f.line)) for f in found) if found else 0
        out += [f"  {_where(f.line):<{width}}  [{f.rule}] {f.message}" for f in found]
        for key, n in sorted(report.left_out.items()):
            kind, rule = key.split(":", 1)
            if kind == severity:
                out.append(f"  ... and {n:,} more [{rule}] {title.lower()} (see --json)")
    out += [
        "",
        "Summary:",
        f"  lines {report.lines:,}, examples {report.examples:,} "
        f"({report.examples - report.invalid_examples:,} valid, "
        f"{report.invalid_examples:,} invalid)",
    ]
    if report.format == "chat":
        out.append(f"  author fields {report.author_fields:,} (at most 10,000)")
    out.append(f"  tokens: {report.token_method}")
    if report.stats:
        names = list(report.stats)
        width = max(len(n) for n in names)
        out.append(f"  {'':<{width}}  {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}")
        for name in names:
            s = report.stats[name].summary()
            cells = " ".join(f"{_num(s[k]):>7}" for k in ("p50", "p90", "p99", "max"))
            out.append(f"  {name:<{width}}  {cells}")
    verdict = {0: "OK", 1: "OK with warnings", 2: "FAILED"}[report.exit_code]
    out += [
        "",
        f"{verdict}: {_count(report.errors, 'error')}, {_count(report.warnings, 'warning')}",
    ]
    return "\n".join(out)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _num(value: int | None) -> str:
    return f"{value:,}" if value is not None else ">65,536"


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2)
