"""A decoder-only Transformer language model with LayerDrop on its layer stack.

Learned positions, tied input/output embeddings (by default), causal attention through
``scaled_dot_product_attention``, and incremental decoding with a per-layer KV cache. Parameter
names put every layer under ``decoder.layers.N.`` so one pruning function serves every model.

For word-level vocabularies (WikiText's 33,278 words) the full softmax costs more than the layers;
``--adaptive-softmax-cutoff`` swaps it for torch's adaptive softmax (Grave et al., 2017), which the
paper's WikiText-103 models also use. Its probabilities are exact, so perplexity is unchanged in meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from layerdrop.models.options import ComputeOptions, DecoderLayerDrop, EmbeddingOptions
from layerdrop.config import check_heads_divide, check_positive_ints, check_probabilities, option, shorten
from layerdrop.errors import UserError
from layerdrop.nn.attention import KVCache
from layerdrop.nn.drop_plan import StackPlan
from layerdrop.nn.stack import StackSpec, TransformerStack, init_weights
from layerdrop.pruning.units import DecoderUnits, pending_pruning

MODEL_TYPE = "transformer_lm"


@dataclass
class TransformerLMConfig(DecoderUnits, DecoderLayerDrop, EmbeddingOptions, ComputeOptions):
    vocab_size: int = option(0, "vocabulary size (set from the tokenizer)", cli=False)
    decoder_layers: int = option(6, "number of decoder layers")
    decoder_embed_dim: int = option(256, "model width")
    decoder_ffn_embed_dim: int = option(1024, "hidden width of the feed-forward network")
    decoder_attention_heads: int = option(4, "number of attention heads")
    decoder_normalize_before: bool = option(True, "pre-LayerNorm (default); --no-decoder-normalize-before for post-LN")
    tokens_per_sample: int = option(256, "context length in tokens (also the number of learned positions)")
    dropout: float = option(0.1, "dropout on embeddings and residual branches")
    attention_dropout: float = option(0.0, "dropout on attention weights")
    activation_dropout: float = option(0.0, "dropout after the FFN activation")
    decoder_layers_to_keep: str | None = option(None, "keep only these decoder layers, e.g. 0,2,4 (prunes the model at load)")
    share_decoder_input_output_embed: bool = option(True, "tie input and output embeddings (not with an adaptive softmax)")
    adaptive_softmax_cutoff: str | None = option(
        None, "adaptive softmax: comma-separated frequency-rank cutoffs, e.g. 2000,10000 (cheapest when ids are "
        "sorted by frequency, as --tokenizer word's are)")
    adaptive_softmax_factor: float = option(4.0, "adaptive softmax: each tail cluster's width is the previous one's / this")
    bias: bool = option(True, "biases in linear layers and LayerNorms")
    decoder_kept_layers: list[int] | None = option(None, "original indices of the layers of a pruned model", cli=False)

    # Fields that fix parameter shapes: a resumed run must keep them.
    architecture_fields = (
        "scale_embedding", "layernorm_embedding",
        "decoder_layers", "decoder_embed_dim", "decoder_ffn_embed_dim", "decoder_attention_heads",
        "decoder_normalize_before", "tokens_per_sample", "share_decoder_input_output_embed", "bias",
        "decoder_layer_heads", "decoder_layer_ffn_dims", "decoder_learned_gates", "adaptive_softmax_cutoff",
        "adaptive_softmax_factor",
    )

    def validate(self) -> None:
        check_positive_ints(self, ("decoder_layers", "decoder_embed_dim", "decoder_ffn_embed_dim",
                                   "decoder_attention_heads", "tokens_per_sample", "vocab_size"))
        check_heads_divide(self.decoder_embed_dim, self.decoder_attention_heads, "decoder")
        check_probabilities(self, ("dropout", "attention_dropout", "activation_dropout", "decoder_layerdrop"))
        self.check_layerdrop(("decoder",))
        factor = self.adaptive_softmax_factor
        if not 1 < factor < float("inf"):
            raise UserError(f"--adaptive-softmax-factor: got {factor!r}; valid: a finite number above 1")
        if self.adaptive_softmax_cutoff is not None:
            clusters = len(self.cutoffs())
            # The last tail cluster projects to decoder_embed_dim // factor**clusters dimensions: at 0 it cannot learn.
            if not 1 < factor < float("inf") or self.decoder_embed_dim // factor**clusters < 1:
                raise UserError(f"--adaptive-softmax-factor: got {factor!r}; valid: a number above 1 that leaves the last "
                                f"tail cluster at least 1 dimension (--decoder-embed-dim {self.decoder_embed_dim} // "
                                f"factor^{clusters} >= 1)")

    def cutoffs(self) -> list[int]:
        """The adaptive softmax's cutoffs, checked against the vocabulary (once it is known)."""
        text = str(self.adaptive_softmax_cutoff)
        try:
            cutoffs = [int(part) for part in text.split(",")]
        except ValueError:
            cutoffs = []
        upper = self.vocab_size - 1 if self.vocab_size else None  # torch's limit: the last cluster keeps 1 word
        if not cutoffs or cutoffs != sorted(set(cutoffs)) or cutoffs[0] < 1 or (upper and cutoffs[-1] > upper):
            bounds = f" between 1 and {upper} (the vocabulary has {self.vocab_size} entries)" if upper else ""
            raise UserError(f"--adaptive-softmax-cutoff: got {shorten(text)}; valid: increasing integers{bounds}, e.g. 2000,10000")
        return cutoffs


