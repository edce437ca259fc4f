"""A RoBERTa-style bidirectional encoder with LayerDrop: a masked-LM head for pretraining and an
optional classification head (on the first token, ``<s>``) for sentence(-pair) tasks.

Layers live under ``encoder.layers.N.``, so the one pruning function prunes it before or after
fine-tuning. A masked-LM checkpoint (``num_classes = 0``) becomes a classifier when fine-tuned: the
classification head is added, everything else is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from layerdrop.models.options import ComputeOptions, EmbeddingOptions, EncoderLayerDrop
from layerdrop.config import check_heads_divide, check_positive_ints, check_probabilities, option, shorten
from layerdrop.data.glue import TASKS as GLUE_TASKS
from layerdrop.errors import UserError
from layerdrop.nn.drop_plan import StackPlan
from layerdrop.nn.stack import StackSpec, TransformerStack, init_weights
from layerdrop.pruning.units import EncoderUnits, pending_pruning

MODEL_TYPE = "transformer_encoder"


@dataclass
class TransformerEncoderConfig(EncoderUnits, EncoderLayerDrop, EmbeddingOptions, ComputeOptions):
    vocab_size: int = option(0, "vocabulary size (set from the tokenizer)", cli=False)
    encoder_layers: int = option(6, "number of encoder layers")
    encoder_embed_dim: int = option(256, "encoder width")
    encoder_ffn_embed_dim: int = option(1024, "encoder FFN hidden width")
    encoder_attention_heads: int = option(4, "encoder attention heads")
    encoder_normalize_before: bool = option(True, "pre-LayerNorm in the encoder")
    tokens_per_sample: int = option(256, "context length in tokens (also the number of learned positions)")
    dropout: float = option(0.1, "dropout on embeddings and residual branches")
    attention_dropout: float = option(0.0, "dropout on attention weights")
    activation_dropout: float = option(0.0, "dropout after the FFN activation")
    encoder_layers_to_keep: str | None = option(None, "keep only these encoder layers, e.g. 0,2,4 (prunes the model at load)")
    bias: bool = option(True, "biases in linear layers and LayerNorms")
    num_classes: int = option(0, "classes of the classification head (0: masked LM only; set from the data)", cli=False)
    label_names: list[str] | None = option(None, "the class labels, in id order", cli=False)
    regression_range: list[float] | None = option(None, "regression head (STS-B): the label range predictions are clipped to",
                                                  cli=False)
    glue_task: str | None = option(None, "the GLUE task the head was fine-tuned on (its metrics and file layout)", cli=False)
    pad_id: int = option(0, "padding token id", cli=False)
    bos_id: int = option(1, "<s> token id", cli=False)
    eos_id: int = option(2, "</s> token id", cli=False)
    mask_id: int = option(4, "<mask> token id", cli=False)
    encoder_kept_layers: list[int] | None = option(None, "original indices of the encoder layers of a pruned model", cli=False)

    architecture_fields = (
        "scale_embedding", "layernorm_embedding",
        "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
        "encoder_normalize_before", "tokens_per_sample", "bias", "encoder_layer_heads", "encoder_layer_ffn_dims",
        "encoder_learned_gates",
    )

    def validate(self) -> None:
        check_positive_ints(self, ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                                   "encoder_attention_heads", "tokens_per_sample", "vocab_size"))
        check_heads_divide(self.encoder_embed_dim, self.encoder_attention_heads, "encoder")
        check_probabilities(self, ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop"))
        self.check_layerdrop(("encoder",))
        if self.regression_range is not None:
            if self.num_classes != 1 or self.label_names is not None or len(self.regression_range) != 2 \
                    or not self.regression_range[0] <= self.regression_range[1]:
                raise UserError(f"regression_range: got {shorten(self.regression_range)} with num_classes {self.num_classes}; "
                                "valid: [low, high] with one output and no label names")
        elif self.num_classes and (self.label_names is None or len(self.label_names) != self.num_classes):
            raise UserError(f"label_names: got {shorten(self.label_names)} for num_classes {self.num_classes}; valid: one name "
                            "per class")
        if self.glue_task is not None and self.glue_task not in GLUE_TASKS:
            raise UserError(f"glue_task: got {shorten(self.glue_task)}; valid: {', '.join(GLUE_TASKS)}")


class MaskedLMHead(nn.Module):
    """RoBERTa's head: dense, GELU, LayerNorm, then the (tied) embedding matrix plus a bias."""

    def __init__(self, dim: int, embedding: nn.Embedding, bias: bool):
        super().__init__()
        self.dense = nn.Linear(dim, dim, bias=bias)
        self.layer_norm = nn.LayerNorm(dim, bias=bias)
        self.embedding = embedding
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.layer_norm(F.gelu(self.dense(hidden))), self.embedding.weight, self.bias)


class ClassificationHead(nn.Module):
    """RoBERTa's head on the <s> token: dense, tanh, dropout, projection to the classes."""

    def __init__(self, dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(dim, num_classes)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.dropout(hidden[:, 0])
        return self.out_proj(self.dropout(torch.tanh(self.dense(x))))


class TransformerEncoderModel(nn.Module):
    model_type = MODEL_TYPE

    def __init__(self, cfg: TransformerEncoderConfig):
        super().__init__()
        cfg.validate()
        if pending_pruning(cfg):
            raise ValueError("prune the config with layerdrop.pruning.apply_layers_to_keep before building the model")
        self.cfg = cfg
        spec = StackSpec(
            vocab_size=cfg.vocab_size, layers=cfg.encoder_layers, embed_dim=cfg.encoder_embed_dim,
            ffn_dim=cfg.encoder_ffn_embed_dim, heads=cfg.encoder_attention_heads, max_positions=cfg.tokens_per_sample,
            dropout=cfg.dropout, attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
            layerdrop=cfg.layerdrop_config("encoder"), normalize_before=cfg.encoder_normalize_before, bias=cfg.bias,
            scale_embedding=cfg.scale_embedding, layernorm_embedding=cfg.layernorm_embedding, causal=False,
            layer_heads=cfg.encoder_layer_heads, layer_ffn_dims=cfg.encoder_layer_ffn_dims,
            checkpoint_activations=cfg.checkpoint_activations,
        )
        self.encoder = TransformerStack(spec, name="encoder")
        self.lm_head = MaskedLMHead(cfg.encoder_embed_dim, self.encoder.embed_tokens, cfg.bias)
        self.classification_head = (
            ClassificationHead(cfg.encoder_embed_dim, cfg.num_classes, cfg.dropout) if cfg.num_classes > 0 else None
        )
        init_weights(self, cfg.encoder_layers, scale_embedding=cfg.scale_embedding,
                     scale_residual=cfg.scale_residual_init)

    @property
    def layers(self):
        return self.encoder.layers

    def forward(self, tokens: torch.Tensor, plan: dict[str, StackPlan] | None = None) -> torch.Tensor:
        """Hidden states (batch, length, dim); padding positions are masked out of attention.
        ``plan``: this update's LayerDrop plan (None: every layer)."""
        return self.encoder(tokens, padding_mask=tokens.eq(self.cfg.pad_id), plan=None if plan is None else plan.get("encoder"))

    def classify(self, tokens: torch.Tensor, plan: dict[str, StackPlan] | None = None) -> torch.Tensor:
        if self.classification_head is None:
            raise ValueError("this encoder has no classification head (num_classes = 0)")
        return self.classification_head(self(tokens, plan))
