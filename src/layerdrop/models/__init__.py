from layerdrop.models.encoder import MODEL_TYPE as ENCODER_MODEL_TYPE
from layerdrop.models.encoder import TransformerEncoderConfig, TransformerEncoderModel
from layerdrop.models.transformer_lm import MODEL_TYPE as LM_MODEL_TYPE
from layerdrop.models.transformer_lm import TransformerLM, TransformerLMConfig, num_params
from layerdrop.models.translation import MODEL_TYPE as TRANSLATION_MODEL_TYPE
from layerdrop.models.translation import TransformerTranslation, TransformerTranslationConfig

# model_type (as stored in config.json) -> (config class, model class)
MODEL_TYPES = {
    LM_MODEL_TYPE: (TransformerLMConfig, TransformerLM),
    TRANSLATION_MODEL_TYPE: (TransformerTranslationConfig, TransformerTranslation),
    ENCODER_MODEL_TYPE: (TransformerEncoderConfig, TransformerEncoderModel),
}

__all__ = [
    "ENCODER_MODEL_TYPE", "LM_MODEL_TYPE", "MODEL_TYPES", "TransformerEncoderConfig", "TransformerEncoderModel", "TRANSLATION_MODEL_TYPE", "TransformerLM", "TransformerLMConfig",
    "TransformerTranslation", "TransformerTranslationConfig", "num_params",
]
