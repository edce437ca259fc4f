"""--compile (layers compiled one by one) and --amp bf16, with LayerDrop plans that change every update."""

import json

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from layerdrop.nn.drop_plan import kept_layers
from layerdrop.nn.stack import model_drop_plan
from layerdrop.parallelize import autocast, compile_layers

from conftest import TINY_TRAIN, run_cli, tiny_model


def test_compiled_layers_follow_each_new_plan_without_recompiling():
    torch._dynamo.reset()
    counters.clear()
    eager, compiled = tiny_model(decoder_layerdrop=0.5).train(), tiny_model(decoder_layerdrop=0.5).train()
    compile_layers(compiled, backend="aot_eager")  # the graphs dynamo captures are the same for every backend
    tokens = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    kept, graphs = [], []
    for update in range(12):
        compiled.zero_grad(set_to_none=True)
        plan = model_drop_plan(compiled, 1, update)
        kept.append(tuple(kept_layers(plan["decoder"])))
        loss = compiled(tokens, tokens, plan=plan)[1]
        loss.backward()
        torch.testing.assert_close(loss, eager(tokens, tokens, plan=plan)[1])
        graphs.append(counters["stats"]["unique_graphs"])
    assert len(set(kept)) > 4  # the decisions stay random, update by update
    assert graphs == [1] * 12  # one graph, shared by every layer, compiled once: no plan recompiles it
    assert all(p.grad is None for i, layer in enumerate(compiled.decoder.layers) if i not in kept[-1]
               for p in layer.parameters())


def test_bf16_autocast_runs_the_matrix_products_in_bf16():
    model = tiny_model().train()
    seen = []
    model.decoder.layers[0].fc1.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    tokens = torch.randint(0, 50, (2, 8))
    with autocast("bf16"):
        loss = model(tokens, tokens)[1]
    assert seen == [torch.bfloat16] and loss.dtype == torch.float32 and torch.isfinite(loss)


def test_bf16_autocast_on_a_cpu_runs_attention_in_float32():
    """torch's CPU attention backward is slow in bf16, so attention alone stays float32 (and exact to it)."""
    from layerdrop.nn.attention import attend

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 8, 16, generator=generator).bfloat16().requires_grad_() for _ in range(3))
    with autocast("bf16"):
        y = attend(q, k, v, is_causal=True)
    assert y.dtype == torch.float32
    reference = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    torch.testing.assert_close(y, reference)
    y.sum().backward()
    assert q.grad.dtype == torch.bfloat16 and torch.isfinite(q.grad.float()).all()


def test_self_and_cross_attention_reach_sdpa_in_float32_under_cpu_bf16_autocast(monkeypatch):
    from layerdrop.models import TransformerTranslation, TransformerTranslationConfig

    seen, sdpa = [], torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: seen.append(q.dtype) or sdpa(q, k, v, **kw))
    model = TransformerTranslation(TransformerTranslationConfig(vocab_size=20, encoder_layers=1, decoder_layers=1,
                                                                encoder_embed_dim=16, decoder_embed_dim=16)).train()
    tokens = torch.randint(4, 20, (2, 6))
    with autocast("bf16"):
        model(tokens, tokens)
    assert len(seen) == 3 and set(seen) == {torch.float32}  # encoder self, decoder self and cross attention


def test_train_with_compile_and_bf16(tmp_path, corpus_dir):
    save = tmp_path / "c"
    proc = run_cli("train", "--data", str(corpus_dir), "--save-dir", str(save), "--max-update", "4",
                   "--decoder-layerdrop", "0.5", "--compile", "--amp", "bf16", *TINY_TRAIN)
    assert "layers compiled with torch.compile, bf16 autocast" in proc.stdout
    log = [json.loads(line) for line in (save / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(r["loss"] is not None for r in log)


def test_bad_amp_is_refused(tmp_path):
    proc = run_cli("train", "--save-dir", str(tmp_path / "x"), "--amp", "fp8", *TINY_TRAIN, check_rc=2)
    assert "--amp: got 'fp8'; valid: bf16" in proc.stderr and "Traceback" not in proc.stderr
