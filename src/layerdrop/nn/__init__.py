from layerdrop.nn.attention import KVCache, SelfAttention
from layerdrop.nn.drop_plan import LayerDropConfig, LayerPlan, StackPlan, draw_stack_plan, kept_layers
from layerdrop.nn.stack import StackSpec, TransformerStack, model_drop_plan
from layerdrop.nn.transformer_layer import TransformerLayer

__all__ = ["KVCache", "LayerDropConfig", "LayerPlan", "SelfAttention", "StackPlan", "StackSpec", "TransformerLayer",
           "TransformerStack", "draw_stack_plan", "kept_layers", "model_drop_plan"]
