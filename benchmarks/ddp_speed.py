"""Data-parallel update time with LayerDrop against plain torch DDP, 2 processes side by side in one run.

Modes, taking turns in rounds on the same 2 processes (gloo, one thread each):

- ``torch DDP``: the model at p = 0 wrapped in ``torch.nn.parallel.DistributedDataParallel``, the usual step;
- ``layerdrop p=0`` / ``p=0.2`` / ``p=0.5``: layerdrop's data-parallel step as ``layerdrop train`` runs it
  under torchrun (plan drawn on every rank, rank-weighted loss, one all-reduce of the existing gradients);
- ``no layers``: every layer skipped, which measures the rest of the step.

    ideal saving(p) = (share of layers skipped) x (layer share of the p = 0 step)

Writes benchmarks/results/ddp_speed.json. Usage: python benchmarks/ddp_speed.py [--rounds 6]
(it starts torchrun itself; the workers are this script with --worker).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "ddp_speed.json"
CONFIG = dict(vocab_size=66, decoder_layers=8, decoder_embed_dim=256, decoder_ffn_embed_dim=1024,
              decoder_attention_heads=4, tokens_per_sample=128, dropout=0.0)
GLOBAL_BATCH = 16
MODES = ["torch DDP", "layerdrop p=0", "layerdrop p=0.2", "layerdrop p=0.5", "no layers"]


def make_step(mode: str, world):
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from layerdrop.distributed import average_gradients, shard, weigher
    from layerdrop.models import TransformerLM, TransformerLMConfig
    from layerdrop.nn.drop_plan import kept_layers
    from layerdrop.nn.stack import model_drop_plan
    from layerdrop.nn.structured import SKIPPED
    from layerdrop.tasks.outputs import TrainOutputs

    torch.manual_seed(0)
    p = float(mode.split("=")[1]) if "p=" in mode else 0.0
    model = TransformerLM(TransformerLMConfig(**CONFIG, decoder_layerdrop=p)).train()
    tokens = torch.randint(0, CONFIG["vocab_size"], (GLOBAL_BATCH, CONFIG["tokens_per_sample"] + 1),
                           generator=torch.Generator().manual_seed(0))
    inputs, targets = shard((tokens[:, :-1], tokens[:, 1:]), world)
    state = {"update": 0}
    if mode == "torch DDP":
        ddp = DistributedDataParallel(model)
        optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-4)

        def step() -> int:
            _, loss = ddp(inputs, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return len(model.decoder.layers)

        return step

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    parameters = list(model.parameters())
    weigh = weigher(world, lambda: False)

    def step() -> int:
        if mode == "no layers":
            plan = {"decoder": (SKIPPED,) * len(model.decoder.layers)}
        else:
            plan = model_drop_plan(model, 1, state["update"])
        state["update"] += 1
        _, loss = model(inputs, targets, plan=plan)
        (loss * weigh(TrainOutputs(loss, targets.numel(), None, targets.numel()))).backward()
        average_gradients(parameters, world)
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return len(kept_layers(plan["decoder"]))

    return step


def worker(args: argparse.Namespace) -> None:
    import torch

    from layerdrop.distributed import barrier, close, world_from_env

    world = world_from_env()
    steppers = {mode: make_step(mode, world) for mode in MODES}
    for step in steppers.values():
        for _ in range(args.warmup):
            step()
    seconds = {mode: 0.0 for mode in MODES}
    layers_run = {mode: 0 for mode in MODES}
    for round_index in range(args.rounds):
        order = MODES if round_index % 2 == 0 else MODES[::-1]
        for mode in order:
            barrier(world)
            start = time.perf_counter()
            for _ in range(args.steps_per_round):
                layers_run[mode] += steppers[mode]()
            barrier(world)
            seconds[mode] += time.perf_counter() - start
        if world.is_main:
            print(f"round {round_index + 1}/{args.rounds}: " + ", ".join(f"{m}: {seconds[m]:.1f}s" for m in MODES), flush=True)
    if world.is_main:
        write(args, seconds, layers_run, torch)
    close(world)


def write(args: argparse.Namespace, seconds: dict, layers_run: dict, torch) -> None:
    updates = args.rounds * args.steps_per_round
    full, rest = seconds["layerdrop p=0"], seconds["no layers"]
    layer_share = (full - rest) / full
    rows = []
    for mode in MODES[:-1]:
        skipped = 1 - layers_run[mode] / (updates * CONFIG["decoder_layers"])
        saving, ideal = 1 - seconds[mode] / full, skipped * layer_share
        rows.append({"mode": mode, "ms_per_update": 1000 * seconds[mode] / updates,
                     "ratio_to_torch_ddp": seconds[mode] / seconds["torch DDP"], "layers_skipped_share": skipped,
                     "time_saving_vs_p0": saving, "ideal_time_saving": ideal,
                     "fraction_of_ideal_saving": saving / ideal if ideal > 0 else None})
    by_mode = {r["mode"]: r for r in rows}
    result = {
        "benchmark": "ddp_speed", "processes": 2, "backend": "gloo", "threads_per_process": 1,
        "model": {**CONFIG, "global_batch": GLOBAL_BATCH}, "updates_per_mode": updates,
        "layer_share_of_step_time": layer_share, "rows": rows,
        "targets": {"p=0 at most 1.02x torch DDP": by_mode["layerdrop p=0"]["ratio_to_torch_ddp"] <= 1.02,
                    "p=0.5 saves at least 90% of the ideal": (by_mode["layerdrop p=0.5"]["fraction_of_ideal_saving"] or 0) >= 0.9},
        "torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor() or platform.platform(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'mode':<16} {'ms/update':>9} {'vs torch DDP':>12} {'skipped':>8} {'saving':>7} {'ideal':>7} {'of ideal':>8}")
    for r in rows:
        frac = "-" if r["fraction_of_ideal_saving"] is None else f"{r['fraction_of_ideal_saving']:.1%}"
        print(f"{r['mode']:<16} {r['ms_per_update']:>9.1f} {r['ratio_to_torch_ddp']:>11.3f}x {r['layers_skipped_share']:>8.1%} "
              f"{r['time_saving_vs_p0']:>7.1%} {r['ideal_time_saving']:>7.1%} {frac:>8}")
    print(f"targets: {result['targets']}\nwrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps-per-round", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__, "--worker",
               "--rounds", str(args.rounds), "--steps-per-round", str(args.steps_per_round), "--warmup", str(args.warmup),
               "--out", args.out]
    sys.exit(subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode)


if __name__ == "__main__":
    main()
