"""The model options the short-budget study varies: embedding scale, embedding LayerNorm, residual init."""

import json

import torch

from layerdrop.pruning import apply_layers_to_keep

from conftest import TINY_TRAIN, run_cli, tiny_model


def test_scaled_embeddings_start_the_stream_at_unit_rms():
    plain, scaled = tiny_model(decoder_embed_dim=64), tiny_model(decoder_embed_dim=64, scale_embedding=True)
    tokens = torch.randint(0, 50, (4, 16))
    for model, low, high in ((plain, 0.01, 0.05), (scaled, 0.8, 1.2)):
        stream = model.decoder.embed_scale * model.decoder.embed_tokens(tokens)
        assert low < stream.pow(2).mean().sqrt().item() < high
    assert scaled.decoder.embed_scale == 8.0 and plain.decoder.embed_scale == 1.0


def test_scale_embedding_is_stored_and_cannot_change_on_resume(corpus_dir, tmp_path):
    save = tmp_path / "s"
    run_cli("train", "--data", str(corpus_dir), "--save-dir", str(save), "--max-update", "2", "--scale-embedding", *TINY_TRAIN)
    assert json.loads((save / "checkpoint_last" / "config.json").read_text())["scale_embedding"] is True
    proc = run_cli("train", "--data", str(corpus_dir), "--save-dir", str(save), "--max-update", "4", "--no-scale-embedding",
                   *TINY_TRAIN, check_rc=2)
    assert "--no-scale-embedding" in proc.stderr or "--scale-embedding" in proc.stderr


def test_residual_init_is_scaled_with_depth_unless_asked_not_to():
    torch.manual_seed(0)
    scaled, plain = tiny_model(decoder_embed_dim=256, decoder_ffn_embed_dim=512), tiny_model(
        decoder_embed_dim=256, decoder_ffn_embed_dim=512, scale_residual_init=False)
    std = lambda model: model.decoder.layers[0].fc2.weight.std().item()
    assert abs(std(scaled) - 0.02 / (2 * 6) ** 0.5) < 0.0005
    assert abs(std(plain) - 0.02) < 0.001


def test_layernorm_embedding_is_kept_by_pruning():
    model = tiny_model(layernorm_embedding=True).eval()
    assert model.decoder.layernorm_embedding is not None
    tokens = torch.randint(0, 50, (2, 8))
    import dataclasses
    config, state = apply_layers_to_keep(dataclasses.replace(model.cfg, decoder_layers_to_keep="0,2,4"), model.state_dict(),
                                         log=lambda _: None)
    assert "decoder.layernorm_embedding.weight" in state
    from layerdrop.models import TransformerLM
    pruned = TransformerLM(config)
    pruned.load_state_dict(state)
    assert pruned.decoder.layernorm_embedding is not None and len(pruned.decoder.layers) == 3
    assert torch.isfinite(pruned(tokens)[0]).all()
