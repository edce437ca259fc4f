import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from layerdrop.checkpoint import load_checkpoint
from layerdrop.train import TrainConfig, train

from conftest import run_cli

MODEL = dict(decoder_layers=4, decoder_embed_dim=32, decoder_ffn_embed_dim=64, decoder_attention_heads=2,
             tokens_per_sample=16, dropout=0.1, decoder_layerdrop=0.3)


def run_config(corpus_dir, save_dir, **changes):
    values = dict(data=str(corpus_dir), save_dir=str(save_dir), max_update=12, batch_size=4, warmup_updates=2,
                  validate_interval_updates=4, max_valid_steps=2, no_progress_bar=True, seed=5)
    values.update(changes)
    return TrainConfig(**values)


def losses(save_dir):
    return [json.loads(line)["loss"] for line in (save_dir / "train_log.jsonl").read_text().splitlines()]


def test_resumed_run_logs_the_same_losses_as_an_unbroken_one(corpus_dir, tmp_path):
    quiet = lambda _: None
    train(run_config(corpus_dir, tmp_path / "unbroken"), MODEL, quiet)
    # A run that died right after its checkpoint at update 8: its save dir holds that checkpoint as _last.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "unbroken" / "checkpoint_8", resumed / "checkpoint_last")
    (resumed / "train_log.jsonl").write_text("".join(
        line + "\n" for line in (tmp_path / "unbroken" / "train_log.jsonl").read_text().splitlines()[:8]))
    train(run_config(corpus_dir, resumed), MODEL, quiet)
    unbroken, again = losses(tmp_path / "unbroken"), losses(resumed)
    assert len(unbroken) == len(again) == 12
    assert unbroken == again  # bit-identical: batches, dropout and LayerDrop are functions of (seed, update)


def test_resume_rolls_back_log_lines_past_the_checkpoint(corpus_dir, tmp_path):
    save_dir = tmp_path / "run"
    train(run_config(corpus_dir, save_dir, max_update=8), MODEL, lambda _: None)
    with open(save_dir / "train_log.jsonl", "a") as f:  # as if killed after logging update 9 and 10
        f.write('{"update": 9, "loss": 0.0}\n{"update": 10, "loss": 0.0}\n')
    train(run_config(corpus_dir, save_dir, max_update=10), MODEL, lambda _: None)
    updates = [json.loads(line)["update"] for line in (save_dir / "train_log.jsonl").read_text().splitlines()]
    assert updates == list(range(1, 11))
    assert 0.0 not in losses(save_dir)


def test_checkpoints_last_best_and_rotation(corpus_dir, tmp_path):
    train(run_config(corpus_dir, tmp_path / "run", keep_interval_updates=2), MODEL, lambda _: None)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == [".lock", "checkpoint_12", "checkpoint_8", "checkpoint_best", "checkpoint_last", "train_log.jsonl"]


def test_architecture_flags_cannot_change_on_resume(corpus_dir, tmp_path):
    from layerdrop.errors import UserError

    train(run_config(corpus_dir, tmp_path / "run", max_update=4), MODEL, lambda _: None)
    with pytest.raises(UserError, match="--decoder-embed-dim: got 64 but the checkpoint"):
        train(run_config(corpus_dir, tmp_path / "run"), {**MODEL, "decoder_embed_dim": 64}, lambda _: None)


def test_sigterm_saves_and_the_same_command_resumes_to_the_unbroken_result(corpus_dir, tmp_path):
    def command(save_dir):
        return ["train", "--data", str(corpus_dir), "--save-dir", str(save_dir), "--max-update", "400",
                "--validate-interval-updates", "300", "--max-valid-steps", "2", "--decoder-layers", "2",
                "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2",
                "--tokens-per-sample", "16", "--batch-size", "4", "--decoder-layerdrop", "0.5", "--no-progress-bar"]

    save_dir = tmp_path / "stopped"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "layerdrop", *command(save_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:  # wait until 100 updates are done (the log line), however slow the machine
        if line.startswith("| update    100 "):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "stopped by SIGTERM" in out
    stopped_at = load_checkpoint(save_dir / "checkpoint_last", with_trainer_state=True).trainer_state["update"]
    assert 100 <= stopped_at < 400
    resumed = run_cli(*command(save_dir))
    assert f"resuming at update {stopped_at}" in resumed.stdout
    run_cli(*command(tmp_path / "unbroken"))
    assert losses(save_dir) == losses(tmp_path / "unbroken")


def test_torn_log_line_and_half_swapped_checkpoint_still_resume(corpus_dir, tmp_path):
    save_dir = tmp_path / "run"
    train(run_config(corpus_dir, save_dir, max_update=8), MODEL, lambda _: None)
    with open(save_dir / "train_log.jsonl", "a") as f:  # killed in the middle of writing a line
        f.write('{"update": 9, "lo')
    # killed between the two renames of a checkpoint swap: only checkpoint_last.old is left
    (save_dir / "checkpoint_last").rename(save_dir / "checkpoint_last.old")
    train(run_config(corpus_dir, save_dir, max_update=10), MODEL, lambda _: None)
    updates = [json.loads(line)["update"] for line in (save_dir / "train_log.jsonl").read_text().splitlines()]
    assert updates == list(range(1, 11))


def test_a_different_restore_file_does_not_silently_resume_another_run(corpus_dir, tmp_path):
    from layerdrop.errors import UserError

    train(run_config(corpus_dir, tmp_path / "base", max_update=4), MODEL, lambda _: None)
    train(run_config(corpus_dir, tmp_path / "run", max_update=4), MODEL, lambda _: None)
    with pytest.raises(UserError, match="--restore-file: got .* but .*checkpoint_last exists"):
        train(run_config(corpus_dir, tmp_path / "run", restore_file=str(tmp_path / "base" / "checkpoint_last")), MODEL,
              lambda _: None)
