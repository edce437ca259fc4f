import json

import pytest
import torch

from layerdrop.checkpoint import load_checkpoint, load_model, parse_overrides, save_checkpoint
from layerdrop.errors import UserError
from layerdrop.models import LM_MODEL_TYPE

from conftest import char_tokenizer, tiny_model


@pytest.fixture
def checkpoint(tmp_path):
    model = tiny_model()
    tok = char_tokenizer(model.cfg.vocab_size)
    return save_checkpoint(tmp_path / "ckpt", LM_MODEL_TYPE, model.cfg, model.state_dict(), tok,
                           trainer_state={"update": 3, "optimizer": {"state": {}, "param_groups": []}})


def test_round_trip(checkpoint):
    model, ckpt = load_model(checkpoint, log=lambda _: None)
    reference = tiny_model()
    tokens = torch.randint(0, 50, (2, 8))
    assert torch.equal(model(tokens)[0], reference.eval()(tokens)[0])
    assert load_checkpoint(checkpoint, with_trainer_state=True).trainer_state["update"] == 3


def test_write_is_atomic_and_leaves_no_temporary_files(checkpoint):
    siblings = sorted(p.name for p in checkpoint.parent.iterdir())
    assert siblings == ["ckpt"]
    model = tiny_model(seed=1)
    save_checkpoint(checkpoint, LM_MODEL_TYPE, model.cfg, model.state_dict(), char_tokenizer(model.cfg.vocab_size))
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["ckpt"]
    assert not (checkpoint / "trainer_state.pt").exists()  # replaced whole, not merged


def test_missing_directory_and_missing_files(tmp_path, checkpoint):
    with pytest.raises(UserError, match="--path: .*does not exist"):
        load_checkpoint(tmp_path / "nothing")
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(UserError, match="missing model.safetensors"):
        load_checkpoint(checkpoint)


def test_truncated_weights(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UserError, match="truncated"):
        load_checkpoint(checkpoint)


def test_truncated_config(checkpoint):
    config = checkpoint / "config.json"
    config.write_text(config.read_text()[:40])
    with pytest.raises(UserError, match="config.json is not valid JSON"):
        load_checkpoint(checkpoint)


def test_truncated_trainer_state(checkpoint):
    state = checkpoint / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:50])
    with pytest.raises(UserError, match="trainer_state.pt"):
        load_checkpoint(checkpoint, with_trainer_state=True)


def test_unknown_and_other_model_types(checkpoint, tmp_path):
    config = checkpoint / "config.json"
    data = json.loads(config.read_text())
    data["model_type"] = "transformer_foo"
    config.write_text(json.dumps(data))
    with pytest.raises(UserError, match="holds model type 'transformer_foo'; valid: transformer_lm"):
        load_checkpoint(checkpoint)
    from layerdrop.models import TransformerTranslation, TransformerTranslationConfig

    translation = TransformerTranslation(TransformerTranslationConfig(vocab_size=20, encoder_layers=1, decoder_layers=1,
                                                                      encoder_embed_dim=16, decoder_embed_dim=16))
    other = save_checkpoint(tmp_path / "mt", "transformer_translation", translation.cfg, translation.state_dict(),
                            char_tokenizer(translation.cfg.vocab_size))
    with pytest.raises(UserError, match="holds a 'transformer_translation' model; this command needs a 'transformer_lm'"):
        load_checkpoint(other, "--restore-file", expected_type=LM_MODEL_TYPE)


def test_trainer_state_is_loaded_without_unpickling_objects(checkpoint):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"update": Evil()}, checkpoint / "trainer_state.pt")
    with pytest.raises(UserError, match="trainer_state.pt"):
        load_checkpoint(checkpoint, with_trainer_state=True)


def test_overrides_are_literals_only(tmp_path):
    assert parse_overrides("{'decoder_layers_to_keep': '0,2,4'}") == {"decoder_layers_to_keep": "0,2,4"}
    assert parse_overrides('{"dropout": 0.0}') == {"dropout": 0.0}
    marker = tmp_path / "x"
    with pytest.raises(UserError, match="not a literal"):
        parse_overrides(f"__import__('os').system('touch {marker}')")
    assert not marker.exists()
    with pytest.raises(UserError, match="not a dict"):
        parse_overrides("[1, 2]")


