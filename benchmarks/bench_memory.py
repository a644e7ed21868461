"""Peak memory of `labelfield fit` on a 300-frame 320x240 scene (issue target: peak RSS under 4 GB).

Usage: python benchmarks/bench_memory.py [--scene data/demo] [--frames 300] [--steps 50] [--json FILE]

The scene is the demo room's frames repeated (each frame loaded from its own files, under a new name) until
there are `--frames` of them, so the dataset cache, the sparse labels and the training loop see a scene of that
size; `--steps` training steps with the default configuration (depth loss on) then give the peak RSS.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from labelfield.formats import load_scene  # noqa: E402
from labelfield.scene import Scene  # noqa: E402
from labelfield.train.config import FitConfig  # noqa: E402
from labelfield.train.trainer import fit  # noqa: E402


def repeat_scene(scene: Scene, n_frames: int) -> Scene:
    """`scene` with its frames cycled (renamed, same files) until it has n_frames."""
    frames = [dataclasses.replace(scene.frames[i % len(scene)], name=f"f{i:05d}", arrays={}) for i in range(n_frames)]
    return Scene(frames, scene.classes, scene.root, scene.format)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "demo")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    scene = repeat_scene(load_scene(args.scene), args.frames)
    w, h = scene.frames[0].size
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        config = FitConfig(out=Path(tmp) / "run", steps=args.steps, depth_loss=True, progress=False)
        result = fit(config, scene=scene)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row = {
        "frames": args.frames,
        "width": w,
        "height": h,
        "steps": result.step,
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": peak_mb,
        "target_mb": 4096,
        "ok": peak_mb < 4096,
    }
    print(f"{args.frames} frames {w}x{h}, {result.step} steps: peak RSS {peak_mb:,.0f} MB (target < 4,096 MB)")
    if args.json:
        args.json.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
