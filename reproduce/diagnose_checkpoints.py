"""What a trained translation model's decoder does at full depth against the depths it was trained at.

For each checkpoint, validation loss (nats per target token, no label smoothing) with:

- every layer (how it is served);
- every layer's residual branch scaled by a factor s (s = 1 - p is what ordinary dropout would do at
  inference; the paper does not rescale);
- sub-networks drawn as in training (each decoder layer kept with probability 1 - p, a new draw per
  batch; dropout off): the depths LayerDrop actually trained;
- each decoder layer removed alone (how much the model leans on any one layer).

How much the model uses the source: validation loss with each batch's source sentences rotated by one
(every target paired with another sentence's source) minus the true validation loss.

And how well a LayerDrop step teaches the full-depth model: the cosine between the full model's gradient
on a training batch and the gradient of a sub-network drawn at rate p on the same batch, against the
cosine between the full model's gradients on two different batches (what a fresh batch agrees with).

And, at this checkpoint, each decoder layer's share of the residual stream (RMS of its output added to
the stream, over the RMS of the stream it reads) and each layer's gradient norm on one batch.

    python reproduce/diagnose_checkpoints.py --p 0.2 --out docs/results/x.json CHECKPOINT [CHECKPOINT ...]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from layerdrop.checkpoint import build_model, load_checkpoint
from layerdrop.tasks.translation import TranslationTask
from layerdrop.train import TrainConfig
from study import SHARED_DATA


class DecoderProbe:
    """Forward hooks on the decoder layers: scale or skip each layer's residual branch, record its size."""

    def __init__(self, layers):
        self.scale = [1.0] * len(layers)
        self.branch_rms: list[list[float]] = [[] for _ in layers]
        self.stream_rms: list[list[float]] = [[] for _ in layers]
        self.handles = [layer.register_forward_hook(self.hook(i)) for i, layer in enumerate(layers)]

    def hook(self, index: int):
        def apply(module, inputs, output):
            x = inputs[0]
            branch = output - x
            self.branch_rms[index].append(branch.pow(2).mean().sqrt().item())
            self.stream_rms[index].append(x.pow(2).mean().sqrt().item())
            return x + self.scale[index] * branch
        return apply

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def valid_loss(task: TranslationTask, model, probe: DecoderProbe, scales=None, p: float = 0.0, seed: int = 0) -> float:
    """Validation loss; ``scales`` fixes each branch's factor, or ``p`` > 0 draws a sub-network per batch."""
    generator = torch.Generator().manual_seed(seed)
    total, tokens = 0.0, 0
    src_all, tgt_all = task.valid
    with torch.no_grad():
        for start in range(0, len(src_all), 64):
            if p > 0:
                probe.scale = (torch.rand(len(probe.scale), generator=generator) >= p).float().tolist()
            elif scales is not None:
                probe.scale = list(scales)
            src, prev, target = task.batch(src_all[start:start + 64], tgt_all[start:start + 64])
            out = task.loss(model, src, prev, target, 0.0)
            total += out.loss.item() * out.tokens
            tokens += out.tokens
    probe.scale = [1.0] * len(probe.scale)
    return total / tokens


def source_use(task: TranslationTask, model) -> float:
    """Loss with mismatched sources minus loss with the true ones (0: the decoder ignores the source)."""
    src_all, tgt_all = task.valid
    rotated = src_all[1:] + src_all[:1]
    total, tokens = {True: 0.0, False: 0.0}, 0
    with torch.no_grad():
        for start in range(0, len(src_all), 64):
            for true in (True, False):
                sources = (src_all if true else rotated)[start:start + 64]
                src, prev, target = task.batch(sources, tgt_all[start:start + 64])
                out = task.loss(model, src, prev, target, 0.0)
                total[true] += out.loss.item() * out.tokens
            tokens += out.tokens
    return (total[False] - total[True]) / tokens


def load(checkpoint: Path, data: Path):
    ckpt = load_checkpoint(checkpoint, "checkpoint", expected_type="transformer_translation")
    model = build_model(ckpt.config, ckpt.state_dict, "transformer_translation", str(checkpoint), lambda _: None)
    task = TranslationTask(TrainConfig(task="translation", data=str(data), batch_size=64))
    task.prepare(ckpt.tokenizer, model.cfg)
    return task, model.eval()


