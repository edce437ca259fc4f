"""Choices every model config offers: initialisation and embeddings (the ones the short-budget study varies),
and LayerDrop's (rate, unit, schedule, warmup, learned gates), recorded in each checkpoint's config.json."""

from __future__ import annotations

import math
from dataclasses import dataclass

from layerdrop.config import MAX_UPDATES, option, shorten
from layerdrop.errors import UserError
from layerdrop.nn.drop_plan import DEPTHS_ROUND, SAMPLINGS, LayerDropConfig
from layerdrop.nn.learned_gates import MAX_RATE
from layerdrop.nn.schedules import SCHEDULES
from layerdrop.nn.structured import UNITS


def served_depths(text: str) -> tuple[int, ...]:
    """``--layerdrop-depths`` ("4,2") as depths; () for none, or when any entry is not a whole number >= 1."""
    entries = [entry.strip() for entry in str(text or "").split(",") if entry.strip()]
    if not all(entry.isascii() and entry.isdigit() and int(entry) >= 1 for entry in entries):
        return ()
    return tuple(sorted({int(entry) for entry in entries}, reverse=True))


@dataclass
class EmbeddingOptions:
    scale_residual_init: bool = option(True, "initialise residual output projections N(0, 0.02/sqrt(2 x layers)) as GPT-2 "
                                              "does; --no-scale-residual-init: N(0, 0.02) like every other matrix")
    layernorm_embedding: bool = option(False, "LayerNorm on the embeddings (token + position) before the first layer, as BART and "
                                              "fairseq's --layernorm-embedding")
    scale_embedding: bool = option(False, "multiply token embeddings by sqrt(width) and initialise embeddings N(0, 1/width), "
                                          "as fairseq does (see docs/layerdrop_at_short_budgets.md)")


