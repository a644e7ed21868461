"""Semantic-NeRF / Replica layout: reader and writer.

    rgb/rgb_{i}.png                    (H, W, 3) uint8
    depth/depth_{i}.png                (H, W) uint16 millimetres, 0 = unknown            (optional)
    semantic_class/semantic_class_{i}.png   (H, W) uint8 class ids (uint16 if an id > 255), 0 = void  (optional)
    semantic_instance/semantic_instance_{i}.png  (H, W) instance ids                   (optional)
    traj_w_c.txt                       one row-major 4x4 OpenCV camera-to-world per line, in index order
    intrinsics.json                    {fx, fy, cx, cy, w, h[, distortion]} (integer pixel centres)  (optional)
    classes.json / info_semantic.json  class table                                     (optional)

Files are paired by their integer index, sorted by value (rgb_2 before rgb_10). Without intrinsics.json the
Replica default applies: 90 degree horizontal FOV, fx = fy = W/2, cx = (W-1)/2, cy = (H-1)/2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labelfield.cameras import Intrinsics
from labelfield.errors import LabelfieldError
from labelfield.formats.common import (
    FileLoader,
    check_pose,
    image_size,
    indexed_files,
    label_dtype,
    scaled_intrinsics,
    table_from_label_files,
)
from labelfield.io import depth_to_mm, read_json, write_image, write_json
from labelfield.progress import Progress, ProgressFn
from labelfield.scene import ClassTable, Frame, Scene, default_color


def read_trajectory(path: Path) -> list[np.ndarray]:
    """traj_w_c.txt -> list of (4, 4) OpenCV c2w; a line that is not 16 finite numbers is an error."""
    if not path.is_file():
        raise LabelfieldError("trajectory file not found", path)
    poses = []
    for k, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            vals = [float(x) for x in line.replace(",", " ").split()]
        except ValueError as e:
            raise LabelfieldError(f"line {k + 1}: not a list of numbers", path) from e
        if len(vals) != 16:
            raise LabelfieldError(f"line {k + 1}: pose has {len(vals)} numbers, expected 16 (a 4x4 matrix)", path)
        poses.append(check_pose(np.array(vals).reshape(4, 4), path, f"line {k + 1}: pose"))
    return poses


def read_intrinsics(root: Path, width: int, height: int) -> Intrinsics:
    """intrinsics.json (rescaled if it was written for another image size), else the Replica default."""
    path = root / "intrinsics.json"
    if not path.is_file():
        return Intrinsics(width / 2.0, width / 2.0, (width - 1) / 2.0, (height - 1) / 2.0, width, height)
    d = read_json(path)
    try:
        w, h = int(d.get("w", width)), int(d.get("h", height))
        dist = d.get("distortion")
        intr = Intrinsics(
            float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]), w, h, tuple(dist) if dist else None
        )
    except (KeyError, TypeError, ValueError) as e:
        raise LabelfieldError(f"expected numbers fx, fy, cx, cy, w, h ({e})", path) from e
    if (w, h) != (width, height):
        if w * height != h * width:
            raise LabelfieldError(f"intrinsics are for {w}x{h} but the images are {width}x{height}", path)
        intr = intr.scaled(width / w)
    return intr


def read_class_table(root: Path) -> ClassTable | None:
    """classes.json (our format) or Replica's info_semantic.json; None when neither exists."""
    path = root / "classes.json"
    if path.is_file():
        d = read_json(path)
        try:
            return ClassTable.from_json(d)
        except (KeyError, TypeError, ValueError) as e:
            raise LabelfieldError(f"expected {{'classes': [...], 'colors': [...]}} ({e})", path) from e
    path = root / "info_semantic.json"
    if path.is_file():
        d = read_json(path)
        try:
            entries = sorted(d["classes"], key=lambda c: int(c["id"]))
            ids = [int(c["id"]) for c in entries]
            names = [str(c["name"]) for c in entries]
        except (KeyError, TypeError, ValueError) as e:
            raise LabelfieldError(f"expected 'classes': [{{'id', 'name'}}, ...] ({e})", path) from e
        return ClassTable(ids, names, [default_color(i) for i in ids])
    return None


def read_replica(root: Path, downscale: int = 1) -> Scene:
    """Read a Replica-layout folder (see the module docstring)."""
    rgb = indexed_files(root / "rgb", "rgb_")
    if not rgb:
        raise LabelfieldError("no rgb/rgb_{i}.png images", root / "rgb")
    traj_path = root / "traj_w_c.txt"
    poses = read_trajectory(traj_path)
    if len(poses) != len(rgb):
        raise LabelfieldError(f"{len(poses)} poses but {len(rgb)} images in rgb/", traj_path)
    depth = indexed_files(root / "depth", "depth_")
    labels = indexed_files(root / "semantic_class", "semantic_class_")
    inst = indexed_files(root / "semantic_instance", "semantic_instance_")
    first = next(iter(rgb.values()))
    W, H = image_size(first)
    intr = scaled_intrinsics(read_intrinsics(root, W, H), downscale)
    classes = read_class_table(root) or table_from_label_files([labels[i] for i in rgb if i in labels])
    loader = FileLoader((W, H), classes)
    frames = []
    for (i, path), c2w in zip(rgb.items(), poses):
        frames.append(
            Frame(
                name=f"rgb_{i}",
                intrinsics=intr,
                c2w=c2w,
                rgb_path=path,
                depth_path=depth.get(i),
                label_path=labels.get(i),
                instance_path=inst.get(i),
                loader=loader,
            )
        )
    return Scene(frames, classes, root, "replica")


def _common_intrinsics(scene: Scene) -> Intrinsics:
    intr = scene.frames[0].intrinsics
    if any(f.intrinsics != intr for f in scene.frames):
        raise LabelfieldError("the Replica layout holds one camera but frames differ in intrinsics; use transforms")
    return intr


def write_replica(scene: Scene, out: Path, on_progress: ProgressFn | None = None) -> None:
    """Write `scene` into the (empty, temporary) folder `out` in the Replica layout."""
    intr = _common_intrinsics(scene)
    lab_dtype = label_dtype(scene.classes.max_id)
    lines = []
    for i, f in enumerate(scene.frames):
        if on_progress is not None:
            on_progress(Progress("write", i + 1, len(scene.frames), "frames"))  # frame i + 1 of n under way
        write_image(out / "rgb" / f"rgb_{i}.png", f.load_rgb())
        d = f.load_depth()
        if d is not None:
            write_image(out / "depth" / f"depth_{i}.png", depth_to_mm(d))
        lab = f.load_labels()
        if lab is not None:
            scene.classes.check_labels(lab, f.label_path or f.name)
            write_image(out / "semantic_class" / f"semantic_class_{i}.png", lab.astype(lab_dtype))
        ins = f.load_instances()
        if ins is not None:
            ins = np.asarray(ins)
            write_image(out / "semantic_instance" / f"semantic_instance_{i}.png", ins.astype(label_dtype(ins.max())))
        # repr() keeps full float64 precision so poses round-trip exactly.
        lines.append(" ".join(repr(float(x)) for x in np.asarray(f.c2w, np.float64).reshape(-1)))
    (out / "traj_w_c.txt").write_text("\n".join(lines) + "\n")
    d = {"fx": intr.fx, "fy": intr.fy, "cx": intr.cx, "cy": intr.cy, "w": intr.width, "h": intr.height}
    if intr.distortion:
        d["distortion"] = list(intr.distortion)
    write_json(out / "intrinsics.json", d)
    write_json(out / "classes.json", scene.classes.to_json())
