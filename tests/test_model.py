import torch

from layerdrop.generate import generate
from layerdrop.models import num_params

from conftest import tiny_model


def test_kv_cache_decoding_matches_full_forward():
    model = tiny_model().eval()
    tokens = torch.randint(0, 50, (1, 12))
    full, _ = model(tokens)
    caches = model.new_caches()
    prefix, _ = model(tokens[:, :5], caches=caches, start_pos=0)
    steps = [prefix]
    for pos in range(5, 12):
        logits, _ = model(tokens[:, pos : pos + 1], caches=caches, start_pos=pos)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_kv_cache_handles_multi_token_chunks():
    model = tiny_model().eval()
    tokens = torch.randint(0, 50, (1, 12))
    full, _ = model(tokens)
    caches = model.new_caches()
    a, _ = model(tokens[:, :4], caches=caches, start_pos=0)
    b, _ = model(tokens[:, 4:12], caches=caches, start_pos=4)
    assert torch.allclose(torch.cat([a, b], dim=1), full, atol=1e-5)


def test_greedy_generation_equals_full_recompute_past_the_context():
    model = tiny_model().eval()  # context 16
    prompt = [1, 2, 3]
    out = generate(model, prompt, max_new_tokens=40, temperature=0)
    # Reference without a cache: the same window rule (after a full window, restart from the last 8 tokens).
    tokens, window = list(prompt), len(prompt)
    for _ in range(40):
        logits, _ = model(torch.tensor([tokens[-window:]]))
        tokens.append(int(logits[0, -1].argmax()))
        window = 8 if window == 16 else window + 1
    assert out == tokens[3:]


def test_causality():
    model = tiny_model().eval()
    tokens = torch.randint(0, 50, (1, 10))
    changed = tokens.clone()
    changed[0, 7] = (changed[0, 7] + 1) % 50
    a, _ = model(tokens)
    b, _ = model(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_post_ln_and_untied_embeddings_build_and_learn():
    model = tiny_model(decoder_normalize_before=False, share_decoder_input_output_embed=False)
    assert model.decoder.layer_norm is None and model.output_projection is not None
    tied = tiny_model()
    assert num_params(model) - num_params(tied) == 50 * 32 - 2 * 32  # extra output matrix, no final LayerNorm
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    tokens = torch.randint(0, 50, (4, 16))
    losses = []
    for _ in range(20):
        _, loss = model(tokens, tokens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
