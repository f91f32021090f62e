"""A real tokenizer.json built in the test (Hugging Face ``tokenizers``): byte-level BPE whose ids are
exactly the small zoo decoders' vocabulary (1000), so every id they generate decodes to text."""

from __future__ import annotations

import random
from pathlib import Path

SMALL_VOCAB = 1000  # zoo.build_small("gpt2")'s logits width
EOS = "<|endoftext|>"
# Syllables with multi-byte characters: trained merges keep some of them whole, and a character the
# corpus never has ('🦊') stays split into its byte tokens.
_SYLLABLES = ["ka", "to", "ré", "mi", "sü", "na", "lo", "çe", "po", "ñu", "qi", "zé", "ba", "日", "本", "🙂"]


def corpus(num_words: int = 4000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(num_words)]
    return [" ".join(words[i:i + 12]) for i in range(0, num_words, 12)] + ["the quick brown fox jumps"]


def build_tokenizer(vocab_size: int = SMALL_VOCAB):
    """A trained byte-level BPE tokenizer of ``vocab_size`` ids (id 0: the end-of-text token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    assert tok.get_vocab_size(with_added_tokens=True) == vocab_size
    return tok


def save_tokenizer(folder: Path, vocab_size: int = SMALL_VOCAB) -> Path:
    path = Path(folder) / "tokenizer.json"
    build_tokenizer(vocab_size).save(str(path))
    return path
