"""A task is data + loss + metric for one kind of model. The trainer asks a task for: a tokenizer,
a model config, the loss of update n, and validation metrics (a dict with "loss")."""

from layerdrop.tasks.classification import ClassificationTask
from layerdrop.tasks.language_modeling import LanguageModelingTask
from layerdrop.tasks.masked_lm import MaskedLMTask
from layerdrop.tasks.translation import TranslationTask

TASKS = {task.name: task for task in (LanguageModelingTask, MaskedLMTask, ClassificationTask, TranslationTask)}

__all__ = ["TASKS", "ClassificationTask", "LanguageModelingTask", "MaskedLMTask", "TranslationTask"]
