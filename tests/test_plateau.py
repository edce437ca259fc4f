import math

import torch

from layerdrop.plateau import EARLIEST_UPDATE, frequency_entropy, plateau_warning
from layerdrop.train import TrainConfig, train



def test_frequency_entropy_is_the_loss_of_predicting_by_frequency():
    assert math.isclose(frequency_entropy(torch.tensor([0, 1, 2, 3])), math.log(4))
    assert math.isclose(frequency_entropy(torch.tensor([[5, 5], [5, 9]])), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert frequency_entropy(torch.tensor([7, 7, 7])) == 0.0


def test_warns_only_after_the_warmup_and_only_on_the_plateau():
    late = max(EARLIEST_UPDATE, 801)
    assert plateau_warning(3.18, 3.1791, late, 800) is not None
    assert plateau_warning(3.40, 3.1791, late, 800) is not None  # above it counts too: no better than frequencies
    assert plateau_warning(3.15, 3.1791, late, 800) is None  # 0.03 nats below: left it
    assert plateau_warning(3.18, 3.1791, 800, 800) is None  # the learning rate is still warming up
    assert plateau_warning(3.18, 3.1791, EARLIEST_UPDATE - 1, 0) is None  # every run passes the plateau early on
    assert plateau_warning(3.18, None, late, 800) is None  # no frequencies to compare with (regression)
    message = plateau_warning(3.18, 3.1791, late, 800, "label")
    assert "each label" in message and "--warmup-updates (now 800)" in message and "3.1791" in message


def test_a_run_that_does_not_learn_is_told_once_and_one_that_does_is_not(corpus_dir, tmp_path, capsys):
    model = dict(decoder_layers=1, decoder_embed_dim=32, decoder_ffn_embed_dim=64, decoder_attention_heads=2,
                 tokens_per_sample=16)
    def run(name, lr):  # two validations past the earliest update that may warn
        config = TrainConfig(data=str(corpus_dir), save_dir=str(tmp_path / name), max_update=EARLIEST_UPDATE + 100,
                             batch_size=4, warmup_updates=2, lr=lr, validate_interval_updates=100, max_valid_steps=4,
                             no_progress_bar=True)
        train(config, model, lambda _: None)
        return capsys.readouterr().out
    stuck = run("stuck", 1e-9)
    assert stuck.count("is no better than predicting each token by its frequency") == 1
    learning = run("learning", 3e-3)
    assert "| valid at update" in learning and "frequency" not in learning
