import dataclasses

import pytest
import torch

from layerdrop.checkpoint import build_model
from layerdrop.errors import UserError
from layerdrop.models import LM_MODEL_TYPE, num_params
from layerdrop.pruning import apply_layers_to_keep, every_other, parse_layers_to_keep, prune_state_dict

from conftest import tiny_model


@pytest.mark.parametrize(
    "value, message",
    [
        ("0,6", "out of range"),
        ("0,2,2", "repeated"),
        ("-1,2", "negative"),
        ("0,x", "not an integer"),
        ("1.5", "not an integer"),
        ("", "empty"),
        ([], "empty"),
    ],
)
def test_bad_keep_lists_name_the_flag_value_and_valid_range(value, message):
    with pytest.raises(UserError) as error:
        parse_layers_to_keep(value, 6, "--decoder-layers-to-keep")
    text = str(error.value)
    assert "--decoder-layers-to-keep" in text and message in text and "0 to 5" in text


def test_keep_list_is_sorted_and_accepts_ints():
    assert parse_layers_to_keep("4, 0,2", 6) == [0, 2, 4]
    assert parse_layers_to_keep([5, 1], 6) == [1, 5]


def test_every_other():
    assert every_other(12, 6) == [0, 2, 4, 6, 8, 10]
    assert every_other(12, 3) == [0, 4, 8]
    assert every_other(8, 8) == list(range(8))


def test_prune_state_dict_is_pure_renumbers_and_passes_other_keys():
    model = tiny_model()
    config, state = model.cfg, model.state_dict()
    snapshot = {k: v.clone() for k, v in state.items()}
    new_config, new_state = prune_state_dict(config, state, {"decoder": [4, 1]})
    assert state.keys() == snapshot.keys() and all(torch.equal(state[k], snapshot[k]) for k in state)
    assert config.decoder_layers == 6  # input config untouched
    assert new_config.decoder_layers == 2 and new_config.decoder_layers_to_keep is None
    assert new_config.decoder_kept_layers == [1, 4]
    assert torch.equal(new_state["decoder.layers.0.fc1.weight"], state["decoder.layers.1.fc1.weight"])
    assert torch.equal(new_state["decoder.layers.1.fc1.weight"], state["decoder.layers.4.fc1.weight"])
    assert not any(k.startswith("decoder.layers.2.") for k in new_state)
    for key in ("decoder.embed_tokens.weight", "decoder.embed_positions.weight", "decoder.layer_norm.weight"):
        assert new_state[key] is state[key]


@pytest.mark.parametrize("keep", [[0, 2, 4], [1, 5], [3], [0, 1, 2, 3, 4, 5]])
def test_pruned_model_equals_full_model_run_through_kept_layers(keep):
    full = tiny_model(seed=3).eval()
    config = dataclasses.replace(full.cfg, decoder_layers_to_keep=",".join(map(str, keep)))
    pruned = build_model(config, full.state_dict(), LM_MODEL_TYPE, "test", log=lambda _: None).eval()
    tokens = torch.randint(0, 50, (3, 16))
    # The reference: the full model's own modules, skipping the removed layers by hand.
    stack = full.decoder
    x = stack.embed_tokens(tokens) + stack.embed_positions(torch.arange(16))
    for i in keep:
        x = stack.layers[i](x)
    expected = full.output_logits(stack.layer_norm(x))
    got, _ = pruned(tokens)
    assert torch.allclose(got, expected, atol=1e-6)


def test_parameter_count_drops_by_exactly_the_removed_layers():
    full = tiny_model()
    per_layer = [sum(p.numel() for p in full.layers[i].parameters()) for i in range(6)]
    config = dataclasses.replace(full.cfg, decoder_layers_to_keep="0,3")
    pruned = build_model(config, full.state_dict(), LM_MODEL_TYPE, "test", log=lambda _: None)
    assert num_params(full) - num_params(pruned) == sum(per_layer[i] for i in (1, 2, 4, 5))


def test_pruned_config_is_not_pruned_again():
    full = tiny_model()
    config = dataclasses.replace(full.cfg, decoder_layers_to_keep="0,2,4")
    messages = []
    once, state = apply_layers_to_keep(config, full.state_dict(), messages.append)
    assert messages == ["| Pruning model to specified layer configuration"]
    # Loading the pruned checkpoint with the same keep flag again (a resumed pruned run) is a no-op.
    again, state_again = apply_layers_to_keep(dataclasses.replace(once, decoder_layers_to_keep="0,2,4"), state, messages.append)
    assert again.decoder_layers == 3 and again.decoder_kept_layers == [0, 2, 4]
    assert state_again.keys() == state.keys()
    assert "not pruning again" in messages[-1]
    # A different list indexes the pruned model's own layers and composes with the first pruning.
    twice, _ = apply_layers_to_keep(dataclasses.replace(once, decoder_layers_to_keep="0,2"), state, messages.append)
    assert twice.decoder_layers == 2 and twice.decoder_kept_layers == [0, 4]


def test_bad_keep_list_prints_nothing_before_the_error():
    full = tiny_model()
    messages = []
    with pytest.raises(UserError):
        apply_layers_to_keep(dataclasses.replace(full.cfg, decoder_layers_to_keep="0,9"), full.state_dict(), messages.append)
    assert messages == []
