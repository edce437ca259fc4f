"""Hostile input: every file of a checkpoint corrupted in several ways, and bad values for every numeric flag.

Each case must end with exit status 2 and one line on stderr naming the file or flag, no traceback, and the
checkpoint on disk exactly as it was. Runs in-process (the real ``main``), so the whole file takes seconds.
"""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TINY_TRAIN, write_corpus
from layerdrop.cli import build_parser, main
from layerdrop.models import TransformerEncoderConfig, TransformerLMConfig, TransformerTranslationConfig
from layerdrop.train import TrainConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny LM trained for 4 updates: SAVE_DIR with checkpoint_last (all five files) and its corpus."""
    root = tmp_path_factory.mktemp("fuzz")
    corpus = write_corpus(root / "corpus")
    save_dir = root / "run"
    assert main(["train", "--data", str(corpus), "--save-dir", str(save_dir), "--max-update", "4",
                 "--validate-interval-updates", "4", *TINY_TRAIN]) == 0
    return save_dir, corpus


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(directory.rglob("*"))}


def _refused(capsys, argv: list[str], mentions: str) -> str:
    try:
        rc = main(argv)
    except SystemExit as exit:  # argparse's own refusals
        rc = exit.code
    err = capsys.readouterr().err
    assert rc == 2, f"{argv[:3]}...: rc {rc}\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and mentions in lines[0], err
    assert len(lines[0]) < 1000, f"message of {len(lines[0])} characters"
    return lines[0]


def _json_edit(**changes):
    def edit(path: Path) -> None:
        data = json.loads(path.read_text())
        data.update(changes)
        path.write_text(json.dumps(data))
    return edit


def _tokenizer_too_large(path: Path) -> None:
    data = json.loads(path.read_text())
    data["vocab"] = data["vocab"] + [f"extra{i}" for i in range(200)]
    path.write_text(json.dumps(data))


def _tensor_reshaped(path: Path) -> None:
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith("fc1.weight"))
    tensors[key] = torch.zeros(3, 5)
    save_file(tensors, str(path), metadata={"model_type": "transformer_lm"})


def _trainer_state(**changes):
    def edit(path: Path) -> None:
        state = torch.load(path, weights_only=True)
        state.update(changes)
        torch.save(state, path)
    return edit


GENERIC = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 2)]),
    "empty": lambda p: p.write_bytes(b""),
    "binary": lambda p: p.write_bytes(bytes(range(256)) * 8),
}
SPECIFIC = {
    "model.safetensors": {"text instead": lambda p: p.write_text('{"a": 1}'), "wrong shape": _tensor_reshaped},
    "config.json": {
        "a list": lambda p: p.write_text("[1, 2]"),
        "vocab_size -1": _json_edit(vocab_size=-1),
        "vocab_size a string": _json_edit(vocab_size="x"),
        "bias a string": _json_edit(bias="no"),
        "ffn width 1e9": _json_edit(decoder_ffn_embed_dim=10**9),
        "layers 10**6": _json_edit(decoder_layers=10**6),
        "dropout NaN": lambda p: p.write_text(p.read_text().replace('"dropout": 0.1', '"dropout": NaN')),
        "model_type a list": _json_edit(model_type=["transformer_lm"]),
        "unknown model_type": _json_edit(model_type="gpt9"),
    },
    "tokenizer.json": {"a list": lambda p: p.write_text("[]"), "larger than the vocabulary": _tokenizer_too_large,
                       "unknown kind": _json_edit(kind="sentencepiece")},
    "run.json": {"a list": lambda p: p.write_text("[]")},
    "trainer_state.pt": {"update -1000": _trainer_state(update=-1000), "update a string": _trainer_state(update="x"),
                         "best loss NaN": _trainer_state(best_valid_loss=float("nan")),
                         "plateau a list": _trainer_state(plateau=[1]),
                         "plateau since a string": _trainer_state(plateau={"since": "x", "warned": False}),
                         "plateau since after the update": _trainer_state(plateau={"since": 10**6, "warned": False}),
                         "no optimizer": lambda p: torch.save({"update": 3}, p)},
}
CASES = [(name, kind, edit) for name in SPECIFIC for kind, edit in {**GENERIC, **SPECIFIC[name]}.items()]


@pytest.mark.parametrize("name,kind,edit", CASES, ids=[f"{n}-{k}" for n, k, _ in CASES])
def test_a_corrupt_checkpoint_file_is_refused_by_name_and_left_as_it_was(trained, tmp_path, capsys, name, kind, edit):
    save_dir, corpus = trained
    run_dir = tmp_path / "run"
    shutil.copytree(save_dir, run_dir)
    edit(run_dir / "checkpoint_last" / name)
    before = _digest(run_dir)
    if name == "trainer_state.pt":  # only a resumed training reads it
        argv = ["train", "--data", str(corpus), "--save-dir", str(run_dir), "--max-update", "8", *TINY_TRAIN]
    else:
        argv = ["eval", "--path", str(run_dir / "checkpoint_last"), "--max-valid-steps", "1"]
    line = _refused(capsys, argv, "checkpoint_last")
    mentioned = name in line or (name == "model.safetensors" and "weights" in line)
    assert mentioned, line
    assert _digest(run_dir) == before


BAD_NUMBERS = ["nan", "inf", "-inf", "-1", "1e400", "9" * 5000]


def _numeric_flags(command: str) -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return [a.option_strings[0] for a in sub._actions if a.type in (int, float)]


def _task_for(flag: str) -> str:
    name = flag[2:].replace("-", "_")
    for task, config_class in (("lm", TrainConfig), ("lm", TransformerLMConfig), ("translation", TransformerTranslationConfig),
                               ("masked_lm", TransformerEncoderConfig)):
        if name in {f.name for f in __import__("dataclasses").fields(config_class)}:
            return task
    raise AssertionError(flag)


def test_every_numeric_train_flag_refuses_bad_numbers(tmp_path, capsys):
    flags = _numeric_flags("train")
    assert "--lr" in flags and "--decoder-layers" in flags and "--encoder-layers" in flags and len(flags) > 30
    for flag in flags:
        for value in BAD_NUMBERS:
            _refused(capsys, ["train", "--task", _task_for(flag), "--save-dir", str(tmp_path / "never"), f"{flag}={value}"],
                     flag)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("command", ["eval", "generate", "select", "sweep", "importance"])
def test_every_numeric_flag_of_the_other_commands_refuses_bad_numbers(trained, capsys, command):
    save_dir, _ = trained
    path = str(save_dir / "checkpoint_last")
    needed = {"select": ["--depth", "2", "--strategy", "every-other"], "sweep": ["--depths", "2"],
              "importance": ["--depth", "2"]}.get(command, [])
    before = _digest(save_dir)
    for flag in _numeric_flags(command):
        for value in BAD_NUMBERS:
            argv = [command, "--path", path, *needed, f"{flag}={value}"]
            _refused(capsys, argv, flag)
    assert _digest(save_dir) == before


def test_a_huge_override_is_shortened_in_the_message(trained, capsys):
    save_dir, _ = trained
    line = _refused(capsys, ["eval", "--path", str(save_dir / "checkpoint_last"), "--model-overrides", "{" + "x" * 100_000],
                    "--model-overrides")
    assert "(100003 characters)" in line  # the quoted value: named by its start and length


def test_a_huge_keep_index_is_refused(trained, capsys):
    save_dir, _ = trained
    _refused(capsys, ["eval", "--path", str(save_dir / "checkpoint_last"), "--decoder-layers-to-keep", "1" * 5000],
             "--decoder-layers-to-keep")


@pytest.mark.parametrize("kind", ["truncated", "binary", "a list"])
def test_a_corrupt_run_json_in_save_dir_is_refused_by_train(trained, tmp_path, capsys, kind):
    save_dir, corpus = trained
    run_dir = tmp_path / "run"
    shutil.copytree(save_dir, run_dir)
    edit = {**GENERIC, **SPECIFIC["run.json"]}[kind]
    edit(run_dir / "checkpoint_last" / "run.json")
    before = _digest(run_dir)
    line = _refused(capsys, ["train", "--data", str(corpus), "--save-dir", str(run_dir), "--max-update", "8", *TINY_TRAIN],
                    "run.json")
    assert "--save-dir" in line
    assert _digest(run_dir) == before
