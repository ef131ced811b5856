"""Benchmark the demo model's training: how long `make demo`'s first run trains, and how well.

    .venv/bin/python -m bench.finetune_bench [--runs N]

Each run trains the demo model (devtools/demo_model.py: app.finetune on
devtools/gemma_stack_qa.jsonl, one torch thread) into a fresh local folder in a child process,
timed from the process start to the published marker, then asks the
merged model every question of the dataset at the chat page's default sampling (temperature
0.9, top_p 0.95) and counts the answers returned exactly as trained.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ASK = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from devtools.demo_model import questions_and_answers
folder = sys.argv[1]
torch.manual_seed(0)
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)
exact = broken = 0
for question, answer in questions_and_answers():
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=96, do_sample=True, temperature=0.9, top_p=0.95)
    reply = tokenizer.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
    exact += reply.strip() == answer
    broken += "\\ufffd" in reply
print(json.dumps({"exact": exact, "questions": len(questions_and_answers()), "fffd": broken}))
"""


def run_once() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="finetune-bench-") as scratch:
        out = Path(scratch) / "model"
        started = time.perf_counter()
        trained = subprocess.run(
            [
                sys.executable,
                "-m",
                "devtools.demo_model",
                f"--output={out}",
                f"--work-dir={scratch}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        if trained.returncode != 0:
            raise SystemExit(f"training failed:\n{trained.stderr[-3000:]}")
        marker = json.loads((out / "finetune-complete.json").read_text())
        asked = subprocess.run(
            [sys.executable, "-c", ASK, str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        quality = json.loads(asked.stdout.strip().splitlines()[-1])
        return {"seconds": seconds, "marker": marker, **quality}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    print("| run | build + train + publish | steps | mean loss | exact answers | with U+FFFD |")
    print("|---|---|---|---|---|---|")
    for run in range(1, args.runs + 1):
        row = run_once()
        marker = row["marker"]
        assert isinstance(marker, dict)
        print(
            f"| {run} | {row['seconds']:.1f} s | {marker['steps']} | "
            f"{marker['training_loss']:.3f} | {row['exact']}/{row['questions']} | {row['fffd']} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
