"""Sentence and sentence-pair classification on GLUE-style TSV directories (SST-2, RTE, ...).

Inputs are encoded as RoBERTa does: ``<s> A </s>`` or ``<s> A </s> </s> B </s>``. Fine-tuning starts
from a masked-LM checkpoint (``--restore-file``), possibly pruned with ``--encoder-layers-to-keep``;
the classification head is added then. Metrics: accuracy, and F1 of the second class for two-class
tasks (label ids follow the sorted training labels: for SST-2 "1", for RTE "not_entailment").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from layerdrop.data.batching import EpochSampler, pad_batch
from layerdrop.data.glue import SPLIT_FILES, Examples, load_glue
from layerdrop.data.tokenizers import require_bpe, BPETokenizer
from layerdrop.errors import UserError
from layerdrop.pruning.units import without_requests
from layerdrop.tasks.outputs import TrainOutputs
from layerdrop.models.encoder import MODEL_TYPE, TransformerEncoderConfig, TransformerEncoderModel


def encode_examples(tokenizer: BPETokenizer, examples: Examples, config: TransformerEncoderConfig) -> list[list[int]]:
    budget = config.tokens_per_sample
    columns = list(zip(*examples.texts))
    encoded = [tokenizer.encode_sentences(list(column)) for column in columns]
    out = []
    for parts in zip(*encoded):
        if len(parts) == 1:
            ids = [config.bos_id] + parts[0][: budget - 2] + [config.eos_id]
        else:
            first, second = parts
            room = budget - 4
            # Trim the longer segment first, as RoBERTa's longest-first truncation does.
            while len(first) + len(second) > room:
                if len(first) >= len(second):
                    first = first[:-1]
                else:
                    second = second[:-1]
            ids = [config.bos_id] + first + [config.eos_id, config.eos_id] + second + [config.eos_id]
        out.append(ids)
    return out


def classification_metrics(predictions: list[int], labels: list[int], num_classes: int) -> dict[str, float]:
    correct = sum(p == y for p, y in zip(predictions, labels))
    metrics = {"accuracy": 100.0 * correct / max(len(labels), 1)}
    if num_classes == 2:
        tp = sum(p == 1 and y == 1 for p, y in zip(predictions, labels))
        fp = sum(p == 1 and y == 0 for p, y in zip(predictions, labels))
        fn = sum(p == 0 and y == 1 for p, y in zip(predictions, labels))
        metrics["f1"] = 100.0 * 2 * tp / max(2 * tp + fp + fn, 1)
    return metrics


class ClassificationTask:
    name = "classification"
    model_type = MODEL_TYPE
    config_class = TransformerEncoderConfig
    default_tokenizer = "bpe"

    def __init__(self, run: Any):
        self.run = run
        require_bpe(run.tokenizer, self.name)
        self.train_examples = load_glue(run.data, "train")
        self.label_names = sorted(set(self.train_examples.labels))
        if len(self.label_names) < 2:
            raise UserError(f"--data {run.data}: train.tsv has {len(self.label_names)} distinct label(s); valid: two or more")

    def build_tokenizer(self) -> BPETokenizer:
        text = "\n".join(t for texts in self.train_examples.texts for t in texts)
        return BPETokenizer.train(text, self.run.bpe_vocab_size, sentences=True)

    def new_config(self, model_args: dict[str, Any], tokenizer: BPETokenizer) -> TransformerEncoderConfig:
        ids = tokenizer.special_ids()
        return TransformerEncoderConfig(**{**model_args, "vocab_size": len(tokenizer), **ids,
                                           "num_classes": len(self.label_names), "label_names": self.label_names})

    def adapt_checkpoint(self, config: TransformerEncoderConfig, state_dict: dict[str, torch.Tensor]):
        """A masked-LM checkpoint gets a fresh classification head for this data's labels."""
        if config.num_classes == len(self.label_names) and config.label_names == self.label_names:
            return config, state_dict, False
        if config.num_classes:
            raise UserError(f"--restore-file: the checkpoint classifies {config.label_names}, this data has {self.label_names}; "
                            "valid: a masked-LM checkpoint or one fine-tuned on the same labels")
        config = dataclasses.replace(config, num_classes=len(self.label_names), label_names=self.label_names)
        head = TransformerEncoderModel(dataclasses.replace(without_requests(config), encoder_layers=1,
                                                           encoder_layer_heads=None, encoder_layer_ffn_dims=None))
        state_dict = {**state_dict, **{k: v for k, v in head.state_dict().items() if k.startswith("classification_head.")}}
        return config, state_dict, True

    def prepare(self, tokenizer: BPETokenizer, config: TransformerEncoderConfig) -> str:
        self.config = config
        index = {name: i for i, name in enumerate(config.label_names)}
        self.train_ids = encode_examples(tokenizer, self.train_examples, config)
        self.train_labels = [index[label] for label in self.train_examples.labels]
        self.sampler = EpochSampler([len(ids) for ids in self.train_ids], self.run.batch_size, self.run.seed)
        smallest = 4 if len(self.train_examples.texts[0]) == 2 else 3
        if config.tokens_per_sample < smallest:
            raise UserError(f"--tokens-per-sample: got {config.tokens_per_sample}; valid: at least {smallest} "
                            "(room for <s>, the separators and one token of text)")
        self.valid = None
        has_dev = (Path(self.run.data) / SPLIT_FILES["valid"]).is_file()
        dev = load_glue(self.run.data, "valid") if has_dev else None  # a broken dev.tsv is an error, not "no dev"
        if dev is not None:
            unknown = sorted(set(dev.labels) - set(index))
            if unknown:
                raise UserError(f"--data {self.run.data}: dev.tsv has labels {unknown} not seen in train.tsv ({config.label_names})")
            self.valid = (encode_examples(tokenizer, dev, config), [index[label] for label in dev.labels])
        summary = f"{self.run.data}: {len(self.train_ids):,} train examples, labels {config.label_names}"
        return summary + (f", {len(self.valid[0]):,} dev examples" if self.valid else ", no dev.tsv")

    def train_batch(self, generator: torch.Generator, update: int) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.sampler.batch(update)
        tokens = pad_batch([self.train_ids[i] for i in indices], self.config.pad_id)
        return tokens, torch.tensor([self.train_labels[i] for i in indices])

    def train_outputs(self, model: TransformerEncoderModel, batch: tuple[torch.Tensor, torch.Tensor]) -> TrainOutputs:
        tokens, labels = batch
        logits = model.classify(tokens)
        return TrainOutputs(F.cross_entropy(logits, labels), int(tokens.ne(self.config.pad_id).sum()), logits)

    def validate(self, model: TransformerEncoderModel) -> dict[str, float] | None:
        if not self.valid:
            return None
        return evaluate_classifier(model, *self.valid, batch_size=self.run.batch_size)


@torch.no_grad()
def evaluate_classifier(model: TransformerEncoderModel, ids: list[list[int]], labels: list[int], batch_size: int = 32) -> dict[str, float]:
    was_training = model.training
    model.eval()
    total, predictions = 0.0, []
    for start in range(0, len(ids), batch_size):
        tokens = pad_batch(ids[start : start + batch_size], model.cfg.pad_id)
        logits = model.classify(tokens)
        target = torch.tensor(labels[start : start + batch_size])
        total += F.cross_entropy(logits, target, reduction="sum").item()
        predictions.extend(logits.argmax(dim=-1).tolist())
    model.train(was_training)
    return {"loss": total / max(len(labels), 1), **classification_metrics(predictions, labels, model.cfg.num_classes)}
