"""Fine-tunes Gemma 3 with LoRA on a dataset `app.tuning` validates, and publishes the merged model.

`python -m app.finetune train --dataset URI --base MODEL --output gs://BUCKET/PATH` reads the
dataset (local or gs://), trains a LoRA adapter with PEFT through transformers' Trainer, merges
it into the base model, runs the inference app's model-folder checks on the merged folder and
uploads it with a completion marker written last.
"""
