from layerdrop.nn.attention import KVCache, SelfAttention
from layerdrop.nn.layerdrop import LayerDropModuleList, derive_seed, set_layerdrop_step
from layerdrop.nn.transformer_layer import TransformerLayer

__all__ = ["KVCache", "LayerDropModuleList", "SelfAttention", "TransformerLayer", "derive_seed", "set_layerdrop_step"]
