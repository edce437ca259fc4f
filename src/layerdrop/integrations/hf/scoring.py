"""Score a Hugging Face model on a text file, with its own tokenizer, for any keep list of one stack.

:class:`TextScorer` has the interface of :class:`layerdrop.analysis.scoring.Scorer`, so every selection
strategy (every-other, search, block-influence, angular) and ``sweep`` run on Hugging Face models unchanged.
The text is tokenized once and cut into blocks of ``block_size`` tokens; the metric is the mean loss per
predicted token (lower is better; perplexity is its exponential):

- causal LMs (GPT-2, Llama, Mistral, Qwen2, OPT): next-token loss;
- masked LMs (BERT, RoBERTa): 15 % of positions masked by a fixed draw, loss on those;
- BART: the text reconstructed from itself (teacher forcing), the decoder being what is scored by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from layerdrop.analysis.scoring import Metric
from layerdrop.errors import UserError
from layerdrop.integrations.hf.families import FAMILIES, layer_lists
from layerdrop.integrations.hf.pruning import prune

MASKED = ("bert", "roberta")


def load_model(path: str, flag: str = "--model", for_scoring: bool = True):
    """The model in directory ``path``, in eval mode: with the head its family is scored with, or (not
    ``for_scoring``) as saved, the class named in its config's ``architectures``."""
    import transformers

    if not Path(path).is_dir():  # a local directory only: nothing is fetched from the Hub
        raise UserError(f"{flag}: {path!r} is not a directory; valid: a model directory written by save_pretrained")
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"{flag}: cannot load a Hugging Face config from {path!r} ({str(error).splitlines()[0]}); "
                        "valid: a directory written by save_pretrained") from None
    if config.model_type not in FAMILIES:
        raise UserError(f"{flag}: {path} holds a {config.model_type!r} model; valid families: {', '.join(FAMILIES)}")
    saved = (getattr(config, "architectures", None) or [None])[0]
    if not for_scoring and saved is not None and hasattr(transformers, saved):
        return getattr(transformers, saved).from_pretrained(path, local_files_only=True).eval()
    auto = (transformers.AutoModelForMaskedLM if config.model_type in MASKED
            else transformers.AutoModelForSeq2SeqLM if config.model_type == "bart" else transformers.AutoModelForCausalLM)
    model, info = auto.from_pretrained(path, output_loading_info=True, local_files_only=True)
    if info.get("missing_keys"):  # e.g. a classifier's directory: its LM head would be random
        raise UserError(f"{flag}: {path} has no weights for {sorted(info['missing_keys'])[:3]} of {auto.__name__}; "
                        "valid: a model saved with its language-model head")
    return model.eval()


def load_tokenizer(path: str, flag: str = "--model"):
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"{flag}: no tokenizer could be loaded from {path!r} ({str(error).splitlines()[0]}); "
                        "valid: a directory holding the model's tokenizer files (tokenizer.save_pretrained)") from None


