"""Export `replica` / `transforms`: the input scene's layout, with the LABELS folder's labels as its labels.

The result is a training-ready dataset for other tools: images (and depth) from the source scene, poses and
intrinsics as the scene has them, and `semantic_class/` (Replica) or `semantics/` (transforms) holding the
new dense labels, written by `labelfield.formats.write_scene`. Frames are the LABELS folder's, matched to
the scene by name; the scene must be loaded at the LABELS' downscale so sizes agree.

Without a scene (`scene=None`) the LABELS folder's own renders (rgb/, depth/) and poses from frames.json
stand in for the images, so the export still works when the source scene is gone.
Labels load lazily per frame, so memory stays at one frame whatever the sequence length.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from labelfield.errors import LabelfieldError
from labelfield.formats import WRITABLE, write_scene
from labelfield.labelset import LabelSet
from labelfield.scene import Frame, Scene


def _with_labels(frame: Frame, labelset: LabelSet, name: str) -> Frame:
    """A copy of `frame` whose labels come from the LABELS folder (read when the writer asks for them)."""
    inner = frame.loader

    def loader(f: Frame, kind: str) -> np.ndarray | None:
        if kind == "labels":
            return labelset.load_labels(name)
        return inner(f, kind) if inner is not None else None

    arrays = {k: v for k, v in frame.arrays.items() if k != "labels"}  # instances (if any) stay the scene's
    return replace(frame, label_path=None, arrays=arrays, loader=loader)


def _from_renders(labelset: LabelSet, name: str) -> Frame:
    """A frame built from the LABELS folder alone: rendered rgb/depth, pose and intrinsics from frames.json."""
    if not (labelset.root / "rgb" / f"{name}.png").is_file():
        raise LabelfieldError(
            f"no rendered image rgb/{name}.png and no scene to take images from (pass --scene)", labelset.root
        )
    rec = labelset.record(name)

    def loader(f: Frame, kind: str) -> np.ndarray | None:
        if kind == "labels":
            return labelset.load_labels(name)
        if kind == "rgb":
            return labelset.load_rgb(name)
        if kind == "depth":
            d = labelset.load_depth(name)
            return None if d is None else d * f.depth_scale  # Frame divides loader depth by depth_scale
        return None

    has_depth = (labelset.root / "depth" / f"{name}.png").is_file()
    return Frame(name, rec.intr(), rec.pose(), depth_path=Path(name) if has_depth else None, loader=loader)


def labelled_scene(labelset: LabelSet, scene: Scene | None) -> Scene:
    """The Scene to write: the LABELS frames (in their order) with their new labels."""
    if scene is None:
        return Scene([_from_renders(labelset, n) for n in labelset.names], labelset.classes, None, "memory")
    by_name = {f.name: f for f in scene.frames}
    missing = [n for n in labelset.names if n not in by_name]
    if missing:
        raise LabelfieldError(
            f"frame {missing[0]!r} of the labels is not in the scene ({len(missing)} missing)", scene.root
        )
    frames = []
    for n in labelset.names:
        f = by_name[n]
        intr = labelset.record(n).intr()
        if (intr.width, intr.height) != f.size:
            raise LabelfieldError(
                f"labels of frame {n} are {intr.width}x{intr.height} but the scene's frames are "
                f"{f.size[0]}x{f.size[1]} (load the scene at the labels' downscale {labelset.downscale})",
                scene.root,
            )
        frames.append(_with_labels(f, labelset, n))
    return Scene(frames, labelset.classes, scene.root, scene.format)


def export_dataset(labelset: LabelSet, out: str | Path, format: str, scene: Scene | None = None) -> Path:
    """Write the scene (or the renders) with the new labels to folder `out` in `format`, atomically."""
    if format not in WRITABLE:
        raise LabelfieldError(f"cannot write format {format!r}; expected one of {', '.join(WRITABLE)}")
    return write_scene(labelled_scene(labelset, scene), out, format)
