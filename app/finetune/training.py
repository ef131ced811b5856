"""LoRA training with PEFT through transformers' Trainer, then the merge into a full model folder.

The same code runs on CPU (float32, tiny models and tests) and on CUDA (bfloat16). Trainer
writes checkpoints under the work folder every ``save_steps``; a run that finds one resumes
from it, so a Job whose pod restarts continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from app.finetune.dataset import IGNORE, TokenizedExample
from app.finetune.errors import FineTuneError

logger = logging.getLogger(__name__)

# Gemma 3's attention and MLP projections; PEFT's "all-linear" would also pick the vision tower.
DEFAULT_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


@dataclass(frozen=True)
class TrainingOptions:
    """The hyper-parameters; the CLI flags and the Job's config map one to one onto these."""

    epochs: float = 3.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    batch_size: int = 4
    gradient_accumulation: int = 1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    # Trained in full next to the adapter (PEFT's modules_to_save), e.g. an untied lm_head.
    train_modules: tuple[str, ...] = ()
    max_seq_length: int = 1024
    warmup_ratio: float = 0.03
    save_steps: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.epochs <= 0 and self.max_steps <= 0:
            problems.append("--epochs must be above 0 (or give --max-steps)")
        if self.learning_rate <= 0:
            problems.append("--learning-rate must be above 0")
        for name in ("batch_size", "gradient_accumulation", "lora_r", "lora_alpha", "save_steps"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 <= self.lora_dropout < 1:
            problems.append("--lora-dropout must be in [0, 1)")
        if self.max_seq_length < 16:
            problems.append("--max-seq-length must be at least 16")
        if not self.target_modules:
            problems.append("--target-modules must name at least one module")
        if problems:
            raise FineTuneError("; ".join(problems))

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "target_modules": list(self.target_modules),
            "train_modules": list(self.train_modules),
        }


def device_and_dtype() -> tuple[str, torch.dtype]:
    if torch.cuda.is_available():
        return "cuda", torch.bfloat16
    return "cpu", torch.float32


class _Examples(torch.utils.data.Dataset[dict[str, list[int]]]):
    def __init__(self, examples: list[TokenizedExample]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        example = self.examples[index]
        return {"input_ids": example.input_ids, "labels": example.labels}


class _PadToLongest:
    """Right-pads a batch; padding is masked out of attention and of the loss."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        longest = max(len(item["input_ids"]) for item in batch)
        ids, labels, mask = [], [], []
        for item in batch:
            pad = longest - len(item["input_ids"])
            ids.append(item["input_ids"] + [self.pad_id] * pad)
            labels.append(item["labels"] + [IGNORE] * pad)
            mask.append([1] * len(item["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }


class _ProgressLines(TrainerCallback):
    """One log line per tenth of the run: a Job's log and the demo show progress without a TTY."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.loss: float | None = None
        self.last_tenth = -1

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        total = max(state.max_steps, 1)
        tenth = 10 * state.global_step // total
        if tenth == self.last_tenth:
            return
        self.last_tenth = tenth
        loss = "" if self.loss is None else f", loss {self.loss:.3f}"
        logger.info(
            "finetune: step %d of %d (%d%%)%s, %.0f s",
            state.global_step,
            total,
            100 * state.global_step // total,
            loss,
            time.monotonic() - self.started,
        )


def train_and_merge(
    base_dir: Path,
    examples: list[TokenizedExample],
    options: TrainingOptions,
    work_dir: Path,
    merged_dir: Path,
) -> dict[str, Any]:
    """Train a LoRA adapter on ``examples``, merge it, save the full model to ``merged_dir``."""
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415 - heavy imports, once
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer  # noqa: PLC0415

    device, dtype = device_and_dtype()
    logger.info(
        "finetune: loading %s on %s (%s)", base_dir, device, str(dtype).removeprefix("torch.")
    )
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in (*options.target_modules, *options.train_modules) if m not in present]
    if missing:
        raise FineTuneError(
            f"--target-modules/--train-modules {', '.join(missing)} not found in {base_dir.name}; "
            f"Gemma 3 has {', '.join(DEFAULT_TARGET_MODULES)}."
        )
    lora = LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=list(options.target_modules),
        modules_to_save=list(options.train_modules) or None,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    trainable, total = peft_model.get_nb_trainable_parameters()
    per_step = options.batch_size * options.gradient_accumulation
    steps = (
        options.max_steps
        if options.max_steps > 0
        else math.ceil(len(examples) / per_step) * math.ceil(options.epochs)
    )
    logger.info(
        "finetune: %d examples, LoRA r=%d on %s: %s of %s parameters trained, about %d steps",
        len(examples),
        options.lora_r,
        ",".join(options.target_modules),
        f"{trainable:,}",
        f"{total:,}",
        steps,
    )
    checkpoints = work_dir / "checkpoints"
    arguments = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=options.epochs,
        max_steps=options.max_steps,
        learning_rate=options.learning_rate,
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.gradient_accumulation,
        warmup_steps=options.warmup_ratio,  # below 1: a fraction of all steps
        lr_scheduler_type="cosine",
        logging_steps=max(1, min(10, steps // 10)),
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=2,
        bf16=dtype == torch.bfloat16,
        use_cpu=device == "cpu",
        seed=options.seed,
        data_seed=options.seed,
        report_to=[],
        dataloader_num_workers=0,
        remove_unused_columns=False,
        # A progress bar for a terminal; _ProgressLines writes plain lines for logs.
        disable_tqdm=not sys.stderr.isatty(),
    )
    trainer = Trainer(
        model=peft_model,
        args=arguments,
        train_dataset=_Examples(examples),
        data_collator=_PadToLongest(int(tokenizer.pad_token_id or 0)),
        callbacks=[_ProgressLines()],
    )
    resume = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if resume:
        logger.info("finetune: resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    logger.info("finetune: training done, loss %.4f; merging the adapter", result.training_loss)

    # PeftModel forwards merge_and_unload to its LoraModel, which its types do not show.
    lora_model: Any = peft_model.base_model
    merged = lora_model.merge_and_unload()
    merged.eval()
    if merged_dir.exists():
        shutil.rmtree(merged_dir)
    merged.save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    _keep_base_files(base_dir, merged_dir)
    return {"training_loss": result.training_loss, "steps": result.global_step}


def _keep_base_files(base_dir: Path, merged_dir: Path) -> None:
    """Carry over what save_pretrained does not rewrite: the chat template and end-of-turn ids."""
    for name in ("chat_template.jinja", "generation_config.json", "special_tokens_map.json"):
        source = base_dir / name
        if source.is_file() and not (merged_dir / name).is_file():
            shutil.copy(source, merged_dir / name)
    config_path = merged_dir / "tokenizer_config.json"
    base_config = base_dir / "tokenizer_config.json"
    if config_path.is_file() and base_config.is_file():
        template = json.loads(base_config.read_text()).get("chat_template")
        config = json.loads(config_path.read_text())
        if template and not config.get("chat_template"):
            config["chat_template"] = template
            config_path.write_text(json.dumps(config, indent=2))
