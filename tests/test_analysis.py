import json
import math

import pytest
import torch

from conftest import run_cli, write_corpus
from layerdrop.analysis.scoring import Metric, Scorer
from layerdrop.analysis.strategies import angular_keep, block_influence_keep, search_subsets, select_layers
from layerdrop.checkpoint import load_checkpoint, save_checkpoint
from layerdrop.train import TrainConfig, train

LAYERS = 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-layer character LM trained briefly on a slice of the embedded corpus."""
    root = tmp_path_factory.mktemp("analysis")
    corpus = write_corpus(root / "corpus")
    run = TrainConfig(data=str(corpus), save_dir=str(root / "run"), max_update=40, batch_size=8, warmup_updates=4,
                      no_progress_bar=True, max_valid_steps=4, validate_interval_updates=40)
    model = dict(decoder_layers=LAYERS, decoder_embed_dim=32, decoder_ffn_embed_dim=64, decoder_attention_heads=2,
                 tokens_per_sample=32, dropout=0.0)
    train(run, model, log=lambda _: None)
    return root / "run" / "checkpoint_last"


def _edited(source, target, edit):
    """A copy of a checkpoint whose weights were changed by ``edit(state_dict)``."""
    ckpt = load_checkpoint(source)
    state = {k: v.clone() for k, v in ckpt.state_dict.items()}
    edit(state)
    save_checkpoint(target, ckpt.model_type, ckpt.config, state, ckpt.tokenizer, run=ckpt.run)
    return str(target)


def _noise_layers(*layers):
    """Layers whose residual branches add large random vectors: any subset holding one is much worse."""
    def edit(state):
        generator = torch.Generator().manual_seed(0)
        for l in layers:
            for name in ("fc2.weight", "self_attn.out_proj.weight"):
                key = f"decoder.layers.{l}.{name}"
                state[key] = torch.randn(state[key].shape, generator=generator) * 3.0
    return edit


def _identity_layers(*layers):
    """Layers whose residual branches output zero: the layer passes its input through unchanged."""
    def edit(state):
        for l in layers:
            for name in ("fc2", "self_attn.out_proj"):
                state[f"decoder.layers.{l}.{name}.weight"].zero_()
                state[f"decoder.layers.{l}.{name}.bias"].zero_()
    return edit


def test_search_functions_find_the_best_subset_of_a_known_score():
    value = {0: 5.0, 1: 1.0, 2: 4.0, 3: 0.5, 4: 3.0, 5: 0.1}
    score = lambda keep: sum(value[l] for l in keep)
    metric = Metric("score", higher_is_better=True)
    keep, best, scored, method = search_subsets(score, metric, 6, 3, budget=100)
    assert (keep, best, scored, method) == ([0, 2, 4], 12.0, math.comb(6, 3), "exhaustive")
    keep, best, scored, method = search_subsets(score, metric, 6, 3, budget=5, beam=1)
    assert keep == [0, 2, 4] and method == "greedy" and scored == 6 + 5 + 4
    keep, _, _, method = search_subsets(lambda k: -score(k), Metric("loss", False), 6, 2, budget=1, beam=3)
    assert keep == [0, 2] and method == "beam 3"


def test_search_on_the_validation_set_finds_the_clearly_best_subset(trained, tmp_path):
    path = _edited(trained, tmp_path / "noisy", _noise_layers(0, 2))
    scorer = Scorer(path)
    exhaustive = select_layers(scorer, 2, "search")
    assert exhaustive.keep == [1, 3] and exhaustive.evaluated == math.comb(LAYERS, 2)
    greedy = select_layers(scorer, 2, "search", budget=1)
    assert greedy.keep == [1, 3] and greedy.details["method"] == "greedy"
    every_other = select_layers(scorer, 2, "every-other")
    assert every_other.keep == [0, 2] and every_other.score > exhaustive.score + 0.3  # noise layers: much worse loss


def test_block_influence_and_angular_drop_layers_that_change_nothing(trained, tmp_path):
    path = _edited(trained, tmp_path / "identity", _identity_layers(1, 2))
    scorer = Scorer(path)
    influence = select_layers(scorer, 2, "block-influence")
    assert influence.keep == [0, 3]
    assert influence.details["block_influence"][1] == pytest.approx(0, abs=1e-9)
    angular = select_layers(scorer, 2, "angular")
    assert angular.keep == [0, 3] and angular.details["removed_block_start"] == 1
    assert angular.details["angular_distance"][1] == pytest.approx(0, abs=1e-6)
    # Pruning layers that change nothing leaves the score where it was.
    assert influence.score == pytest.approx(scorer.score(None), abs=1e-5)


def test_rank_rules():
    assert block_influence_keep([0.3, 0.1, 0.2, 0.9], 2) == [0, 3]
    assert angular_keep([0.5, 0.1, 0.4], 4, 2) == ([0, 3], 1)
    assert angular_keep([], 4, 4) == ([0, 1, 2, 3], 0)


def test_select_cli(trained, tmp_path):
    out = tmp_path / "select.json"
    proc = run_cli("select", "--path", str(trained), "--depth", "2", "--strategy", "search", "--out", str(out))
    assert "search (exhaustive)" in proc.stdout and "--decoder-layers-to-keep" in proc.stdout
    result = json.loads(out.read_text())
    assert len(result["keep"]) == 2 and result["subsets_scored"] == math.comb(LAYERS, 2)
    # The score printed is what `eval` gives for the same layers.
    keep = ",".join(map(str, result["keep"]))
    evaluated = run_cli("eval", "--path", str(trained), "--decoder-layers-to-keep", keep)
    loss = float(evaluated.stdout.splitlines()[-1].split()[3])
    assert result["metric"] == "valid loss" and result["score"] == pytest.approx(loss, abs=1e-3)


def test_analyses_take_unit_flags(trained, tmp_path):
    proc = run_cli("select", "--path", str(trained), "--depth", "2", "--strategy", "every-other",
                   "--decoder-heads-to-keep", "0", "--out", str(tmp_path / "h.json"))
    assert "| Pruning model to specified layer configuration" in proc.stdout
    plain = json.loads(run_cli("select", "--path", str(trained), "--depth", "2", "--strategy", "every-other", "--out",
                               str(tmp_path / "p.json")) and (tmp_path / "p.json").read_text())
    assert json.loads((tmp_path / "h.json").read_text())["score"] != plain["score"]


def test_analyses_name_layers_as_the_checkpoint_numbers_them(trained, tmp_path):
    """With a load-time keep list, what select prints is used on --path as it is: the checkpoint's numbers."""
    path = _edited(trained, tmp_path / "noisy", _noise_layers(1))
    out = tmp_path / "select.json"
    proc = run_cli("select", "--path", path, "--depth", "1", "--strategy", "search", "--decoder-layers-to-keep", "1,3",
                   "--out", str(out))
    result = json.loads(out.read_text())
    assert result["layer_numbers"] == [1, 3] and result["keep"] == [3]  # layer 1 is the noisy one
    assert "| keep with: --decoder-layers-to-keep 3" in proc.stdout
    evaluated = run_cli("eval", "--path", path, "--decoder-layers-to-keep", "3")
    assert result["score"] == pytest.approx(float(evaluated.stdout.splitlines()[-1].split()[3]), abs=1e-3)
    importance = run_cli("importance", "--path", path, "--depth", "1", "--decoder-layers-to-keep", "1,3",
                         "--out", str(tmp_path / "imp"))
    subsets = json.loads((tmp_path / "imp.json").read_text())["subsets"]
    assert sorted(s["keep"] for s in subsets) == [[1], [3]]
    assert [line.split()[0] for line in importance.stdout.splitlines()[-3:-1]] == ["1", "3"]  # then "| wrote ..."
    # A checkpoint pruned to 1,3 and given that list again: already applied, so its own numbers 0 and 1.
    pruned = tmp_path / "pruned"
    run_cli("prune", "--path", path, "--decoder-layers-to-keep", "1,3", "--out", str(pruned))
    run_cli("select", "--path", str(pruned), "--depth", "1", "--strategy", "search", "--decoder-layers-to-keep", "1,3",
            "--out", str(tmp_path / "again.json"))
    assert json.loads((tmp_path / "again.json").read_text())["layer_numbers"] == [0, 1]


