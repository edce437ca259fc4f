from layerdrop.pruning.keep import apply_layers_to_keep, every_other, parse_layers_to_keep, prune_state_dict

__all__ = ["apply_layers_to_keep", "every_other", "parse_layers_to_keep", "prune_state_dict"]
