"""A ``CLIPTokenizer`` vocabulary generated for a closed word list (no downloaded tokenizer).

CLIP's tokenizer is byte-pair encoding over words: ``vocab.json`` maps tokens to ids (a word's last
symbol carries ``</w>``) and ``merges.txt`` lists, by rank, which adjacent symbols merge. For a closed
language we write, for every word, the merges that build it from the left, one character at a time,
all merges of shorter prefixes ranked first; the vocabulary holds every single character (so any text
still tokenizes), every merge result and the two special tokens, ``<|endoftext|>`` last as in CLIP
(its pooled output is read at the highest id when a config predates ``eos_token_id``). A word that
contains another word's first two letters inside it may come out as two tokens ("backslanted" is
"back" + "slanted"); every text still tokenizes without unknown tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

START, END = "<|startoftext|>", "<|endoftext|>"


def _symbols(word: str) -> list[str]:
    return [*word[:-1], word[-1] + "</w>"]


def bpe_tables(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary (token -> id) and ranked merges that build each of ``words`` from its characters."""
    merges_by_length: dict[int, list[tuple[str, str]]] = {}
    for word in sorted(set(words)):
        symbols = _symbols(word)
        prefix = symbols[0]
        for length, symbol in enumerate(symbols[1:], start=2):
            merges_by_length.setdefault(length, []).append((prefix, symbol))
            prefix += symbol
    merges: list[tuple[str, str]] = []
    for length in sorted(merges_by_length):
        for merge in merges_by_length[length]:
            if merge not in merges:
                merges.append(merge)
    characters = sorted({c for word in words for c in word} | set("abcdefghijklmnopqrstuvwxyz0123456789,.'-"))
    tokens = [*characters, *(c + "</w>" for c in characters)]
    tokens += [a + b for a, b in merges]
    vocab: dict[str, int] = {}
    for token in [START, *tokens, END]:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def write_clip_tokenizer(folder: str | Path, words: list[str], max_length: int) -> None:
    """Write a ``CLIPTokenizer`` folder (vocab, merges, config) for the closed word list ``words``."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = bpe_tables(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=0) + "\n")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length,
        bos_token=START, eos_token=END, pad_token=END, unk_token=END,
    )
    tokenizer.save_pretrained(folder)
