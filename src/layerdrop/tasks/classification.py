"""GLUE sentence and sentence-pair tasks: classification, and regression for STS-B.

Files are read as GLUE distributes them (``layerdrop.data.glue`` detects the task). Inputs are encoded
as RoBERTa does: ``<s> A </s>`` or ``<s> A </s> </s> B </s>``. Fine-tuning starts from a masked-LM
checkpoint (``--restore-file``), possibly pruned with ``--encoder-layers-to-keep``; the head is added
then: one output per class with cross-entropy, or one output with mean squared error for STS-B
(predictions clipped to the label range). Validation reports the task's official metrics, and the best
checkpoint is the one with the best GLUE score (the mean of those metrics).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from layerdrop.data.batching import EpochSampler, pad_batch
from layerdrop.data.glue import TASKS, Examples, GlueTask, check_directory, load_glue, read_examples, resolve_task
from layerdrop.data.tokenizers import BPETokenizer, require_bpe
from layerdrop.config import shorten
from layerdrop.errors import UserError
from layerdrop.plateau import frequency_loss
from layerdrop.models.encoder import MODEL_TYPE, TransformerEncoderConfig, TransformerEncoderModel
from layerdrop.pruning.units import without_requests
from layerdrop.tasks.glue_metrics import glue_metrics, glue_score
from layerdrop.tasks.outputs import TrainOutputs


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


def report_skipped(examples: Examples, log=print) -> None:
    """Malformed rows are never dropped silently."""
    if examples.skipped:
        lines = ", ".join(map(str, examples.skipped[:10])) + (", ..." if len(examples.skipped) > 10 else "")
        log(f"| {examples.file}: skipped {len(examples.skipped)} malformed row(s) (lines {lines})")


def task_of(config: TransformerEncoderConfig) -> GlueTask | None:
    return TASKS.get(config.glue_task) if config.glue_task else None


def metric_names(config: TransformerEncoderConfig) -> tuple[str, ...]:
    task = task_of(config)
    return task.metrics if task is not None else ("accuracy",)


def label_ids(config: TransformerEncoderConfig, examples: Examples, source: str) -> list[float] | list[int]:
    if config.regression_range is not None:
        return list(examples.labels)
    index = {name: i for i, name in enumerate(config.label_names)}
    unknown = sorted(set(examples.labels) - set(index))
    if unknown:
        raise UserError(f"--data: {source} has labels {shorten(unknown)} that the model does not know "
                        f"({shorten(config.label_names)})")
    return [index[label] for label in examples.labels]


def hold_out(examples: Examples, count: int) -> tuple[Examples, Examples | None]:
    """Split ``count`` examples off ``examples`` for validation: one draw from a fixed generator, so every seed and
    every run on the same file holds out the same ones. (examples, None) when ``count`` is 0."""
    if not count:
        return examples, None
    if count >= len(examples):
        raise UserError(f"--valid-from-train: got {count}; valid: fewer than train.tsv's {len(examples):,} examples")
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0)).tolist()
    held, kept = sorted(order[:count]), sorted(order[count:])

    def subset(indices: list[int]) -> Examples:
        return dataclasses.replace(examples, texts=[examples.texts[i] for i in indices],
                                   labels=[examples.labels[i] for i in indices], ids=[], skipped=[])
    return subset(kept), subset(held)


class ClassificationTask:
    name = "classification"
    model_type = MODEL_TYPE
    config_class = TransformerEncoderConfig
    default_tokenizer = "bpe"
    predicts = "label"
    selection = ("score", True)  # the best checkpoint has the highest GLUE score on dev (or the held-out examples)

    def __init__(self, run: Any, log=print):
        self.run, self.log = run, log
        require_bpe(run.tokenizer, self.name)
        self.directory = check_directory(run.data)
        self.glue = resolve_task(self.directory, run.glue_task)
        (self.train_examples,) = load_glue(self.directory, "train", self.glue.name)
        report_skipped(self.train_examples, log)
        # The head (classes, regression range) comes from the whole file, held-out examples included.
        labels = self.train_examples.labels
        self.label_names = None if self.glue.regression else sorted(set(labels))
        self.regression_range = [min(labels), max(labels)] if self.glue.regression else None
        if self.label_names is not None and len(self.label_names) < 2:
            raise UserError(f"--data {run.data}: train.tsv has {len(self.label_names)} distinct label(s); valid: two or more")
        self.train_examples, self.held_out = hold_out(self.train_examples, run.valid_from_train)

    def head_fields(self) -> dict[str, Any]:
        if self.glue.regression:
            return {"num_classes": 1, "label_names": None, "regression_range": self.regression_range,
                    "glue_task": self.glue.name}
        return {"num_classes": len(self.label_names), "label_names": self.label_names, "regression_range": None,
                "glue_task": self.glue.name}

    def build_tokenizer(self) -> BPETokenizer:
        text = "\n".join(t for texts in self.train_examples.texts for t in texts)
        return BPETokenizer.train(text, self.run.bpe_vocab_size, sentences=True)

    def new_config(self, model_args: dict[str, Any], tokenizer: BPETokenizer) -> TransformerEncoderConfig:
        return TransformerEncoderConfig(**{**model_args, "vocab_size": len(tokenizer), **tokenizer.special_ids(),
                                           **self.head_fields()})

    def adapt_checkpoint(self, config: TransformerEncoderConfig, state_dict: dict[str, torch.Tensor]):
        """A masked-LM checkpoint gets a fresh head for this task (classes, or one output for regression)."""
        fields = self.head_fields()
        same_head = (config.num_classes == fields["num_classes"] and config.label_names == fields["label_names"]
                     and (config.regression_range is None) == (fields["regression_range"] is None))
        if same_head and config.glue_task in (None, self.glue.name):
            # A checkpoint from before the task was recorded keeps its head and learns which task it is.
            return dataclasses.replace(config, glue_task=self.glue.name), state_dict, False
        if config.num_classes:
            raise UserError(f"--restore-file/--save-dir: the checkpoint's head is for {config.glue_task or 'other'} labels "
                            f"{config.label_names}; this data is {self.glue.name} with {self.label_names or 'scores'}; "
                            "valid: a masked-LM checkpoint or one fine-tuned on the same task")
        config = dataclasses.replace(config, **fields)
        head = TransformerEncoderModel(dataclasses.replace(without_requests(config), encoder_layers=1,
                                                           encoder_layer_heads=None, encoder_layer_ffn_dims=None))
        state_dict = {**state_dict, **{k: v for k, v in head.state_dict().items() if k.startswith("classification_head.")}}
        return config, state_dict, True

    def prepare(self, tokenizer: BPETokenizer, config: TransformerEncoderConfig) -> str:
        self.config = config
        self.train_ids = encode_examples(tokenizer, self.train_examples, config)
        self.train_labels = label_ids(config, self.train_examples, "train.tsv")
        self.sampler = EpochSampler([len(ids) for ids in self.train_ids], self.run.batch_size, self.run.seed)
        smallest = 4 if len(self.train_examples.texts[0]) == 2 else 3
        if config.tokens_per_sample < smallest:
            raise UserError(f"--tokens-per-sample: got {config.tokens_per_sample}; valid: at least {smallest} "
                            "(room for <s>, the separators and one token of text)")
        self.valid = []
        kind = f"scores {config.regression_range}" if config.regression_range else f"labels {config.label_names}"
        summary = f"{self.run.data}: {self.glue.name}, {len(self.train_ids):,} train examples, {kind}"
        if self.held_out is not None:
            self.valid.append((encode_examples(tokenizer, self.held_out, config),
                               label_ids(config, self.held_out, "train.tsv")))
            summary += f", validating on {len(self.held_out):,} held out of train.tsv (dev unseen)"
        else:
            present = [name for name in self.glue.dev if (self.directory / name).is_file()]
            for name in present:  # a broken dev file is an error, not "no dev"; MNLI may have only dev_matched
                examples = read_examples(self.directory / name, self.glue)
                report_skipped(examples, self.log)
                self.valid.append((encode_examples(tokenizer, examples, config), label_ids(config, examples, examples.file.name)))
            summary += (f", {' + '.join(f'{len(v[0]):,}' for v in self.valid)} dev examples" if self.valid
                        else f", no {' or '.join(self.glue.dev)}")
        if self.run.max_valid_steps is not None:  # the first rows of each set, as `layerdrop eval` scores them
            keep = self.run.max_valid_steps * self.run.batch_size
            if any(len(ids) > keep for ids, _ in self.valid):
                self.valid = [(ids[:keep], labels[:keep]) for ids, labels in self.valid]
                summary += f"; scoring the first {keep:,} of {'each' if len(self.valid) > 1 else 'them'} (--max-valid-steps)"
        # The majority-class trap of small GLUE sets (RTE); validation's loss is the first set's (MNLI: matched).
        self.frequency_plateau = None if config.regression_range is not None or not self.valid else frequency_loss(
            torch.tensor(self.train_labels), torch.tensor(self.valid[0][1]), len(config.label_names))
        return summary

    def train_batch(self, generator: torch.Generator, update: int) -> tuple[torch.Tensor, torch.Tensor]:
        indices = self.sampler.batch(update)
        tokens = pad_batch([self.train_ids[i] for i in indices], self.config.pad_id)
        return tokens, torch.tensor([self.train_labels[i] for i in indices])

    def train_outputs(self, model: TransformerEncoderModel, batch: tuple[torch.Tensor, torch.Tensor], plan=None) -> TrainOutputs:
        tokens, labels = batch
        logits = model.classify(tokens, plan)
        return TrainOutputs(head_loss(model.cfg, logits, labels), int(tokens.ne(self.config.pad_id).sum()), logits, len(labels))

    def validate(self, model: TransformerEncoderModel) -> dict[str, float] | None:
        """Dev metrics (MNLI: matched, then mismatched with an ``mm_`` prefix) and the GLUE score chosen by."""
        if not self.valid:
            return None
        results = [evaluate_classifier(model, ids, labels, self.run.batch_size) for ids, labels in self.valid]
        out = dict(results[0])
        for extra in results[1:]:
            out.update({f"mm_{k}": v for k, v in extra.items() if k != "score"})
        return out


def head_loss(config: TransformerEncoderConfig, logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    if config.regression_range is not None:
        return F.mse_loss(logits.squeeze(-1), labels.float(), reduction=reduction)
    return F.cross_entropy(logits, labels, reduction=reduction)


def predictions_of(config: TransformerEncoderConfig, logits: torch.Tensor) -> list[float] | list[int]:
    if config.regression_range is not None:
        low, high = config.regression_range
        return logits.squeeze(-1).clamp(low, high).tolist()
    return logits.argmax(dim=-1).tolist()


@torch.no_grad()
def predict(model: TransformerEncoderModel, ids: list[list[int]], batch_size: int = 32) -> tuple[list, list[torch.Tensor]]:
    was_training = model.training
    model.eval()
    predictions, logits = [], []
    for start in range(0, len(ids), batch_size):
        out = model.classify(pad_batch(ids[start : start + batch_size], model.cfg.pad_id))
        predictions.extend(predictions_of(model.cfg, out))
        logits.append(out)
    model.train(was_training)
    return predictions, logits


def evaluate_classifier(model: TransformerEncoderModel, ids: list[list[int]], labels: list, batch_size: int = 32) -> dict[str, float]:
    """Loss, the task's official metrics, and ``score`` (their mean, as the GLUE leaderboard takes it)."""
    predictions, logits = predict(model, ids, batch_size)
    target = torch.tensor(labels)
    loss = head_loss(model.cfg, torch.cat(logits), target, reduction="sum").item() / max(len(labels), 1)
    names = metric_names(model.cfg)
    positive = model.cfg.label_names.index("1") if model.cfg.label_names and "1" in model.cfg.label_names else 1
    metrics = glue_metrics(names, predictions, labels, positive)
    return {"loss": loss, **metrics, "score": glue_score(metrics, names)}
