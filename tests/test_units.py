"""Structured dropout units: drawing them in training, and pruning them with the weights really removed."""

import dataclasses

import pytest
import torch

from conftest import tiny_config, tiny_model
from layerdrop.checkpoint import build_model, load_checkpoint
from layerdrop.errors import UserError
from layerdrop.models import TransformerLM, TransformerTranslation, TransformerTranslationConfig, num_params
from layerdrop.nn.drop_plan import draw_stack_plan, kept_layers
from layerdrop.nn.structured import UNITS, LayerPlan, sample_units, skipped_share
from layerdrop.pruning import apply_layers_to_keep
from layerdrop.pruning.units import prune_units

TOKENS = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))


def _with_plans(model: TransformerLM, plans: list[LayerPlan]) -> torch.Tensor:
    """Logits of the full model with each layer running only what its plan says (dropout is 0)."""
    model.train()
    with torch.no_grad():
        logits = model(TOKENS, plan={"decoder": tuple(plans)})[0]
    model.eval()
    return logits


def _pruned(model: TransformerLM, **request) -> TransformerLM:
    config, state = prune_units(model.cfg, model.state_dict(), "decoder", request)
    pruned = build_model(config, state, "transformer_lm", "test", log=lambda _: None).eval()
    return pruned


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS)[0]


def test_pruning_heads_equals_running_only_those_heads():
    model = tiny_model()  # 6 layers, 4 heads
    pruned = _pruned(model, heads_to_keep="0,2")
    assert num_params(pruned) < num_params(model)
    assert pruned.cfg.decoder_layer_heads == [2] * 6
    torch.testing.assert_close(_logits(pruned), _with_plans(model, [LayerPlan(heads=(0, 2))] * 6))
    # An independent reference: zero the output columns of the other heads in the full model.
    zeroed = tiny_model()
    head_dim = 32 // 4
    with torch.no_grad():
        for layer in zeroed.decoder.layers:
            for h in (1, 3):
                layer.self_attn.out_proj.weight[:, h * head_dim:(h + 1) * head_dim] = 0
    torch.testing.assert_close(_logits(pruned), _logits(zeroed.eval()))


def test_pruning_sublayers_equals_running_only_those_sublayers():
    model = tiny_model()
    pruned = _pruned(model, attention_layers_to_keep="0,2,4", ffn_layers_to_keep="1,3,5")
    assert pruned.cfg.decoder_layer_heads == [4, 0, 4, 0, 4, 0] and pruned.cfg.decoder_layer_ffn_dims == [0, 64, 0, 64, 0, 64]
    assert "decoder.layers.1.self_attn.qkv_proj.weight" not in pruned.state_dict()
    assert "decoder.layers.0.fc1.weight" not in pruned.state_dict()
    plans = [LayerPlan(attention=l % 2 == 0, ffn=l % 2 == 1) for l in range(6)]
    torch.testing.assert_close(_logits(pruned), _with_plans(model, plans))
    assert num_params(pruned) < 0.75 * num_params(model) + 50 * 32 * 2


def test_pruning_ffn_halves_equals_running_only_that_half():
    model = tiny_model()
    pruned = _pruned(model, ffn_halves_to_keep="1")
    assert pruned.cfg.decoder_layer_ffn_dims == [32] * 6
    torch.testing.assert_close(_logits(pruned), _with_plans(model, [LayerPlan(ffn_halves=(1,))] * 6))


def test_units_then_layers_and_never_twice():
    model = tiny_model()
    config = dataclasses.replace(model.cfg, decoder_heads_to_keep="1,3", decoder_layers_to_keep="0,2,4")
    logs = []
    config, state = apply_layers_to_keep(config, model.state_dict(), logs.append)
    assert logs == ["| Pruning model to specified layer configuration"]
    assert config.decoder_layers == 3 and config.decoder_layer_heads == [2, 2, 2]
    assert config.decoder_pruned_units == {"heads_to_keep": [1, 3]} and config.decoder_heads_to_keep is None
    pruned = build_model(config, state, "transformer_lm", "test", log=lambda _: None).eval()
    full_plans = [LayerPlan(heads=(1, 3)) if l in (0, 2, 4) else LayerPlan(attention=False, ffn=False) for l in range(6)]
    torch.testing.assert_close(_logits(pruned), _with_plans(model, full_plans))
    # The same flags again (a pruned fine-tune rerun with its command) leave the checkpoint as it is.
    again = dataclasses.replace(config, decoder_heads_to_keep="1,3", decoder_layers_to_keep="0,2,4")
    logs.clear()
    config2, state2 = apply_layers_to_keep(again, state, logs.append)
    assert config2.decoder_layer_heads == [2, 2, 2] and config2.decoder_layers == 3
    assert all("not pruning again" in line for line in logs)
    assert state2.keys() == state.keys()


