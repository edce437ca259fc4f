"""The command line end to end, in fresh processes, on a tiny corpus."""

import re

import pytest

from layerdrop.checkpoint import load_checkpoint

from conftest import TINY_TRAIN, run_cli, write_corpus


def params(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"num\. model params: (\d+)", text)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    corpus = write_corpus(root / "corpus")
    save_dir = root / "run"
    proc = run_cli("train", "--data", str(corpus), "--save-dir", str(save_dir), "--max-update", "30",
                   "--validate-interval-updates", "15", "--decoder-layerdrop", "0.5", *TINY_TRAIN)
    return root, corpus, save_dir, proc


def test_train_prints_params_layerdrop_and_a_summary_table(trained):
    _, _, save_dir, proc = trained
    assert len(params(proc.stdout)) == 1
    assert "LayerDrop decoder: p=0.5, unit layer, uniform schedule; expected share of decoder layer compute skipped over the run: 50.0%" in proc.stdout
    assert re.search(r"update\s+train loss\s+valid loss", proc.stdout)
    assert (save_dir / "checkpoint_best" / "model.safetensors").is_file()


def test_prune_then_eval_without_keep_flags(trained):
    root, _, save_dir, _ = trained
    full = run_cli("eval", "--path", str(save_dir / "checkpoint_last"), "--split", "test")
    out = root / "pruned"
    pruned = run_cli("prune", "--path", str(save_dir / "checkpoint_last"), "--decoder-layers-to-keep", "0,2", "--out", str(out))
    assert "| Pruning model to specified layer configuration" in pruned.stdout
    before, after = params(pruned.stdout)
    assert before == params(full.stdout)[0]
    layer = before - after
    assert layer > 0 and layer % 2 == 0  # two identical layers removed
    stored = load_checkpoint(out)
    assert stored.config.decoder_layers == 2 and stored.config.decoder_layers_to_keep is None
    assert stored.config.decoder_kept_layers == [0, 2]
    evaluated = run_cli("eval", "--path", str(out), "--split", "test")
    assert "Pruning" not in evaluated.stdout and params(evaluated.stdout) == [after]
    # The same numbers as pruning at load time with the flag, and with --model-overrides.
    flag = run_cli("eval", "--path", str(save_dir / "checkpoint_last"), "--split", "test", "--decoder-layers-to-keep", "0,2")
    override = run_cli("eval", "--path", str(save_dir / "checkpoint_last"), "--split", "test",
                       "--model-overrides", "{'decoder_layers_to_keep':'0,2'}")
    loss = lambda text: re.findall(r"\s(\d+\.\d{4})\s", text)[0]
    assert loss(evaluated.stdout) == loss(flag.stdout) == loss(override.stdout)
    assert loss(full.stdout) != loss(evaluated.stdout)
    assert "| Pruning model to specified layer configuration" in flag.stdout and params(flag.stdout) == [after]


def test_continue_training_a_pruned_model_and_resume_it(trained):
    root, corpus, save_dir, _ = trained
    command = ["train", "--data", str(corpus), "--save-dir", str(root / "pruned_run"), "--max-update", "10",
               "--validate-interval-updates", "5", "--restore-file", str(save_dir / "checkpoint_last"),
               "--decoder-layers-to-keep", "1,3", "--decoder-layerdrop", "0.0", *TINY_TRAIN]
    first = run_cli(*command)
    assert "| Pruning model to specified layer configuration" in first.stdout
    assert "optimizer and schedule start fresh" in first.stdout
    stored = load_checkpoint(root / "pruned_run" / "checkpoint_last", with_trainer_state=True)
    assert stored.config.decoder_layers == 2 and stored.trainer_state["update"] == 10
    # The same command again, with more updates: resumes the pruned run and does not prune it twice.
    again = run_cli(*[c if c != "10" else "12" for c in command])
    assert "not pruning again" in again.stdout and "resuming at update 10" in again.stdout


def test_generate(trained):
    _, _, save_dir, _ = trained
    proc = run_cli("generate", "--path", str(save_dir / "checkpoint_last"), "--prompt", "ROMEO:",
                   "--max-new-tokens", "40", "--decoder-layers-to-keep", "0,1")
    assert proc.stdout.startswith("ROMEO:") and len(proc.stdout) >= len("ROMEO:") + 40
    assert "40 tokens" in proc.stderr
    unknown = run_cli("generate", "--path", str(save_dir / "checkpoint_last"), "--prompt", "\u65e5\u672c ROMEO:",
                      "--max-new-tokens", "5")
    assert "--prompt: 2 of its 9 tokens are not in the model's vocabulary; they became <unk> (printed as ?)" in unknown.stderr
    assert unknown.stdout.startswith("?? ROMEO:")


