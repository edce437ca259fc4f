"""Beam search for encoder-decoder models, batched over sentences and beams, with a KV cache.

Hypotheses are ranked by total log-probability divided by length ** lenpen (fairseq's rule, the
length counting the end-of-sentence token). A sentence is done when ``beam`` hypotheses have
ended. With ``beam=1`` this is greedy decoding.
"""

from __future__ import annotations

import torch

from layerdrop.models.translation import TransformerTranslation


@torch.no_grad()
def beam_search(
    model: TransformerTranslation, src_tokens: torch.Tensor, beam: int = 5, lenpen: float = 1.0,
    max_len_a: float = 1.5, max_len_b: int = 10,
) -> list[list[int]]:
    """Best target token ids (without BOS/EOS) for each source row of ``src_tokens`` (run in eval mode)."""
    was_training = model.training
    model.eval()
    try:
        return _beam_search(model, src_tokens, beam, lenpen, max_len_a, max_len_b)
    finally:
        model.train(was_training)


def _beam_search(model, src_tokens, beam, lenpen, max_len_a, max_len_b) -> list[list[int]]:
    cfg = model.cfg
    batch = src_tokens.shape[0]
    src_lengths = src_tokens.ne(cfg.pad_id).sum(dim=1)
    # Each sentence's own length limit (not the batch's), so batching never changes a translation.
    limits = (max_len_a * src_lengths.float() + max_len_b).long().clamp(max=cfg.max_target_positions - 1)
    row_limits = limits.repeat_interleave(beam)
    max_len = int(limits.max())
    memory, memory_mask = model.encode(src_tokens)
    memory = memory.repeat_interleave(beam, dim=0)
    memory_mask = memory_mask.repeat_interleave(beam, dim=0)
    caches = model.new_caches()
    tokens = torch.full((batch * beam, 1), cfg.bos_id, dtype=torch.long)
    scores = torch.zeros(batch, beam)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch
    for step in range(max_len):
        logits = model.decode(tokens[:, -1:], memory, memory_mask, caches, start_pos=step)[:, -1]
        lprobs = torch.log_softmax(logits.float(), dim=-1)
        lprobs[:, cfg.pad_id] = float("-inf")
        lprobs[:, cfg.bos_id] = float("-inf")
        out_of_room = row_limits.eq(step + 1)  # these hypotheses must end here
        if out_of_room.any():
            eos = lprobs[out_of_room, cfg.eos_id].clone()
            lprobs[out_of_room] = float("-inf")
            lprobs[out_of_room, cfg.eos_id] = eos
        vocab = lprobs.shape[1]
        candidates = (scores.view(-1, 1) + lprobs).view(batch, beam * vocab)
        top_scores, top_index = candidates.topk(min(2 * beam, beam * vocab), dim=1)
        next_rows, next_tokens, next_scores = [], [], []
        for b in range(batch):
            chosen: list[tuple[int, int, float]] = []
            if not done[b]:
                for score, index in zip(top_scores[b].tolist(), top_index[b].tolist()):
                    if score == float("-inf"):
                        break
                    origin, token = divmod(index, vocab)
                    row = b * beam + origin
                    if token == cfg.eos_id:
                        hypothesis = tokens[row, 1:].tolist()
                        finished[b].append((score / (len(hypothesis) + 1) ** lenpen, hypothesis))
                        if len(finished[b]) >= beam:
                            done[b] = True
                            break
                    else:
                        chosen.append((row, token, score))
                        if len(chosen) == beam:
                            break
            if done[b] or not chosen:
                done[b] = True
                chosen = [(b * beam, cfg.pad_id, float("-inf"))] * beam  # placeholder rows, never extended
            chosen += [chosen[-1][:2] + (float("-inf"),)] * (beam - len(chosen))
            for row, token, score in chosen:
                next_rows.append(row)
                next_tokens.append(token)
                next_scores.append(score)
        if all(done):
            break
        order = torch.tensor(next_rows)
        for cache in caches:
            cache.reorder(order)
        memory, memory_mask = memory.index_select(0, order), memory_mask.index_select(0, order)
        row_limits = row_limits.index_select(0, order)
        tokens = torch.cat([tokens.index_select(0, order), torch.tensor(next_tokens).view(-1, 1)], dim=1)
        scores = torch.tensor(next_scores).view(batch, beam)
    return [max(hyps, key=lambda h: h[0])[1] if hyps else [] for hyps in finished]


@torch.no_grad()
def greedy_decode(model: TransformerTranslation, src_tokens: torch.Tensor, max_len_a: float = 1.5, max_len_b: int = 10) -> list[list[int]]:
    """Plain greedy decoding without a cache (the reference the beam-1 test compares against); eval mode."""
    was_training = model.training
    model.eval()
    try:
        return _greedy(model, src_tokens, max_len_a, max_len_b)
    finally:
        model.train(was_training)


def _greedy(model, src_tokens, max_len_a, max_len_b) -> list[list[int]]:
    cfg = model.cfg
    out = []
    for row in src_tokens:
        src = row[row.ne(cfg.pad_id)].unsqueeze(0)
        max_len = min(cfg.max_target_positions - 1, int(max_len_a * src.shape[1] + max_len_b))
        memory, mask = model.encode(src)
        tokens = [cfg.bos_id]
        for step in range(max_len):
            logits = model.decode(torch.tensor([tokens]), memory, mask)[0, -1]
            logits[cfg.pad_id] = logits[cfg.bos_id] = float("-inf")
            if step == max_len - 1:
                break
            nxt = int(logits.argmax())
            if nxt == cfg.eos_id:
                break
            tokens.append(nxt)
        out.append(tokens[1:])
    return out
