import subprocess
import sys
from pathlib import Path

import pytest
import torch

from layerdrop.data.corpus import embedded_text
from layerdrop.models import TransformerLM, TransformerLMConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_config(**changes) -> TransformerLMConfig:
    values = dict(vocab_size=50, decoder_layers=6, decoder_embed_dim=32, decoder_ffn_embed_dim=64,
                  decoder_attention_heads=4, tokens_per_sample=16, dropout=0.0)
    values.update(changes)
    return TransformerLMConfig(**values)


def tiny_model(seed: int = 0, **changes) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(tiny_config(**changes))


def char_tokenizer(size: int):
    """A character tokenizer of exactly ``size`` tokens (a checkpoint's tokenizer must match its vocab_size)."""
    from layerdrop.data.tokenizers import build_tokenizer

    specials = len(build_tokenizer("char", "a")) - 1
    tokenizer = build_tokenizer("char", "".join(chr(0x100 + i) for i in range(size - specials)))
    assert len(tokenizer) == size
    return tokenizer


def write_corpus(directory: Path) -> Path:
    """A small corpus directory in the three-file layout, cut from the embedded Tiny Shakespeare."""
    text = embedded_text()
    directory.mkdir()
    (directory / "train.txt").write_text(text[:30000])
    (directory / "valid.txt").write_text(text[30000:33000])
    (directory / "test.txt").write_text(text[33000:36000])
    return directory


@pytest.fixture
def corpus_dir(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus")


TINY_TRAIN = ["--decoder-layers", "4", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
              "--decoder-attention-heads", "2", "--tokens-per-sample", "16", "--batch-size", "4",
              "--dropout", "0.1", "--warmup-updates", "2", "--no-progress-bar", "--max-valid-steps", "4"]


def run_cli(*args: str, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    """Run the real console entry point in a fresh process (as a user would)."""
    proc = subprocess.run([sys.executable, "-m", "layerdrop", *args], capture_output=True, text=True, timeout=300)
    if check_rc is not None:
        assert proc.returncode == check_rc, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc
