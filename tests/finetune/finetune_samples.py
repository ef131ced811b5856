"""A small SQL tuning set in the team's raw format, and how to run app.finetune on it in a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devtools.gcs_emulator import CLIENT_ENV
from devtools.processes import REPO_ROOT

SCHEMA = "CREATE TABLE orders (id INT, customer TEXT, total INT, day DATE);"
QUESTIONS_AND_SQL = [
    ("How many orders are there?", "SELECT COUNT(*) FROM orders;"),
    ("What is the largest order total?", "SELECT MAX(total) FROM orders;"),
    ("List every customer once.", "SELECT DISTINCT customer FROM orders;"),
    ("What did Alice spend in total?", "SELECT SUM(total) FROM orders WHERE customer = 'Alice';"),
    ("Which orders are above 100?", "SELECT id FROM orders WHERE total > 100;"),
    ("What is the average order total?", "SELECT AVG(total) FROM orders;"),
    ("Show the newest order.", "SELECT * FROM orders ORDER BY day DESC LIMIT 1;"),
    ("How many customers are there?", "SELECT COUNT(DISTINCT customer) FROM orders;"),
    (
        "Which day had the most orders?",
        "SELECT day FROM orders GROUP BY day ORDER BY COUNT(*) DESC LIMIT 1;",
    ),
    ("Show orders of Bob.", "SELECT * FROM orders WHERE customer = 'Bob';"),
]
# Settings that make a tiny model recite each answer in seconds (see devtools/demo_model.py).
FAST_FLAGS = (
    "--batch-size=10",
    "--learning-rate=2e-2",
    "--lora-dropout=0",
    "--train-modules=lm_head",
)


def write_sql_dataset(path: Path) -> Path:
    lines = [
        json.dumps({"schema": SCHEMA, "question": question, "sql": sql})
        for question, sql in QUESTIONS_AND_SQL
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def corpus_of(dataset: Path) -> list[str]:
    """Every text of a converted (gemma-format) dataset, to train the base's tokenizer on."""
    texts = []
    for line in dataset.read_text().splitlines():
        texts += [m["content"] for m in json.loads(line)["messages"]]
    return texts


def run_finetune(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m app.finetune` as a user runs it; one torch thread (a busy 2-core machine)."""
    return subprocess.run(
        [sys.executable, "-m", "app.finetune", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **CLIENT_ENV, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
