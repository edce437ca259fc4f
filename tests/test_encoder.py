import dataclasses
import json
import random
import re
import shutil

import pytest
import torch

from layerdrop.checkpoint import build_model, load_checkpoint
from layerdrop.data.glue import TASKS, load_glue, read_examples
from layerdrop.errors import UserError
from layerdrop.models import ENCODER_MODEL_TYPE, TransformerEncoderConfig, TransformerEncoderModel, num_params
from layerdrop.tasks.masked_lm import IGNORE, mask_tokens

from conftest import SHARED_DATA, char_tokenizer, run_cli


def tiny_encoder(seed=0, **changes) -> TransformerEncoderModel:
    torch.manual_seed(seed)
    values = dict(vocab_size=60, encoder_layers=4, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                  encoder_attention_heads=4, tokens_per_sample=24, dropout=0.0, num_classes=3, label_names=["a", "b", "c"])
    values.update(changes)
    return TransformerEncoderModel(TransformerEncoderConfig(**values))


def test_masking_statistics_follow_roberta():
    tokens = torch.randint(5, 1000, (400, 500))
    special = torch.zeros_like(tokens, dtype=torch.bool)
    special[:, 0] = True
    inputs, targets = mask_tokens(tokens, mask_id=4, vocab_size=1000, first_regular_id=5,
                                  generator=torch.Generator().manual_seed(0), special=special)
    chosen = targets.ne(IGNORE)
    assert not chosen[:, 0].any()  # special tokens are never chosen
    share = chosen[:, 1:].float().mean().item()
    assert abs(share - 0.15) < 0.005
    masked = inputs.eq(4) & chosen
    kept = inputs.eq(tokens) & chosen
    replaced = chosen & ~masked & ~kept
    n = chosen.sum().item()
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    assert abs(kept.sum().item() / n - 0.1) < 0.01  # (a random token equal to the original counts as kept: ~0.01 %)
    assert abs(replaced.sum().item() / n - 0.1) < 0.01
    assert torch.equal(targets[chosen], tokens[chosen]) and torch.equal(inputs[~chosen], tokens[~chosen])


