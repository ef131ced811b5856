"""Validate and convert supervised-tuning JSONL datasets before spending GPU hours on a run."""
