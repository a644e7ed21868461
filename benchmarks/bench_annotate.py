"""Annotate end to end on a fitted run, as `labelfield annotate RUN --frames ...` renders and writes it: the
frame rate of the default (fused) labels, of the field's labels alone, and of every output.

Usage: python benchmarks/bench_annotate.py RUN [--frames 24] [--rounds 3] [--threads N] [--variants fused,field,all]
                                           [--json benchmarks/results/bench_annotate.json]

RUN: a `labelfield fit` folder of a scene with depth (fusion is on there by default). Variants, as the CLI:
  labels + confidence, fused    `--no-rgb --no-depth --no-overlay` (fusion, refinement and fill: the default)
  labels + confidence, field    the same with `--fuse off`: what the render alone costs
  every output, fused           annotate's defaults (rgb, depth, overlay too)
Each round annotates the same `--frames` unlabelled frames (evenly spread) once per variant, the order turning
between rounds so that machine drift hits all alike; a first, uncounted round warms up. Per frame = wall time
of the call / frames: it includes what each annotate call pays once (the fused variants build the labelled
point cloud, ~0.5 s). Prints a table (with the CPU) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_scenes import cpu_model  # noqa: E402

VARIANTS: dict[str, tuple[str, dict]] = {  # name -> (what the CLI would be, annotate_run's arguments)
    "fused": ("labels + confidence, fused (default)", dict(rgb=False, depth=False, overlay=False)),
    "field": ("labels + confidence, field only (--fuse off)", dict(rgb=False, depth=False, overlay=False, fuse="off")),
    "all": ("every output, fused", dict(rgb=True, depth=True, overlay=True)),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a fitted run of a scene with depth")
    ap.add_argument("--frames", type=int, default=24, help="unlabelled frames annotated per call")
    ap.add_argument("--rounds", type=int, default=3, help="counted rounds (after one warm-up round)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--variants", default="fused,field,all", help="comma-separated, from " + ", ".join(VARIANTS))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from labelfield.annotate.fitted import annotate_run
    from labelfield.run import load_run

    torch.set_num_threads(args.threads)
    loaded = load_run(args.run)
    unlabelled = [i for i in range(len(loaded.scene)) if i not in set(loaded.labelled)]
    pick = np.linspace(0, len(unlabelled) - 1, min(args.frames, len(unlabelled))).round().astype(int)
    frames = [unlabelled[k] for k in pick]
    names = args.variants.split(",")
    if unknown := set(names) - set(VARIANTS):
        ap.error(f"unknown variants {sorted(unknown)}")
    seconds: dict[str, list[float]] = {v: [] for v in names}
    cpu: dict[str, list[float]] = {v: [] for v in names}
    for r in range(args.rounds + 1):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            with tempfile.TemporaryDirectory() as tmp:
                t0, c0 = time.perf_counter(), time.process_time()
                annotate_run(loaded, tmp, frames, **VARIANTS[name][1])
                wall, cpus = time.perf_counter() - t0, time.process_time() - c0
            if r > 0:  # round 0 warms up (kernel builds, first-touch allocations)
                seconds[name].append(wall / len(frames))
                cpu[name].append(cpus / wall)
            print(f"round {r}{' (warm-up)' if r == 0 else ''}: {name}: {wall / len(frames):.3f} s/frame", flush=True)

    cpu_name = cpu_model()
    print(f"\n{cpu_name}, {args.threads} threads; {len(frames)} unlabelled frames of {args.run}")
    print("| variant | s/frame (median of rounds) | frames/s | cores busy | rounds |")
    print("|---|---|---|---|---|")
    rows = []
    for name in names:
        med = float(np.median(seconds[name]))
        rows.append(
            {
                "variant": name,
                "what": VARIANTS[name][0],
                "s_per_frame": seconds[name],
                "median_s_per_frame": med,
                "cores_busy": float(np.median(cpu[name])),
            }
        )
        print(
            f"| {VARIANTS[name][0]} | {med:.3f} | {1 / med:.2f} | {np.median(cpu[name]):.2f} | "
            + ", ".join(f"{s:.3f}" for s in seconds[name])
            + " |"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"cpu": cpu_name, "threads": args.threads, "run": str(args.run), "frames": frames, "rows": rows}
        args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
