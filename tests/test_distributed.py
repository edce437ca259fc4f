"""torchrun data parallelism with LayerDrop: 2 CPU processes (gloo), each command under a timeout."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from layerdrop.checkpoint import load_checkpoint

from conftest import run_cli

# Dropout 0: ranks draw different dropout masks, and these tests compare weights with one process.
MODEL = ["--decoder-layers", "4", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
         "--decoder-attention-heads", "2", "--tokens-per-sample", "16", "--dropout", "0", "--decoder-layerdrop", "0.5",
         "--warmup-updates", "2", "--no-progress-bar", "--max-valid-steps", "2", "--weight-decay", "0.5"]


def torchrun(*args: str, timeout: float = 240, check: bool = True, **popen) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "layerdrop", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


def losses(save_dir):
    return [(r["update"], r["loss"], r["layers"]) for r in map(json.loads, (save_dir / "train_log.jsonl").read_text().splitlines())]


def test_two_processes_train_the_weights_one_process_trains(tmp_path, corpus_dir):
    flags = ["--data", str(corpus_dir), "--max-update", "5", "--batch-size", "4", "--validate-interval-updates", "5", *MODEL]
    run_cli("train", "--save-dir", str(tmp_path / "one"), *flags)
    proc = torchrun("train", "--save-dir", str(tmp_path / "two"), *flags)
    assert "data parallel: 2 processes" in proc.stdout
    assert proc.stdout.count("valid at update 5") == 1  # rank 0 alone logs
    one = load_checkpoint(tmp_path / "one" / "checkpoint_last").state_dict
    two = load_checkpoint(tmp_path / "two" / "checkpoint_last").state_dict
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=2e-6, rtol=1e-5, msg=name)
    logged_one, logged_two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [r[2] for r in logged_one] == [r[2] for r in logged_two]  # the same layers skipped on the same updates
    assert min(r[2] for r in logged_one) < 4  # and some were skipped
    for a, b in zip(logged_one, logged_two):
        assert b[1] == pytest.approx(a[1], rel=1e-5)


def test_two_hundred_updates_at_half_rate_finish(tmp_path, corpus_dir):
    save = tmp_path / "long"
    torchrun("train", "--data", str(corpus_dir), "--save-dir", str(save), "--max-update", "200", "--batch-size", "2",
             "--validate-interval-updates", "100", *MODEL, timeout=300)
    logged = losses(save)
    assert [r[0] for r in logged] == list(range(1, 201)) and len({r[2] for r in logged}) > 2


def test_killed_and_resumed_under_torchrun_logs_the_losses_of_an_unbroken_run(tmp_path, corpus_dir):
    flags = ["--data", str(corpus_dir), "--max-update", "16", "--batch-size", "4", "--validate-interval-updates", "4", *MODEL]
    torchrun("train", "--save-dir", str(tmp_path / "unbroken"), *flags)
    broken = tmp_path / "broken"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "layerdrop",
               "train", "--save-dir", str(broken), *flags]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    while not (broken / "checkpoint_8").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, mid-run
    proc.wait(timeout=60)
    assert (broken / "checkpoint_last").is_dir()
    proc = torchrun("train", "--save-dir", str(broken), *flags)
    assert "resuming at update" in proc.stdout
    assert losses(broken) == losses(tmp_path / "unbroken")


def test_a_batch_smaller_than_the_world_is_refused(tmp_path, corpus_dir):
    proc = torchrun("train", "--data", str(corpus_dir), "--save-dir", str(tmp_path / "x"), "--max-update", "2",
                    "--batch-size", "1", *MODEL, check=False)
    assert proc.returncode != 0
    assert "--batch-size 1: the global batch is split over 2 processes" in proc.stdout + proc.stderr
