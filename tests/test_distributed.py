"""torchrun data parallelism with LayerDrop: 2 CPU processes (gloo), each command under a timeout."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from layerdrop.checkpoint import load_checkpoint

from conftest import run_cli, write_corpus

# Dropout 0: ranks draw different dropout masks, and these tests compare weights with one process.
MODEL = ["--decoder-layers", "4", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
         "--decoder-attention-heads", "2", "--tokens-per-sample", "16", "--dropout", "0", "--decoder-layerdrop", "0.5",
         "--warmup-updates", "2", "--no-progress-bar", "--max-valid-steps", "2", "--weight-decay", "0.5"]


def torchrun(*args: str, timeout: float = 240, check: bool = True, script: bool = False) -> subprocess.CompletedProcess:
    """``torchrun -m layerdrop ARGS`` (``script``: the ``layerdrop`` console script instead of ``-m``)."""
    program = [str(Path(sys.executable).parent / "layerdrop")] if script else ["-m", "layerdrop"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *program, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


def losses(save_dir):
    return [(r["update"], r["loss"], r["layers"]) for r in map(json.loads, (save_dir / "train_log.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("data") / "corpus")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, corpus):
    """5 LayerDrop updates in one process: the reference every data-parallel variant must reproduce."""
    save = tmp_path_factory.mktemp("one")
    run_cli("train", "--save-dir", str(save), *FIVE_UPDATES(corpus))
    return save


def FIVE_UPDATES(corpus_dir):
    return ["--data", str(corpus_dir), "--max-update", "5", "--batch-size", "4", "--validate-interval-updates", "5", *MODEL]


# DDP; DDP with activation checkpointing per layer (fails with LayerDrop in transformers, #30113); FSDP2.
@pytest.mark.parametrize("extra", [[], ["--checkpoint-activations"], ["--fsdp"]], ids=["ddp", "ddp+ac", "fsdp2"])
def test_two_processes_train_the_weights_one_process_trains(tmp_path, corpus, one_process, extra):
    proc = torchrun("train", "--save-dir", str(tmp_path / "two"), *FIVE_UPDATES(corpus), *extra)
    assert "data parallel: 2 processes" in proc.stdout
    assert proc.stdout.count("valid at update 5") == 1  # rank 0 alone logs
    one = load_checkpoint(one_process / "checkpoint_last", with_trainer_state=True)
    two = load_checkpoint(tmp_path / "two" / "checkpoint_last", with_trainer_state=True)
    for name in one.state_dict:
        torch.testing.assert_close(two.state_dict[name], one.state_dict[name], atol=2e-6, rtol=1e-5, msg=name)
    moments_one, moments_two = one.trainer_state["optimizer"]["state"], two.trainer_state["optimizer"]["state"]
    assert sorted(moments_one) == sorted(moments_two)  # skipped-every-time parameters have no state on either
    for index in moments_one:
        torch.testing.assert_close(moments_two[index]["exp_avg"], moments_one[index]["exp_avg"], atol=1e-7, rtol=1e-4)
    logged_one, logged_two = losses(one_process), losses(tmp_path / "two")
    assert [r[2] for r in logged_one] == [r[2] for r in logged_two]  # the same layers skipped on the same updates
    assert min(r[2] for r in logged_one) < 4  # and some were skipped
    for a, b in zip(logged_one, logged_two):
        assert b[1] == pytest.approx(a[1], rel=1e-5)


def test_two_hundred_updates_at_half_rate_finish_under_the_console_script(tmp_path, corpus_dir):
    save = tmp_path / "long"
    torchrun("train", "--data", str(corpus_dir), "--save-dir", str(save), "--max-update", "200", "--batch-size", "2",
             "--validate-interval-updates", "100", *MODEL, timeout=300, script=True)
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


def test_fsdp2_resumes_a_checkpoint_of_one_process_exactly(tmp_path, corpus_dir):
    """The optimizer state is saved as one process saves it, and FSDP2 loads it shard by shard."""
    flags = ["--data", str(corpus_dir), "--max-update", "8", "--batch-size", "4", "--validate-interval-updates", "4", *MODEL]
    run_cli("train", "--save-dir", str(tmp_path / "one"), *flags)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(tmp_path / "one" / "checkpoint_4", resumed / "checkpoint_last")
    proc = torchrun("train", "--save-dir", str(resumed), "--fsdp", *flags)
    assert "resuming at update 4" in proc.stdout
    for a, b in zip(losses(tmp_path / "one")[4:], losses(resumed), strict=True):
        assert a[0] == b[0] and a[2] == b[2] and b[1] == pytest.approx(a[1], rel=1e-5)


def test_fsdp_needs_torchrun(tmp_path, corpus_dir):
    proc = run_cli("train", "--save-dir", str(tmp_path / "x"), "--fsdp", *FIVE_UPDATES(corpus_dir), check_rc=2)
    assert "--fsdp: shards the model over data-parallel processes" in proc.stderr and "Traceback" not in proc.stderr


def test_a_batch_smaller_than_the_world_is_refused(tmp_path, corpus_dir):
    proc = torchrun("train", "--data", str(corpus_dir), "--save-dir", str(tmp_path / "x"), "--max-update", "2",
                    "--batch-size", "1", *MODEL, check=False)
    assert proc.returncode != 0
    assert "--batch-size 1: the global batch is split over 2 processes" in proc.stdout + proc.stderr
