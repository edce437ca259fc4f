"""layerdrop: train Transformers with LayerDrop, then cut them to any depth on demand."""

from layerdrop.errors import UserError
from layerdrop.nn.layerdrop import LayerDropModuleList, set_layerdrop_step
from layerdrop.pruning.keep import parse_layers_to_keep, prune_state_dict

__all__ = [
    "LayerDropModuleList",
    "UserError",
    "parse_layers_to_keep",
    "prune_state_dict",
    "set_layerdrop_step",
]
__version__ = "0.1.0"
