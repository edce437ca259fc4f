import collections
import math
import random

import pytest
import torch

from layerdrop.plateau import PlateauWatch, flat_ids, frequency_loss
from layerdrop.data.tokenizers import SPECIALS
from layerdrop.tasks import ClassificationTask, LanguageModelingTask, MaskedLMTask, TranslationTask
from layerdrop.train import TrainConfig, train

from test_glue import write_glue
from test_translation import write_toy_parallel


def test_frequency_loss_is_the_validation_loss_of_predicting_by_training_frequency():
    # add-one smoothed over 3 ids: shares 3/6, 2/6, 1/6
    assert math.isclose(frequency_loss(torch.tensor([0, 0, 1]), torch.tensor([0, 1]), 3), -(math.log(1 / 2) + math.log(1 / 3)) / 2)
    assert math.isclose(frequency_loss(torch.tensor([0]), torch.tensor([4]), 2), -math.log(1 / 6))  # unseen: finite
    assert flat_ids([[1, 2], [], [3]], extra=9).tolist() == [1, 2, 3, 9, 9, 9]
    empty = torch.tensor([], dtype=torch.long)  # an empty dev file, a split with no maskable token
    assert frequency_loss(empty, torch.tensor([1]), 2) is None and frequency_loss(torch.tensor([1]), empty, 2) is None


def test_told_once_after_two_validations_on_the_plateau_or_at_the_end():
    watch = PlateauWatch(3.18, warmup_updates=800, max_update=5000)
    assert watch.check(3.18, 500) is None and watch.check(3.18, 800) is None  # the learning rate is still warming up
    assert watch.check(3.18, 1000) is None  # once: every run passes the plateau on its way down
    message = watch.check(3.198, 1500)
    assert "since update 1,000" in message and "--warmup-updates (now 800)" in message and "(3.1800)" in message
    assert watch.check(3.18, 2000) is None  # told once
    passing = PlateauWatch(3.18, warmup_updates=0, max_update=5000)
    assert [passing.check(loss, update) for loss, update in ((3.19, 500), (3.15, 1000), (3.17, 1500), (2.9, 2000))] == [None] * 4
    below = PlateauWatch(3.18, warmup_updates=0, max_update=5000)
    assert below.check(3.158, 500) is None and below.check(3.158, 1000) is None
    above = PlateauWatch(0.693, warmup_updates=0, max_update=5000, predicts="label")  # overfitting, or not learning yet
    assert above.check(0.715, 500) is None and above.check(0.9, 1000) is None
    short = PlateauWatch(0.693, warmup_updates=50, max_update=300, predicts="label")  # validates only at its end
    message = short.check(0.69, 300)
    assert "each label" in message and "ends training on it" in message
    assert PlateauWatch(None, warmup_updates=0, max_update=10).check(3.18, 10) is None  # regression, no valid split
    resumed = PlateauWatch(3.18, warmup_updates=800, max_update=5000, since=1000)  # a stay begun before a stop
    assert "since update 1,000" in resumed.check(3.18, 1500)


@pytest.mark.parametrize("max_valid_steps", [None, 2])
def test_a_language_models_plateau_is_counted_on_the_characters_validation_scores(corpus_dir, max_valid_steps):
    task = LanguageModelingTask(TrainConfig(data=str(corpus_dir), batch_size=4, max_valid_steps=max_valid_steps))
    tokenizer = task.build_tokenizer()
    task.prepare(tokenizer, task.new_config({"tokens_per_sample": 16}, tokenizer))
    train_text, valid_text = (corpus_dir / "train.txt").read_text(), (corpus_dir / "valid.txt").read_text()
    scored = valid_text[1:] if max_valid_steps is None else valid_text[1 : 1 + 2 * 4 * 16]  # the first 2 batches of 4 x 16
    counts, size = collections.Counter(train_text), len(tokenizer)
    expected = -sum(math.log((counts[c] + 1) / (len(train_text) + size)) for c in scored) / len(scored)
    assert math.isclose(task.frequency_plateau, expected, rel_tol=1e-9)


def expected_frequency_loss(train_ids, scored_ids, size):
    counts = collections.Counter(train_ids)
    return -sum(math.log((counts[i] + 1) / (len(train_ids) + size)) for i in scored_ids) / len(scored_ids)


