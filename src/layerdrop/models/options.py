"""Initialisation and embedding choices every model offers (the ones the short-budget study varies)."""

from __future__ import annotations

from dataclasses import dataclass

from layerdrop.config import option


@dataclass
class EmbeddingOptions:
    scale_residual_init: bool = option(True, "initialise residual output projections N(0, 0.02/sqrt(2 x layers)) as GPT-2 "
                                              "does; --no-scale-residual-init: N(0, 0.02) like every other matrix")
    layernorm_embedding: bool = option(False, "LayerNorm on the embeddings (token + position) before the first layer, as BART and "
                                              "fairseq's --layernorm-embedding")
    scale_embedding: bool = option(False, "multiply token embeddings by sqrt(width) and initialise embeddings N(0, 1/width), "
                                          "as fairseq does (see docs/layerdrop_at_short_budgets.md)")
