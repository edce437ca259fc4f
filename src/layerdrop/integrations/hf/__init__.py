"""LayerDrop, keep lists and layer selection for Hugging Face transformers models (``pip install "layerdrop[hf]"``).

Supported families (``config.model_type``): gpt2, bert, roberta, llama, mistral, qwen2, opt, bart.

    from layerdrop.integrations.hf import apply_layerdrop, LayerDropCallback, prune, remove_layerdrop

    handle = apply_layerdrop(model, p=0.2, seed=0)        # train (Trainer: callbacks=[LayerDropCallback(handle)])
    remove_layerdrop(model)
    small = prune(model, [0, 2, 4, 6])                      # or {"encoder": [...], "decoder": [...]} for BART
    small.save_pretrained("out")                            # plain transformers loads it
"""

from layerdrop.integrations.hf.dropping import HFLayerDrop, LayerDropCallback, apply_layerdrop, remove_layerdrop
from layerdrop.integrations.hf.families import FAMILIES, family_of, layer_lists
from layerdrop.integrations.hf.pruning import prune

__all__ = ["FAMILIES", "HFLayerDrop", "LayerDropCallback", "apply_layerdrop", "family_of", "layer_lists", "prune",
           "remove_layerdrop"]
