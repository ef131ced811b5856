"""Build a small random-weight Gemma 3 merged-model folder for tests, demos and benchmarks.

The folder looks like a real merged fine-tune in a bucket: config.json, model.safetensors,
generation_config.json, tokenizer.json, tokenizer_config.json, special_tokens_map.json and a
Gemma 3 chat template. Nothing is downloaded: the tokenizer is trained on a few sentences.

``reply`` builds a scripted model: every layer's output projection is zeroed, so the model
only sees the current token, and an untied output head chains "<start_of_turn>model\\n" to
the reply's tokens, then to ``<end_of_turn>``, then past the turn into a new user turn and
the reply again. A server that ignores end of turn therefore runs past its turn for real.

    python -m devtools.tiny_model OUT_DIR [--shape tiny|270m] [--reply TEXT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import string
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
PAD_ID, EOS_ID, BOS_ID, UNK_ID, START_OF_TURN_ID, END_OF_TURN_ID = range(6)

# Google's Gemma 3 chat template (system folded into the first user turn, assistant -> model).
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate '
    'user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

_CORPUS = [
    "Hello! How can I help you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Gemma is a family of lightweight open models from Google.",
    "SELECT name, email FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "SELECT COUNT(*) FROM orders GROUP BY customer_id;",
    "CREATE TABLE users (id INT PRIMARY KEY, name TEXT, email TEXT);",
    "Given the <USER_QUERY> and the <SCHEMA>, generate the corresponding SQL command.",
    "user model system assistant question answer context",
    "Cloud Run serves containers; GKE Autopilot runs pods on NVIDIA L4 GPUs.",
    "Paris is the capital of France. The sky is blue. 1 2 3 4 5 6 7 8 9 10",
    "Write a haiku about the sea, the wind and the mountains.",
]

SHAPES: dict[str, dict[str, object]] = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "query_pre_attn_scalar": 32,
        "sliding_window": 128,
        "max_position_embeddings": 8192,
    },
    # Gemma 3 270M's published shape; the vocabulary is padded to 262144 (see _pad_vocab).
    "270m": {
        "hidden_size": 640,
        "intermediate_size": 2048,
        "num_hidden_layers": 18,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "sliding_window": 512,
        "max_position_embeddings": 32768,
        "vocab_size": 262144,
    },
}


def _train_tokenizer(vocab_size: int = 600, corpus: Sequence[str] | None = None) -> Tokenizer:
    """A byte-level BPE tokenizer; trained on ``corpus`` alone, its alphabet is that text's bytes.

    A model that can only emit bytes of its (ASCII) corpus never writes half a UTF-8 character,
    so its replies never decode to U+FFFD.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=[] if corpus is not None else pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The role names of the chat template, and every ASCII character a user may type.
    texts = [*corpus, "user\nmodel\n", string.printable] if corpus is not None else _CORPUS
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", BOS_ID)]
    )
    return tokenizer


def _pad_vocab(tokenizer: Tokenizer, vocab_size: int) -> Tokenizer:
    """Fill the vocabulary up to ``vocab_size`` with letter strings no merge can produce.

    Random weights sample from the whole vocabulary, so every id must decode to some text,
    as in a real Gemma tokenizer.
    """
    data = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    next_id = max(vocab.values()) + 1
    for length in (3, 4):
        for letters in itertools.product(string.ascii_lowercase, repeat=length):
            if next_id >= vocab_size:
                return Tokenizer.from_str(json.dumps(data))
            piece = "".join(letters)
            if piece not in vocab:
                vocab[piece] = next_id
                next_id += 1
    return Tokenizer.from_str(json.dumps(data))


def _save_tokenizer(tokenizer: Tokenizer, out_dir: Path) -> PreTrainedTokenizerFast:
    names = dict(
        zip(("pad_token", "eos_token", "bos_token", "unk_token"), SPECIAL_TOKENS, strict=False)
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        **names,
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        model_max_length=1_000_000,
        padding_side="left",
    )
    fast.chat_template = GEMMA3_CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    # Real merged folders carry the template inside tokenizer_config.json too.
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = GEMMA3_CHAT_TEMPLATE
    config_path.write_text(json.dumps(config, indent=2))
    special_path = out_dir / "special_tokens_map.json"
    if not special_path.exists():
        special_path.write_text(
            json.dumps(
                {
                    "bos_token": "<bos>",
                    "eos_token": "<eos>",
                    "pad_token": "<pad>",
                    "unk_token": "<unk>",
                    "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"],
                },
                indent=2,
            )
        )
    return fast


