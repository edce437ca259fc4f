"""Where a training update's time goes on nanoGPT's CPU configuration: matrix products, attention, GELU,
the optimizer, the rest.

Runs ``layerdrop train`` in this process under ``torch.profiler`` (nanogpt_speed.py's model and optimizer
flags, one thread by default) and groups the operators' own CPU time. It answers whether an update at this
size is bound by arithmetic (then only less arithmetic, or cheaper arithmetic, makes it faster) or by the
cost of launching many small operators (then fusing them, e.g. ``--compile``, would).

Writes benchmarks/results/step_profile.json (``--amp bf16``: step_profile_bf16.json; with
``--attention-in-bf16`` as well, step_profile_bf16_attention_bf16.json: attention left in bf16, as it ran before
layerdrop kept it in float32 under CPU autocast). Usage:
python benchmarks/step_profile.py [--updates 100] [--amp bf16 [--attention-in-bf16]]
"""

from __future__ import annotations

import argparse
import json
import statistics
import platform
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from nanogpt_speed import OURS_FLAGS

RESULTS = Path(__file__).parent / "results" / "step_profile.json"
# Operator name fragments -> group; the first match wins, anything else is "other".
GROUPS = (("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul")),
          ("attention", ("scaled_dot_product",)),
          ("GELU", ("gelu",)),
          ("optimizer", ("Optimizer.step", "aten::lerp", "aten::addcdiv", "aten::sqrt", "aten::_foreach", "_fused_adam")),
          ("layer norm", ("layer_norm",)))


def group_of(name: str) -> str:
    return next((group for group, fragments in GROUPS if any(f in name for f in fragments)), "other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--amp", choices=("bf16",), default=None, help="profile the bf16 autocast forward pass")
    parser.add_argument("--attention-in-bf16", action="store_true",
                        help="with --amp bf16: run attention in bf16 too (what layerdrop did before keeping it float32)")
    parser.add_argument("--out", default=None, help="JSON file to write (default: by the options, under results/)")
    args = parser.parse_args()
    suffix = "".join(["_bf16" if args.amp else "", "_attention_bf16" if args.attention_in_bf16 else ""])
    out = Path(args.out) if args.out else RESULTS.with_name(f"step_profile{suffix}.json")
    torch.set_num_threads(args.threads)
    from layerdrop.cli import main as layerdrop_main
    from layerdrop.nn import attention

    if args.attention_in_bf16:
        attention.attend = torch.nn.functional.scaled_dot_product_attention

    with tempfile.TemporaryDirectory() as save:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            status = layerdrop_main(["train", "--save-dir", save, "--max-update", str(args.updates),
                                     "--validate-interval-updates", str(args.updates), *OURS_FLAGS,
                                     *(["--amp", args.amp] if args.amp else [])])
        if status != 0:
            raise SystemExit(f"layerdrop train failed (exit {status}); nothing written")
        # The updates' own wall time (under the profiler), to compare with the operators' total.
        wall_ms = statistics.median(json.loads(line)["ms"] for line in (Path(save) / "train_log.jsonl").open())
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = {}
    for event in events:
        group = group_of(event.key)
        shares[group] = shares.get(group, 0.0) + event.self_cpu_time_total / total
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]
    result = {"benchmark": "step_profile", "updates": args.updates, "threads": args.threads, "amp": args.amp,
              "attention_in_bf16": args.attention_in_bf16,
              "operator_ms_per_update": total / 1000 / args.updates, "wall_ms_per_update_median": wall_ms,
              "share_of_cpu_time": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
              "top_operators": [{"name": e.key, "share": e.self_cpu_time_total / total, "calls": e.count} for e in top],
              "note": "the whole run is profiled (model set-up and one validation batch included; both are small)",
              "torch": torch.__version__, "machine": platform.machine()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for group, share in result["share_of_cpu_time"].items():
        print(f"{group:<16} {100 * share:5.1f} %")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
