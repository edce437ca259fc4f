"""--layerdrop-sampling evenly-spaced: the paper's number of layers per update, placed as every-other pruning places them."""

import json

import pytest

from layerdrop.checkpoint import load_checkpoint
from layerdrop.nn.drop_plan import LayerDropConfig, draw_stack_plan, evenly_spaced, kept_layers, served_depth
from layerdrop.nn.stack import model_drop_plan
from layerdrop.pruning import every_other
from layerdrop.train import TrainConfig, train

from conftest import TINY_TRAIN, run_cli, tiny_model


def plans(sampling, p=0.5, layers=6, updates=3000, seed=3):
    return [kept_layers(draw_stack_plan(seed, u, "decoder", [p] * layers, sampling=sampling)) for u in range(updates)]


def test_same_number_of_layers_as_the_paper_placed_as_pruning_places_them():
    for per_layer, spaced in zip(plans("per-layer"), plans("evenly-spaced")):
        assert len(spaced) == len(per_layer)  # the same draws decide how many run
        assert spaced == (every_other(6, len(spaced)) if spaced else [])


def test_the_served_sub_network_is_trained_far_more_often():
    """At p = 0.5 on 6 layers the paper's draws run exactly 0,2,4 about one update in 64; evenly spaced, 5 in 16."""
    served = [0, 2, 4]
    per_layer = sum(kept == served for kept in plans("per-layer")) / 3000
    spaced = sum(kept == served for kept in plans("evenly-spaced")) / 3000
    assert per_layer == pytest.approx(1 / 64, abs=0.01)
    assert spaced == pytest.approx(5 / 16, abs=0.03)


def test_evenly_spaced_indices():
    assert evenly_spaced(6, 3) == [0, 2, 4] and evenly_spaced(6, 2) == [0, 3] and evenly_spaced(8, 4) == [0, 2, 4, 6]
    assert evenly_spaced(6, 6) == list(range(6)) and evenly_spaced(6, 0) == []


def test_shifted_indices_stay_evenly_spaced_inside_the_stack():
    assert evenly_spaced(6, 3, 0.5) == [1, 3, 5] and evenly_spaced(6, 3, 0.49) == [0, 2, 4]
    assert evenly_spaced(6, 4, 0.9) == [1, 2, 4, 5] and evenly_spaced(6, 1, 0.99) == [5]
    assert evenly_spaced(6, 6, 0.99) == list(range(6))


def test_shifted_sampling_trains_every_layer_equally_often():
    """The ablation: the same depth per update and evenly spaced layers, but from a random offset, so no layer is
    favoured (evenly-spaced from layer 0 runs layer 0 on 63 updates in 64 and layer 5 on 1 in 64)."""
    shifted, spaced, per_layer = plans("evenly-spaced-shifted"), plans("evenly-spaced"), plans("per-layer")
    for kept, reference in zip(shifted, per_layer):
        assert len(kept) == len(reference)
        step = 6 / len(kept) if kept else 0
        assert all(abs(b - a - step) < 1 for a, b in zip(kept, kept[1:]))  # evenly spaced, up to rounding

    def frequency(draws, layer):
        return sum(layer in kept for kept in draws) / len(draws)

    assert all(frequency(shifted, layer) == pytest.approx(0.5, abs=0.04) for layer in range(6))
    assert frequency(spaced, 0) > 0.95 and frequency(spaced, 5) < 0.05
    # 0,2,4 and 1,3,5 both run (about 5/32 of updates each); the unshifted rule never runs 1,3,5.
    assert sum(kept == [1, 3, 5] for kept in shifted) / 3000 == pytest.approx(5 / 32, abs=0.03)
    assert not any(kept == [1, 3, 5] for kept in spaced)
    model = tiny_model(decoder_layers=6, decoder_layerdrop=0.5, layerdrop_sampling="evenly-spaced-shifted")
    assert model.decoder.layerdrop == LayerDropConfig(p=0.5, sampling="evenly-spaced-shifted")
    with pytest.raises(ValueError, match="evenly-spaced-shifted: needs whole layers"):
        LayerDropConfig(p=0.5, unit="head", sampling="evenly-spaced-shifted")


def test_the_model_draws_evenly_spaced_plans_and_records_the_choice():
    model = tiny_model(decoder_layers=6, decoder_layerdrop=0.5, layerdrop_sampling="evenly-spaced")
    assert model.decoder.layerdrop == LayerDropConfig(p=0.5, sampling="evenly-spaced")
    depths = set()
    for update in range(40):
        kept = kept_layers(model_drop_plan(model, 0, update)["decoder"])
        assert kept == (every_other(6, len(kept)) if kept else [])
        depths.add(len(kept))
    assert len(depths) >= 3  # the depth still varies from update to update