def test_a_second_head_pruning_resumes_without_pruning_again_and_a_second_halving_is_refused():
    model = tiny_model()  # 6 layers, 4 heads
    config, state = prune_units(model.cfg, model.state_dict(), "decoder", {"heads_to_keep": "1,2,3"})
    # A fine-tune of the pruned model that prunes its heads again, then the same command resumed.
    request = dataclasses.replace(config, decoder_heads_to_keep="0,2")
    config, state = apply_layers_to_keep(request, state, lambda _: None)
    assert config.decoder_layer_heads == [2] * 6
    logs = []
    again, _ = apply_layers_to_keep(dataclasses.replace(config, decoder_heads_to_keep="0,2"), state, logs.append)
    assert again.decoder_layer_heads == [2] * 6 and any("not pruning again" in line for line in logs)
    # Half of a half is a quarter, which no list of halves records: refused, not misrecorded.
    halved = prune_units(model.cfg, model.state_dict(), "decoder", {"ffn_halves_to_keep": "1"})
    with pytest.raises(UserError, match="--decoder-ffn-halves-to-keep: this checkpoint's FFNs were already halved"):
        prune_units(*halved, "decoder", {"ffn_halves_to_keep": "0"})


def test_translation_encoder_and_decoder_units():
    torch.manual_seed(0)
    cfg = TransformerTranslationConfig(vocab_size=40, encoder_layers=2, decoder_layers=2, encoder_embed_dim=16,
                                       decoder_embed_dim=16, encoder_ffn_embed_dim=32, decoder_ffn_embed_dim=32,
                                       encoder_attention_heads=2, decoder_attention_heads=2, dropout=0.0)
    model = TransformerTranslation(cfg).eval()
    src, prev = TOKENS[:, :8] % 40, TOKENS[:, :5] % 40
    with torch.no_grad():
        for layer in model.encoder.layers:  # reference: the encoder's FFNs output nothing
            layer.fc2.weight.zero_()
            layer.fc2.bias.zero_()
        for layer in model.decoder.layers:  # and the decoder's head 1 is silenced
            layer.self_attn.out_proj.weight[:, 8:] = 0
        expected = model(src, prev)
    config, state = prune_units(cfg, model.state_dict(), "encoder", {"ffn_layers_to_keep": "0"})
    config, state = prune_units(config, state, "decoder", {"heads_to_keep": "0"})
    # ffn_layers_to_keep "0" keeps layer 0's (zeroed) FFN: same output, fewer weights in layer 1
    pruned = build_model(config, state, "transformer_translation", "test", log=lambda _: None).eval()
    assert config.encoder_layer_ffn_dims == [32, 0] and config.decoder_layer_heads == [1, 1]
    with torch.no_grad():
        torch.testing.assert_close(pruned(src, prev), expected)


def test_head_and_layer_drops_the_layers_the_plain_list_drops():
    """The unit's first draws are the plain list's one-per-layer draws: same seed, same layers skipped."""
    for step in range(6):
        expected = kept_layers(draw_stack_plan(3, step, "decoder", [0.5] * 6))
        assert kept_layers(draw_stack_plan(3, step, "decoder", [0.5] * 6, "head+layer", [4] * 6)) == expected


def test_generation_with_a_unit_pruned_model_matches_full_recompute():
    from layerdrop.generate import generate

    model = tiny_model()
    pruned = _pruned(model, attention_layers_to_keep="0,3", ffn_layers_to_keep="1,2,3", heads_to_keep="1,2")
    prompt = [3, 7, 1, 4]
    tokens = generate(pruned, prompt, max_new_tokens=8, temperature=0.0)  # KV cache
    with torch.no_grad():  # greedy by full recompute, no cache
        sequence = list(prompt)
        for _ in range(8):
            logits = pruned(torch.tensor([sequence]))[0]
            sequence.append(int(logits[0, -1].argmax()))
    assert tokens == sequence[len(prompt):]


def test_a_rerun_repeats_old_unit_flags_and_adds_a_new_one():
    model = tiny_model()
    config, state = apply_layers_to_keep(dataclasses.replace(model.cfg, decoder_ffn_halves_to_keep="0"), model.state_dict(),
                                         lambda _: None)
    assert config.decoder_layer_ffn_dims == [32] * 6
    again = dataclasses.replace(config, decoder_ffn_halves_to_keep="0", decoder_attention_layers_to_keep="0,2,4")
    logs = []
    config2, state2 = apply_layers_to_keep(again, state, logs.append)
    assert config2.decoder_layer_ffn_dims == [32] * 6  # not halved a second time
    assert config2.decoder_layer_heads == [4, 0, 4, 0, 4, 0]
    assert any("already pruned with --decoder-ffn-halves-to-keep" in line for line in logs)
    build_model(config2, state2, "transformer_lm", "test", log=lambda _: None)


