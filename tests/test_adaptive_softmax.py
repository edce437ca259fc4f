"""The adaptive softmax (--adaptive-softmax-cutoff): exact probabilities, cheap loss, and the whole CLI."""

import math

import pytest
import torch
import torch.nn.functional as F

from layerdrop.errors import UserError

from conftest import TINY_TRAIN, run_cli, tiny_config, tiny_model


def test_loss_is_the_cross_entropy_of_a_normalised_distribution():
    model = tiny_model(adaptive_softmax_cutoff="10,30").eval()
    tokens, targets = torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16))
    log_probs, _ = model(tokens)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, 16), atol=1e-5)
    logits, loss = model(tokens, targets)
    assert logits is None  # with targets only the target's cluster is scored
    assert math.isclose(loss.item(), F.cross_entropy(log_probs.reshape(-1, 50), targets.reshape(-1)).item(), rel_tol=1e-5)


def test_gradients_reach_the_tail_clusters():
    model = tiny_model(adaptive_softmax_cutoff="10,30")
    _, loss = model(torch.randint(0, 50, (2, 16)), torch.full((2, 16), 45))  # every target in the last cluster
    loss.backward()
    assert model.adaptive_softmax.tail[1][1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cutoff", ["30,10", "0,10", "10,50", "ten", "10,10"])
def test_bad_cutoffs_name_the_flag(cutoff):
    with pytest.raises(UserError, match="--adaptive-softmax-cutoff: got"):
        tiny_config(adaptive_softmax_cutoff=cutoff).validate()
    tiny_config(adaptive_softmax_cutoff="10,49").validate()  # the largest torch accepts: one word in the last cluster


@pytest.mark.parametrize("factor", [1.0, 0.5, float("inf"), 64.0])  # 64: width 32 // 64**2 leaves the last cluster 0 dims
def test_bad_factors_name_the_flag(factor):
    with pytest.raises(UserError, match="--adaptive-softmax-factor: got"):
        tiny_config(adaptive_softmax_cutoff="10,30", adaptive_softmax_factor=factor).validate()


def test_word_lm_trains_prunes_and_generates(tmp_path):
    words = "the king is dead . long live the king . " * 40 + "a horse , a horse , my kingdom for a horse . " * 40
    data = tmp_path / "words"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / f"{split}.txt").write_text(words.replace(" . ", " .\n"))
    save = tmp_path / "run"
    run_cli("train", "--data", str(data), "--tokenizer", "word", "--adaptive-softmax-cutoff", "3,8", "--save-dir", str(save),
            "--max-update", "30", "--lr", "3e-3", "--decoder-layerdrop", "0.2", *TINY_TRAIN)
    full = run_cli("eval", "--path", str(save / "checkpoint_last"), "--split", "test").stdout
    pruned = run_cli("eval", "--path", str(save / "checkpoint_last"), "--split", "test", "--decoder-layers-to-keep", "0,2").stdout
    ppl = [float(out.strip().splitlines()[-1].split()[4]) for out in (full, pruned)]
    assert all(1 < p < 15 for p in ppl), ppl  # 13 words, <unk> and <eos>: below uniform, so it learned
    sampled = run_cli("generate", "--path", str(save / "checkpoint_last"), "--max-new-tokens", "5").stdout.split()
    assert sampled and set(sampled) <= set(words.split()) | {"<unk>"}, sampled
    refused = run_cli("train", "--data", str(data), "--tokenizer", "word", "--adaptive-softmax-cutoff", "4,8",
                      "--save-dir", str(save), "--max-update", "40", *TINY_TRAIN, check_rc=None)
    assert refused.returncode != 0 and "--adaptive-softmax-cutoff" in refused.stderr and "Traceback" not in refused.stderr
