"""layerdrop: train Transformers with LayerDrop, then cut them to any depth on demand."""

from layerdrop.errors import UserError
from layerdrop.nn.drop_plan import LayerDropConfig, draw_stack_plan
from layerdrop.nn.stack import model_drop_plan
from layerdrop.pruning.keep import parse_layers_to_keep, prune_state_dict

__all__ = [
    "LayerDropConfig",
    "UserError",
    "draw_stack_plan",
    "model_drop_plan",
    "parse_layers_to_keep",
    "prune_state_dict",
]
__version__ = "0.1.0"
