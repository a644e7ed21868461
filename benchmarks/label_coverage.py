"""What the labelled frames can teach at all: per suite scene and setting, the classes the scored frames show that
no labelled frame shows, and the mIoU ceiling that follows.

A class that no labelled pixel carries cannot be named by any method that learns from these labels (the field,
fusion, `reproject`, `nearest`): its IoU is 0. So with G the classes in the scored frames' ground truth and L the
classes in the labelled frames,

    ceiling = |G ∩ L| / |G|        (mIoU over GT classes, every labelled class perfect)

is an upper bound of bench_quality's "mIoU, GT classes" for every method on the same frames (same labelled
frames, seed and scored subset as bench_quality). No fitting: seconds per scene.

Usage:
    python benchmarks/label_coverage.py [--split tune|report|all] [--settings rgbd-10,rgbd-5,rgbd-2]
        [--eval-frames 8] [--json benchmarks/results/label_coverage.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import SETTINGS  # noqa: E402
from propagation import eval_subset  # noqa: E402
from quality_scenes import ensure_rendered, select  # noqa: E402


def coverage(scene_path: Path, fraction_spec: str, eval_frames: int, seed: int = 0) -> dict:
    """Classes of the scored frames, of the labelled frames, the ones never labelled and the ceiling."""
    from labelfield.formats import load_scene
    from labelfield.labels import make_sparse_labels

    scene = load_scene(scene_path)
    sparse = make_sparse_labels(scene, fraction_spec, "full", None, seed)
    frames = eval_subset(scene, sorted(sparse), eval_frames, "unlabelled")
    void = scene.classes.void_id
    labelled = set()
    for lab in sparse.values():
        labelled |= {int(c) for c in np.unique(lab)} - {void}
    seen: dict[int, int] = {}  # class id -> GT pixels in the scored frames
    for i in frames:
        ids, counts = np.unique(scene.frames[i].load_labels(), return_counts=True)
        for c, n in zip(ids.tolist(), counts.tolist(), strict=True):
            if c != void:
                seen[c] = seen.get(c, 0) + n
    missing = sorted(set(seen) - labelled)
    total = sum(seen.values())
    return {
        "labelled_frames": len(sparse),
        "scored_frames": len(frames),
        "gt_classes": len(seen),
        "labelled_classes": len(labelled),
        "never_labelled": [scene.classes.name_of(c) for c in missing],
        "never_labelled_pixel_share": sum(seen[c] for c in missing) / max(total, 1),
        "ceiling_miou_gt_classes": (len(seen) - len(missing)) / max(len(seen), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="all", help="tune | report | all (default)")
    ap.add_argument("--settings", default="rgbd-10,rgbd-5,rgbd-2")
    ap.add_argument("--eval-frames", type=int, default=8)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    for sc in select(args.split):
        if sc.folder is not None:  # lego: one object, two classes; nothing to learn here
            continue
        path, _ = ensure_rendered(sc)
        for name in args.settings.split(","):
            st = SETTINGS[name.strip()]
            if st.low_label_only and not sc.low_label:
                continue
            row = {"scene": sc.name, "split": sc.split, "setting": st.name}
            rows.append({**row, **coverage(path, st.spec, args.eval_frames)})
    print("| scene | split | setting | labelled frames | GT classes | never labelled (pixel share) | mIoU ceiling |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        miss = ", ".join(r["never_labelled"]) or "-"
        print(
            f"| {r['scene']} | {r['split']} | {r['setting']} | {r['labelled_frames']} | {r['gt_classes']} | "
            f"{miss} ({100 * r['never_labelled_pixel_share']:.1f} %) | {r['ceiling_miou_gt_classes']:.3f} |"
        )
    for split in sorted({r["split"] for r in rows}):
        for st in args.settings.split(","):
            sel = [r["ceiling_miou_gt_classes"] for r in rows if r["split"] == split and r["setting"] == st.strip()]
            if sel:
                n = len(sel)
                print(f"{split} {st.strip()}: ceiling mean {np.mean(sel):.3f}, worst {min(sel):.3f} ({n} scenes)")
    if args.json:
        from labelfield.io import write_json

        command = "python " + " ".join(sys.argv)
        write_json(args.json, {"command": command, "eval_frames": args.eval_frames, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
