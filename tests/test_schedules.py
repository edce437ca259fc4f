import json
import math

import pytest

from layerdrop.nn.schedules import SCHEDULES, expected_skipped, layer_rates
from layerdrop.train import TrainConfig, train
from conftest import TINY_TRAIN


def test_uniform_is_the_paper():
    assert layer_rates("uniform", 0.3, 5) == [0.3] * 5


def test_linear_in_depth_like_stochastic_depth():
    rates = layer_rates("linear", 0.5, 4)
    assert rates == pytest.approx([0.125, 0.25, 0.375, 0.5])
    assert sum(rates) / 4 == pytest.approx(0.5 * 5 / 8)  # p (L + 1) / 2L


def test_exponential_in_depth_like_layerskip():
    rates = layer_rates("exponential", 0.4, 6)
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.4)
    steps = [b - a for a, b in zip(rates, rates[1:])]
    assert all(s > 0 for s in steps) and all(b > a for a, b in zip(steps, steps[1:]))  # increasing, convex
    assert sum(rates) / 6 < 0.2  # below the linear schedule's mean


def test_progressive_in_time_follows_pld_theta():
    p, gamma, layers = 0.5, 0.01, 4
    assert layer_rates("progressive", p, layers, update=0, gamma=gamma) == [0.0] * 4
    for t in (10, 100, 1000):
        theta = (1 - (1 - p)) * math.exp(-gamma * t) + (1 - p)  # keep probability, theta_bar = 1 - p
        rates = layer_rates("progressive", p, layers, update=t, gamma=gamma)
        assert rates[-1] == pytest.approx(1 - theta)
        assert rates == pytest.approx([(l + 1) / layers * (1 - theta) for l in range(layers)])
    assert layer_rates("progressive", p, layers, update=10**6, gamma=gamma) == pytest.approx(layer_rates("linear", p, layers))


def test_skipped_share_of_each_unit():
    from layerdrop.nn.structured import skipped_share

    p, self_share, cross_share, heads = 0.3, 0.3, 0.2, 4
    ffn_share = 1 - self_share - cross_share
    assert skipped_share("layer", p, self_share, cross_share, heads) == pytest.approx(p)
    # sublayer: each branch p, cross-attention only when both are off
    assert skipped_share("sublayer", p, self_share, cross_share, heads) == pytest.approx(
        self_share * p + ffn_share * p + cross_share * p * p)
    assert skipped_share("head", p, self_share, cross_share, heads) == pytest.approx(self_share * p)
    assert skipped_share("ffn-half", p, self_share, cross_share, heads) == pytest.approx(ffn_share * p)
    assert skipped_share("head+layer", p, self_share, cross_share, heads) == pytest.approx(p + (1 - p) * self_share * p)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_expected_share_skipped_is_the_average_rate_over_the_run(schedule):
    p, layers, updates, gamma = 0.4, 6, 300, 0.02
    direct = sum(sum(layer_rates(schedule, p, layers, t, gamma)) for t in range(updates)) / (updates * layers)
    assert expected_skipped(schedule, p, layers, updates, gamma) == pytest.approx(direct)


def _layers_run(save_dir):
    return [json.loads(line)["layers"] for line in (save_dir / "train_log.jsonl").read_text().splitlines()]


def test_the_trainer_applies_the_schedule(tmp_path, corpus_dir, capsys):
    flags = dict(data=str(corpus_dir), max_update=12, batch_size=4, warmup_updates=2, no_progress_bar=True, max_valid_steps=2)
    model = dict(decoder_layers=4, decoder_embed_dim=32, decoder_ffn_embed_dim=64, decoder_attention_heads=2,
                 tokens_per_sample=16, decoder_layerdrop=0.9)
    train(TrainConfig(save_dir=str(tmp_path / "uniform"), **flags), model)
    # gamma so small the progressive rates stay near 0: every layer runs on every update.
    train(TrainConfig(save_dir=str(tmp_path / "slow"), **flags),
          {**model, "layerdrop_schedule": "progressive", "layerdrop_gamma": 1e-9})
    assert min(_layers_run(tmp_path / "uniform")) < 4
    assert _layers_run(tmp_path / "slow") == [4] * 12
    out = capsys.readouterr().out
    assert "progressive schedule" in out and "expected share of decoder layer compute skipped over the run: 0.0%" in out


def test_bad_schedule_flags(tmp_path):
    from conftest import run_cli

    proc = run_cli("train", "--save-dir", str(tmp_path / "x"), "--layerdrop-schedule", "cubic", *TINY_TRAIN, check_rc=2)
    assert "--layerdrop-schedule: got 'cubic'; valid: uniform, linear, exponential, progressive" in proc.stderr
    proc = run_cli("train", "--save-dir", str(tmp_path / "x"), "--layerdrop-gamma", "0", *TINY_TRAIN, check_rc=2)
    assert "--layerdrop-gamma: got 0.0" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("train", "--save-dir", str(tmp_path / "x"), "--layerdrop-gamma", "0.1", *TINY_TRAIN, check_rc=2)
    assert "only the progressive schedule uses it" in proc.stderr