def test_unknown_override_key(checkpoint):
    with pytest.raises(UserError, match="--model-overrides: unknown key 'decoder_layer'"):
        load_model(checkpoint, overrides={"decoder_layer": 3})


def test_override_keep_list_prunes_at_load(checkpoint):
    model, _ = load_model(checkpoint, overrides={"decoder_layers_to_keep": "0,2,4"}, log=lambda _: None)
    assert len(model.layers) == 3


def test_a_checkpoint_written_before_drop_plans_became_values_loads_evaluates_and_resumes(tmp_path):
    """tests/data/lm_checkpoint_before_plans was written by the code before the rebuild (learned gates, p = 0.5)."""
    import shutil
    from pathlib import Path

    from conftest import run_cli

    source = Path(__file__).parent / "data" / "lm_checkpoint_before_plans"
    expected = json.loads((source / "expected.json").read_text())["valid_loss_2_batches"]
    stored = load_checkpoint(source)
    assert stored.config.layerdrop_unit == "layer" and stored.config.layerdrop_schedule == "uniform"  # defaults filled in
    for keep, key in ((None, "full"), ("0,2", "keep_0_2")):
        out = tmp_path / f"{key}.json"
        run_cli("eval", "--path", str(source), "--split", "valid", "--max-valid-steps", "2", "--json", str(out),
                *(["--decoder-layers-to-keep", keep] if keep else []))
        assert json.loads(out.read_text())["results"]["lm"]["loss"] == pytest.approx(expected[key], abs=1e-5)
    save_dir = tmp_path / "resumed"
    save_dir.mkdir()
    shutil.copytree(source, save_dir / "checkpoint_last")
    proc = run_cli("train", "--save-dir", str(save_dir), "--decoder-layers", "3", "--decoder-embed-dim", "16",
                   "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2", "--tokens-per-sample", "16",
                   "--max-update", "6", "--batch-size", "2", "--validate-interval-updates", "6", "--max-valid-steps", "1",
                   "--decoder-layerdrop", "0.5", "--decoder-learned-gates", "--no-progress-bar")
    assert "resuming at update 4" in proc.stdout
    log = [json.loads(line) for line in (save_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["update"] for r in log] == [5, 6] and all(r["loss"] is not None for r in log)


def test_a_tokenizer_of_another_size_is_refused(checkpoint):
    model = tiny_model()
    with pytest.raises(ValueError, match="a 45-token tokenizer with vocab_size 50"):
        save_checkpoint(checkpoint.parent / "never", LM_MODEL_TYPE, model.cfg, model.state_dict(), char_tokenizer(45))
    assert not (checkpoint.parent / "never").exists()
    for size in (45, 55):  # shorter: generation would sample ids it has no token for
        (checkpoint / "tokenizer.json").write_text(json.dumps(char_tokenizer(size).to_json()))
        with pytest.raises(UserError, match=f"has {size} tokens but config.json says vocab_size 50; the files come from"):
            load_checkpoint(checkpoint)


def test_the_current_directory_is_a_path_and_an_empty_one_is_refused(checkpoint, monkeypatch):
    monkeypatch.chdir(checkpoint)
    assert load_checkpoint(".").config.decoder_layers == 6
    (checkpoint / "sub").mkdir()
    monkeypatch.chdir(checkpoint / "sub")
    assert load_checkpoint("..").config.decoder_layers == 6
    with pytest.raises(UserError, match="--path: got an empty path"):
        load_checkpoint("")


def test_weights_that_do_not_fit_are_named_by_count(checkpoint):
    with pytest.raises(UserError) as error:
        load_model(checkpoint, overrides={"decoder_layers": 12}, log=lambda _: None)
    message = str(error.value)
    assert "weights do not fit the model config: 72 weights the config needs are missing (first: decoder.layers.6." in message
    assert len(message) < 400