BAD = [
    (["eval", "--decoder-layers-to-keep", "0,7"], "--decoder-layers-to-keep: got '0,7': layer 7 is out of range"),
    (["eval", "--decoder-layers-to-keep", "1,1"], "repeated"),
    (["eval", "--decoder-layers-to-keep", "-2"], "negative"),
    (["eval", "--decoder-layers-to-keep", "one"], "not an integer"),
    (["eval", "--decoder-layers-to-keep", ""], "empty list"),
    (["eval", "--model-overrides", "{'decoder_layers_to_keep': '0,9'}"], "layer 9 is out of range"),
    (["eval", "--model-overrides", "{'layers': 3}"], "--model-overrides: unknown key 'layers'"),
    (["eval", "--model-overrides", "{'decoder_layerdrop': 1.0}"], "--decoder-layerdrop: got 1.0"),
    (["eval", "--split", "develop"], "--split: got 'develop'"),
    (["prune", "--out", "{out}"], "no keep list given"),
    (["prune", "--decoder-layers-to-keep", "0", "--out", "{existing}"], "already exists; valid: a new directory"),
    (["prune", "--decoder-layers-to-keep", "0", "--out", "{inside}"], "overlaps --path"),
    (["prune", "--encoder-layers-to-keep", "0", "--out", "{out}"], "--encoder-layers-to-keep: "),
    (["eval", "--model-overrides", "{'decoder_layers_to_keep': True}"], "not an integer"),
    (["eval", "--batch-size", "0"], "--batch-size: got 0"),
    (["eval", "--max-valid-steps", "0"], "--max-valid-steps: got 0"),
    (["generate", "--top-k", "0"], "--top-k: got 0"),
    (["generate", "--temperature", "-1"], "--temperature: got -1.0"),
    (["eval", "--model-overrides", "{'decoder_layers': 8}"], "48 weights the config needs are missing (first: decoder.layers.4."),
    (["prune", "--decoder-ffn-halves-to-keep", "2", "--out", "{out}"], "out of range for a model with 2 halves;"),
    (["prune", "--decoder-layers-to-keep", "0", "--out", ""], "--out: got ''"),
    # Output paths are refused before any work (nothing scored, nothing left behind).
    (["eval", "--json", "{existing}"], "--json: '{existing}' is a directory"),
    (["select", "--depth", "2", "--strategy", "every-other", "--out", "{existing}"], "--out: '{existing}' is a directory"),
    (["sweep", "--depths", "2", "--out", ""], "--out: got ''"),
    (["importance", "--depth", "2", "--out", "{file}/x"], "config.json is a file, not a directory"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_input_gets_one_clear_message(trained, args, message):
    root, _, save_dir, _ = trained
    before = sorted(str(p.relative_to(save_dir)) for p in save_dir.rglob("*"))
    places = {"{out}": root / "never", "{existing}": save_dir, "{inside}": save_dir / "checkpoint_last" / "pruned",
              "{file}": save_dir / "checkpoint_last" / "config.json"}
    for marker, place in places.items():
        args = [a.replace(marker, str(place)) for a in args]
        message = message.replace(marker, str(place))
    proc = run_cli(args[0], "--path", str(save_dir / "checkpoint_last"), *args[1:], check_rc=2)
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Pruning model" not in proc.stdout
    assert sorted(str(p.relative_to(save_dir)) for p in save_dir.rglob("*")) == before  # nothing written or lost


def test_override_keep_list_given_as_a_number(trained):
    _, _, save_dir, _ = trained
    proc = run_cli("eval", "--path", str(save_dir / "checkpoint_last"), "--model-overrides", "{'decoder_layers_to_keep': 2}")
    assert "| Pruning model" in proc.stdout and re.search(r"\s1\s+\d+\.\d{4}", proc.stdout)


def test_override_is_never_executed(trained, tmp_path):
    _, _, save_dir, _ = trained
    marker = tmp_path / "x"
    proc = run_cli("eval", "--path", str(save_dir / "checkpoint_last"),
                   "--model-overrides", f"__import__('os').system('touch {marker}')", check_rc=2)
    assert "not a literal" in proc.stderr and not marker.exists()


def test_bad_training_input(tmp_path, corpus_dir):
    cases = [
        (["--decoder-layerdrop", "1.0"], "--decoder-layerdrop: got 1.0; valid: a probability in [0, 1)"),
        (["--decoder-layerdrop", "-0.1"], "--decoder-layerdrop: got -0.1"),
        (["--data", str(tmp_path / "missing")], "--data: "),
        (["--restore-file", str(tmp_path / "missing")], "--restore-file: "),
        (["--decoder-layers-to-keep", "0,5", "--decoder-layers", "4"], "layer 5 is out of range"),
    ]
    for extra, message in cases:
        args = ["train", "--save-dir", str(tmp_path / "run"), "--data", str(corpus_dir), "--max-update", "1", *extra]
        proc = run_cli(*args, check_rc=2)
        assert message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoint_last").exists()


def test_missing_split_and_corrupt_checkpoint_do_not_touch_files(trained, tmp_path):
    import shutil

    _, _, save_dir, _ = trained
    empty = tmp_path / "nosplits"
    empty.mkdir()
    (empty / "train.txt").write_text("abc\n" * 100)
    proc = run_cli("eval", "--path", str(save_dir / "checkpoint_last"), "--data", str(empty), "--split", "test", check_rc=2)
    assert "has no 'test' split" in proc.stderr
    broken = tmp_path / "broken"
    shutil.copytree(save_dir / "checkpoint_last", broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = sorted(p.name for p in broken.iterdir())
    proc = run_cli("eval", "--path", str(broken), check_rc=2)
    assert "truncated" in proc.stderr and "Traceback" not in proc.stderr
    # Training into a save dir whose checkpoint_last is broken refuses and leaves it as it was.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copytree(broken, run_dir / "checkpoint_last")
    proc = run_cli("train", "--save-dir", str(run_dir), "--max-update", "1", check_rc=2)
    assert "--save-dir" in proc.stderr and "truncated" in proc.stderr
    assert sorted(p.name for p in (run_dir / "checkpoint_last").iterdir()) == before


def test_boolean_flags_take_both_forms_and_negations_stay_switches():
    from layerdrop.cli import build_parser

    parse = build_parser().parse_args
    base = ["train", "--data", "d"]
    assert parse(base + ["--layernorm-embedding"]).layernorm_embedding is True
    assert parse(base + ["--no-layernorm-embedding"]).layernorm_embedding is False
    assert parse(base).layernorm_embedding is None  # not given: the task's default applies
    assert parse(base + ["--no-progress-bar"]).no_progress_bar is True