def test_learned_strategy_needs_a_gated_model(trained):
    proc = run_cli("select", "--path", str(trained), "--depth", "2", "--strategy", "learned", check_rc=2)
    assert "--decoder-learned-gates" in proc.stderr and "Traceback" not in proc.stderr


def test_sweep_cli_writes_table_json_and_plot(trained, tmp_path):
    other = _edited(trained, tmp_path / "other", _identity_layers(3))
    out = tmp_path / "sweep"
    proc = run_cli("sweep", "--path", str(trained), "--path", other, "--depths", "4,2,1", "--out", str(out))
    assert "4 layers" in proc.stdout and "1 layers" in proc.stdout
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert [len(r["points"]) for r in result["runs"]] == [3, 3]
    assert [p["keep"] for p in result["runs"][0]["points"]] == [[0, 1, 2, 3], [0, 2], [0]]
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_checks_every_checkpoint_before_scoring_any(trained, tmp_path):
    shallow = tmp_path / "shallow"
    run_cli("prune", "--path", str(trained), "--decoder-layers-to-keep", "0,2", "--out", str(shallow))
    proc = run_cli("sweep", "--path", str(trained), "--path", str(shallow), "--depths", "4,2", "--out",
                   str(tmp_path / "sweep"), check_rc=2)
    assert "--depths: [4] exceed the 2 decoder layers of" in proc.stderr and "layers [" not in proc.stdout


