"""The offline demo's model: a tiny Gemma 3 that app.finetune trains on questions about gemma-stack.

The dataset is ``devtools/gemma_stack_qa.jsonl`` (text format, checked by app.tuning). The base
is a random-weight tiny Gemma 3 whose tokenizer is trained on that dataset's text alone, so the
model can only write ASCII and its replies never hold U+FFFD. Training is the real program,
`python -m app.finetune train`, with settings that make the model recite each answer to its
question in about 15 seconds on one core:

    python -m devtools.demo_model --output gs://demo-models/gemma-stack-qa --work-dir DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

DATASET = Path(__file__).resolve().with_name("gemma_stack_qa.jsonl")
# A new recipe (base shape, tokenizer or settings below) gets a new name, so no run reuses a
# model trained the old way.
BASE_NAME = "gemma-stack-qa-base-v1"
# Full-batch steps: the whole dataset is one batch, so 120 epochs are 120 optimiser steps. The
# tiny base's output head is untied and trained in full; LoRA alone cannot sharpen it enough.
TRAINING_FLAGS = (
    "--epochs=120",
    "--batch-size=18",
    "--learning-rate=2e-2",
    "--lora-r=16",
    "--lora-alpha=32",
    "--lora-dropout=0",
    "--train-modules=lm_head",
    "--save-steps=40",
)


def questions_and_answers() -> list[tuple[str, str]]:
    examples = [json.loads(line) for line in DATASET.read_text().splitlines() if line.strip()]
    return [(e["input_text"], e["output_text"]) for e in examples]


def dataset_digest() -> str:
    """What a published demo model records as its dataset_sha256 (app.finetune's marker)."""
    return hashlib.sha256(DATASET.read_bytes()).hexdigest()


def build_base(base_dir: Path) -> Path:
    """The untrained base: random weights, a tokenizer trained on the dataset's text."""
    from devtools.tiny_model import build_tiny_gemma3  # noqa: PLC0415 - imports torch

    if (base_dir / "config.json").is_file():
        return base_dir
    corpus = [text for pair in questions_and_answers() for text in pair]
    partial = base_dir.with_name(f"{base_dir.name}.partial")
    build_tiny_gemma3(partial, corpus=corpus)
    partial.rename(base_dir)
    return base_dir


def train(output: str, work_dir: Path) -> int:
    import torch  # noqa: PLC0415 - only for training

    from app.finetune.__main__ import main as finetune  # noqa: PLC0415

    # A model this small trains fastest on one thread: 2 threads on a busy 2-core machine
    # made each step 20 times slower.
    torch.set_num_threads(1)

    base = build_base(work_dir / BASE_NAME)
    return finetune(
        [
            "train",
            f"--dataset={DATASET}",
            f"--base={base}",
            f"--output={output}",
            # Checkpoints of another dataset must not be resumed.
            f"--work-dir={work_dir / f'training-{dataset_digest()[:12]}'}",
            *TRAINING_FLAGS,
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="gs://BUCKET/PATH or a local folder")
    parser.add_argument("--work-dir", type=Path, required=True, help="base model and checkpoints")
    args = parser.parse_args(argv)
    return train(args.output, args.work_dir)


if __name__ == "__main__":
    raise SystemExit(main())