def diagnose(checkpoint: Path, p: float, data: Path) -> dict:
    task, model = load(checkpoint, data)
    layers = model.decoder.layers
    n = len(layers)
    probe = DecoderProbe(list(layers))
    full = valid_loss(task, model, probe)
    shares = [sum(b) / sum(s) for b, s in zip(probe.branch_rms, probe.stream_rms)]
    result = {"checkpoint": str(checkpoint), "full": full, "branch_over_stream_rms": shares,
              "scaled": {}, "sampled": {}, "without_layer": []}
    for s in sorted({1 - p, 0.9, 0.8}):
        result["scaled"][f"{s:.2f}"] = valid_loss(task, model, probe, scales=[s] * n)
    for rate in sorted({p, 0.2, 0.5} - {0.0}):
        result["sampled"][f"{rate:.2f}"] = sum(valid_loss(task, model, probe, p=rate, seed=k) for k in range(3)) / 3
    for i in range(n):
        result["without_layer"].append(valid_loss(task, model, probe, scales=[0.0 if j == i else 1.0 for j in range(n)]))
    # Gradient norm of each decoder layer on the first validation batch, in training mode without dropout.
    src, prev, target = task.batch(task.valid[0][:64], task.valid[1][:64])
    model.zero_grad()
    task.loss(model, src, prev, target, 0.0).loss.backward()
    result["grad_norm"] = [torch.sqrt(sum(q.grad.pow(2).sum() for q in layer.parameters() if q.grad is not None)).item()
                           for layer in layers]
    result["gradient_cosine"] = gradient_agreement(task, model, p)
    result["source_use"] = source_use(task, model)
    probe.remove()
    return result


def gradient_agreement(task: TranslationTask, model, p: float, batches: int = 6) -> dict[str, float]:
    """Mean cosines (dropout off): full vs sub-network on one batch, full vs full on two batches."""
    import random

    from layerdrop.nn.drop_plan import draw_stack_plan

    def gradient(batch, drop: bool, update: int) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        layers = model.decoder.layers
        model.train()
        for module in model.modules():  # LayerDrop only: no ordinary dropout in this comparison
            if isinstance(module, torch.nn.Dropout):
                module.eval()
        plan = {"decoder": draw_stack_plan(7, update, "decoder", [p if drop else 0.0] * len(layers))}
        task.train_outputs(model, batch, plan).loss.backward()
        model.eval()
        return torch.cat([(q.grad if q.grad is not None else torch.zeros_like(q)).flatten() for q in model.parameters()])

    same, fresh = [], []
    rng = random.Random(0)
    for k in range(batches):
        first, second = task.train_batch(None, rng.randrange(400)), task.train_batch(None, rng.randrange(400))
        full = gradient(first, False, k)
        update = k
        sub = gradient(first, True, update)
        while torch.equal(sub, full):  # a draw that dropped nothing says nothing: take the next one
            update += 1000
            sub = gradient(first, True, update)
        same.append(torch.nn.functional.cosine_similarity(full, sub, dim=0).item())
        fresh.append(torch.nn.functional.cosine_similarity(full, gradient(second, False, k), dim=0).item())
    return {"full_vs_subnetwork_same_batch": sum(same) / batches, "full_vs_full_other_batch": sum(fresh) / batches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--p", type=float, default=0.2, help="the LayerDrop rate to compare against")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "multi30k-de-en")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--source-use-only", action="store_true", help="measure only how much each model uses the source")
    args = parser.parse_args()
    if args.source_use_only:
        results = {str(c): {"source_use": source_use(*load(c, args.data))} for c in args.checkpoints}
    else:
        results = {str(c): diagnose(c, args.p, args.data) for c in args.checkpoints}
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, args.out)
    for name, r in results.items():
        print(name, json.dumps({k: v for k, v in r.items() if k != "checkpoint"}))


if __name__ == "__main__":
    main()