def _script_reply(
    model: Gemma3ForCausalLM,
    fast: PreTrainedTokenizerFast,
    reply: str,
    scale: float = 6.0,
    endless: bool = False,
) -> None:
    """Turn the model into a next-token chain that says ``reply`` and then runs past its turn
    (``endless``: says ``reply`` over and over, so a reply is always max_tokens long)."""
    prompt = fast.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    start = fast.encode(prompt, add_special_tokens=False)[-1]
    reply_ids = fast.encode(reply, add_special_tokens=False)
    user_ids = fast.encode("user", add_special_tokens=False)
    if len(set(reply_ids)) != len(reply_ids) or start in reply_ids:
        raise ValueError(f"reply {reply!r} must not repeat a token; pick other words")
    chain = [start, *reply_ids, END_OF_TURN_ID, START_OF_TURN_ID]
    if endless:
        chain = [start, *reply_ids, reply_ids[0]]
    elif not set(user_ids) & set(chain):
        chain += user_ids
    if not endless:
        chain.append(start)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.zero_()
        embed = model.model.embed_tokens.weight
        head = torch.zeros_like(embed)
        for current, following in itertools.pairwise(chain):
            head[following] += embed[current] / embed[current].norm() * scale
        model.lm_head.weight = torch.nn.Parameter(head)


def build_tiny_gemma3(
    out_dir: Path,
    shape: str = "tiny",
    reply: str | None = None,
    corpus: Sequence[str] | None = None,
    endless_reply: bool = False,
) -> Path:
    """Write a random-weight Gemma 3 merged-model folder to ``out_dir`` and return it.

    Deterministic: the same arguments give the same files. ``reply`` scripts the model's
    answer to any single-turn chat (see the module docstring); with ``endless_reply`` it
    repeats the answer until max_tokens instead of ending its turn. ``corpus`` trains the tokenizer
    on that text instead of the built-in sentences (a base model to fine-tune on it).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {sorted(SHAPES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dims = dict(SHAPES[shape])
    tokenizer = _train_tokenizer(corpus=corpus)
    vocab_size = int(dims.pop("vocab_size", tokenizer.get_vocab_size()))  # type: ignore[call-overload]
    if vocab_size > tokenizer.get_vocab_size():
        tokenizer = _pad_vocab(tokenizer, vocab_size)
    fast = _save_tokenizer(tokenizer, out_dir)

    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        pad_token_id=PAD_ID,
        eos_token_id=[EOS_ID, END_OF_TURN_ID],
        bos_token_id=BOS_ID,
        # A scripted reply needs its own output head; so does a base fine-tuned with a
        # trainable head (app.finetune --train-modules lm_head).
        tie_word_embeddings=reply is None and corpus is None,
        dtype="bfloat16" if shape == "270m" else "float32",
        **dims,  # type: ignore[arg-type]
    )
    config.architectures = ["Gemma3ForCausalLM"]
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    if corpus is None:
        with torch.no_grad():
            # Random weights rarely end a turn by themselves: keep special tokens' logits near
            # 0 so generation runs to max_tokens unless the model is scripted. A base model to
            # fine-tune keeps them as initialised: it must learn to end its turn.
            model.model.embed_tokens.weight[: len(SPECIAL_TOKENS)] *= 0.01
    if reply is not None:
        _script_reply(model, fast, reply, endless=endless_reply)
    if shape == "270m":
        model.bfloat16()  # in place, like every nn.Module dtype cast
    model.generation_config.eos_token_id = [EOS_ID, END_OF_TURN_ID]
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.bos_token_id = BOS_ID
    model.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--reply", default=None, help="script the model to always say this")
    args = parser.parse_args(argv)
    path = build_tiny_gemma3(args.out_dir, shape=args.shape, reply=args.reply)
    print(path)


if __name__ == "__main__":
    main()
