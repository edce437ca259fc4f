import dataclasses
import random
import re

import pytest
import torch

from layerdrop.beam_search import beam_search, greedy_decode
from layerdrop.checkpoint import build_model, load_checkpoint
from layerdrop.data.parallel import load_parallel
from layerdrop.errors import UserError
from layerdrop.models import TRANSLATION_MODEL_TYPE, TransformerTranslation, TransformerTranslationConfig, num_params

from conftest import SHARED_DATA, char_tokenizer, run_cli


def tiny_translation(seed=0, **changes) -> TransformerTranslation:
    torch.manual_seed(seed)
    values = dict(vocab_size=40, encoder_layers=4, decoder_layers=4, encoder_embed_dim=32, decoder_embed_dim=32,
                  encoder_ffn_embed_dim=64, decoder_ffn_embed_dim=64, encoder_attention_heads=4,
                  decoder_attention_heads=4, max_source_positions=32, max_target_positions=32, dropout=0.0)
    values.update(changes)
    return TransformerTranslation(TransformerTranslationConfig(**values))


def sources(rows=3, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(5, 40, (rows, length), generator=g)
    src[:, -1] = 2  # eos
    src[1, 4:] = 0  # a padded row
    src[1, 3] = 2
    return src


def copy_trained_model() -> TransformerTranslation:
    """A tiny model trained briefly to copy its input, so its hypotheses end (EOS) well before the length limit."""
    model = tiny_translation(seed=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(120):
        src = torch.randint(5, 40, (32, 5), generator=g)
        src[:, -1] = 2
        prev = torch.cat([torch.ones(32, 1, dtype=torch.long), src[:, :-1]], dim=1)
        loss = torch.nn.functional.cross_entropy(model(src, prev).reshape(-1, 40), src.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def test_beam_one_is_greedy_decoding():
    for model in (tiny_translation().eval(), copy_trained_model()):
        src = sources()
        assert beam_search(model, src, beam=1) == greedy_decode(model, src)
    hypotheses = beam_search(model, src, beam=3)
    limits = [int(1.5 * int(row.ne(0).sum())) + 10 - 1 for row in src]
    assert any(len(h) < limit for h, limit in zip(hypotheses, limits))  # the EOS path was exercised


def test_beam_search_leaves_the_model_mode_alone():
    model = tiny_translation().train()
    beam_search(model, sources(), beam=2)
    greedy_decode(model, sources())
    assert model.training


def test_tied_embeddings_are_written_once_and_shared_after_loading(tmp_path):
    from safetensors import safe_open

    from layerdrop.checkpoint import load_model, save_checkpoint

    model = tiny_translation()
    path = save_checkpoint(tmp_path / "mt", TRANSLATION_MODEL_TYPE, model.cfg, model.state_dict(), char_tokenizer(model.cfg.vocab_size))
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "encoder.embed_tokens.weight" in keys and "decoder.embed_tokens.weight" not in keys
    loaded, _ = load_model(path, log=lambda _: None)
    assert loaded.decoder.embed_tokens.weight is loaded.encoder.embed_tokens.weight
    assert torch.equal(loaded.encoder.embed_tokens.weight, model.encoder.embed_tokens.weight)


def test_padding_does_not_change_the_encoding():
    model = tiny_translation().eval()
    src = torch.tensor([[7, 8, 9, 2]])
    padded = torch.tensor([[7, 8, 9, 2, 0, 0]])
    a, _ = model.encode(src)
    b, _ = model.encode(padded)
    assert torch.allclose(a, b[:, :4], atol=1e-6)


# BART's choices, which the translation study trains with: post-LN and a LayerNorm on the embeddings.
BART_LIKE = dict(encoder_normalize_before=False, decoder_normalize_before=False, layernorm_embedding=True)


@pytest.mark.parametrize("architecture", [{}, BART_LIKE], ids=["default pre-LN", "BART-like"])
@pytest.mark.parametrize("keep", [{"decoder": "0,2"}, {"encoder": "1,3"}, {"encoder": "0", "decoder": "1,2,3"}])
def test_pruning_one_side_equals_running_the_kept_layers(keep, architecture):
    full = tiny_translation(seed=2, **architecture).eval()
    changes = {f"{side}_layers_to_keep": value for side, value in keep.items()}
    pruned = build_model(dataclasses.replace(full.cfg, **changes), full.state_dict(), TRANSLATION_MODEL_TYPE, "test",
                         log=lambda _: None).eval()
    kept = {side: [int(i) for i in keep.get(side, "0,1,2,3").split(",")] for side in ("encoder", "decoder")}
    src, prev = sources(), torch.randint(5, 40, (3, 6))
    # Reference: the full model's own modules with the removed layers skipped by hand.
    enc = full.encoder
    pad = src.eq(0)
    identity = torch.nn.Identity()  # where the architecture has no such LayerNorm
    x = enc.embed_tokens(src) + enc.embed_positions(torch.arange(src.shape[1]))
    x = (enc.layernorm_embedding or identity)(x)
    for i in kept["encoder"]:
        x = enc.layers[i](x, padding_mask=pad)
    memory = (enc.layer_norm or identity)(x)
    dec = full.decoder
    y = dec.embed_tokens(prev) + dec.embed_positions(torch.arange(prev.shape[1]))
    y = (dec.layernorm_embedding or identity)(y)
    for i in kept["decoder"]:
        y = dec.layers[i](y, memory=memory, memory_padding_mask=pad)
    expected = torch.nn.functional.linear((dec.layer_norm or identity)(y), dec.embed_tokens.weight)
    assert torch.allclose(pruned(src, prev), expected, atol=1e-5)
    removed = sum(sum(p.numel() for p in getattr(full, side).layers[i].parameters())
                  for side in ("encoder", "decoder") for i in range(4) if i not in kept[side])
    assert num_params(full) - num_params(pruned) == removed


def write_toy_parallel(directory, pairs=400, seed=0):
    """A toy "de->en" corpus: a word-for-word code, learnable in a few hundred updates."""
    rng = random.Random(seed)
    de = ["der", "die", "das", "hund", "katze", "haus", "rot", "blau", "lauft", "sitzt", "ein", "mann", "frau", "auf"]
    en = ["the", "she", "it", "dog", "cat", "house", "red", "blue", "runs", "sits", "a", "man", "woman", "on"]
    directory.mkdir()
    for split, count in {"train": pairs, "val": 40, "test_2016_flickr": 40}.items():
        src_lines, tgt_lines = [], []
        for _ in range(count):
            idx = [rng.randrange(len(de)) for _ in range(rng.randint(2, 6))]
            src_lines.append(" ".join(de[i] for i in idx))
            tgt_lines.append(" ".join(en[i] for i in idx))
        (directory / f"{split}.de").write_text("\n".join(src_lines) + "\n")
        (directory / f"{split}.en").write_text("\n".join(tgt_lines) + "\n")
    return directory


def test_parallel_layout_and_errors(tmp_path):
    corpus = load_parallel(write_toy_parallel(tmp_path / "toy"), "de", "en")
    assert set(corpus.files) == {"train", "valid", "test"}
    assert len(corpus.split("test")[0]) == 40
    with pytest.raises(UserError, match="languages present: de, en"):
        load_parallel(tmp_path / "toy", "fr", "en")
    (tmp_path / "toy" / "val.en").write_text("one line\n")
    with pytest.raises(UserError, match="val.de has 40 lines but val.en has 1"):
        load_parallel(tmp_path / "toy", "de", "en").split("valid")


@pytest.mark.skipif(not (SHARED_DATA / "multi30k-de-en").is_dir(), reason="../shared/data not present")
def test_multi30k_layout():
    corpus = load_parallel(SHARED_DATA / "multi30k-de-en", "de", "en")
    assert [len(corpus.split(s)[0]) for s in ("train", "valid", "test")] == [29000, 1014, 1000]


def test_translation_cli_end_to_end(tmp_path):
    data = write_toy_parallel(tmp_path / "toy", pairs=600)
    save_dir = tmp_path / "run"
    common = ["--task", "translation", "--data", str(data), "--save-dir", str(save_dir), "--bpe-vocab-size", "500",
              "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
              "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128", "--encoder-attention-heads", "4",
              "--decoder-attention-heads", "4", "--batch-size", "32", "--lr", "3e-3", "--warmup-updates", "20",
              "--dropout", "0.0", "--no-progress-bar"]
    run_cli("train", *common, "--max-update", "500", "--validate-interval-updates", "250",
            "--encoder-layerdrop", "0.1", "--decoder-layerdrop", "0.1")
    ckpt = save_dir / "checkpoint_best"
    proc = run_cli("eval", "--path", str(ckpt), "--split", "test", "--beam", "4")
    bleu = float(re.search(r"BLEU = ([\d.]+)", proc.stdout).group(1))
    assert bleu > 50, proc.stdout  # the toy code is learnable: a broken decoder or BLEU wiring would score ~0
    # Pruning only the decoder and only the encoder both load and translate.
    for flag in ("--decoder-layers-to-keep", "--encoder-layers-to-keep"):
        pruned = run_cli("eval", "--path", str(ckpt), "--split", "test", flag, "0", "--beam", "2")
        assert "| Pruning model to specified layer configuration" in pruned.stdout
        assert re.search(r"BLEU = [\d.]+", pruned.stdout)
    out = tmp_path / "dec1"
    run_cli("prune", "--path", str(ckpt), "--decoder-layers-to-keep", "1", "--out", str(out))
    stored = load_checkpoint(out)
    assert (stored.config.encoder_layers, stored.config.decoder_layers) == (2, 1)
    translated = run_cli("generate", "--path", str(out), "--input", str(data / "test_2016_flickr.de"), "--beam", "1")
    assert len(translated.stdout.splitlines()) == 40
    piped = __import__("subprocess").run(
        [__import__("sys").executable, "-m", "layerdrop", "generate", "--path", str(ckpt)],
        input="der hund\n", capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stdout.strip() == "the dog"
