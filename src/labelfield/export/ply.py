"""Export `ply`: a labelled point cloud fused from the LABELS folder's rendered depth, voxel-downsampled.

Every pixel with depth > 0 of every frame is back-projected with its pose and intrinsics from frames.json
and falls into a voxel of edge `voxel_size` metres (`labelfield.pointcloud`, shared with serve's 3D view). Per
voxel we keep the mean position, the mean colour, and the majority class id (votes over all pixels that landed
in it). Frames are reduced to voxels one at a time and merged, so memory follows occupied voxels, not pixels.

PLY (binary little-endian, via plyfile), one `vertex` element with
    x, y, z   float32 world coordinates (metres, the scene's frame)
    red, green, blue   uint8 (rendered colour; class colour when the folder has no rgb/)
    label     uint16 original class id (the ScanNet `*.labels.ply` name; 0 = void)
Open3D and MeshLab read x, y, z and the colours; `label` rides along as an extra property.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labelfield.errors import LabelfieldError
from labelfield.io import atomic_path
from labelfield.labelset import LabelSet
from labelfield.pointcloud import VoxelAccumulator, auto_voxel_size, frame_points
from labelfield.progress import Progress, ProgressFn


def fuse_points(
    labelset: LabelSet, voxel_size: float | None = None, on_progress: ProgressFn | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Fuse all frames' rendered depth into voxels -> (xyz (V, 3) float32, rgb (V, 3) uint8, label (V,), voxel)."""
    names = [n for n in labelset.names if (labelset.root / "depth" / f"{n}.png").is_file()]
    if not names:
        raise LabelfieldError("no rendered depth (depth/) to fuse a point cloud from", labelset.root)
    acc: VoxelAccumulator | None = None
    for k, name in enumerate(names):
        if on_progress is not None:
            on_progress(Progress("fuse", k + 1, len(names), "frames"))  # frame k + 1 of n under way
        rec = labelset.record(name)
        intr, c2w = rec.intr(), rec.pose()
        depth = labelset.load_depth(name)
        lab = labelset.load_labels(name)
        if depth.shape != lab.shape or depth.shape != (intr.height, intr.width):
            raise LabelfieldError(f"depth, labels and camera of frame {name} differ in size", labelset.root)
        rgb = labelset.load_rgb(name)
        if rgb is None:
            rgb = labelset.classes.colorize(lab)
        pts, col, cls = frame_points(depth, intr, c2w, rgb, lab)
        if acc is None:  # auto voxel: 1/256 of the first frame's extent (a few mm indoors)
            if voxel_size is None:
                voxel_size = auto_voxel_size(pts)
            if voxel_size <= 0:
                raise LabelfieldError(f"--voxel-size must be positive, got {voxel_size}")
            acc = VoxelAccumulator(voxel_size)
        acc.add(pts, col, cls)
    assert acc is not None
    xyz, rgb, cls = acc.result()
    if len(xyz) == 0:
        raise LabelfieldError("rendered depth is empty in every frame: no points to export", labelset.root)
    return xyz, rgb, cls, float(acc.voxel)


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray, label: np.ndarray) -> Path:
    """Write a binary PLY point cloud (x, y, z, red, green, blue, label) atomically."""
    from plyfile import PlyData, PlyElement

    if int(np.max(label, initial=0)) > 65535:
        raise LabelfieldError("class ids above 65535 do not fit the PLY's uint16 label", path)
    v = np.empty(
        len(xyz),
        [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("label", "u2")],
    )
    v["x"], v["y"], v["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    v["red"], v["green"], v["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    v["label"] = label
    path = Path(path)
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(v, "vertex")], text=False, byte_order="<").write(str(tmp))
    return path


def export_ply(
    labelset: LabelSet, out: str | Path, voxel_size: float | None = None, on_progress: ProgressFn | None = None
) -> Path:
    """Fuse and write the labelled point cloud `out`. Returns its path."""
    xyz, rgb, cls, _ = fuse_points(labelset, voxel_size, on_progress)
    return write_ply(out, xyz, rgb, cls)
