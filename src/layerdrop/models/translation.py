"""An encoder-decoder Transformer for translation, with LayerDrop on both stacks.

The encoder is bidirectional with a source padding mask; the decoder is causal and attends to the
encoder output. With a joint BPE vocabulary, source embeddings, target embeddings and the output
projection share one matrix (``share_all_embeddings``). Layers live under ``encoder.layers.N.`` and
``decoder.layers.N.``, so either side prunes on its own with the one pruning function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from layerdrop.models.options import ComputeOptions, DecoderLayerDrop, EmbeddingOptions, EncoderLayerDrop
from layerdrop.config import check_heads_divide, check_positive_ints, check_probabilities, option
from layerdrop.errors import UserError
from layerdrop.nn.attention import KVCache
from layerdrop.nn.drop_plan import StackPlan
from layerdrop.nn.stack import StackSpec, TransformerStack, init_weights
from layerdrop.pruning.units import DecoderUnits, EncoderUnits, pending_pruning

MODEL_TYPE = "transformer_translation"


@dataclass
class TransformerTranslationConfig(EncoderUnits, DecoderUnits, EncoderLayerDrop, DecoderLayerDrop, EmbeddingOptions,
                                   ComputeOptions):
    vocab_size: int = option(0, "joint vocabulary size (set from the tokenizer)", cli=False)
    encoder_layers: int = option(6, "number of encoder layers")
    encoder_embed_dim: int = option(256, "encoder width")
    encoder_ffn_embed_dim: int = option(1024, "encoder FFN hidden width")
    encoder_attention_heads: int = option(4, "encoder attention heads")
    encoder_normalize_before: bool = option(True, "pre-LayerNorm in the encoder")
    encoder_layers_to_keep: str | None = option(None, "keep only these encoder layers, e.g. 0,2,4 (prunes the model at load)")
    decoder_layers: int = option(6, "number of decoder layers")
    decoder_embed_dim: int = option(256, "decoder width")
    decoder_ffn_embed_dim: int = option(1024, "decoder FFN hidden width")
    decoder_attention_heads: int = option(4, "decoder attention heads")
    decoder_normalize_before: bool = option(True, "pre-LayerNorm in the decoder")
    decoder_layers_to_keep: str | None = option(None, "keep only these decoder layers, e.g. 0,2,4 (prunes the model at load)")
    max_source_positions: int = option(256, "longest source sentence in tokens")
    max_target_positions: int = option(256, "longest target sentence in tokens")
    dropout: float = option(0.1, "dropout on embeddings and residual branches")
    attention_dropout: float = option(0.0, "dropout on attention weights")
    activation_dropout: float = option(0.0, "dropout after the FFN activation")
    share_all_embeddings: bool = option(True, "one embedding matrix for source, target and output (joint vocabulary)")
    bias: bool = option(True, "biases in linear layers and LayerNorms")
    pad_id: int = option(0, "padding token id", cli=False)
    bos_id: int = option(1, "beginning-of-sentence token id", cli=False)
    eos_id: int = option(2, "end-of-sentence token id", cli=False)
    encoder_kept_layers: list[int] | None = option(None, "original indices of the encoder layers of a pruned model", cli=False)
    decoder_kept_layers: list[int] | None = option(None, "original indices of the decoder layers of a pruned model", cli=False)

    architecture_fields = (
        "scale_embedding", "layernorm_embedding",
        "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads",
        "encoder_normalize_before", "decoder_layers", "decoder_embed_dim", "decoder_ffn_embed_dim",
        "decoder_attention_heads", "decoder_normalize_before", "max_source_positions", "max_target_positions",
        "share_all_embeddings", "bias", "encoder_layer_heads", "encoder_layer_ffn_dims", "decoder_layer_heads",
        "decoder_layer_ffn_dims", "encoder_learned_gates", "decoder_learned_gates",
    )

    def validate(self) -> None:
        check_positive_ints(self, tuple(f"{side}_{name}" for side in ("encoder", "decoder")
                                        for name in ("layers", "embed_dim", "ffn_embed_dim", "attention_heads"))
                            + ("max_source_positions", "max_target_positions", "vocab_size"))
        for side in ("encoder", "decoder"):
            check_heads_divide(getattr(self, f"{side}_embed_dim"), getattr(self, f"{side}_attention_heads"), side)
        if self.encoder_embed_dim != self.decoder_embed_dim:
            raise UserError(
                f"--decoder-embed-dim: got {self.decoder_embed_dim}; valid: equal to --encoder-embed-dim "
                f"({self.encoder_embed_dim}), as the decoder attends to encoder states"
            )
        check_probabilities(self, ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "decoder_layerdrop"))
        self.check_layerdrop(("encoder", "decoder"))


def _spec(cfg: TransformerTranslationConfig, side: str) -> StackSpec:
    get = lambda name: getattr(cfg, f"{side}_{name}")
    return StackSpec(
        vocab_size=cfg.vocab_size, layers=get("layers"), embed_dim=get("embed_dim"), ffn_dim=get("ffn_embed_dim"),
        heads=get("attention_heads"),
        max_positions=cfg.max_source_positions if side == "encoder" else cfg.max_target_positions,
        dropout=cfg.dropout, attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
        layerdrop=cfg.layerdrop_config(side), normalize_before=get("normalize_before"), bias=cfg.bias,
        scale_embedding=cfg.scale_embedding, layernorm_embedding=cfg.layernorm_embedding,
        causal=side == "decoder", cross_attention=side == "decoder",
        layer_heads=get("layer_heads"), layer_ffn_dims=get("layer_ffn_dims"), checkpoint_activations=cfg.checkpoint_activations,
    )


class TransformerTranslation(nn.Module):
    model_type = MODEL_TYPE

    def __init__(self, cfg: TransformerTranslationConfig):
        super().__init__()
        cfg.validate()
        if pending_pruning(cfg):
            raise ValueError("prune the config with layerdrop.pruning.apply_layers_to_keep before building the model")
        self.cfg = cfg
        self.encoder = TransformerStack(_spec(cfg, "encoder"), name="encoder")
        shared = self.encoder.embed_tokens if cfg.share_all_embeddings else None
        self.decoder = TransformerStack(_spec(cfg, "decoder"), name="decoder", embed_tokens=shared)
        init_weights(self, cfg.encoder_layers + cfg.decoder_layers, scale_embedding=cfg.scale_embedding,
                     scale_residual=cfg.scale_residual_init)

    def encode(self, src_tokens: torch.Tensor, plan: StackPlan | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        padding_mask = src_tokens.eq(self.cfg.pad_id)
        return self.encoder(src_tokens, padding_mask=padding_mask, plan=plan), padding_mask

    def decode(
        self, prev_tokens: torch.Tensor, memory: torch.Tensor, memory_padding_mask: torch.Tensor,
        caches: list[KVCache] | None = None, start_pos: int = 0, plan: StackPlan | None = None,
    ) -> torch.Tensor:
        hidden = self.decoder(prev_tokens, caches, start_pos, memory=memory, memory_padding_mask=memory_padding_mask, plan=plan)
        return F.linear(hidden, self.decoder.embed_tokens.weight)

    def forward(self, src_tokens: torch.Tensor, prev_tokens: torch.Tensor,
                plan: dict[str, StackPlan] | None = None) -> torch.Tensor:
        """Logits of every target position. ``plan``: this update's LayerDrop plan (None: every layer)."""
        plan = plan or {}
        memory, mask = self.encode(src_tokens, plan.get("encoder"))
        return self.decode(prev_tokens, memory, mask, plan=plan.get("decoder"))

    def new_caches(self) -> list[KVCache]:
        return [KVCache() for _ in range(len(self.decoder.layers))]