@dataclass
class LayerDropOptions:
    """How LayerDrop draws, shared by a model's stacks (each stack has its own rate and gates below)."""

    layerdrop_unit: str = option("layer", f"what one LayerDrop draw removes: {', '.join(UNITS)}")
    layerdrop_schedule: str = option("uniform", f"how the LayerDrop rate p is spread over depth and time: {', '.join(SCHEDULES)}")
    layerdrop_gamma: float | None = option(None, "progressive schedule: ramp speed gamma (default: 5 / --max-update)")
    layerdrop_warmup_updates: int = option(0, "LayerDrop rates rise linearly from 0 over the first N updates "
                                              "(0: from update 0, the paper's rule)")
    layerdrop_sampling: str = option("per-layer", "which layers a LayerDrop draw keeps: per-layer (the paper: one draw "
                                                  "per layer, any subset), evenly-spaced (the paper's number of layers, "
                                                  "placed as every-other pruning places them) or evenly-spaced-shifted "
                                                  "(the same from a random offset: every layer equally often)")
    layerdrop_depths: str = option("", "evenly-spaced samplings: the depths you will serve below the full one, e.g. "
                                       "4,2 (one list for every LayerDrop stack); each update's number of kept layers "
                                       "is rounded to one of them or to the full depth (see --layerdrop-depths-round), "
                                       "so every sub-network trained is one served; meant with --layerdrop-distill "
                                       "(default: none, every count)")
    layerdrop_depths_round: str = option("down", "--layerdrop-depths: which way a kept count goes: down (to the "
                                                 "nearest served depth at or below, the smallest when none is; any "
                                                 "cut goes deep, even at a small rate) or up (to the nearest at or "
                                                 "above: a pass is cut only when half its layers or more are "
                                                 "dropped, so it skips less than p says) or down-after-warmup (no "
                                                 "rounding until --layerdrop-warmup-updates ends, then down)")

    def layerdrop_config(self, stack: str) -> LayerDropConfig:
        """The one LayerDrop config of ``stack`` ("encoder" or "decoder")."""
        return LayerDropConfig(p=getattr(self, f"{stack}_layerdrop"), unit=self.layerdrop_unit,
                               schedule=self.layerdrop_schedule, gamma=self.layerdrop_gamma or 0.0,
                               warmup=self.layerdrop_warmup_updates, learned_gates=getattr(self, f"{stack}_learned_gates"),
                               sampling=self.layerdrop_sampling, depths=served_depths(self.layerdrop_depths),
                               depths_round=self.layerdrop_depths_round)

    def check_layerdrop(self, stacks: tuple[str, ...]) -> None:
        """One message naming the flag for every LayerDrop setting that cannot work."""
        if self.layerdrop_unit not in UNITS:
            raise UserError(f"--layerdrop-unit: got {shorten(self.layerdrop_unit)}; valid: {', '.join(UNITS)}")
        if self.layerdrop_schedule not in SCHEDULES:
            raise UserError(f"--layerdrop-schedule: got {shorten(self.layerdrop_schedule)}; valid: {', '.join(SCHEDULES)}")
        gamma = self.layerdrop_gamma
        if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma < math.inf):
            raise UserError(f"--layerdrop-gamma: got {shorten(gamma)}; valid: a finite number above 0")
        if gamma is not None and self.layerdrop_schedule != "progressive":
            raise UserError(f"--layerdrop-gamma: only the progressive schedule uses it; got --layerdrop-schedule "
                            f"{self.layerdrop_schedule}")
        if self.layerdrop_sampling not in SAMPLINGS:
            raise UserError(f"--layerdrop-sampling: got {shorten(self.layerdrop_sampling)}; valid: {', '.join(SAMPLINGS)}")
        if self.layerdrop_sampling != "per-layer":
            clash = ([f"--layerdrop-unit {self.layerdrop_unit}"] if self.layerdrop_unit != "layer" else []) + \
                    ([f"--layerdrop-schedule {self.layerdrop_schedule}"] if self.layerdrop_schedule != "uniform" else []) + \
                    [f"--{stack}-learned-gates" for stack in stacks if getattr(self, f"{stack}_learned_gates")]
            if clash:
                raise UserError(f"--layerdrop-sampling {self.layerdrop_sampling}: needs whole layers at one rate each; got "
                                f"{', '.join(clash)}; valid: --layerdrop-unit layer, --layerdrop-schedule uniform, "
                                "no learned gates")
        depths = served_depths(self.layerdrop_depths)
        if self.layerdrop_depths and (self.layerdrop_sampling == "per-layer" or not depths):
            raise UserError(f"--layerdrop-depths: got {shorten(self.layerdrop_depths)}; valid: whole numbers >= 1, "
                            "comma-separated (e.g. 4,2), with --layerdrop-sampling evenly-spaced or evenly-spaced-shifted")
        if self.layerdrop_depths_round not in DEPTHS_ROUND:
            raise UserError(f"--layerdrop-depths-round: got {shorten(self.layerdrop_depths_round)}; valid: "
                            f"{', '.join(DEPTHS_ROUND)}")
        if self.layerdrop_depths_round != "down" and not self.layerdrop_depths:
            raise UserError(f"--layerdrop-depths-round {self.layerdrop_depths_round}: rounds the kept count to "
                            "served depths; valid only with --layerdrop-depths")
        if self.layerdrop_depths_round == "down-after-warmup" and not self.layerdrop_warmup_updates:
            raise UserError("--layerdrop-depths-round down-after-warmup: waits for the rate warmup; valid only with "
                            "--layerdrop-warmup-updates above 0")
        for stack in stacks:
            layers = getattr(self, f"{stack}_layers")
            # A pruned model keeps its parent's depths (the ones it no longer has are left out when drawing).
            unpruned = getattr(self, f"{stack}_layerdrop") and not getattr(self, f"{stack}_kept_layers")
            if depths and unpruned and max(depths) >= layers:
                raise UserError(f"--layerdrop-depths: got {shorten(self.layerdrop_depths)}; valid: depths below the "
                                f"{stack}'s {layers} layers (the full depth is always served)")
        warmup = self.layerdrop_warmup_updates
        if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup <= MAX_UPDATES:
            raise UserError(f"--layerdrop-warmup-updates: got {shorten(warmup)}; valid: an integer from 0 to {MAX_UPDATES:,}")
        for stack in stacks:
            p = getattr(self, f"{stack}_layerdrop")
            if not getattr(self, f"{stack}_learned_gates"):
                continue
            if not 0 < p < MAX_RATE:
                raise UserError(f"--{stack}-learned-gates: needs --{stack}-layerdrop in (0, {MAX_RATE}) (the average of the "
                                f"learned rates); got {p}")
            if self.layerdrop_unit != "layer":
                raise UserError(f"--{stack}-learned-gates: learns whole-layer rates; valid with --layerdrop-unit layer, "
                                f"got {self.layerdrop_unit!r}")
        if self.layerdrop_unit == "ffn-half":
            for stack in stacks:
                widths = getattr(self, f"{stack}_layer_ffn_dims", None) or [getattr(self, f"{stack}_ffn_embed_dim")]
                if getattr(self, f"{stack}_layerdrop") and any(width % 2 for width in widths):
                    raise UserError(f"--layerdrop-unit ffn-half: the {stack} FFN widths are {sorted(set(widths))}; "
                                    "valid: even widths")


@dataclass
class EncoderLayerDrop(LayerDropOptions):
    encoder_layerdrop: float = option(0.0, "LayerDrop: probability of skipping each encoder layer in training, in [0, 1)")
    encoder_learned_gates: bool = option(False, "learn each encoder layer's drop rate from its activations (mean: --encoder-layerdrop); "
                                                "prune with layerdrop select --strategy learned")


@dataclass
class DecoderLayerDrop(LayerDropOptions):
    decoder_layerdrop: float = option(0.0, "LayerDrop: probability of skipping each decoder layer in training, in [0, 1)")
    decoder_learned_gates: bool = option(False, "learn each decoder layer's drop rate from its activations (mean: --decoder-layerdrop); "
                                                "prune with layerdrop select --strategy learned")


@dataclass
class ComputeOptions:
    """How the forward pass is computed, not what it computes: free to change on resume."""

    checkpoint_activations: bool = option(False, "recompute each layer's activations in the backward pass instead of "
                                                 "keeping them (less memory, about a third more compute)")