def test_sampling_needs_one_rate_for_whole_layers():
    with pytest.raises(ValueError, match="evenly-spaced"):
        LayerDropConfig(p=0.5, schedule="linear", sampling="evenly-spaced")
    with pytest.raises(ValueError, match="evenly-spaced"):
        LayerDropConfig(p=0.5, unit="head", sampling="evenly-spaced")


def test_config_json_keeps_it_and_a_resumed_run_uses_it(tmp_path, corpus_dir):
    flags = dict(data=str(corpus_dir), batch_size=4, warmup_updates=2, no_progress_bar=True, max_valid_steps=2,
                 validate_interval_updates=4)
    model = dict(decoder_layers=4, decoder_embed_dim=32, decoder_ffn_embed_dim=64, decoder_attention_heads=2,
                 tokens_per_sample=16, decoder_layerdrop=0.5, layerdrop_sampling="evenly-spaced")
    save_dir = tmp_path / "run"
    train(TrainConfig(save_dir=str(save_dir), max_update=4, **flags), model)
    config = json.loads((save_dir / "checkpoint_last" / "config.json").read_text())
    assert config["layerdrop_sampling"] == "evenly-spaced"
    train(TrainConfig(save_dir=str(save_dir), max_update=8, **flags), model)  # resumes from update 4
    loaded = load_checkpoint(save_dir / "checkpoint_last")
    assert loaded.config.layerdrop_config("decoder").sampling == "evenly-spaced"


def test_bad_sampling_flags_get_one_message(tmp_path):
    proc = run_cli("train", "--save-dir", str(tmp_path / "x"), "--layerdrop-sampling", "even", *TINY_TRAIN, check_rc=2)
    assert "--layerdrop-sampling: got 'even'; valid: per-layer, evenly-spaced" in proc.stderr
    proc = run_cli("train", "--save-dir", str(tmp_path / "x"), "--decoder-layerdrop", "0.5", "--layerdrop-sampling",
                   "evenly-spaced", "--layerdrop-unit", "head", *TINY_TRAIN, check_rc=2)
    assert "--layerdrop-sampling evenly-spaced: needs whole layers" in proc.stderr and "--layerdrop-unit head" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_served_depths_round_the_count_down():
    assert [served_depth(k, 8, (4, 2)) for k in range(9)] == [2, 2, 2, 2, 4, 4, 4, 4, 8]
    assert [served_depth(k, 6, (3, 2, 1)) for k in range(7)] == [1, 1, 2, 3, 3, 3, 6]
    # A pruned model keeps its parent's depths; the ones it no longer has are left out.
    assert [served_depth(k, 2, (4, 2)) for k in range(3)] == [2, 2, 2]
    assert [served_depth(k, 8, ()) for k in range(9)] == list(range(9))  # no served depths: the count as drawn


def test_served_depths_round_the_count_up():
    assert [served_depth(k, 8, (4, 2), "up") for k in range(9)] == [2, 2, 2, 4, 4, 8, 8, 8, 8]
    assert [served_depth(k, 6, (3, 2, 1), "up") for k in range(7)] == [1, 1, 2, 3, 6, 6, 6]
    assert [served_depth(k, 2, (4, 2), "up") for k in range(3)] == [2, 2, 2]
    with pytest.raises(ValueError, match="layerdrop depths round: got 'nearest'"):
        LayerDropConfig(p=0.5, sampling="evenly-spaced", depths=(4, 2), depths_round="nearest")


def test_rounding_up_keeps_the_rate_warmup():
    """Rounded down, one dropped layer of 8 already runs a 4-layer pass, so early in a rate warmup a third of the
    sub-network passes are cut in half; rounded up, a pass is cut only when 4 or more of 8 layers are dropped, so a
    small rate keeps the full depth, and at p = 0.5 the counts are 8 on 93/256, 4 on 126/256 and 2 on 37/256."""
    early = [0.05] * 8  # the rate 10 % into a warmup to 0.5
    def depths_drawn(rates, rounding, updates=3000):
        return [len(kept_layers(draw_stack_plan(3, u, "decoder", rates, sampling="evenly-spaced", depths=(4, 2),
                                                depths_round=rounding))) for u in range(updates)]
    down, up = depths_drawn(early, "down"), depths_drawn(early, "up")
    assert sum(d < 8 for d in down) / len(down) == pytest.approx(1 - 0.95 ** 8, abs=0.03)  # 34 % cut to 4 or 2
    assert sum(d < 8 for d in up) / len(up) < 0.01  # only 4 or more drops of 8 cut it
    half = depths_drawn([0.5] * 8, "up", 4000)
    for depth, ways in ((8, 93), (4, 126), (2, 37)):
        assert sum(d == depth for d in half) / len(half) == pytest.approx(ways / 256, abs=0.03)
    config = LayerDropConfig(p=0.5, sampling="evenly-spaced", depths=(4, 2), depths_round="up")
    assert config.expected_skipped(8, 100, lambda rate: rate) == pytest.approx((126 * 4 + 37 * 6) / 2048)
    assert config.expected_skipped(8, 100, lambda rate: rate) == pytest.approx(
        sum(8 - d for d in half) / (len(half) * 8), abs=0.01)


