"""In-place self-distillation (--layerdrop-distill), rate warmup and embedding scaling."""

import json
import math
import re

import pytest
import torch

from layerdrop.distill import distill_backward, distillation_loss, sandwich_turn
from layerdrop.nn.structured import FULL, SKIPPED
from layerdrop.tasks.outputs import TrainOutputs
from layerdrop.nn.drop_plan import kept_layers
from layerdrop.nn.stack import model_drop_plan, model_smallest_plan
from layerdrop.nn.schedules import expected_skipped, layer_rates
from layerdrop.tasks.language_modeling import LanguageModelingTask
from layerdrop.errors import UserError
from layerdrop.train import TrainConfig, describe_layerdrop, skipped_phrase, train

from conftest import TINY_TRAIN, run_cli, tiny_model

MODEL = dict(decoder_layers=4, decoder_embed_dim=32, decoder_ffn_embed_dim=64, decoder_attention_heads=2,
             tokens_per_sample=16, dropout=0.0, decoder_layerdrop=0.5)


def test_distillation_loss_is_the_kl_to_a_detached_teacher():
    teacher = torch.randn(5, 7, requires_grad=True)
    assert distillation_loss(teacher.detach().clone(), teacher).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(5, 7, requires_grad=True)
    loss = distillation_loss(student, teacher)
    p = teacher.softmax(-1)
    expected = (p * (p.log() - student.log_softmax(-1))).sum(-1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert teacher.grad is None and student.grad is not None
    assert distillation_loss(torch.zeros(0, 7), torch.zeros(0, 7)).item() == 0.0  # no scored position


def test_one_distilled_update_trains_every_layer_and_the_sub_network(corpus_dir):
    run = TrainConfig(data=str(corpus_dir), batch_size=4, seed=1)
    task = LanguageModelingTask(run)
    torch.manual_seed(0)
    model = tiny_model(**{k: v for k, v in MODEL.items()}, vocab_size=66).train()
    from layerdrop.data.tokenizers import build_tokenizer
    task.prepare(build_tokenizer("char", task.corpus.split("train")), model.cfg)
    batch = task.train_batch(torch.Generator().manual_seed(0), 0)
    for update in range(20):  # find an update whose draw drops a layer
        plan = model_drop_plan(model, 1, update)
        if len(kept_layers(plan["decoder"])) < 4:
            break
    dropped = sorted(set(range(4)) - set(kept_layers(plan["decoder"])))
    full, kd = distill_backward(lambda plan_: task.train_outputs(model, batch, plan_), plan)
    assert math.isfinite(full.loss.item()) and len(kd) == 1 and kd[0] > 0
    for index in range(4):  # the full-depth pass reaches every layer, dropped ones included
        assert all(p.grad is not None for p in model.decoder.layers[index].parameters())
    # The gradient of a dropped layer is exactly its full-depth label gradient: the sub-network skipped it.
    model.zero_grad(set_to_none=True)
    task.train_outputs(model, batch).loss.backward()
    label_only = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    distill_backward(lambda plan_: task.train_outputs(model, batch, plan_), plan)
    for name, param in model.decoder.layers[dropped[0]].named_parameters():
        assert torch.allclose(param.grad, label_only[f"decoder.layers.{dropped[0]}.{name}"], atol=1e-6)


def test_training_with_distillation_logs_both_losses(corpus_dir, tmp_path, capsys):
    run = TrainConfig(data=str(corpus_dir), save_dir=str(tmp_path / "d"), max_update=6, batch_size=4, warmup_updates=2,
                      validate_interval_updates=3, max_valid_steps=2, no_progress_bar=True, layerdrop_distill=True)
    result = train(run, MODEL)
    assert result.update == 6 and math.isfinite(result.train_loss)
    log = [json.loads(line) for line in (tmp_path / "d" / "train_log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["distill"]) and r["distill"] >= 0 for r in log)
    assert "with in-place distillation" in capsys.readouterr().out


def test_distillation_refuses_what_it_cannot_do(tmp_path):
    proc = run_cli("train", "--save-dir", str(tmp_path / "x"), "--layerdrop-distill", *TINY_TRAIN, check_rc=2)
    assert "--layerdrop-distill: needs --decoder-layerdrop above 0" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("train", "--save-dir", str(tmp_path / "y"), "--layerdrop-sandwich", "--decoder-layerdrop", "0.5",
                   "--layerdrop-sampling", "evenly-spaced", "--layerdrop-depths", "2", *TINY_TRAIN, check_rc=2)
    assert "--layerdrop-sandwich: needs --layerdrop-distill" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("train", "--save-dir", str(tmp_path / "z"), "--layerdrop-sandwich", "--layerdrop-distill",
                   "--decoder-layerdrop", "0.5", *TINY_TRAIN, check_rc=2)
    assert "--layerdrop-sandwich: needs served depths (--layerdrop-depths)" in proc.stderr
    assert "Traceback" not in proc.stderr


SERVED = dict(MODEL, decoder_layers=8, layerdrop_sampling="evenly-spaced", layerdrop_depths="4,2")


def test_the_smallest_served_plan_keeps_what_pruning_keeps():
    model = tiny_model(**SERVED, vocab_size=66)
    assert kept_layers(model_smallest_plan(model, 0)["decoder"]) == [0, 4]  # every other, twice: 2 of 8
    assert model_smallest_plan(tiny_model(**MODEL, vocab_size=66), 0) is None  # no served depths
    pruned = tiny_model(**{**SERVED, "decoder_layers": 2, "decoder_kept_layers": [0, 4]}, vocab_size=66)
    assert model_smallest_plan(pruned, 0) is None  # nothing below its own 2 layers
    for rounding in ("down", "down-after-warmup"):  # no sandwich pass while the rate warms up, whatever the rounding
        late = tiny_model(**SERVED, layerdrop_depths_round=rounding, layerdrop_warmup_updates=10, vocab_size=66)
        assert model_smallest_plan(late, 9) is None and kept_layers(model_smallest_plan(late, 10)["decoder"]) == [0, 4]


def test_the_sandwich_rule_adds_one_pass_unless_the_draw_ran_the_smallest_depth():
    model = tiny_model(**SERVED, vocab_size=66).train()
    tokens = torch.randint(0, 66, (2, 16))
    passes = []

    def forward(plan):
        passes.append(None if plan is None else kept_layers(plan["decoder"]))
        logits = model(tokens, plan=plan)[0]
        return TrainOutputs(loss=logits.logsumexp(-1).mean(), tokens=tokens.numel(), logits=logits.flatten(0, 1),
                            count=tokens.numel())

    smallest = model_smallest_plan(model, 0)
    four = {"decoder": tuple(FULL if i in (0, 2, 4, 6) else SKIPPED for i in range(8))}
    _, losses = distill_backward(forward, four, smallest=smallest)
    assert passes == [None, [0, 2, 4, 6], [0, 4]] and len(losses) == 2 and all(kd > 0 for kd in losses)
    passes.clear()
    _, losses = distill_backward(forward, smallest, smallest=smallest)
    assert passes == [None, [0, 4]] and len(losses) == 1  # the draw already trained the smallest depth


def test_the_sandwich_pass_adds_its_weighted_distillation_gradient():
    model = tiny_model(**SERVED, vocab_size=66).train()
    tokens = torch.randint(0, 66, (2, 16))

    def forward(plan):
        logits = model(tokens, plan=plan)[0]
        return TrainOutputs(loss=logits.logsumexp(-1).mean(), tokens=tokens.numel(), logits=logits.flatten(0, 1),
                            count=tokens.numel())

    def grads():
        found = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        return found

    smallest = model_smallest_plan(model, 0)
    four = {"decoder": tuple(FULL if i in (0, 2, 4, 6) else SKIPPED for i in range(8))}
    half = lambda outputs: 0.5  # a data-parallel rank's share of the batch
    distill_backward(forward, four, half, smallest=smallest)
    with_sandwich = grads()
    distill_backward(forward, four, half)
    without = grads()
    teacher = forward(None).logits.detach()
    (0.5 * distillation_loss(forward(smallest).logits, teacher)).backward()
    alone = grads()
    for name in ("decoder.layers.0.fc1.weight", "decoder.layers.4.fc1.weight"):  # in the 2-layer network
        assert torch.allclose(with_sandwich[name] - without[name], alone[name], atol=1e-6)
        assert alone[name].abs().sum() > 0
    assert "decoder.layers.2.fc1.weight" not in alone  # not in it: the sandwich pass leaves it alone
    assert torch.allclose(with_sandwich["decoder.layers.2.fc1.weight"], without["decoder.layers.2.fc1.weight"], atol=1e-6)


def test_training_with_the_sandwich_rule_logs_the_smallest_pass(corpus_dir, tmp_path, capsys):
    run = TrainConfig(data=str(corpus_dir), save_dir=str(tmp_path / "s"), max_update=8, batch_size=4, warmup_updates=2,
                      validate_interval_updates=4, max_valid_steps=2, no_progress_bar=True, layerdrop_distill=True,
                      layerdrop_sandwich=True)
    train(run, SERVED)
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    # Every update trains 2 layers, in the draw (logged layers 2, the same loss twice) or in the extra pass.
    assert all(r["distill_smallest"] >= 0 for r in log)
    assert all((r["layers"] == 2) == (r["distill_smallest"] == r["distill"]) for r in log)
    assert any(r["layers"] != 2 for r in log)
    out = capsys.readouterr().out
    assert "smallest served depth (2) every update (sandwich rule)" in out
    # The skipped share is said of the sub-network pass; the update as a whole runs more than a baseline one.
    found = re.search(r"skipped in the sub-network pass over the run: (\d+\.\d)%, so an update runs about (\d\.\d\d) "
                      r"times a baseline update's decoder layers, not counting the sandwich pass", out)
    assert found and 1 < float(found[2]) <= 2
    assert float(found[2]) == pytest.approx(2 - float(found[1]) / 100, abs=0.006)


def test_a_sandwich_share_spreads_the_pass_evenly_over_updates():
    assert all(sandwich_turn(u, 1.0) for u in range(50))
    assert [u for u in range(8) if sandwich_turn(u, 0.5)] == [1, 3, 5, 7]
    assert [u for u in range(12) if sandwich_turn(u, 0.25)] == [3, 7, 11]
    for share in (0.1, 0.3, 0.5, 0.7):  # the share exactly, at any length of run
        assert sum(sandwich_turn(u, share) for u in range(10_000)) == round(10_000 * share)


def test_training_with_a_sandwich_share_runs_the_pass_on_that_share(corpus_dir, tmp_path, capsys):
    run = TrainConfig(data=str(corpus_dir), save_dir=str(tmp_path / "s"), max_update=8, batch_size=4, warmup_updates=2,
                      validate_interval_updates=4, max_valid_steps=2, no_progress_bar=True, layerdrop_distill=True,
                      layerdrop_sandwich=True, layerdrop_sandwich_share=0.5)
    train(run, SERVED)
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in log if "distill_smallest" in r] == [2, 4, 6, 8]  # 1-based in the log
    assert "smallest served depth (2) on 50% of updates (sandwich rule)" in capsys.readouterr().out


def test_the_summary_line_says_the_sandwich_share_unrounded():
    model = tiny_model(**SERVED, vocab_size=66)
    line = lambda share: describe_layerdrop(model, 100, distill=True, sandwich=True, sandwich_share=share)[0]
    assert "smallest served depth (2) every update (sandwich rule)" in line(1.0)
    assert "smallest served depth (2) on 75% of updates (sandwich rule)" in line(0.75)
    assert "on 99.9% of updates" in line(0.999) and "on 0.4% of updates" in line(0.004)


def test_a_sandwich_share_is_checked(corpus_dir, tmp_path):
    for share in (0.0, 1.5, -0.5):
        with pytest.raises(UserError, match=r"--layerdrop-sandwich-share: got .*; valid: a number in \(0, 1\]"):
            TrainConfig(layerdrop_sandwich_share=share).validate()
    run = TrainConfig(data=str(corpus_dir), save_dir=str(tmp_path / "n"), max_update=2, batch_size=4,
                      no_progress_bar=True, layerdrop_distill=True, layerdrop_sandwich_share=0.5)
    with pytest.raises(UserError, match="--layerdrop-sandwich-share: got 0.5 without --layerdrop-sandwich"):
        train(run, SERVED)


def test_the_skipped_share_is_said_of_the_pass_it_applies_to():
    assert skipped_phrase("decoder", 0.5, distill=False, sandwich=False) == (
        "; expected share of decoder layer compute skipped over the run: 50.0%")
    assert skipped_phrase("decoder", 0.398, distill=True, sandwich=False) == (
        "; expected share of decoder layer compute skipped in the sub-network pass over the run: 39.8%, so an update "
        "runs about 1.60 times a baseline update's decoder layers")
    assert skipped_phrase("encoder", 0.25, distill=True, sandwich=True).endswith(
        "about 1.75 times a baseline update's encoder layers, not counting the sandwich pass")


def test_the_sandwich_rule_refuses_a_stack_with_nothing_smaller_to_serve(corpus_dir, tmp_path):
    run = TrainConfig(data=str(corpus_dir), save_dir=str(tmp_path / "n"), max_update=2, batch_size=4,
                      no_progress_bar=True, layerdrop_distill=True, layerdrop_sandwich=True)
    with pytest.raises(UserError, match="no stack with LayerDrop serves a depth below its own layer count"):
        train(run, {**SERVED, "decoder_layers": 2, "decoder_kept_layers": [0, 4]})  # pruned to 2 of 8: keeps 4,2


def test_rate_warmup_rises_linearly_then_holds():
    assert layer_rates("uniform", 0.4, 3, update=0, warmup=100) == [0.0] * 3
    assert layer_rates("uniform", 0.4, 3, update=50, warmup=100) == pytest.approx([0.2] * 3)
    assert layer_rates("uniform", 0.4, 3, update=100, warmup=100) == pytest.approx([0.4] * 3)
    assert layer_rates("linear", 0.4, 2, update=50, warmup=100) == pytest.approx([0.1, 0.2])
    # Half the run at half the rate on average, half at the full rate: 3/4 of p skipped overall.
    assert expected_skipped("uniform", 0.4, 3, max_update=200, gamma=0.0, warmup=100) == pytest.approx(0.3, abs=0.002)


def test_the_trainer_warms_the_rate_up(corpus_dir, tmp_path):
    flags = dict(data=str(corpus_dir), max_update=12, batch_size=4, warmup_updates=2, no_progress_bar=True,
                 max_valid_steps=2)
    train(TrainConfig(save_dir=str(tmp_path / "w"), **flags), {**MODEL, "decoder_layerdrop": 0.9, "layerdrop_warmup_updates": 10**6})
    layers = [json.loads(line)["layers"] for line in (tmp_path / "w" / "train_log.jsonl").read_text().splitlines()]
    assert layers == [4] * 12  # rates of at most 0.9 * 12 / 10**6: every layer runs


