"""Masked-LM pretraining as RoBERTa does it: dynamic masking of 15 % of tokens, each chosen token
replaced by <mask> 80 % of the time, by a random token 10 %, left unchanged 10 %; the loss is the
cross-entropy at the chosen positions only. Masks are drawn anew for every batch, from the
update's own generator, so a resumed run masks exactly as an unbroken one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from layerdrop.data.corpus import load_corpus
from layerdrop.data.tokenizers import require_bpe, SPECIALS, BPETokenizer
from layerdrop.errors import UserError
from layerdrop.plateau import frequency_loss
from layerdrop.tasks.outputs import TrainOutputs
from layerdrop.models.encoder import MODEL_TYPE, TransformerEncoderConfig, TransformerEncoderModel

IGNORE = -100


def mask_tokens(
    tokens: torch.Tensor, mask_id: int, vocab_size: int, first_regular_id: int, generator: torch.Generator,
    mask_prob: float = 0.15, special: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets): targets hold the original token at chosen positions and IGNORE elsewhere."""
    candidates = torch.ones_like(tokens, dtype=torch.bool) if special is None else ~special
    chosen = (torch.rand(tokens.shape, generator=generator) < mask_prob) & candidates
    targets = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE))
    action = torch.rand(tokens.shape, generator=generator)
    random_tokens = torch.randint(first_regular_id, vocab_size, tokens.shape, generator=generator)
    inputs = tokens.clone()
    inputs[chosen & (action < 0.8)] = mask_id
    swap = chosen & (action >= 0.8) & (action < 0.9)
    inputs[swap] = random_tokens[swap]
    return inputs, targets


class MaskedLMTask:
    name = "masked_lm"
    model_type = MODEL_TYPE
    config_class = TransformerEncoderConfig
    default_tokenizer = "bpe"
    predicts = "masked token"

    def __init__(self, run: Any):
        self.run = run
        require_bpe(run.tokenizer, self.name)
        self.corpus = load_corpus(run.data, run.split_fractions)

    def build_tokenizer(self) -> BPETokenizer:
        return BPETokenizer.train(self.corpus.split("train"), self.run.bpe_vocab_size, sentences=True)

    def new_config(self, model_args: dict[str, Any], tokenizer: BPETokenizer) -> TransformerEncoderConfig:
        ids = tokenizer.special_ids()
        return TransformerEncoderConfig(**{**model_args, "vocab_size": len(tokenizer), **ids})

    def stream(self, tokenizer: BPETokenizer, text: str) -> torch.Tensor:
        """One token stream: each non-empty line, then </s>."""
        lines = [line for line in text.splitlines() if line.strip()]
        ids: list[int] = []
        for sentence in tokenizer.encode_sentences(lines):
            ids.extend(sentence)
            ids.append(self.config.eos_id)
        return torch.tensor(ids, dtype=torch.long)

    def prepare(self, tokenizer: BPETokenizer, config: TransformerEncoderConfig) -> str:
        self.config = config
        self.block = config.tokens_per_sample - 1  # room for <s>
        self.train_stream = self.stream(tokenizer, self.corpus.split("train"))
        if self.train_stream.numel() < self.block:
            raise UserError(f"--data {self.corpus.source}: the train split has {self.train_stream.numel()} tokens, fewer than "
                            f"--tokens-per-sample - 1 ({self.block})")
        valid = self.corpus.texts.get("valid")
        self.valid_stream = self.stream(tokenizer, valid) if valid and valid.strip() else None
        self.frequency_plateau = None
        if self.valid_stream is not None:  # over the blocks validation masks, and the tokens it may mask (regular ones)
            starts = valid_starts(self.valid_stream, self.block, self.run.batch_size, self.run.max_valid_steps)
            scored = self.blocks(self.valid_stream, starts)
            regular = lambda ids: ids[ids.ge(len(SPECIALS))]
            self.frequency_plateau = frequency_loss(regular(self.train_stream), regular(scored), config.vocab_size)
        summary = f"{self.corpus.source}: {self.train_stream.numel():,} train tokens"
        return summary + (f", {self.valid_stream.numel():,} valid tokens" if self.valid_stream is not None else ", no valid split")

    def blocks(self, stream: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        window = torch.arange(min(self.block, stream.numel()))
        body = stream[starts[:, None] + window]
        return torch.cat([torch.full((body.shape[0], 1), self.config.bos_id), body], dim=1)

    def mask(self, tokens: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs with 15 % of tokens masked, targets: the original token there, IGNORE elsewhere)."""
        return mask_tokens(tokens, self.config.mask_id, self.config.vocab_size, len(SPECIALS), generator,
                           self.run.mask_prob, special=tokens.lt(len(SPECIALS)))

    def masked_outputs(self, model: TransformerEncoderModel, batch: tuple[torch.Tensor, torch.Tensor], plan=None) -> TrainOutputs:
        inputs, targets = batch
        hidden = model(inputs, plan)
        chosen = targets.ne(IGNORE)
        if not chosen.any():  # tiny batches can draw no mask at all: nothing to learn from this one
            return TrainOutputs(hidden.sum() * 0.0, 0, hidden.new_zeros(0, self.config.vocab_size), 0)
        logits = model.lm_head(hidden[chosen])
        return TrainOutputs(F.cross_entropy(logits, targets[chosen]), int(chosen.sum()), logits, int(chosen.sum()))

    def train_batch(self, generator: torch.Generator, update: int) -> tuple[torch.Tensor, torch.Tensor]:
        high = max(1, self.train_stream.numel() - self.block + 1)
        starts = torch.randint(0, high, (self.run.batch_size,), generator=generator)
        return self.mask(self.blocks(self.train_stream, starts), generator)

    def train_outputs(self, model: TransformerEncoderModel, batch: tuple[torch.Tensor, torch.Tensor], plan=None) -> TrainOutputs:
        return self.masked_outputs(model, batch, plan)

    @torch.no_grad()
    def validate(self, model: TransformerEncoderModel) -> dict[str, float] | None:
        if self.valid_stream is None:
            return None
        return evaluate_masked_lm(self, model, self.valid_stream, self.run.batch_size, self.run.max_valid_steps)


@torch.no_grad()
def evaluate_masked_lm(task: MaskedLMTask, model: TransformerEncoderModel, stream: torch.Tensor, batch_size: int,
                       max_batches: int | None = None, seed: int = 0) -> dict[str, float]:
    """Masked-LM loss on contiguous blocks with a fixed masking seed, so numbers compare across runs."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    starts = valid_starts(stream, task.block, batch_size, max_batches)
    total, count = 0.0, 0
    for first in range(0, len(starts), batch_size):
        out = task.masked_outputs(model, task.mask(task.blocks(stream, starts[first : first + batch_size]), generator))
        loss, n = out.loss, out.tokens
        total += loss.item() * n
        count += n
    model.train(was_training)
    mean = total / max(count, 1)
    return {"loss": mean, "ppl": math.exp(min(mean, 700.0))}


def valid_starts(stream: torch.Tensor, block: int, batch_size: int, max_batches: int | None) -> torch.Tensor:
    """Where the blocks evaluation scores begin: contiguous blocks, the first ``max_batches`` batches of them."""
    starts = torch.arange(0, max(1, stream.numel() - block + 1), block)
    return starts if max_batches is None else starts[: max_batches * batch_size]