def test_only_served_sub_networks_train_and_the_expected_share_matches_the_draws():
    """8 layers, p = 0.5, served depths 4 and 2: the sub-network pass runs 4 layers on 162/256 updates and 2 on
    93/256 (the paper's counts 7..4 and 3..0), and the skipped share reported before training is the one drawn."""
    config = LayerDropConfig(p=0.5, sampling="evenly-spaced", depths=(4, 2))
    drawn = [kept_layers(draw_stack_plan(5, u, "decoder", [0.5] * 8, sampling="evenly-spaced", depths=(4, 2)))
             for u in range(4000)]
    paper = plans("per-layer", layers=8, updates=4000, seed=5)
    for kept, reference in zip(drawn, paper):
        assert kept == every_other(8, served_depth(len(reference), 8, (4, 2)))  # the same draws, rounded down
    share = {depth: sum(len(kept) == depth for kept in drawn) / 4000 for depth in (8, 4, 2)}
    assert share[4] == pytest.approx(162 / 256, abs=0.03) and share[2] == pytest.approx(93 / 256, abs=0.03)
    skipped = sum(8 - len(kept) for kept in drawn) / (4000 * 8)
    assert config.expected_skipped(8, 100, lambda rate: rate) == pytest.approx(skipped, abs=0.01)
    assert config.expected_skipped(8, 100, lambda rate: rate) == pytest.approx((162 * 4 + 93 * 6) / 2048)
    # With a rate warmup the reported share is lower, as the draws are (averaged over the run's updates).
    warming = LayerDropConfig(p=0.5, sampling="evenly-spaced", depths=(4, 2), warmup=50)
    drawn = [len(kept_layers(draw_stack_plan(seed, u, "decoder", warming.rates(8, u), sampling="evenly-spaced",
                                             depths=(4, 2)))) for seed in range(30) for u in range(100)]
    warm_skipped = sum(8 - depth for depth in drawn) / (len(drawn) * 8)
    assert warming.expected_skipped(8, 100, lambda rate: rate) == pytest.approx(warm_skipped, abs=0.015)
    assert warm_skipped < skipped - 0.05
    with pytest.raises(ValueError, match="layerdrop depths"):
        LayerDropConfig(p=0.5, depths=(4, 2))  # the paper's per-layer sampling has no served depths


def test_rounding_down_after_the_warmup_draws_the_unrounded_plans_until_then():
    """down-after-warmup: during the rate warmup the plans of evenly-spaced sampling without served depths (so a
    run makes the early updates of one without the flag), then exactly those rounded down."""
    config = LayerDropConfig(p=0.5, sampling="evenly-spaced", depths=(4, 2), depths_round="down-after-warmup", warmup=40)
    for update in range(0, 120):
        depths, rounding = config.served_at(update)
        plan = draw_stack_plan(7, update, "decoder", config.rates(8, update), sampling="evenly-spaced", depths=depths,
                               depths_round=rounding)
        plain = draw_stack_plan(7, update, "decoder", config.rates(8, update), sampling="evenly-spaced")
        down = draw_stack_plan(7, update, "decoder", config.rates(8, update), sampling="evenly-spaced", depths=(4, 2))
        assert plan == (plain if update < 40 else down)
    drawn = [sum(8 - len(kept_layers(draw_stack_plan(seed, u, "decoder", config.rates(8, u), sampling="evenly-spaced",
                                                     depths=config.served_at(u)[0]))) for seed in range(20))
             for u in range(100)]
    assert config.expected_skipped(8, 100, lambda rate: rate) == pytest.approx(sum(drawn) / (100 * 20 * 8), abs=0.015)
    with pytest.raises(ValueError, match="layerdrop depths round: got 'down-after-warmup'"):
        served_depth(3, 8, (4, 2), "down-after-warmup")  # one count goes one way; the config decides when


