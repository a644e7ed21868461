"""Label-quality ablations at a fixed number of steps: field alone, reprojection alone, field + fusion.

    python benchmarks/bench_label_quality.py --scene data/demo --steps 300 \
        --variant "old|class_balance=0;pseudo_labels=off" --variant "default|" --json out.json

Per variant: fit (FitConfig defaults + the variant's KEY=VALUE overrides separated by ";", JSON values),
render a fixed subset of unlabelled frames (`--eval-every`: every k-th unlabelled frame), then score with
`labelfield.evaluate` the field's labels ("field") and the field fused with the reprojected user labels ("fused",
`labelfield.annotate.fuse`). Once per scene (and depth-noise setting): the `reproject` baseline on the same
frames. Prints a markdown table (mIoU / accuracy / consistency on the scored frames, the smallest classes'
IoU) and writes JSON. Consistency pairs neighbouring *scored* frames (k = 1 within the subset).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from labelfield.annotate.frames import annotate_frames
from labelfield.annotate.fuse import FusedRenderer
from labelfield.baselines.reproject import reproject_labels
from labelfield.evaluate.core import evaluate
from labelfield.formats import load_scene
from labelfield.labels import make_sparse_labels
from labelfield.labelset import FrameRecord, read_labelset, write_frame, write_manifest
from labelfield.render.chunked import render_image
from labelfield.run import load_run
from labelfield.train.config import FitConfig
from labelfield.train.depth_noise import depth_loader
from labelfield.train.trainer import fit


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition("|")
    over = {}
    for item in filter(None, (s.strip() for s in rest.split(";"))):
        k, _, v = item.partition("=")
        try:
            over[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            over[k.strip()] = v
    return name.strip(), over


def small_classes(scene, sparse, n: int = 4) -> list[str]:
    """The n classes with the fewest pixels in the labelled frames (the ones that vanish)."""
    counts: dict[int, int] = {}
    for lab in sparse.values():
        ids, c = np.unique(lab, return_counts=True)
        for i, k in zip(ids, c, strict=True):
            if i != 0:
                counts[int(i)] = counts.get(int(i), 0) + int(k)
    return [scene.classes.name_of(i) for i, _ in sorted(counts.items(), key=lambda x: x[1])[:n]]


def score(labels_dir: Path, scene) -> dict:
    r = evaluate(read_labelset(labels_dir), scene, k=1)
    u = r.summary["unlabelled"]
    return {k: u[k] for k in ("miou", "accuracy", "consistency", "per_class_iou")}


def write_dense(out: Path, scene, dense: dict[int, np.ndarray], indices: list[int], method: str) -> None:
    out.mkdir(parents=True)
    recs = []
    for i in indices:
        write_frame(out, scene.frames[i].name, dense[i], scene.classes)
        recs.append(FrameRecord.from_frame(scene.frames[i], i, False, False))
    write_manifest(
        out, scene_path=scene.root, format=scene.format, downscale=1, method=method, classes=scene.classes, frames=recs
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", required=True)
    ap.add_argument("--labelled", default="every:10")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=4, help="score every k-th unlabelled frame")
    ap.add_argument(
        "--variant", action="append", default=[], help='"name|key=value;key=value" (values as JSON, else strings)'
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variant] or [("default", {})]

    scene = load_scene(args.scene)
    sparse = make_sparse_labels(scene, args.labelled, "full", None, args.seed)
    unl = [i for i in range(len(scene.frames)) if i not in sparse]
    indices = unl[:: max(1, args.eval_every)]
    smalls = small_classes(scene, sparse)
    rows, results = [], []
    baselines: dict[str | None, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for vi, (name, over) in enumerate(variants):
            cfg = FitConfig(
                out=tmp / f"run{vi}",
                labelled=args.labelled,
                steps=args.steps,
                progress=False,
                threads=args.threads,
                seed=args.seed,
            )
            for k in over:
                if not hasattr(cfg, k):
                    raise SystemExit(f"unknown FitConfig option {k!r}")
            cfg = dataclasses.replace(cfg, **over)
            noise = cfg.depth_noise
            depth_fn = depth_loader(scene, noise, cfg.seed) if scene.frames[0].has_depth() else None
            if noise not in baselines and depth_fn is not None:
                dense = reproject_labels(scene, sparse, depth_fn=depth_fn, targets=indices)
                write_dense(tmp / f"reproject{len(baselines)}", scene, dense, indices, "reproject")
                baselines[noise] = score(tmp / f"reproject{len(baselines)}", scene)
                rows.append((f"reproject (noise {noise})", baselines[noise], None))
                print(f"reproject (noise {noise}): mIoU {baselines[noise]['miou']:.3f}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            res = fit(
                cfg, scene=scene, on_step=lambda s: s % 50 == 0 and print(f"  step {s}", file=sys.stderr, flush=True)
            )
            t_fit = time.perf_counter() - t0
            run = load_run(tmp / f"run{vi}", device="cpu", scene=Path(args.scene))
            cache: dict[bytes, dict] = {}

            def render_fn(intr, c2w, run=run, cache=cache):
                key = np.asarray(c2w).tobytes()
                if key not in cache:
                    cache[key] = render_image(run.model, intr, c2w, chunk=16384)
                return cache[key]

            out_f = tmp / f"field{vi}"
            annotate_frames(render_fn, scene, scene.classes, out_f, indices, set(sparse), progress=False)
            field = score(out_f, scene)
            # RGB-only variants fuse through the field's rendered depth, as a scene without depth would.
            fused_fn = FusedRenderer(
                render_fn, scene, scene.classes, sparse, depth_fn=depth_fn, scene_depth=cfg.depth_loss != "off"
            )
            out_u = tmp / f"fused{vi}"
            annotate_frames(fused_fn, scene, scene.classes, out_u, indices, set(sparse), progress=False)
            fused = score(out_u, scene)
            meta = {"steps": res.step, "fit_s": round(t_fit, 1), "psnr": res.psnr}
            rows.append((f"{name}: field", field, meta))
            rows.append((f"{name}: field + fusion", fused, meta))
            results.append({"variant": name, "overrides": over, "field": field, "fused": fused, **meta})
            print(
                f"[{name}] field mIoU {field['miou']:.3f}  fused {fused['miou']:.3f}  ({t_fit:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

    head = "| what | mIoU | acc | consistency | " + " | ".join(smalls) + " | steps | fit s |"
    print(f"\nscene {args.scene}, {args.labelled}, {args.steps} steps, {len(indices)} scored unlabelled frames")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    f3 = lambda x: "–" if x is None else f"{x:.3f}"
    for what, s, meta in rows:
        pc = [f3(s["per_class_iou"].get(c)) for c in smalls]
        m = meta or {}
        print(
            f"| {what} | {f3(s['miou'])} | {f3(s['accuracy'])} | {f3(s['consistency'])} | "
            + " | ".join(pc)
            + f" | {m.get('steps', '')} | {m.get('fit_s', '')} |"
        )
    if args.json:
        doc = {
            "scene": args.scene,
            "labelled": args.labelled,
            "steps": args.steps,
            "scored_frames": indices,
            "baselines": {str(k): v for k, v in baselines.items()},
            "variants": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