def test_importance_cli_writes_table_json_and_plot(trained, tmp_path):
    out = tmp_path / "imp"
    proc = run_cli("importance", "--path", str(trained), "--depth", "2", "--samples", "20", "--out", str(out))
    result = json.loads((tmp_path / "imp.json").read_text())
    assert result["samples"] == math.comb(LAYERS, 2)  # fewer subsets exist than asked for: all of them
    assert len(result["importance"]) == LAYERS
    assert max(abs(v) for v in result["relative_importance"]) == pytest.approx(1.0)
    assert (tmp_path / "imp.png").read_bytes()[:4] == b"\x89PNG"
    assert "relative" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["sweep", "--depths", "8,2"], "--depths: [8] exceed the 4 decoder layers"),
    (["sweep", "--depths", "two"], "--depths: got 'two'"),
    (["select", "--depth", "0", "--strategy", "every-other"], "--depth: got 0; valid: 1 to 4"),
    (["importance", "--depth", "4"], "--depth: got 4, the full depth"),
    (["select", "--depth", "2", "--strategy", "every-other", "--stack", "encoder"], "--stack: got 'encoder'"),
])
def test_bad_analysis_input(trained, tmp_path, args, message):
    proc = run_cli(args[0], "--path", str(trained), *args[1:], "--out", str(tmp_path / "x"), check_rc=2)
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_translation_model_with_units_and_schedule_then_analyses(tmp_path):
    from test_translation import write_toy_parallel

    data = write_toy_parallel(tmp_path / "toy", pairs=200)
    save = tmp_path / "mt"
    proc = run_cli("train", "--task", "translation", "--data", str(data), "--save-dir", str(save), "--bpe-vocab-size", "300",
                   "--encoder-layers", "3", "--decoder-layers", "3", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
                   "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4",
                   "--decoder-attention-heads", "4", "--batch-size", "16", "--max-update", "20", "--warmup-updates", "2",
                   "--encoder-layerdrop", "0.3", "--decoder-layerdrop", "0.3", "--layerdrop-unit", "head+sublayer",
                   "--layerdrop-schedule", "exponential", "--no-progress-bar")
    assert "LayerDrop encoder: p=0.3, unit head+sublayer, exponential schedule" in proc.stdout
    ckpt = str(save / "checkpoint_last")
    out = tmp_path / "enc"
    run_cli("sweep", "--path", ckpt, "--depths", "3,1", "--stack", "encoder", "--out", str(out))
    result = json.loads((tmp_path / "enc.json").read_text())
    assert result["stack"] == "encoder" and result["metric"] == "valid loss"
    proc = run_cli("select", "--path", ckpt, "--depth", "2", "--strategy", "block-influence")
    assert "--decoder-layers-to-keep" in proc.stdout
    # Unit pruning through eval: fewer parameters, still scores
    full = run_cli("eval", "--path", ckpt, "--split", "test", "--beam", "1")
    pruned = run_cli("eval", "--path", ckpt, "--split", "test", "--beam", "1", "--decoder-heads-to-keep", "0,1",
                     "--encoder-ffn-halves-to-keep", "1")
    count = lambda text: int(text.split("num. model params: ")[1].split()[0])
    assert count(pruned.stdout) < count(full.stdout) and "BLEU" in pruned.stdout


def test_classifier_analyses_score_accuracy(tmp_path):
    from test_encoder import write_toy_sentiment

    data = write_toy_sentiment(tmp_path / "sst")
    save = tmp_path / "cls"
    run_cli("train", "--task", "classification", "--data", str(data), "--save-dir", str(save), "--bpe-vocab-size", "200",
            "--encoder-layers", "3", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
            "--tokens-per-sample", "16", "--batch-size", "16", "--max-update", "20", "--warmup-updates", "2",
            "--encoder-layerdrop", "0.2", "--layerdrop-unit", "ffn-half", "--no-progress-bar")
    proc = run_cli("select", "--path", str(save / "checkpoint_last"), "--depth", "2", "--strategy", "search")
    assert "accuracy" in proc.stdout and "--encoder-layers-to-keep" in proc.stdout
    out = tmp_path / "imp"
    run_cli("importance", "--path", str(save / "checkpoint_last"), "--depth", "1", "--samples", "3", "--out", str(out))
    result = json.loads((tmp_path / "imp.json").read_text())
    assert result["higher_is_better"] and result["stack"] == "encoder" and len(result["importance"]) == 3