def stack_spec(cfg: TransformerLMConfig) -> StackSpec:
    return StackSpec(
        vocab_size=cfg.vocab_size, layers=cfg.decoder_layers, embed_dim=cfg.decoder_embed_dim,
        ffn_dim=cfg.decoder_ffn_embed_dim, heads=cfg.decoder_attention_heads, max_positions=cfg.tokens_per_sample,
        dropout=cfg.dropout, attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
        layerdrop=cfg.layerdrop_config("decoder"), normalize_before=cfg.decoder_normalize_before, bias=cfg.bias,
        scale_embedding=cfg.scale_embedding, layernorm_embedding=cfg.layernorm_embedding, causal=True,
        layer_heads=cfg.decoder_layer_heads, layer_ffn_dims=cfg.decoder_layer_ffn_dims,
        checkpoint_activations=cfg.checkpoint_activations,
    )


class TransformerLM(nn.Module):
    model_type = MODEL_TYPE

    def __init__(self, cfg: TransformerLMConfig):
        super().__init__()
        cfg.validate()
        if pending_pruning(cfg):
            raise ValueError("prune the config with layerdrop.pruning.apply_layers_to_keep before building the model")
        self.cfg = cfg
        self.decoder = TransformerStack(stack_spec(cfg), name="decoder")
        self.adaptive_softmax = None
        self.output_projection = None
        if cfg.adaptive_softmax_cutoff is not None:
            self.adaptive_softmax = nn.AdaptiveLogSoftmaxWithLoss(
                cfg.decoder_embed_dim, cfg.vocab_size, cfg.cutoffs(), div_value=cfg.adaptive_softmax_factor)
        elif not cfg.share_decoder_input_output_embed:
            self.output_projection = nn.Linear(cfg.decoder_embed_dim, cfg.vocab_size, bias=False)
        init_weights(self, cfg.decoder_layers, scale_embedding=cfg.scale_embedding,
                     scale_residual=cfg.scale_residual_init)

    @property
    def layers(self) -> nn.ModuleList:
        return self.decoder.layers

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over the vocabulary (log-probabilities with an adaptive softmax: the same after a softmax)."""
        if self.adaptive_softmax is not None:
            return self.adaptive_softmax.log_prob(hidden.reshape(-1, hidden.shape[-1])).view(*hidden.shape[:-1], -1)
        if self.output_projection is None:
            return F.linear(hidden, self.decoder.embed_tokens.weight)
        return self.output_projection(hidden)

    def forward(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
        start_pos: int = 0,
        plan: dict[str, StackPlan] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits for every position, and the mean cross-entropy (nats/token) when targets are given.

        With an adaptive softmax and targets, only the loss is computed (the logits are None): scoring just
        the target's cluster is what makes it cheap. ``plan``: this update's LayerDrop plan (None: every layer)."""
        hidden = self.decoder(tokens, caches, start_pos, plan=None if plan is None else plan.get("decoder"))
        if self.adaptive_softmax is not None and targets is not None:
            return None, self.adaptive_softmax(hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)).loss
        logits = self.output_logits(hidden)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss

    def new_caches(self) -> list[KVCache]:
        return [KVCache() for _ in range(len(self.decoder.layers))]


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
