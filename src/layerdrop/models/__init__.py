from layerdrop.models.transformer_lm import MODEL_TYPE as LM_MODEL_TYPE
from layerdrop.models.transformer_lm import TransformerLM, TransformerLMConfig, num_params

# model_type (as stored in config.json) -> (config class, model class)
MODEL_TYPES = {LM_MODEL_TYPE: (TransformerLMConfig, TransformerLM)}

__all__ = ["LM_MODEL_TYPE", "MODEL_TYPES", "TransformerLM", "TransformerLMConfig", "num_params"]