def test_a_translation_plateau_counts_each_target_sentences_end(tmp_path):
    task = TranslationTask(TrainConfig(task="translation", data=str(write_toy_parallel(tmp_path / "mt")),
                                       tokenizer="bpe", bpe_vocab_size=300, batch_size=8, max_valid_steps=2))
    tokenizer = task.build_tokenizer()
    config = task.new_config({}, tokenizer)
    task.prepare(tokenizer, config)
    with_end = lambda sentences: [i for sentence in sentences for i in [*sentence, config.eos_id]]
    expected = expected_frequency_loss(with_end(task.train_tgt), with_end(task.valid[1][:16]), config.vocab_size)
    assert math.isclose(task.frequency_plateau, expected, rel_tol=1e-9)


def test_a_masked_lms_plateau_counts_only_tokens_that_can_be_masked(corpus_dir):
    task = MaskedLMTask(TrainConfig(task="masked_lm", data=str(corpus_dir), tokenizer="bpe", bpe_vocab_size=300))
    tokenizer = task.build_tokenizer()
    config = task.new_config({"tokens_per_sample": 32}, tokenizer)
    task.prepare(tokenizer, config)
    regular = lambda ids: [i for i in ids.tolist() if i >= len(SPECIALS)]  # <s>, </s>, <pad>, ... are never masked
    scored = task.valid_stream[: task.valid_stream.numel() // 31 * 31]  # whole blocks of 31 (32 with <s>), as scored
    expected = expected_frequency_loss(regular(task.train_stream), regular(scored), config.vocab_size)
    assert math.isclose(task.frequency_plateau, expected, rel_tol=1e-9)


@pytest.mark.parametrize("glue_task", ["RTE", "STS-B"])
@pytest.mark.parametrize("max_valid_steps", [None, 2])
def test_a_classifiers_plateau_is_its_label_frequencies_and_regression_has_none(tmp_path, glue_task, max_valid_steps):
    directory = write_glue(tmp_path, glue_task, rows=40)
    task = ClassificationTask(TrainConfig(task="classification", data=str(directory), bpe_vocab_size=300, batch_size=4,
                                          max_valid_steps=max_valid_steps), log=lambda _: None)
    tokenizer = task.build_tokenizer()
    task.prepare(tokenizer, task.new_config({"tokens_per_sample": 64}, tokenizer))
    if glue_task == "STS-B":
        assert task.frequency_plateau is None
        return
    labels = lambda name: [line.split("\t")[-1] for line in (directory / name).read_text().splitlines()[1:]]
    counts, dev = collections.Counter(labels("train.tsv")), labels("dev.tsv")
    dev = dev if max_valid_steps is None else dev[: 2 * 4]  # validation scores the first 2 batches of 4, as eval does
    assert [len(ids) for ids, _ in task.valid] == [len(dev)] * len(task.valid)
    expected = -sum(math.log((counts[y] + 1) / (40 + 2)) for y in dev) / len(dev)
    assert math.isclose(task.frequency_plateau, expected, rel_tol=1e-9)


def test_a_run_on_text_with_nothing_beyond_frequencies_is_told_and_one_on_shakespeare_is_not(corpus_dir, tmp_path, capsys):
    rng = random.Random(0)  # characters drawn independently: the frequency plateau is the best any model can do
    iid = tmp_path / "iid"
    iid.mkdir()
    for name, size in (("train.txt", 20000), ("valid.txt", 2000), ("test.txt", 200)):
        (iid / name).write_text("".join(rng.choices("abcde ", weights=[8, 4, 2, 1, 1, 4], k=size)))
    model = dict(decoder_layers=1, decoder_embed_dim=32, decoder_ffn_embed_dim=64, decoder_attention_heads=2,
                 tokens_per_sample=16)

    def run(data, name, max_update=300):
        config = TrainConfig(data=str(data), save_dir=str(tmp_path / name), max_update=max_update, batch_size=8,
                             warmup_updates=10, lr=3e-3, validate_interval_updates=100, no_progress_bar=True)
        train(config, model, lambda _: None)
        return capsys.readouterr().out

    told = run(iid, "iid")
    assert told.count("by its frequency in the training data") == 1, told
    assert "| valid at update" in (quiet := run(corpus_dir, "shakespeare")) and "frequency" not in quiet, quiet
    # Resumed for 200 more updates, still on the plateau: the warning was given, and the checkpoint remembers it.
    resumed = run(iid, "iid", max_update=500)
    assert resumed.startswith("| valid at update 400") and "valid at update 500" in resumed and "frequency" not in resumed, resumed
