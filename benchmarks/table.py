"""The `make bench` table: each speed benchmark's headline ratios and targets, read from benchmarks/results/*.json.

Prints a Markdown table (the one in the README's Performance section). A benchmark whose JSON is missing
is listed as not run. Usage: python benchmarks/table.py [--results DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def verdict(met: bool | None) -> str:
    return "-" if met is None else "met" if met else "**not met**"


def train_speed(data: dict) -> list[tuple[str, str, str, bool | None]]:
    rows = []
    for model, entry in data["models"].items():
        by_p = {r["p"]: r for r in entry["rows"]}
        for p in (0.2, 0.5):
            r = by_p[p]
            rows.append((f"training, {model}, p = {p}",
                         f"{r['tokens_per_second']:,.0f} tokens/s ({r['speedup_vs_p0']:.2f}x p = 0); "
                         f"{100 * r['fraction_of_ideal_saving']:.0f} % of the ideal saving",
                         ">= 95 % of the ideal at p = 0.5" if p == 0.5 else "",
                         r["fraction_of_ideal_saving"] >= 0.95 if p == 0.5 else None))
    return rows


def hf_speed(data: dict) -> list[tuple[str, str, str, bool | None]]:
    rows = []
    for r in data["rows"]:
        mode = "inference" if r["p"] is None else f"training p = {r['p']}"
        rows.append((f"{r['model']}, {mode}",
                     f"{r['ours_tokens_per_second']:,.0f} vs {r['hf_tokens_per_second']:,.0f} tokens/s: {r['ratio']:.2f}x",
                     ">= 1.1x", r["ratio"] >= 1.1))
    return rows


def nanogpt_speed(data: dict) -> list[tuple[str, str, str, bool | None]]:
    base = data["ms_per_update_median"]["nanoGPT"]
    # nanoGPT's train.py runs float32 on a CPU whatever its --dtype says: a bf16 row is not the same arithmetic.
    note = lambda name: " (bf16 matrix products; nanoGPT: float32)" if "bf16" in name else ""
    # A bf16 row is shown, not judged: the target compares equal arithmetic.
    return [(f"nanoGPT CPU config, {name}{note(name)}",
             f"{data['ms_per_update_median'][name]:.1f} vs {base:.1f} ms/update: {ratio:.2f}x",
             "<= 0.75x" if not note(name) else "", ratio <= 0.75 if not note(name) else None)
            for name, ratio in data["ratio_to_nanogpt"].items()]


def ddp_speed(data: dict) -> list[tuple[str, str, str, bool | None]]:
    rows = []
    for r in data["rows"][1:]:
        if r["mode"].endswith("p=0"):
            rows.append(("2-process DDP, layerdrop p = 0", f"{r['ms_per_update']:.0f} ms/update: "
                         f"{r['ratio_to_torch_ddp']:.3f}x torch DDP", "<= 1.02x", r["ratio_to_torch_ddp"] <= 1.02))
        else:
            p = r["mode"].split("=")[1]
            is_target = p == "0.5"
            rows.append((f"2-process DDP, layerdrop p = {p}", f"{r['ms_per_update']:.0f} ms/update; "
                         f"{100 * r['fraction_of_ideal_saving']:.0f} % of the ideal saving",
                         ">= 90 % of the ideal" if is_target else "", r["fraction_of_ideal_saving"] >= 0.9 if is_target else None))
    return rows


def pruned_inference(data: dict) -> list[tuple[str, str, str, bool | None]]:
    return [(f"pruned {r['measure']}, {r['depth']} of {data['model']['decoder_layers']} layers",
             f"{r['time_vs_full']:.3f} of full-depth time (ideal {r['ideal_time_vs_full']:.3f}): "
             f"{r['measured_over_ideal']:.2f}x ideal", "<= 1.10x ideal", r["measured_over_ideal"] <= 1.10)
            for r in data["rows"]]


READERS = {"train_speed": train_speed, "hf_speed": hf_speed, "hf_speed_bf16": hf_speed, "nanogpt_speed": nanogpt_speed,
           "ddp_speed": ddp_speed, "pruned_inference": pruned_inference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS), help="directory of benchmark JSON files")
    args = parser.parse_args()
    print("| benchmark | measure | measured | target | |")
    print("| --- | --- | --- | --- | --- |")
    for name, read in READERS.items():
        path = Path(args.results) / f"{name}.json"
        if not path.is_file():
            print(f"| {name} | | not run (no {path.name}) | | |")
            continue
        for measure, measured, target, met in read(json.loads(path.read_text())):
            print(f"| {name} | {measure} | {measured} | {target} | {verdict(met) if target else ''} |")


if __name__ == "__main__":
    main()