def test_masking_is_a_function_of_the_generator():
    tokens = torch.randint(5, 100, (4, 50))
    a = mask_tokens(tokens, 4, 100, 5, torch.Generator().manual_seed(3))
    b = mask_tokens(tokens, 4, 100, 5, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_padding_does_not_change_real_positions():
    model = tiny_encoder().eval()
    tokens = torch.tensor([[1, 9, 10, 11, 2]])
    padded = torch.tensor([[1, 9, 10, 11, 2, 0, 0]])
    assert torch.allclose(model(tokens), model(padded)[:, :5], atol=1e-6)


@pytest.mark.parametrize("keep", ["0,2", "1,3", "3"])
def test_pruned_encoder_equals_running_the_kept_layers(keep):
    full = tiny_encoder(seed=1).eval()
    pruned = build_model(dataclasses.replace(full.cfg, encoder_layers_to_keep=keep), full.state_dict(),
                         ENCODER_MODEL_TYPE, "test", log=lambda _: None).eval()
    tokens = torch.randint(5, 60, (3, 12))
    tokens[1, 8:] = 0
    pad = tokens.eq(0)
    stack = full.encoder
    x = stack.embed_tokens(tokens) + stack.embed_positions(torch.arange(12))
    kept = [int(i) for i in keep.split(",")]
    for i in kept:
        x = stack.layers[i](x, padding_mask=pad)
    hidden = stack.layer_norm(x)
    assert torch.allclose(pruned(tokens), hidden, atol=1e-5)
    assert torch.allclose(pruned.classify(tokens), full.classification_head(hidden), atol=1e-5)
    assert num_params(full) - num_params(pruned) == sum(
        sum(p.numel() for p in full.encoder.layers[i].parameters()) for i in range(4) if i not in kept)


def test_tsv_parsing_single_pair_and_string_labels(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nit was great\t1\nawful\t0\n")
    single = read_examples(tmp_path / "train.tsv", TASKS["SST-2"])
    assert single.texts == [("it was great",), ("awful",)] and single.labels == ["1", "0"]
    pair = tmp_path / "pair.tsv"
    pair.write_text("index\tsentence1\tsentence2\tlabel\n0\tA man sleeps.\tA man is awake.\tnot_entailment\n")
    parsed = read_examples(pair, TASKS["RTE"])
    assert parsed.texts == [("A man sleeps.", "A man is awake.")] and parsed.labels == ["not_entailment"]


def test_tsv_errors_name_the_file_and_what_is_valid(tmp_path):
    bad = tmp_path / "train.tsv"
    bad.write_text("text\ttarget\nhello\t1\n")
    with pytest.raises(UserError, match=r"has columns \['text', 'target'\], which match no GLUE task"):
        load_glue(tmp_path, "train")
    bad.write_text("sentence\tlabel\nhello\n")
    with pytest.raises(UserError, match="has no readable SST-2 rows \\(1 malformed\\)"):
        load_glue(tmp_path, "train")
    with pytest.raises(UserError, match=r"has no dev.tsv \(the valid split of SST-2\)"):
        load_glue(tmp_path, "valid")
    with pytest.raises(UserError, match="does not exist"):
        load_glue(tmp_path / "missing", "train")


def test_roberta_pair_encoding_and_longest_first_truncation():
    from layerdrop.data.glue import Examples
    from layerdrop.data.tokenizers import BPETokenizer
    from layerdrop.tasks.classification import encode_examples

    tok = BPETokenizer.train("a b c d e f g h\n", 300, sentences=True)
    config = TransformerEncoderConfig(vocab_size=len(tok), tokens_per_sample=10, pad_id=0, bos_id=1, eos_id=2)
    a, b = "a b c d e f g", "h"
    (ids,) = encode_examples(tok, Examples([(a, b)], ["x"]), config)
    first, second = tok.encode_sentences([a, b])
    assert len(ids) == 10 and ids[0] == 1 and ids[-1] == 2
    assert ids[1:6] == first[:5] and ids[6:8] == [2, 2] and ids[8:9] == second  # the longer segment lost its tail
    (single,) = encode_examples(tok, Examples([(a,)], ["x"]), config)
    assert single == [1] + first[:8] + [2]


def test_dev_errors_and_tiny_context_are_refused(tmp_path):
    from layerdrop.tasks.classification import ClassificationTask
    from layerdrop.train import TrainConfig

    data = write_toy_sentiment(tmp_path / "sst")
    (data / "dev.tsv").write_text("sentence\tlabel\nfine\n")
    task = ClassificationTask(TrainConfig(task="classification", data=str(data)))
    tok = task.build_tokenizer()
    with pytest.raises(UserError, match="dev.tsv has no readable SST-2 rows"):
        task.prepare(tok, task.new_config({}, tok))
    with pytest.raises(UserError, match="--tokens-per-sample: got 2; valid: at least 3"):
        task.prepare(tok, task.new_config({"tokens_per_sample": 2}, tok))


def test_generate_refuses_an_encoder_checkpoint(tmp_path):
    from layerdrop.checkpoint import save_checkpoint

    model = tiny_encoder()
    path = save_checkpoint(tmp_path / "enc", ENCODER_MODEL_TYPE, model.cfg, model.state_dict(), char_tokenizer(model.cfg.vocab_size))
    proc = run_cli("generate", "--path", str(path), check_rc=2)
    assert "holds a 'transformer_encoder' model; generate needs" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(not (SHARED_DATA / "glue").is_dir(), reason="../shared/data not present")
def test_glue_directories_as_given():
    (sst2,) = load_glue(SHARED_DATA / "glue" / "SST-2", "valid")
    (rte,) = load_glue(SHARED_DATA / "glue" / "RTE", "train")
    assert len(sst2.labels) == 872 and set(sst2.labels) == {"0", "1"}
    assert len(rte.labels) == 2490 and set(rte.labels) == {"entailment", "not_entailment"} and len(rte.texts[0]) == 2


def write_toy_sentiment(directory, rows=300, seed=0):
    rng = random.Random(seed)
    good, bad = ["good", "great", "fine", "lovely"], ["bad", "awful", "poor", "dull"]
    filler = ["the", "film", "was", "very", "plot", "a", "and"]
    directory.mkdir()
    for name, count in (("train.tsv", rows), ("dev.tsv", 60)):
        lines = ["sentence\tlabel"]
        for _ in range(count):
            label = rng.randint(0, 1)
            words = [rng.choice(filler) for _ in range(rng.randint(2, 6))] + [rng.choice(good if label else bad)]
            rng.shuffle(words)
            lines.append(" ".join(words) + f"\t{label}")
        (directory / name).write_text("\n".join(lines) + "\n")
    return directory


def test_paper_recipe_pretrain_prune_finetune_evaluate(tmp_path):
    from layerdrop.data.corpus import embedded_text

    text_dir = tmp_path / "text"
    text_dir.mkdir()
    text = embedded_text()
    (text_dir / "train.txt").write_text(text[:20000])
    (text_dir / "valid.txt").write_text(text[20000:23000])
    shape = ["--encoder-layers", "4", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
             "--encoder-attention-heads", "4", "--tokens-per-sample", "32", "--bpe-vocab-size", "400",
             "--batch-size", "8", "--warmup-updates", "5", "--no-progress-bar"]
    mlm = tmp_path / "mlm"
    out = run_cli("train", "--task", "masked_lm", "--data", str(text_dir), "--save-dir", str(mlm), "--max-update", "30",
                  "--validate-interval-updates", "15", "--encoder-layerdrop", "0.5", *shape)
    assert "LayerDrop encoder: p=0.5" in out.stdout
    evaluated = run_cli("eval", "--path", str(mlm / "checkpoint_last"), "--encoder-layers-to-keep", "0,2")
    assert "masked-LM loss" in evaluated.stdout and "| Pruning model" in evaluated.stdout
    # Scored at another masking rate (to compare models trained at different rates): the checkpoint's own rate
    # (0.15) is the default, and another rate masks other tokens.
    losses = {}
    for rate in (None, "0.15", "0.6"):
        scored = run_cli("eval", "--path", str(mlm / "checkpoint_last"), *(["--mask-prob", rate] if rate else []))
        losses[rate] = float(re.search(r"checkpoint_last\s+valid\s+4\s+([\d.]+)", scored.stdout).group(1))
    assert losses[None] == losses["0.15"] != losses["0.6"], losses
    # The default is the rate the checkpoint records, not a fixed 0.15.
    relabelled = tmp_path / "mlm_at_0.6"
    shutil.copytree(mlm / "checkpoint_last", relabelled)
    run_json = json.loads((relabelled / "run.json").read_text())
    (relabelled / "run.json").write_text(json.dumps({**run_json, "mask_prob": 0.6}))
    scored = run_cli("eval", "--path", str(relabelled))
    assert float(re.search(r"mlm_at_0.6\s+valid\s+4\s+([\d.]+)", scored.stdout).group(1)) == losses["0.6"]
    bad = run_cli("eval", "--path", str(mlm / "checkpoint_last"), "--mask-prob", "1.5", check_rc=2)
    assert "--mask-prob: got 1.5; valid: a number in (0, 1)" in bad.stderr and "Traceback" not in bad.stderr
    sentiment = write_toy_sentiment(tmp_path / "sst")
    finetune = tmp_path / "ft"
    # Fine-tune the pruned encoder (the paper's recipe), with the MLM's BPE and a new head.
    ft = run_cli("train", "--task", "classification", "--data", str(sentiment), "--save-dir", str(finetune),
                 "--restore-file", str(mlm / "checkpoint_last"), "--encoder-layers-to-keep", "0,2", "--max-update", "150",
                 "--validate-interval-updates", "75", "--batch-size", "16", "--lr", "3e-3", "--warmup-updates", "10",
                 "--encoder-layerdrop", "0.0", "--dropout", "0.0", "--no-progress-bar")
    assert "| Pruning model to specified layer configuration" in ft.stdout and "labels ['0', '1']" in ft.stdout
    stored = load_checkpoint(finetune / "checkpoint_best")
    assert stored.config.encoder_layers == 2 and stored.config.num_classes == 2
    result = run_cli("eval", "--path", str(finetune / "checkpoint_best"))
    not_masked = run_cli("eval", "--path", str(finetune / "checkpoint_best"), "--mask-prob", "0.4", check_rc=2)
    assert "--mask-prob: only masked-LM checkpoints" in not_masked.stderr and "Traceback" not in not_masked.stderr
    accuracy = float(re.search(r"dev\.tsv\s+2\s+([\d.]+)", result.stdout).group(1))
    assert accuracy > 80, result.stdout  # one sentiment word decides the label: a broken head would sit near 50
    # Fine-tuning with a unit pruned away (here half of every FFN) works the same way.
    halves = run_cli("train", "--task", "classification", "--data", str(sentiment), "--save-dir", str(tmp_path / "ft_half"),
                     "--restore-file", str(mlm / "checkpoint_last"), "--encoder-ffn-halves-to-keep", "0", "--max-update", "5",
                     "--batch-size", "16", "--no-progress-bar")
    assert "| Pruning model to specified layer configuration" in halves.stdout
    assert load_checkpoint(tmp_path / "ft_half" / "checkpoint_last").config.encoder_layer_ffn_dims == [32] * 4
