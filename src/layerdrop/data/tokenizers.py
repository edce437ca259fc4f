"""Three tokenizers, each built from the train split and saved with the checkpoint as JSON.

- ``char``: one token per character (Tiny Shakespeare, nanoGPT style);
- ``word``: pre-tokenized text split on whitespace, one ``<eos>`` per line (WikiText's convention,
  as in the usual WikiText perplexity numbers), words unseen in training map to ``<unk>``;
- ``bpe``: byte-level BPE trained with the ``tokenizers`` library.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from layerdrop.config import shorten
from layerdrop.errors import UserError

TOKENIZER_KINDS = ("char", "word", "bpe")
UNK, EOS = "<unk>", "<eos>"
# Special tokens of the BPE vocabulary, ids 0-4 in this order (padding, sentence bounds, masking).
PAD, BOS, EOS_BPE, MASK = "<pad>", "<s>", "</s>", "<mask>"
SPECIALS = (PAD, BOS, EOS_BPE, UNK, MASK)


class CharTokenizer:
    kind = "char"

    def __init__(self, vocab: list[str]):
        self.vocab = vocab
        self.index = {s: i for i, s in enumerate(vocab)}
        self.unk_id = self.index[UNK]

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls([UNK] + sorted(set(text)))

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        get, unk = self.index.get, self.unk_id
        return [get(ch, unk) for ch in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] if i != self.unk_id else "?" for i in ids)

    def to_json(self) -> dict:
        return {"kind": self.kind, "vocab": self.vocab}


class WordTokenizer:
    kind = "word"

    def __init__(self, vocab: list[str]):
        self.vocab = vocab
        self.index = {s: i for i, s in enumerate(vocab)}
        self.unk_id, self.eos_id = self.index[UNK], self.index[EOS]

    @classmethod
    def train(cls, text: str) -> WordTokenizer:
        counts = Counter(text.split())
        counts.pop(UNK, None)
        counts.pop(EOS, None)
        words = sorted(counts, key=lambda w: (-counts[w], w))
        return cls([UNK, EOS] + words)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        get, unk = self.index.get, self.unk_id
        ids: list[int] = []
        for line in text.splitlines():
            ids.extend(get(word, unk) for word in line.split())
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: list[int]) -> str:
        lines, words = [], []
        for i in ids:
            if i == self.eos_id:
                lines.append(" ".join(words))
                words = []
            else:
                words.append(self.vocab[i])
        return "\n".join(lines + [" ".join(words)])

    def to_json(self) -> dict:
        return {"kind": self.kind, "vocab": self.vocab}


class BPETokenizer:
    kind = "bpe"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int, sentences: bool = False) -> BPETokenizer:
        """Byte-level BPE; ``sentences=True`` treats each line as one sentence (a leading space is
        added so a sentence's first word is tokenized like any other word)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=sentences)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=list(SPECIALS),
            show_progress=False,
        )
        lines = text.splitlines() if sentences else text.splitlines(keepends=True)
        tokenizer.train_from_iterator(lines, trainer=trainer)
        return cls(tokenizer)

    def token_id(self, token: str) -> int:
        return self.tokenizer.token_to_id(token)

    def special_ids(self) -> dict[str, int]:
        """Config fields for the special tokens: pad_id, bos_id, eos_id, mask_id."""
        return {"pad_id": self.token_id(PAD), "bos_id": self.token_id(BOS), "eos_id": self.token_id(EOS_BPE),
                "mask_id": self.token_id(MASK)}

    def encode_sentences(self, sentences: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(sentences)]

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for encoding in self.tokenizer.encode_batch(text.splitlines(keepends=True)):
            ids.extend(encoding.ids)
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids).strip(" ") if self.tokenizer.pre_tokenizer.add_prefix_space else self.tokenizer.decode(ids)

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokenizer": json.loads(self.tokenizer.to_str())}


Tokenizer = CharTokenizer | WordTokenizer | BPETokenizer


def require_bpe(kind: str | None, task: str) -> None:
    """Tasks with special tokens (<pad>, <s>, </s>, <mask>) need the BPE tokenizer."""
    if kind not in (None, "bpe"):
        raise UserError(f"--tokenizer: got {kind!r}; valid for --task {task}: bpe")


def build_tokenizer(kind: str, train_text: str, bpe_vocab_size: int = 8000, sentences: bool = False) -> Tokenizer:
    if kind == "char":
        return CharTokenizer.train(train_text)
    if kind == "word":
        return WordTokenizer.train(train_text)
    if kind == "bpe":
        return BPETokenizer.train(train_text, bpe_vocab_size, sentences)
    raise UserError(f"--tokenizer: got {kind!r}; valid: {', '.join(TOKENIZER_KINDS)}")


def encode_tensor(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)


def tokenizer_from_json(data: dict, source: str) -> Tokenizer:
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "char":
        return CharTokenizer(data["vocab"])
    if kind == "word":
        return WordTokenizer(data["vocab"])
    if kind == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        return BPETokenizer(HFTokenizer.from_str(json.dumps(data["tokenizer"])))
    raise UserError(f"{source}: tokenizer kind {shorten(kind)} is not known; valid: {', '.join(TOKENIZER_KINDS)}")


def load_tokenizer(path: Path) -> Tokenizer:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # ValueError: bad JSON or not UTF-8
        raise UserError(f"{path}: cannot read the tokenizer ({shorten(str(error), 120)}); valid: a tokenizer.json written "
                        "by layerdrop") from None
    try:
        return tokenizer_from_json(data, str(path))
    except (KeyError, TypeError, ValueError, Exception) as error:  # the tokenizers library raises its own types
        if isinstance(error, UserError):
            raise
        raise UserError(f"{path}: cannot read the tokenizer ({shorten(str(error), 120)}); valid: a tokenizer.json written "
                        "by layerdrop") from None
