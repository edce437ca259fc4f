"""Drop plans as values: a pure function of (seed, update, stack, rates, unit), passed to the stack's forward."""

import json
from pathlib import Path

import pytest
import torch

from layerdrop.nn.drop_plan import LayerDropConfig, draw_stack_plan, full_plan, kept_layers
from layerdrop.nn.stack import layers_run, model_drop_plan

from conftest import tiny_model

DATA = Path(__file__).parent / "data"


def kept(seed=0, update=0, stack="decoder", p=0.3, n=12):
    return kept_layers(draw_stack_plan(seed, update, stack, [p] * n))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_skip_rate_matches_p(p):
    draws, n = 2000, 10
    skipped = sum(n - len(kept(update=u, p=p, n=n)) for u in range(draws))
    assert abs(skipped / (draws * n) - p) < 0.02


def test_same_arguments_give_the_same_plan():
    for update in [0, 1, 5, 123]:
        assert draw_stack_plan(7, update, "decoder", [0.3] * 12) == draw_stack_plan(7, update, "decoder", [0.3] * 12)


def test_plans_depend_on_update_seed_and_stack_name():
    def decisions(seed=0, stack="decoder"):
        return [tuple(kept(seed, u, stack, p=0.5)) for u in range(20)]

    assert decisions() != decisions(seed=1)
    assert decisions() != decisions(stack="encoder")
    assert len(set(decisions())) > 10  # different updates, different subsets


def test_plans_are_the_ones_drawn_before_plans_became_values():
    """Runs started before the rebuild resume with the same draws: recorded from the old LayerDrop list."""
    recorded = json.loads((DATA / "drop_plans_before_values.json").read_text())
    heads = [4] * 6
    for unit, rows in recorded.items():
        for update, row in enumerate(rows):
            plan = draw_stack_plan(7, update, "decoder", [0.4] * 6, unit, heads)
            assert kept_layers(plan) == row["kept"], (unit, update)
            for layer, old in zip(plan, row["plans"] or []):
                if old is None:
                    assert not layer.runs
                    continue
                assert [layer.attention, layer.ffn] == old[:2], (unit, update)
                if layer.attention and old[2] is not None:
                    assert list(layer.heads) == old[2]
                if layer.ffn and old[3] is not None:
                    assert list(layer.ffn_halves) == old[3]


def test_global_rng_is_not_touched():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    for update in range(10):
        draw_stack_plan(0, update, "decoder", [0.5] * 6, "head+sublayer", [4] * 6)
    assert torch.equal(state, torch.get_rng_state())


def test_zero_rates_draw_nothing_and_run_everything():
    assert draw_stack_plan(0, 3, "decoder", [0.0] * 4) == full_plan(4)


def test_iterating_a_model_changes_nothing():
    model = tiny_model(decoder_layerdrop=0.9).train()
    assert len(list(model.decoder.layers)) == len(model.decoder.layers)
    assert len(list(model.decoder.layers)) == len(model.decoder.layers)


def test_no_plan_runs_every_layer_even_in_training():
    model = tiny_model(decoder_layerdrop=0.9).train()
    calls = []
    for i, layer in enumerate(model.decoder.layers):
        layer.register_forward_hook(lambda m, inp, out, i=i: calls.append(i))
    tokens = torch.randint(0, 50, (2, 8))
    model(tokens, tokens)
    assert calls == list(range(len(model.decoder.layers)))


def test_p_outside_unit_interval_refused():
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            LayerDropConfig(p=p)


def test_the_model_config_records_every_layerdrop_setting():
    model = tiny_model(decoder_layerdrop=0.4, layerdrop_unit="sublayer", layerdrop_schedule="linear",
                       layerdrop_warmup_updates=7)
    assert model.decoder.layerdrop == LayerDropConfig(p=0.4, unit="sublayer", schedule="linear", warmup=7)
    # The model reports the share it expects to skip: linear schedule, mean rate p (L + 1) / 2L, warmup of 7 of 100.
    assert 0.0 < model.decoder.expected_skipped(100) < 0.4


def _update_with_some_skipped(model):
    for update in range(50):
        plan = model_drop_plan(model, 0, update)
        if 0 < layers_run(plan, model) < len(model.decoder.layers):
            return plan
    raise AssertionError("no update with some layers skipped")


def test_skipped_layer_runs_nothing_and_gets_no_gradient():
    model = tiny_model(decoder_layerdrop=0.5).train()
    calls = []
    for i, layer in enumerate(model.decoder.layers):
        layer.register_forward_hook(lambda m, inp, out, i=i: calls.append(i))
    plan = _update_with_some_skipped(model)
    tokens = torch.randint(0, 50, (2, 8))
    _, loss = model(tokens, tokens, plan=plan)
    loss.backward()
    ran = kept_layers(plan["decoder"])
    assert calls == ran
    for i, layer in enumerate(model.decoder.layers):
        grads = [p.grad for p in layer.parameters()]
        assert all(g is not None for g in grads) if i in ran else all(g is None for g in grads)


def test_adamw_neither_moves_nor_decays_a_skipped_layer():
    model = tiny_model(decoder_layerdrop=0.5).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.5)
    plan = _update_with_some_skipped(model)
    skipped = next(i for i, layer in enumerate(plan["decoder"]) if not layer.runs)
    before = [p.detach().clone() for p in model.decoder.layers[skipped].parameters()]
    tokens = torch.randint(0, 50, (2, 8))
    _, loss = model(tokens, tokens, plan=plan)
    loss.backward()
    optimizer.step()
    for old, new in zip(before, model.decoder.layers[skipped].parameters()):
        assert torch.equal(old, new)


def test_a_plan_of_the_wrong_length_is_refused():
    model = tiny_model(decoder_layerdrop=0.5).train()
    tokens = torch.randint(0, 50, (2, 8))
    with pytest.raises(ValueError, match="plan for 2 layers"):
        model(tokens, tokens, plan={"decoder": full_plan(2)})
