from layerdrop.data.batching import eval_batches, random_batch
from layerdrop.data.corpus import TextCorpus, load_corpus
from layerdrop.data.tokenizers import TOKENIZER_KINDS, build_tokenizer, load_tokenizer

__all__ = ["TOKENIZER_KINDS", "TextCorpus", "build_tokenizer", "eval_batches", "load_corpus", "load_tokenizer", "random_batch"]