def test_fresh_training_with_unit_flags_builds_the_smaller_model(tmp_path, corpus_dir):
    from conftest import TINY_TRAIN, run_cli

    proc = run_cli("train", "--data", str(corpus_dir), "--save-dir", str(tmp_path / "run"), "--max-update", "3",
                   "--decoder-heads-to-keep", "0", "--decoder-ffn-halves-to-keep", "1", *TINY_TRAIN)
    stored = load_checkpoint(tmp_path / "run" / "checkpoint_last")
    assert stored.config.decoder_layer_heads == [1] * 4 and stored.config.decoder_layer_ffn_dims == [32] * 4
    assert stored.state_dict["decoder.layers.0.self_attn.qkv_proj.weight"].shape == (3 * 16, 32)
    assert "| Pruning model to specified layer configuration" in proc.stdout


@pytest.mark.parametrize("unit", UNITS)
def test_each_unit_drops_its_share(unit):
    generator = torch.Generator().manual_seed(0)
    kept_heads, kept_halves, layers_run, attention_run, ffn_run, draws = 0, 0, 0, 0, 0, 400
    for _ in range(draws):
        u = torch.rand(1, generator=generator).tolist()
        (plan,) = sample_units(unit, [0.5], [4], generator, u)
        if not plan.runs:
            continue
        layers_run += 1
        attention_run += plan.attention
        ffn_run += plan.ffn
        kept_heads += len(plan.heads) if plan.heads is not None else 4 * plan.attention
        kept_halves += len(plan.ffn_halves) if plan.ffn_halves is not None else 2 * plan.ffn
    # Share of draws in which the layer runs anything at all.
    share_kept = {"layer": 0.5, "sublayer": 0.75, "head": 1.0, "ffn-half": 1.0, "head+layer": 0.5,
                  "head+sublayer": 1 - (1 - 0.5 * (1 - 0.5 ** 4)) * 0.5}
    assert layers_run / draws == pytest.approx(share_kept[unit], abs=0.08)
    if "head" in unit:
        assert kept_heads / max(attention_run, 1) == pytest.approx(2 / (1 - 0.5 ** 4), abs=0.3)  # heads kept, given some
    if unit == "ffn-half":
        assert kept_halves / max(ffn_run, 1) == pytest.approx(1 / 0.75, abs=0.15)  # halves kept, given one
    assert 0 < skipped_share(unit, 0.5, 1 / 3) <= 0.75


@pytest.mark.parametrize("unit", [u for u in UNITS if u != "layer"])
def test_training_with_each_unit(tmp_path, corpus_dir, unit):
    from layerdrop.train import TrainConfig, train

    run = TrainConfig(data=str(corpus_dir), save_dir=str(tmp_path / unit), max_update=6, batch_size=4, warmup_updates=1,
                      no_progress_bar=True, max_valid_steps=1)
    result = train(run, dict(decoder_layers=4, decoder_embed_dim=32, decoder_ffn_embed_dim=64, decoder_attention_heads=4,
                             tokens_per_sample=16, decoder_layerdrop=0.5, layerdrop_unit=unit), log=lambda _: None)
    assert result.update == 6 and result.train_loss == result.train_loss  # finite, not NaN


@pytest.mark.parametrize("unit", UNITS)
def test_printed_share_skipped_matches_the_draws(unit):
    """skipped_share (the number printed at the start of training) against the plans actually drawn."""
    p, self_share, cross_share, heads, draws = 0.4, 0.3, 0.2, 4, 4000
    ffn_share = 1 - self_share - cross_share
    generator = torch.Generator().manual_seed(1)
    total = 0.0
    for _ in range(draws):
        (plan,) = sample_units(unit, [p], [heads], generator, torch.rand(1, generator=generator).tolist())
        if not plan.runs:
            total += 1.0
            continue
        attention_kept = (len(plan.heads) / heads if plan.heads is not None else 1.0) if plan.attention else 0.0
        ffn_kept = (len(plan.ffn_halves) / 2 if plan.ffn_halves is not None else 1.0) if plan.ffn else 0.0
        total += self_share * (1 - attention_kept) + ffn_share * (1 - ffn_kept)
    assert total / draws == pytest.approx(skipped_share(unit, p, self_share, cross_share, heads), abs=0.02)
