"""Translation: a parallel corpus, joint BPE, label-smoothed cross-entropy, beam search and BLEU."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from layerdrop.data.batching import EpochSampler, pad_batch
from layerdrop.data.parallel import load_parallel
from layerdrop.data.tokenizers import require_bpe, BPETokenizer
from layerdrop.plateau import flat_ids, frequency_loss
from layerdrop.tasks.outputs import TrainOutputs
from layerdrop.models.translation import MODEL_TYPE, TransformerTranslation, TransformerTranslationConfig


class TranslationTask:
    name = "translation"
    model_type = MODEL_TYPE
    config_class = TransformerTranslationConfig
    default_tokenizer = "bpe"
    predicts = "target token"

    def __init__(self, run: Any):
        self.run = run
        require_bpe(run.tokenizer, self.name)
        self.corpus = load_parallel(run.data, run.source_lang, run.target_lang)

    def build_tokenizer(self) -> BPETokenizer:
        src, tgt = self.corpus.split("train")
        return BPETokenizer.train("\n".join(src + tgt), self.run.bpe_vocab_size, sentences=True)

    def new_config(self, model_args: dict[str, Any], tokenizer: BPETokenizer) -> TransformerTranslationConfig:
        ids = {k: v for k, v in tokenizer.special_ids().items() if k != "mask_id"}
        return TransformerTranslationConfig(**{**model_args, "vocab_size": len(tokenizer), **ids})

    def encode_pairs(self, tokenizer: BPETokenizer, config: TransformerTranslationConfig, split: str):
        src, tgt = self.corpus.split(split)
        src_ids = [s[: config.max_source_positions - 1] + [config.eos_id] for s in tokenizer.encode_sentences(src)]
        tgt_ids = [t[: config.max_target_positions - 1] for t in tokenizer.encode_sentences(tgt)]
        return src_ids, tgt_ids

    def prepare(self, tokenizer: BPETokenizer, config: TransformerTranslationConfig) -> str:
        self.config = config
        self.train_src, self.train_tgt = self.encode_pairs(tokenizer, config, "train")
        self.sampler = EpochSampler([len(s) + len(t) for s, t in zip(self.train_src, self.train_tgt)],
                                    self.run.batch_size, self.run.seed)
        self.valid = self.encode_pairs(tokenizer, config, "valid") if "valid" in self.corpus.files else None
        scored = None if not self.valid else self.valid[1][: self.valid_sentences()]  # every target, then </s>
        self.frequency_plateau = None if not scored else frequency_loss(
            flat_ids(self.train_tgt, config.eos_id), flat_ids(scored, config.eos_id), config.vocab_size)
        summary = (f"{self.corpus.source} {self.corpus.src_lang}->{self.corpus.tgt_lang}: {len(self.train_src):,} train pairs "
                   f"({self.sampler.per_epoch} batches per epoch)")
        return summary + (f", {len(self.valid[0]):,} valid pairs" if self.valid else ", no valid split")

    def batch(self, src: list[list[int]], tgt: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        src_tokens = pad_batch(src, cfg.pad_id)
        prev = pad_batch([[cfg.bos_id] + t for t in tgt], cfg.pad_id)
        target = pad_batch([t + [cfg.eos_id] for t in tgt], cfg.pad_id)
        return src_tokens, prev, target

    def loss(self, model: TransformerTranslation, src, prev, target, smoothing: float, plan=None) -> TrainOutputs:
        scored = target.ne(self.config.pad_id)
        logits = model(src, prev, plan)[scored]
        loss = F.cross_entropy(logits, target[scored], label_smoothing=smoothing)
        return TrainOutputs(loss, int(scored.sum()), logits, int(scored.sum()))

    def train_batch(self, generator: torch.Generator, update: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        indices = self.sampler.batch(update)
        return self.batch([self.train_src[i] for i in indices], [self.train_tgt[i] for i in indices])

    def train_outputs(self, model: TransformerTranslation, batch, plan=None) -> TrainOutputs:
        return self.loss(model, *batch, self.run.label_smoothing, plan)

    def valid_sentences(self) -> int:
        """How many validation pairs validation scores: with --max-valid-steps, the first batches only."""
        steps = self.run.max_valid_steps
        return len(self.valid[0]) if steps is None else min(len(self.valid[0]), steps * self.run.batch_size)

    @torch.no_grad()
    def validate(self, model: TransformerTranslation) -> dict[str, float] | None:
        if not self.valid:
            return None
        was_training = model.training
        model.eval()
        total, tokens = 0.0, 0
        src_all, tgt_all = self.valid
        for start in range(0, self.valid_sentences(), self.run.batch_size):
            src, prev, target = self.batch(src_all[start : start + self.run.batch_size], tgt_all[start : start + self.run.batch_size])
            out = self.loss(model, src, prev, target, 0.0)
            total += out.loss.item() * out.tokens
            tokens += out.tokens
        model.train(was_training)
        nll = total / max(tokens, 1)
        return {"loss": nll, "ppl": math.exp(min(nll, 700.0))}


def translate(
    model: TransformerTranslation, tokenizer: BPETokenizer, sentences: list[str], beam: int = 5, lenpen: float = 1.0,
    batch_size: int = 64, progress: bool = False,
) -> list[str]:
    """Detokenized translations of ``sentences``, decoded in length-sorted batches."""
    from tqdm import tqdm

    from layerdrop.beam_search import beam_search

    cfg = model.cfg
    ids = [s[: cfg.max_source_positions - 1] + [cfg.eos_id] for s in tokenizer.encode_sentences(sentences)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[str] = [""] * len(ids)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, disable=not progress, desc="translating", unit="batch"):
        chunk = order[start : start + batch_size]
        hypotheses = beam_search(model, pad_batch([ids[i] for i in chunk], cfg.pad_id), beam=beam, lenpen=lenpen)
        for i, hypothesis in zip(chunk, hypotheses):
            out[i] = tokenizer.decode(hypothesis)
    return out
