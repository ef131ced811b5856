"""Command line: `python -m app.finetune train --dataset URI --base MODEL --output URI [...]`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from app.finetune.errors import FineTuneError
from app.finetune.pipeline import FineTuneRequest, fine_tune
from app.finetune.training import DEFAULT_TARGET_MODULES, TrainingOptions
from app.tuning import rules

EXIT_OK, EXIT_ERROR = 0, 2
DEFAULTS = TrainingOptions()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.finetune",
        description="Fine-tune Gemma 3 with LoRA and publish the merged model folder.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train a LoRA adapter, merge it and write the merged model to --output",
        description="Checks the dataset with app.tuning's rules first; nothing trains on errors. "
        "A rerun with the same --work-dir resumes from its last checkpoint.",
    )
    train.add_argument("--dataset", required=True, help="JSONL file: a local path or gs://")
    train.add_argument(
        "--base",
        required=True,
        help="base Gemma 3: a Hugging Face id (google/gemma-3-1b-it), a local folder or gs://",
    )
    train.add_argument(
        "--output", required=True, help="gs://BUCKET/PATH (or a local folder) for the merged model"
    )
    train.add_argument(
        "--format", choices=("auto", *rules.FORMATS), default="auto", help="dataset format"
    )
    train.add_argument("--epochs", type=float, default=DEFAULTS.epochs)
    train.add_argument(
        "--max-steps",
        type=int,
        default=DEFAULTS.max_steps,
        help="stop after N steps (overrides --epochs)",
    )
    train.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate)
    train.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    train.add_argument("--gradient-accumulation", type=int, default=DEFAULTS.gradient_accumulation)
    train.add_argument("--lora-r", type=int, default=DEFAULTS.lora_r)
    train.add_argument("--lora-alpha", type=int, default=DEFAULTS.lora_alpha)
    train.add_argument("--lora-dropout", type=float, default=DEFAULTS.lora_dropout)
    train.add_argument(
        "--target-modules",
        default=",".join(DEFAULT_TARGET_MODULES),
        help="comma-separated module names LoRA adapts",
    )
    train.add_argument(
        "--train-modules",
        default="",
        help="comma-separated modules trained in full beside the adapter (e.g. lm_head)",
    )
    train.add_argument("--max-seq-length", type=int, default=DEFAULTS.max_seq_length)
    train.add_argument("--warmup-ratio", type=float, default=DEFAULTS.warmup_ratio)
    train.add_argument(
        "--save-steps", type=int, default=DEFAULTS.save_steps, help="checkpoint every N steps"
    )
    train.add_argument("--seed", type=int, default=DEFAULTS.seed)
    train.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="checkpoints and downloads (default: a folder under the temp dir named after the run)",
    )
    return parser


def _names(raw: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        options = TrainingOptions(
            epochs=args.epochs,
            max_steps=args.max_steps,
            learning_rate=args.learning_rate,
            batch_size=args.batch_size,
            gradient_accumulation=args.gradient_accumulation,
            lora_r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=_names(args.target_modules),
            train_modules=_names(args.train_modules),
            max_seq_length=args.max_seq_length,
            warmup_ratio=args.warmup_ratio,
            save_steps=args.save_steps,
            seed=args.seed,
        )
        fine_tune(
            FineTuneRequest(
                dataset=args.dataset,
                base=args.base,
                output=args.output,
                options=options,
                dataset_format=args.format,
                work_dir=args.work_dir,
            )
        )
    except FineTuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
