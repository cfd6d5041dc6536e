"""A tiny Llama-architecture chat model built from a config, for tests and demos that need a real
model but no files: a byte-level BPE tokenizer trained on the fly and a ChatML chat template.

Randomly initialised (seeded, so deterministic): it speaks nonsense until trained. Never use it
where answer quality matters; it exists to exercise real transformer code paths fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

# ChatML, as SmolLM2 and Qwen use, so prompts look alike across the tiny and the real models.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "I lost my debit card yesterday and need a new one.",
    "Where is my parcel? It was due on Monday.",
    "Please cancel my subscription and refund the last payment.",
    '{"intent": "card_lost", "urgency": "high"}',
    '{"intent": "refund", "amount": 42, "currency": "EUR"}',
    "The quick brown fox jumps over the lazy dog 0123456789 times.",
    "You are a helpful assistant. Answer briefly and in JSON when asked.",
    "Hello, how can I help you today? Thanks, goodbye!",
]


def _syllable_text(words: int = 6000, seed: int = 0) -> list[str]:
    """Seeded pseudo-words: enough variety for BPE to fill a ~2k vocabulary from a tiny corpus."""
    import random

    rng = random.Random(seed)
    onsets = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w"]
    onsets += ["br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "st", "th", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "ou", "oo"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "ck"]
    out = []
    for _ in range(words // 12):
        line = [
            "".join(
                rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                for _ in range(rng.randint(1, 3))
            )
            for _ in range(12)
        ]
        out.append(" ".join(line))
    return out


def train_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 2048) -> Any:
    """A byte-level BPE tokenizer (single-digit number tokens) as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(corpus) if corpus is not None else _CORPUS + _syllable_text()
    core = Tokenizer(models.BPE())
    # Digits one by one: numbers then tokenise the same wherever they appear.
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(
    seed: int = 0,
    *,
    hidden_size: int = 128,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int = 384,
    max_positions: int = 512,
    corpus: Iterable[str] | None = None,
) -> tuple[Any, Any]:
    """(model, tokenizer): a ~0.7M-parameter Llama with tied embeddings, seeded weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(corpus)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        # Wider than Llama's 0.02 so that, untrained, greedy decoding gives varied text rather
        # than one token repeated: tests of stop strings and streaming need something to cut.
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def save_tiny_model(directory: str | Path, seed: int = 0, **kwargs: Any) -> Path:
    """Build the tiny model and save it (model + tokenizer) as a Hugging Face directory."""
    target = Path(directory)
    model, tokenizer = build_tiny_model(seed, **kwargs)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
