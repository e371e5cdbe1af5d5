"""A CLIP tokenizer for the captioned-shapes world, built here rather than downloaded.

CLIP's tokenizer is byte-level BPE (Radford et al. 2021; Sennrich et al. 2016). Its vocabulary has
three parts, in this order:

1. the 256 bytes, each shown as a printable character (``bytes_to_unicode``), then the same 256
   with ``</w>`` appended, the form a character takes at the end of a word;
2. one token per merge, in the order of ``merges.txt``: the merge ``"r e"`` adds ``"re"``;
3. the special tokens ``<|startoftext|>`` and ``<|endoftext|>``.

Tokenizing a word starts from its characters (the last one carrying ``</w>``) and applies merges,
lowest rank first, until none applies. Real CLIP learnt 48,894 merges from web text; we learn just
enough, by running BPE's own training on the words of the world's captions, that each of those
words becomes a single token. Any other text still tokenizes (into pieces, down to single bytes),
so nothing is ever unknown; only the world's words carry meaning for the trained model.

``write_vocabulary(folder)`` writes ``vocab.json`` and ``merges.txt``; the package ships the
result once, in ``course/assets/tiny_clip_vocab``, and ``load_tokenizer()`` reads it with
``CLIPTokenizer``. A pipeline folder's ``tokenizer/`` is that vocabulary plus its settings
(``write_tokenizer``); in the bundled folders its two files are links to the shipped copy, so
there is only one.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from ..data.shapes import COLORS, SHAPES, WHERE
from ..models.registry import ASSETS

VOCAB_DIR = ASSETS / "tiny_clip_vocab"
VOCAB_FILES = ("vocab.json", "merges.txt")
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
#: tokens per prompt, padding included (CLIP's is 77). The longest caption, "a yellow triangle at
#: the bottom", takes 8 with its start and end tokens; 16 leaves room and keeps attention cheap.
MAX_LENGTH = 16


def caption_words() -> list[str]:
    """Every word a caption of the world can use, sorted: a, at, blue, bottom, center, ..."""
    words = {"a", *COLORS, *SHAPES}
    for phrase in WHERE.values():
        words.update(phrase.split())
    return sorted(words)


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) map from the 256 byte values to printable characters.

    Printable bytes stand for themselves; the others (control characters, space, ...) are mapped
    to the characters from U+0100 on, so every token is a visible, whitespace-free string.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _symbols(word: str) -> tuple[str, ...]:
    """A word as BPE starts it: its bytes as characters, the last one marked as ending the word."""
    byte_chars = bytes_to_unicode()
    chars = [byte_chars[b] for b in word.encode("utf-8")]
    return (*chars[:-1], chars[-1] + END_OF_WORD)


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE training on ``words`` (each counted once) until every word is a single symbol.

    Each round counts the adjacent symbol pairs over all words, merges the most frequent pair
    everywhere (ties: the first in sorted order, so the result is deterministic) and records it.
    Applying the recorded merges in order, as the tokenizer does, reproduces these segmentations.
    """
    corpus = [_symbols(word) for word in sorted(set(words))]
    merges: list[tuple[str, str]] = []
    while any(len(symbols) > 1 for symbols in corpus):
        pairs = Counter(pair for symbols in corpus for pair in zip(symbols, symbols[1:]))
        best_count = max(pairs.values())
        best = min(pair for pair, count in pairs.items() if count == best_count)
        merges.append(best)
        corpus = [_merge(symbols, best) for symbols in corpus]
    return merges


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def build_vocabulary(words: list[str] | None = None) -> tuple[dict[str, int], list[str]]:
    """(vocab: token -> id, merges: lines of merges.txt) laid out as CLIP's, for ``words``
    (default: the caption words). <|startoftext|> and <|endoftext|> take the last two ids."""
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [char + END_OF_WORD for char in alphabet]
    merges = learn_merges(caption_words() if words is None else words)
    tokens += ["".join(pair) for pair in merges]
    tokens += [BOS, EOS]
    if len(set(tokens)) != len(tokens):
        raise AssertionError("a merge produced a token that already exists")
    return {token: index for index, token in enumerate(tokens)}, [" ".join(m) for m in merges]


def write_vocabulary(folder=VOCAB_DIR) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (with CLIP's version header) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocabulary()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n",
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                       encoding="utf-8")
    return folder


def write_tokenizer(folder, max_length: int = MAX_LENGTH) -> Path:
    """A ``CLIPTokenizer`` folder as ``from_pretrained`` reads it: the shipped vocabulary and a
    ``tokenizer_config.json`` padding prompts to ``max_length`` with <|endoftext|>."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in VOCAB_FILES:
        shutil.copyfile(VOCAB_DIR / name, folder / name)
    config = {"bos_token": BOS, "eos_token": EOS, "model_max_length": max_length,
              "pad_token": EOS, "tokenizer_class": "CLIPTokenizer", "unk_token": EOS}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_tokenizer(folder=VOCAB_DIR, max_length: int = MAX_LENGTH):
    """A ``transformers.CLIPTokenizer`` over the shipped vocabulary, padding to ``max_length``.

    Padding uses <|endoftext|>, as Stable Diffusion 1.x's tokenizer does.
    """
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=max_length)


if __name__ == "__main__":  # regenerate the shipped files: python -m course.tinysd.vocab
    print(f"wrote {write_vocabulary()}")
