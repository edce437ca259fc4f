import pytest
import torch
from torch import nn

from layerdrop.nn.layerdrop import LayerDropModuleList, set_layerdrop_step

from conftest import tiny_model


def make_list(n=12, p=0.3, name="decoder", seed=0):
    return LayerDropModuleList([nn.Linear(4, 4) for _ in range(n)], p=p, name=name, seed=seed)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_skip_rate_matches_p(p):
    layers = make_list(n=10, p=p)
    layers.train()
    skipped = 0
    draws = 2000
    for step in range(draws):
        layers.set_step(step)
        skipped += len(layers) - len(list(layers))
    rate = skipped / (draws * len(layers))
    assert abs(rate - p) < 0.02, rate


def test_same_seed_and_update_give_same_decisions():
    a, b = make_list(seed=7), make_list(seed=7)
    a.train(), b.train()
    for step in [0, 1, 5, 123]:
        a.set_step(step)
        b.set_step(step)
        assert a.sample_kept() == b.sample_kept()


def test_decisions_depend_on_update_seed_and_list_name():
    def decisions(seed=0, name="decoder", steps=range(20)):
        layers = make_list(seed=seed, name=name, p=0.5)
        out = []
        for step in steps:
            layers.set_step(step)
            out.append(tuple(layers.sample_kept()))
        return out

    assert decisions() == decisions()
    assert decisions() != decisions(seed=1)
    assert decisions() != decisions(name="encoder")
    assert len(set(decisions())) > 10  # different updates, different subsets


def test_each_forward_pass_draws_anew_within_an_update():
    layers = make_list(p=0.5)
    layers.train()
    layers.set_step(3)
    first, second = layers.sample_kept(), layers.sample_kept()
    layers.set_step(3)
    assert layers.sample_kept() == first and layers.sample_kept() == second
    assert first != second or len(first) in (0, len(layers))


def test_global_rng_is_not_touched():
    layers = make_list(p=0.5)
    layers.train()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    for step in range(10):
        layers.set_step(step)
        list(layers)
    assert torch.equal(state, torch.get_rng_state())


def test_eval_runs_every_layer():
    layers = make_list(p=0.9)
    layers.eval()
    for step in range(10):
        layers.set_step(step)
        assert len(list(layers)) == len(layers)


def test_p_outside_unit_interval_refused():
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            make_list(p=p)


def test_skipped_layer_runs_nothing_and_gets_no_gradient():
    model = tiny_model(decoder_layerdrop=0.5)
    model.train()
    calls = []
    for i in range(len(model.layers)):  # index, don't iterate: iteration in training drops layers
        model.layers[i].register_forward_hook(lambda m, inp, out, i=i: calls.append(i))
    for step in range(50):  # find an update where some but not all layers are skipped
        set_layerdrop_step(model, step, seed=0)
        kept_preview = model.layers.sample_kept()
        if 0 < len(kept_preview) < len(model.layers):
            break
    set_layerdrop_step(model, step, seed=0)
    tokens = torch.randint(0, 50, (2, 8))
    _, loss = model(tokens, tokens)
    loss.backward()
    assert calls == kept_preview
    for i in range(len(model.layers)):
        grads = [p.grad for p in model.layers[i].parameters()]
        if i in kept_preview:
            assert all(g is not None for g in grads)
        else:
            assert all(g is None for g in grads)


def test_adamw_neither_moves_nor_decays_a_skipped_layer():
    model = tiny_model(decoder_layerdrop=0.5)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.5)
    for step in range(50):
        set_layerdrop_step(model, step, seed=0)
        kept = model.layers.sample_kept()
        if len(kept) < len(model.layers):
            break
    skipped = next(i for i in range(len(model.layers)) if i not in kept)
    before = [p.detach().clone() for p in model.layers[skipped].parameters()]
    set_layerdrop_step(model, step, seed=0)
    tokens = torch.randint(0, 50, (2, 8))
    _, loss = model(tokens, tokens)
    loss.backward()
    optimizer.step()
    for old, new in zip(before, model.layers[skipped].parameters()):
        assert torch.equal(old, new)
