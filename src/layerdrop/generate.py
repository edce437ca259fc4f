"""Sampling from a language model with a KV cache: each new token costs one position, not the whole prefix."""

from __future__ import annotations

import torch

from layerdrop.models.transformer_lm import TransformerLM


@torch.no_grad()
def generate(
    model: TransformerLM,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Sample ``max_new_tokens`` after ``prompt`` (temperature 0: greedy)."""
    model.eval()
    context = model.cfg.tokens_per_sample
    tokens = list(prompt)[-context:] or [0]
    window = len(tokens)  # how many of the most recent tokens the cache holds
    caches = model.new_caches()
    logits, _ = model(torch.tensor([tokens]), caches=caches, start_pos=0)
    out: list[int] = []
    for _ in range(max_new_tokens):
        next_id = _sample(logits[0, -1], temperature, top_k, generator)
        out.append(next_id)
        tokens.append(next_id)
        if window == context:
            # Learned positions end at the context length: re-encode the most recent half window,
            # so the next context/2 tokens are cheap again.
            window = min(len(tokens), max(1, context // 2))
            caches = model.new_caches()
            logits, _ = model(torch.tensor([tokens[-window:]]), caches=caches, start_pos=0)
        else:
            logits, _ = model(torch.tensor([[next_id]]), caches=caches, start_pos=window)
            window += 1
    return out


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        threshold = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))