def test_served_depths_are_recorded_and_checked(tmp_path, corpus_dir):
    flags = dict(data=str(corpus_dir), batch_size=4, warmup_updates=2, no_progress_bar=True, max_valid_steps=2,
                 validate_interval_updates=4)
    model = dict(decoder_layers=4, decoder_embed_dim=32, decoder_ffn_embed_dim=64, decoder_attention_heads=2,
                 tokens_per_sample=16, decoder_layerdrop=0.5, layerdrop_sampling="evenly-spaced", layerdrop_depths="3,2",
                 layerdrop_depths_round="up")
    save_dir = tmp_path / "run"
    train(TrainConfig(save_dir=str(save_dir), max_update=4, **flags), model)
    recorded = json.loads((save_dir / "checkpoint_last" / "config.json").read_text())
    assert (recorded["layerdrop_depths"], recorded["layerdrop_depths_round"]) == ("3,2", "up")
    config = load_checkpoint(save_dir / "checkpoint_last").config.layerdrop_config("decoder")
    assert (config.depths, config.depths_round) == ((3, 2), "up")
    pruned = run_cli("prune", "--path", str(save_dir / "checkpoint_last"), "--decoder-layers-to-keep", "0",
                     "--out", str(tmp_path / "one_layer"))
    one_layer = load_checkpoint(tmp_path / "one_layer")  # cut below every served depth: still loads and trains
    assert one_layer.config.decoder_layers == 1 and one_layer.config.layerdrop_config("decoder").depths == (3, 2)
    run_cli("train", "--save-dir", str(tmp_path / "resumed"), "--restore-file", str(tmp_path / "one_layer"),
            "--max-update", "2", "--no-progress-bar", "--batch-size", "4", "--max-valid-steps", "1")
    for value, sampling in (("4,x", "evenly-spaced"), ("2", "per-layer"), ("0", "evenly-spaced"), ("²", "evenly-spaced")):
        proc = run_cli("train", "--save-dir", str(tmp_path / "x"), "--decoder-layerdrop", "0.5", "--layerdrop-sampling",
                       sampling, "--layerdrop-depths", value, *TINY_TRAIN, check_rc=2)
        assert f"--layerdrop-depths: got '{value}'; valid: whole numbers >= 1" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    proc = run_cli("train", "--save-dir", str(tmp_path / "x"), "--decoder-layerdrop", "0.5", "--layerdrop-sampling",
                   "evenly-spaced", "--layerdrop-depths", "2", "--layerdrop-depths-round", "nearest", *TINY_TRAIN, check_rc=2)
    assert "--layerdrop-depths-round: got 'nearest'; valid: down, up, down-after-warmup" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("train", "--save-dir", str(tmp_path / "x"), "--decoder-layerdrop", "0.5", "--layerdrop-sampling",
                   "evenly-spaced", "--layerdrop-depths-round", "up", *TINY_TRAIN, check_rc=2)
    assert "--layerdrop-depths-round up: rounds the kept count to served depths; valid only with --layerdrop-depths" \
        in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("train", "--save-dir", str(tmp_path / "x"), "--decoder-layerdrop", "0.5", "--layerdrop-sampling",
                   "evenly-spaced", "--layerdrop-depths", "2", "--layerdrop-depths-round", "down-after-warmup",
                   *TINY_TRAIN, check_rc=2)
    assert "--layerdrop-depths-round down-after-warmup: waits for the rate warmup; valid only with " \
        "--layerdrop-warmup-updates above 0" in proc.stderr and "Traceback" not in proc.stderr
    # A checkpoint written before the flag existed has no layerdrop_depths_round: it rounds down, as it was trained.
    config_file = save_dir / "checkpoint_last" / "config.json"
    config_file.write_text(json.dumps({key: value for key, value in recorded.items() if key != "layerdrop_depths_round"}))
    assert load_checkpoint(save_dir / "checkpoint_last").config.layerdrop_config("decoder").depths_round == "down"
    # A depth at or above the stack's would switch LayerDrop off without a word: refused (TINY_TRAIN has 4 layers).
    proc = run_cli("train", "--save-dir", str(tmp_path / "x"), "--decoder-layerdrop", "0.5", "--layerdrop-sampling",
                   "evenly-spaced", "--layerdrop-depths", "2,4", *TINY_TRAIN, check_rc=2)
    assert "--layerdrop-depths: got '2,4'; valid: depths below the decoder's 4 layers" in proc.stderr, proc.stderr
