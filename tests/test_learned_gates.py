import json

import pytest
import torch

from conftest import run_cli, tiny_model
from layerdrop.nn.learned_gates import MAX_RATE, constrained_rates
from layerdrop.nn.drop_plan import kept_layers
from layerdrop.nn.stack import model_drop_plan


@pytest.mark.parametrize("seed", range(5))
def test_rates_average_to_the_target(seed):
    scores = torch.randn(8, generator=torch.Generator().manual_seed(seed)) * 2
    rates = constrained_rates(scores, 0.3)
    assert rates.mean().item() == pytest.approx(0.3, abs=1e-6)
    order = torch.argsort(scores)
    assert torch.all(rates[order][1:] <= rates[order][:-1] + 1e-7)  # a higher score, a lower drop rate


def test_the_cap_binds_and_the_average_holds():
    rates = constrained_rates(torch.tensor([-10.0, 0.0, 0.0, 0.0]), 0.5)
    assert rates[0].item() == pytest.approx(MAX_RATE)
    assert rates.max().item() <= MAX_RATE + 1e-6
    assert rates.mean().item() == pytest.approx(0.5, abs=1e-6)


def test_gates_get_gradients_and_leave_eval_alone():
    model = tiny_model(decoder_learned_gates=True, decoder_layerdrop=0.5)
    tokens = torch.randint(0, 50, (2, 10))
    model.eval()
    with torch.no_grad():
        before = model(tokens)[0]
    model.train()
    plan = model_drop_plan(model, 1, 3)
    _, loss = model(tokens, tokens, plan=plan)
    loss.backward()
    assert model.decoder.learned_rates().mean().item() == pytest.approx(0.5, abs=1e-6)
    assert kept_layers(plan["decoder"]) and all(model.decoder.layers[i].gate.bias.grad is not None for i in range(6))
    model.eval()
    with torch.no_grad():  # the running activation means changed, the eval output did not (gates only set rates)
        torch.testing.assert_close(model(tokens)[0], before)


def test_train_with_learned_gates_then_select_the_top_layers(tmp_path, corpus_dir):
    from conftest import TINY_TRAIN

    save = tmp_path / "gated"
    proc = run_cli("train", "--data", str(corpus_dir), "--save-dir", str(save), "--max-update", "30",
                   "--decoder-layerdrop", "0.5", "--decoder-learned-gates", "--lr", "3e-3", *TINY_TRAIN)
    assert "learned" in proc.stdout
    out = tmp_path / "learned.json"
    run_cli("select", "--path", str(save / "checkpoint_last"), "--depth", "2", "--strategy", "learned", "--out", str(out))
    result = json.loads(out.read_text())
    scores = result["details"]["gate_scores"]
    assert len(scores) == 4 and len(set(scores)) == 4  # trained away from the all-equal start
    assert result["keep"] == sorted(sorted(range(4), key=lambda l: -scores[l])[:2])


def test_learned_gates_only_for_whole_layers(tmp_path, corpus_dir):
    from conftest import TINY_TRAIN

    proc = run_cli("train", "--data", str(corpus_dir), "--save-dir", str(tmp_path / "x"), "--decoder-layerdrop", "0.5",
                   "--decoder-learned-gates", "--layerdrop-unit", "head", *TINY_TRAIN, check_rc=2)
    assert "--decoder-learned-gates" in proc.stderr and "Traceback" not in proc.stderr


def test_learned_gates_need_a_rate_to_learn(tmp_path, corpus_dir):
    from conftest import TINY_TRAIN

    proc = run_cli("train", "--data", str(corpus_dir), "--save-dir", str(tmp_path / "x"), "--decoder-learned-gates",
                   *TINY_TRAIN, check_rc=2)
    assert "--decoder-learned-gates: needs --decoder-layerdrop in (0, 0.95)" in proc.stderr


def test_gates_leave_no_graph_behind():
    import copy

    model = tiny_model(decoder_learned_gates=True, decoder_layerdrop=0.5).train()
    tokens = torch.randint(0, 50, (2, 10))
    model(tokens, tokens, plan=model_drop_plan(model, 1, 0))[1].backward()
    copy.deepcopy(model)  # a module holding the gates' graph would make this fail
