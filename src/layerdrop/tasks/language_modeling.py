"""Language modeling: a text corpus, random windows for training, next-token cross-entropy."""

from __future__ import annotations

from typing import Any

import torch

from layerdrop.data.batching import eval_batches, random_batch
from layerdrop.data.corpus import load_corpus
from layerdrop.data.tokenizers import Tokenizer, build_tokenizer, encode_tensor
from layerdrop.errors import UserError
from layerdrop.evaluate import evaluate_lm
from layerdrop.plateau import frequency_loss
from layerdrop.tasks.outputs import TrainOutputs
from layerdrop.models import LM_MODEL_TYPE, TransformerLMConfig


class LanguageModelingTask:
    name = "lm"
    model_type = LM_MODEL_TYPE
    config_class = TransformerLMConfig
    default_tokenizer = "char"
    predicts = "token"

    def __init__(self, run: Any):
        self.run = run
        self.corpus = load_corpus(run.data, run.split_fractions)

    def build_tokenizer(self) -> Tokenizer:
        return build_tokenizer(self.run.tokenizer or self.default_tokenizer, self.corpus.split("train"), self.run.bpe_vocab_size)

    def new_config(self, model_args: dict[str, Any], tokenizer: Tokenizer) -> TransformerLMConfig:
        return TransformerLMConfig(**{**model_args, "vocab_size": len(tokenizer)})

    def prepare(self, tokenizer: Tokenizer, config: TransformerLMConfig) -> str:
        self.context = config.tokens_per_sample
        self.train_tokens = encode_tensor(tokenizer, self.corpus.split("train"))
        if self.train_tokens.numel() < self.context + 1:
            raise UserError(f"--data {self.corpus.source}: the train split has {self.train_tokens.numel()} tokens, fewer than "
                            f"--tokens-per-sample + 1 ({self.context + 1}); valid: a longer split or a smaller --tokens-per-sample")
        valid = self.corpus.texts.get("valid")
        self.valid_tokens = encode_tensor(tokenizer, valid) if valid else None
        if self.valid_tokens is not None and self.valid_tokens.numel() < 2:
            raise UserError(f"--data {self.corpus.source}: the valid split has fewer than 2 tokens; valid: a longer split")
        if self.valid_tokens is not None:  # the targets validation scores: with --max-valid-steps, the split's start
            scored = eval_batches(self.valid_tokens, self.context, self.run.batch_size, self.run.max_valid_steps, "valid split")
            self.frequency_plateau = frequency_loss(self.train_tokens, torch.cat([t.flatten() for _, t in scored]),
                                                    config.vocab_size)
        else:
            self.frequency_plateau = None
        summary = f"{self.corpus.source}: {self.train_tokens.numel():,} train tokens"
        return summary + (f", {self.valid_tokens.numel():,} valid tokens" if self.valid_tokens is not None else ", no valid split")

    def train_batch(self, generator: torch.Generator, update: int) -> tuple[torch.Tensor, torch.Tensor]:
        return random_batch(self.train_tokens, self.run.batch_size, self.context, generator, "train split")

    def train_outputs(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], plan=None) -> TrainOutputs:
        inputs, targets = batch
        logits, loss = model(inputs, targets, plan=plan)
        return TrainOutputs(loss, targets.numel(), None if logits is None else logits.reshape(-1, logits.shape[-1]),
                            targets.numel())

    def validate(self, model: torch.nn.Module) -> dict[str, float] | None:
        if self.valid_tokens is None:
            return None
        result = evaluate_lm(model, self.valid_tokens, self.context, self.run.batch_size, self.run.max_valid_steps, "valid split")
        return {"loss": result.loss, "ppl": result.perplexity}