class TextBatches:
    """Blocks of one text file's tokens, and the mean loss of a model on them."""

    def __init__(self, ids: list[int], model_type: str, block_size: int, batch_size: int, max_batches: int | None,
                 mask_token_id: int | None):
        rows = len(ids) // block_size
        if rows == 0:
            raise UserError(f"--data: the text has {len(ids)} tokens, fewer than one block of {block_size}; "
                            "valid: a longer file or a smaller --block-size")
        blocks = torch.tensor(ids[: rows * block_size]).view(rows, block_size)
        self.batches = list(blocks.split(batch_size))[:max_batches]
        self.model_type = model_type
        self.mask_token_id = mask_token_id
        self.masks = [None] * len(self.batches)
        if model_type in MASKED:  # one fixed draw of the masked positions: every keep list faces the same task
            generator = torch.Generator().manual_seed(0)
            self.masks = [torch.rand(b.shape, generator=generator) < 0.15 for b in self.batches]
            for mask in self.masks:
                mask[:, 0] |= ~mask.any(dim=1)  # at least one predicted token per row
        self.tokens = sum(b.numel() for b in self.batches)

    def _loss(self, model, batch: torch.Tensor, chosen: torch.Tensor) -> tuple[float, int]:
        if self.model_type in MASKED:
            labels = torch.where(chosen, batch, torch.full_like(batch, -100))
            inputs = torch.where(chosen, torch.full_like(batch, self.mask_token_id), batch)
            return float(model(input_ids=inputs, labels=labels).loss) * int(chosen.sum()), int(chosen.sum())
        count = batch.numel() if self.model_type == "bart" else batch.numel() - batch.shape[0]
        return float(model(input_ids=batch, labels=batch).loss) * count, count

    @torch.no_grad()
    def validate(self, model) -> dict[str, float]:
        total, count = 0.0, 0
        for batch, chosen in zip(self.batches, self.masks):
            loss, n = self._loss(model, batch, chosen)
            total, count = total + loss, count + n
        return {"loss": total / count}


class TextScorer:
    """Loss of one Hugging Face model on a text file for any keep list of one of its stacks."""

    def __init__(self, path: str, data: str | None, stack: str | None = None, block_size: int | None = None,
                 batch_size: int | None = None, max_valid_steps: int | None = None):
        if data is None:
            raise UserError("--data: required for Hugging Face models; valid: a UTF-8 text file to score on")
        try:
            text = Path(data).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"--data: cannot read {data!r} ({error}); valid: a UTF-8 text file") from None
        self.path = path
        self.full = load_model(path)
        tokenizer = load_tokenizer(path)
        model_type = self.full.config.model_type
        stacks = list(FAMILIES[model_type].stacks)
        self.stack = stack or ("decoder" if "decoder" in stacks else stacks[0])
        if self.stack not in stacks:
            raise UserError(f"--stack: got {self.stack!r}; valid for this {model_type} model: {', '.join(stacks)}")
        self.num_layers = len(layer_lists(self.full)[self.stack])
        self.layer_numbers = list(range(self.num_layers))  # no load-time keep list here: the model's own numbers
        positions = getattr(self.full.config, "max_position_embeddings", None) or getattr(self.full.config, "n_positions", 1024)
        if model_type == "roberta":  # its positions start after the padding index
            positions -= self.full.config.pad_token_id + 1
        block = block_size or min(128, positions)
        if not 2 <= block <= positions:
            raise UserError(f"--block-size: got {block}; valid: 2 to {positions} (the model's positions)")
        if model_type in MASKED and tokenizer.mask_token_id is None:
            raise UserError(f"--model: {path}'s tokenizer has no mask token; valid: a masked-LM tokenizer")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        self.task = TextBatches(ids, model_type, block, batch_size or 8, max_valid_steps, tokenizer.mask_token_id)
        self.metric = Metric("valid loss", False)
        self.evaluations = 0
        self._cache: dict[tuple[int, ...], float] = {}

    def numbered(self, keep) -> list[int]:
        return list(keep)

    def layers(self, model) -> torch.nn.ModuleList:
        return layer_lists(model)[self.stack]

    def model(self, keep=None):
        if keep is None or list(keep) == list(range(self.num_layers)):
            return self.full
        return prune(self.full, {self.stack: list(keep)}).eval()

    def score(self, keep=None) -> float:
        key = tuple(sorted(keep)) if keep is not None else tuple(range(self.num_layers))
        if key not in self._cache:
            self._cache[key] = self.task.validate(self.model(key))["loss"]
            self.evaluations += 1
        return self._cache[key]

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "model_type": self.full.config.model_type, "stack": self.stack,
                "layers": self.num_layers, "layer_numbers": self.layer_numbers, "metric": self.metric.name,
                "higher_is_better": False,
                "tokens_scored": self.task.tokens}


__all__ = ["TextScorer", "load_model", "load_tokenizer"]
