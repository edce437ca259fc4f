"""A task is data + loss + metric for one kind of model. The trainer asks a task for: a tokenizer,
a model config, the loss of update n, and validation metrics (a dict with "loss"); after ``prepare``, a task's
``frequency_plateau`` is the validation loss of predicting each of what it ``predicts`` by its training frequency
(None where there is none), so the trainer can say when a run sits there (plateau.py)."""

from layerdrop.tasks.classification import ClassificationTask
from layerdrop.tasks.language_modeling import LanguageModelingTask
from layerdrop.tasks.masked_lm import MaskedLMTask
from layerdrop.tasks.translation import TranslationTask

TASKS = {task.name: task for task in (LanguageModelingTask, MaskedLMTask, ClassificationTask, TranslationTask)}

__all__ = ["TASKS", "ClassificationTask", "LanguageModelingTask", "MaskedLMTask", "TranslationTask"]
