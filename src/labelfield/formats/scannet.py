"""ScanNet export (as written by ScanNet's SensReader plus the 2D label archives): reader.

    color/{i}.jpg|png          (H, W, 3) colour frames
    depth/{i}.png              uint16 millimetres (ScanNet's depth camera is 640x480: resized to the colour size)
    pose/{i}.txt               4x4 OpenCV camera-to-world (ScanNet marks lost tracking with -inf: frame skipped)
    intrinsic/intrinsic_color.txt   4x4 (or 3x3) K of the colour camera (integer pixel centres)
    label-filt/{i}.png         uint16 ScanNet class ids, 0 = unannotated                  (optional)
    instance-filt/{i}.png      instance ids                                              (optional)
    scannetv2-labels.combined.tsv   (in the scene folder or its parent) ScanNet id -> NYU40 id (optional)

With the .tsv, labels are mapped to NYU40 ids (1..40, unknown ScanNet ids -> 0 void) and the table holds the 40
NYU40 classes with ScanNet's colours; without it, the raw ids found in the label images form the table.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from labelfield.cameras import Intrinsics
from labelfield.errors import LabelfieldError
from labelfield.formats.common import (
    FileLoader,
    check_pose,
    image_size,
    indexed_files,
    scaled_intrinsics,
    table_from_label_files,
    warn,
)
from labelfield.scene import ClassTable, Frame, Scene

TSV_NAME = "scannetv2-labels.combined.tsv"

# ScanNet's NYU40 palette (util.create_color_palette), indexed by NYU40 id; 0 = void.
NYU40_COLORS = [
    (0, 0, 0),
    (174, 199, 232),
    (152, 223, 138),
    (31, 119, 180),
    (255, 187, 120),
    (188, 189, 34),
    (140, 86, 75),
    (255, 152, 150),
    (214, 39, 40),
    (197, 176, 213),
    (148, 103, 189),
    (196, 156, 148),
    (23, 190, 207),
    (178, 76, 76),
    (247, 182, 210),
    (66, 188, 102),
    (219, 219, 141),
    (140, 57, 197),
    (202, 185, 52),
    (51, 176, 203),
    (200, 54, 131),
    (92, 193, 61),
    (78, 71, 183),
    (172, 114, 82),
    (255, 127, 14),
    (91, 163, 138),
    (153, 98, 156),
    (140, 153, 101),
    (158, 218, 229),
    (100, 125, 154),
    (178, 127, 135),
    (120, 185, 128),
    (146, 111, 194),
    (44, 160, 44),
    (112, 128, 144),
    (96, 207, 209),
    (227, 119, 194),
    (213, 92, 176),
    (94, 106, 211),
    (82, 84, 163),
    (100, 85, 144),
]


def read_matrix(path: Path, what: str) -> np.ndarray:
    """A whitespace-separated text matrix (pose or intrinsics)."""
    if not path.is_file():
        raise LabelfieldError(f"{what} file not found", path)
    try:
        rows = [[float(x) for x in line.split()] for line in path.read_text().splitlines() if line.strip()]
        return np.array(rows, np.float64)
    except ValueError as e:
        raise LabelfieldError(f"{what} is not a matrix of numbers ({e})", path) from e


def read_nyu40_mapping(tsv: Path) -> tuple[np.ndarray, ClassTable]:
    """scannetv2-labels.combined.tsv -> (LUT ScanNet id -> NYU40 id, NYU40 class table)."""
    try:
        with tsv.open(newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        pairs = [(int(r["id"]), int(r["nyu40id"]) if r.get("nyu40id") else 0, r.get("nyu40class") or "") for r in rows]
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise LabelfieldError(f"expected tab-separated columns id, nyu40id, nyu40class ({e})", tsv) from e
    if not pairs:
        raise LabelfieldError("no rows", tsv)
    lut = np.zeros(max(p[0] for p in pairs) + 1, np.int64)
    names = {i: f"nyu40_{i}" for i in range(1, 41)}
    for raw, nyu, name in pairs:
        if not 0 <= nyu <= 40:
            raise LabelfieldError(f"nyu40id {nyu} of ScanNet id {raw} is outside 0..40", tsv)
        lut[raw] = nyu
        if nyu and name and names[nyu].startswith("nyu40_"):
            names[nyu] = name
    ids = list(range(1, 41))
    return lut, ClassTable(ids, [names[i] for i in ids], [NYU40_COLORS[i] for i in ids])


def read_scannet(root: Path, downscale: int = 1) -> Scene:
    """Read a ScanNet export folder (see the module docstring); frames with non-finite poses are skipped."""
    color = indexed_files(root / "color", "")
    if not color:
        raise LabelfieldError("no colour images color/{i}.jpg", root / "color")
    K = read_matrix(root / "intrinsic" / "intrinsic_color.txt", "intrinsics")
    if K.shape not in ((3, 3), (4, 4), (3, 4)):
        raise LabelfieldError(f"intrinsics matrix is {K.shape[0]}x{K.shape[1]}, expected 3x3 or 4x4", root)
    W, H = image_size(next(iter(color.values())))
    intr = scaled_intrinsics(Intrinsics(K[0, 0], K[1, 1], K[0, 2], K[1, 2], W, H), downscale)
    depth = indexed_files(root / "depth", "", (".png",))
    labels = indexed_files(root / "label-filt", "", (".png",))
    inst = indexed_files(root / "instance-filt", "", (".png",))
    tsv = next((p for p in (root / TSV_NAME, root.parent / TSV_NAME) if p.is_file()), None)
    lut, classes = read_nyu40_mapping(tsv) if tsv is not None else (None, None)
    kept: list[tuple[int, Path, np.ndarray]] = []
    skipped: list[Path] = []
    for i, path in color.items():
        pose_path = root / "pose" / f"{i}.txt"
        c2w = read_matrix(pose_path, "pose")
        if c2w.shape == (4, 4) and not np.all(np.isfinite(c2w)):
            skipped.append(pose_path)  # ScanNet writes -inf poses where tracking was lost
            continue
        kept.append((i, path, check_pose(c2w, pose_path)))
    if skipped:
        warn(f"skipped {len(skipped)} frame(s) whose pose is not finite (first: {skipped[0].name})", root / "pose")
    if not kept:
        raise LabelfieldError("no frame has a finite pose", root / "pose")
    if classes is None:
        classes = table_from_label_files([labels[i] for i, _, _ in kept if i in labels])
    loader = FileLoader((W, H), classes, label_lut=lut, resize_aux=True)
    frames = [
        Frame(
            name=str(i),
            intrinsics=intr,
            c2w=c2w,
            rgb_path=path,
            depth_path=depth.get(i),
            label_path=labels.get(i),
            instance_path=inst.get(i),
            loader=loader,
        )
        for i, path, c2w in kept
    ]
    return Scene(frames, classes, root, "scannet")
