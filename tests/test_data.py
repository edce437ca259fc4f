import pytest
import torch

from layerdrop.data.batching import eval_batches, random_batch
from layerdrop.data.corpus import load_corpus, split_by_fraction
from layerdrop.data.tokenizers import build_tokenizer, tokenizer_from_json
from layerdrop.errors import UserError

from conftest import SHARED_DATA


def test_char_tokenizer_round_trip_and_unknown():
    tok = build_tokenizer("char", "hello world\n")
    assert tok.decode(tok.encode("hello\nworld")) == "hello\nworld"
    assert tok.encode("z") == [tok.unk_id]
    again = tokenizer_from_json(tok.to_json(), "test")
    assert again.encode("hello") == tok.encode("hello")


def test_word_tokenizer_adds_eos_per_line_and_maps_unknown_words():
    tok = build_tokenizer("word", " the cat <unk> sat \n\n the dog \n")
    ids = tok.encode(" the cat sat \n\n a dog \n")
    words = [tok.vocab[i] for i in ids]
    assert words == ["the", "cat", "sat", "<eos>", "<eos>", "<unk>", "dog", "<eos>"]


def test_bpe_tokenizer_trains_round_trips_and_serialises():
    text = "the quick brown fox jumps over the lazy dog\n" * 50
    tok = build_tokenizer("bpe", text, bpe_vocab_size=300)
    assert len(tok) <= 300
    sample = "the lazy fox\nover the dog"
    assert tok.decode(tok.encode(sample)) == sample
    again = tokenizer_from_json(tok.to_json(), "test")
    assert again.encode(sample) == tok.encode(sample)
    assert len(tok.encode("the quick brown fox")) < len("the quick brown fox")  # merges happened


def test_unknown_tokenizer_kind():
    with pytest.raises(UserError, match="--tokenizer: got 'wordpiece'"):
        build_tokenizer("wordpiece", "x")


def test_corpus_directory_accepts_wikitext_names(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"wiki.{split}.tokens").write_text(f"{split} text\n")
    corpus = load_corpus(tmp_path)
    assert corpus.split("valid") == "valid text\n"


def test_missing_directory_split_and_unknown_split(tmp_path):
    with pytest.raises(UserError, match="--data: .* does not exist"):
        load_corpus(tmp_path / "nope")
    (tmp_path / "valid.txt").write_text("v\n")
    with pytest.raises(UserError, match="no training split"):
        load_corpus(tmp_path)
    (tmp_path / "train.txt").write_text("t\n")
    corpus = load_corpus(tmp_path)
    with pytest.raises(UserError, match="has no 'test' split; present: train, valid"):
        corpus.split("test")
    assert corpus.split("dev") == corpus.split("valid")  # the name GLUE users type
    with pytest.raises(UserError, match="--split: got 'develop'"):
        corpus.split("develop")


def test_one_file_split_by_fraction_at_line_breaks(tmp_path):
    text = "".join(f"line {i}\n" for i in range(100))
    splits = split_by_fraction(text, (0.9, 0.05, 0.05))
    assert "".join(splits[s] for s in ("train", "valid", "test")) == text
    assert all(s.endswith("\n") for s in splits.values())
    assert abs(len(splits["train"]) / len(text) - 0.9) < 0.02
    (tmp_path / "one.txt").write_text(text)
    assert load_corpus(tmp_path / "one.txt", "0.8,0.2,0").texts["test"] == ""
    with pytest.raises(UserError, match="--split-fractions"):
        load_corpus(tmp_path / "one.txt", "0.5,0.2")


def test_embedded_corpus_is_tiny_shakespeare():
    corpus = load_corpus(None)
    text = "".join(corpus.texts.values())
    assert len(text) == 1115394 and text.startswith("First Citizen:")


def test_random_batch_targets_are_shifted_inputs():
    tokens = torch.arange(100)
    x, y = random_batch(tokens, 4, 10, torch.Generator().manual_seed(0))
    assert x.shape == (4, 10) and torch.equal(y, x + 1)


def test_eval_batches_cover_every_token_once():
    tokens = torch.arange(103)
    targets = torch.cat([y.reshape(-1) for _, y in eval_batches(tokens, 10, 3)])
    assert torch.equal(targets, torch.arange(1, 103))


def test_split_shorter_than_context_is_a_clear_error_for_training_but_evaluates():
    with pytest.raises(UserError, match="has 5 tokens, fewer than 11; valid: a longer split or a smaller --tokens-per-sample"):
        random_batch(torch.arange(5), 2, 10, torch.Generator())
    blocks = list(eval_batches(torch.arange(5), 10, 4))
    assert len(blocks) == 1 and torch.equal(blocks[0][1], torch.arange(1, 5)[None])


def test_word_tokenizer_decodes_lines_without_stray_spaces():
    tok = build_tokenizer("word", "the cat sat\nthe dog\n")
    assert tok.decode(tok.encode("the cat sat\n\nthe dog\n")) == "the cat sat\n\nthe dog\n"


@pytest.mark.skipif(not (SHARED_DATA / "wikitext-2").is_dir(), reason="../shared/data not present")
def test_wikitext2_word_level_token_counts_match_the_literature():
    corpus = load_corpus(SHARED_DATA / "wikitext-2")
    tok = build_tokenizer("word", corpus.split("train"))
    assert len(tok.encode(corpus.split("train"))) == 2088628
    assert len(tok.encode(corpus.split("test"))) == 245569
    assert len(tok) == 33278  # the usual WikiText-2 vocabulary size (incl. <eos>)
