"""Never lose a run: divergence, one run per save dir, failed writes, and all-or-nothing resume."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import layerdrop.checkpoint
from conftest import TINY_TRAIN
from layerdrop.cli import main
from layerdrop.run_lock import SaveDirLock


def _train(corpus: Path, save_dir: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(corpus), "--save-dir", str(save_dir), *TINY_TRAIN, "--validate-interval-updates", "5",
            "--keep-interval-updates", "5", *extra]


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != ".lock"}


def _strict_lines(path: Path) -> list[dict]:
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name} in {path}")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_a_non_finite_loss_stops_before_the_step_and_keeps_every_good_checkpoint(corpus_dir, tmp_path, capsys):
    save_dir = tmp_path / "run"
    assert main(_train(corpus_dir, save_dir, "--max-update", "10")) == 0
    good = _digest(save_dir / "checkpoint_last")
    numbered = sorted(p.name for p in save_dir.glob("checkpoint_[0-9]*"))
    capsys.readouterr()
    # An absurd learning rate: the first step makes the weights huge, the next gradient norm is infinite.
    rc = main(_train(corpus_dir, save_dir, "--max-update", "40", "--lr", "1000", "--warmup-updates", "0"))
    err = capsys.readouterr().err
    assert rc == 3, err
    assert "update 12: the training loss is" in err and "still holds update 10" in err and "--lr" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _digest(save_dir / "checkpoint_last") == good
    assert sorted(p.name for p in save_dir.glob("checkpoint_[0-9]*")) == numbered
    log = _strict_lines(save_dir / "train_log.jsonl")
    assert [r["update"] for r in log] == list(range(1, 13))
    assert log[-1]["skipped"] and None in (log[-1]["loss"], log[-1]["gnorm"]) and "skipped" not in log[-2]
    # Rerunning the sane command resumes from the last good checkpoint.
    assert main(_train(corpus_dir, save_dir, "--max-update", "15")) == 0
    assert "resuming at update 10" in capsys.readouterr().out


def test_max_nonfinite_updates_skips_that_many_in_a_row_before_stopping(corpus_dir, tmp_path, capsys):
    save_dir = tmp_path / "run"
    rc = main(_train(corpus_dir, save_dir, "--max-update", "40", "--lr", "1000", "--warmup-updates", "0",
                     "--max-nonfinite-updates", "3"))
    err = capsys.readouterr().err
    assert rc == 3 and "(3 updates in a row)" in err and "no checkpoint had been saved yet" in err
    log = _strict_lines(save_dir / "train_log.jsonl")
    assert [bool(r.get("skipped")) for r in log] == [False, True, True, True]
    assert not (save_dir / "checkpoint_last").exists()


def test_a_missing_trainer_state_is_refused_unless_reset_optimizer_says_so(corpus_dir, tmp_path, capsys):
    save_dir = tmp_path / "run"
    assert main(_train(corpus_dir, save_dir, "--max-update", "5")) == 0
    (save_dir / "checkpoint_last" / "trainer_state.pt").unlink()
    before = _digest(save_dir)
    capsys.readouterr()
    assert main(_train(corpus_dir, save_dir, "--max-update", "10")) == 2
    err = capsys.readouterr().err
    assert "has no trainer_state.pt" in err and "--reset-optimizer" in err
    assert _digest(save_dir) == before  # neither the log nor a checkpoint was touched
    assert main(_train(corpus_dir, save_dir, "--max-update", "3", "--reset-optimizer")) == 0
    out = capsys.readouterr().out
    assert "continuing from its weights with a fresh optimizer" in out
    assert [r["update"] for r in _strict_lines(save_dir / "train_log.jsonl")] == [1, 2, 3]


def test_a_checkpoint_last_that_is_a_file_is_refused(corpus_dir, tmp_path, capsys):
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    (save_dir / "checkpoint_last").write_text("not a checkpoint")
    (save_dir / "train_log.jsonl").write_text('{"update": 1, "loss": 3.0}\n')
    before = _digest(save_dir)
    assert main(_train(corpus_dir, save_dir, "--max-update", "5")) == 2
    assert "checkpoint_last is a file" in capsys.readouterr().err
    assert _digest(save_dir) == before


def _hold_lock(save_dir: Path) -> subprocess.Popen:
    """Another process holding SAVE_DIR's lock, as a running training would."""
    code = ("import sys, time; from pathlib import Path; from layerdrop.run_lock import SaveDirLock\n"
            "with SaveDirLock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(300)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(save_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_on_the_same_save_dir_is_refused_and_a_dead_owner_frees_it(corpus_dir, tmp_path, capsys):
    save_dir = tmp_path / "run"
    holder = _hold_lock(save_dir)
    try:
        assert main(_train(corpus_dir, save_dir, "--max-update", "3")) == 2
        err = capsys.readouterr().err
        assert f"in use by another training run (pid {holder.pid} on" in err
        assert not (save_dir / "train_log.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The owner died without cleaning up: its lock file is still there, but stale.
    assert (save_dir / ".lock").read_text().startswith(f"pid {holder.pid}")
    assert main(_train(corpus_dir, save_dir, "--max-update", "3")) == 0
    assert (save_dir / ".lock").read_text() == ""  # released on exit


def test_the_lock_is_released_when_a_run_fails_and_leaves_no_empty_directory(tmp_path, capsys):
    save_dir = tmp_path / "new"
    assert main(["train", "--data", str(tmp_path / "missing"), "--save-dir", str(save_dir), *TINY_TRAIN]) == 2
    assert not save_dir.exists()
    with SaveDirLock(save_dir):  # taken again at once
        pass


def test_an_unwritable_save_dir_is_refused_before_training(corpus_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(_train(corpus_dir, blocker / "run", "--max-update", "3")) == 2
    assert "--save-dir: cannot write in" in capsys.readouterr().err
    assert main(_train(corpus_dir, blocker, "--max-update", "3")) == 2
    assert "is a file" in capsys.readouterr().err


def test_too_little_free_space_is_refused_before_training(corpus_dir, tmp_path, capsys, monkeypatch):
    real = layerdrop.checkpoint.shutil.disk_usage
    monkeypatch.setattr(layerdrop.checkpoint.shutil, "disk_usage", lambda path: real(path)._replace(free=10_000))
    assert main(_train(corpus_dir, tmp_path / "run", "--max-update", "3")) == 2
    assert "MB free; saving this model needs about" in capsys.readouterr().err
    assert not (tmp_path / "run" / "train_log.jsonl").exists() or not (tmp_path / "run" / "train_log.jsonl").read_text()


def test_a_full_disk_during_a_save_removes_the_partial_write_and_keeps_the_old_checkpoint(corpus_dir, tmp_path, capsys,
                                                                                          monkeypatch):
    save_dir = tmp_path / "run"
    assert main(_train(corpus_dir, save_dir, "--max-update", "5")) == 0
    good = _digest(save_dir / "checkpoint_last")

    def disk_full(tensors, path, metadata=None):
        Path(path).write_bytes(b"\0" * 1000)  # a partial file, as a real full disk leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(layerdrop.checkpoint, "save_file", disk_full)
    capsys.readouterr()
    assert main(_train(corpus_dir, save_dir, "--max-update", "10")) == 2
    err = capsys.readouterr().err
    assert "cannot write checkpoint_last (No space left on device" in err and "Traceback" not in err
    assert not list(save_dir.glob(".*.tmp-*"))
    assert _digest(save_dir / "checkpoint_last") == good
    monkeypatch.undo()
    assert main(_train(corpus_dir, save_dir, "--max-update", "10")) == 0
    assert "resuming at update 5" in capsys.readouterr().out


def test_half_written_checkpoints_of_a_killed_run_are_removed_at_the_next_start(corpus_dir, tmp_path, capsys):
    save_dir = tmp_path / "run"
    stale = save_dir / ".checkpoint_last.tmp-999999"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"\0" * 100)
    assert main(_train(corpus_dir, save_dir, "--max-update", "3")) == 0
    assert "removed 1 half-written checkpoint(s)" in capsys.readouterr().out
    assert not stale.exists()


@pytest.mark.skipif(sys.platform != "linux", reason="the kill test relies on Linux process semantics")
def test_kill_during_training_leaves_a_lock_the_next_run_takes_over(corpus_dir, tmp_path):
    save_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "layerdrop", *_train(corpus_dir, save_dir, "--max-update", "100000")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (save_dir / "train_log.jsonl").exists() or not (save_dir / "train_log.jsonl").read_text():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    second = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and f"(pid {proc.pid} on" in second.stderr
    proc.kill()
    proc.wait()
    resumed = subprocess.run([*argv[:-1], "8"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr


def test_a_batch_that_cannot_fit_in_memory_is_refused_before_training(corpus_dir, tmp_path, capsys):
    assert main(_train(corpus_dir, tmp_path / "run", "--max-update", "3", "--batch-size", "1000000")) == 2
    err = capsys.readouterr().err
    assert "--batch-size 1000000: one update of 1000000 x 16 tokens would need about" in err
    assert not (tmp_path / "run").exists()


def test_a_world_size_without_torchrun_is_refused_rather_than_racing_for_the_save_dir(corpus_dir, tmp_path, capsys,
                                                                                      monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    assert main(_train(corpus_dir, tmp_path / "run", "--max-update", "3")) == 2
    assert "WORLD_SIZE is 2 but MASTER_ADDR is not set" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_after_reset_optimizer_rotation_removes_the_oldest_checkpoints_not_the_new_ones(corpus_dir, tmp_path, capsys):
    save_dir = tmp_path / "run"
    first = ["train", "--data", str(corpus_dir), "--save-dir", str(save_dir), *TINY_TRAIN, "--keep-interval-updates", "2",
             "--validate-interval-updates", "4"]
    assert main([*first, "--max-update", "8"]) == 0
    (save_dir / "checkpoint_last" / "trainer_state.pt").unlink()
    assert main([*first, "--max-update", "3", "--reset-optimizer"]) == 0  # the count restarts: checkpoint_3 is newest
    assert sorted(p.name for p in save_dir.glob("checkpoint_[0-9]*")) == ["checkpoint_3", "checkpoint_8"]


def test_a_reader_never_renames_a_half_swapped_checkpoint(corpus_dir, tmp_path, capsys):
    save_dir = tmp_path / "run"
    assert main(_train(corpus_dir, save_dir, "--max-update", "5")) == 0
    last = save_dir / "checkpoint_last"
    last.rename(save_dir / "checkpoint_last.old")  # a save cut short between its two renames
    capsys.readouterr()
    assert main(["eval", "--path", str(last), "--max-valid-steps", "1"]) == 0
    assert not last.exists() and (save_dir / "checkpoint_last.old").is_dir()  # only the owning training renames it back
    assert main(_train(corpus_dir, save_dir, "--max-update", "6")) == 0
    assert "resuming at update 5" in capsys.readouterr().out and last.is_dir()
