"""Export `ply`: a labelled point cloud fused from the LABELS folder's rendered depth, voxel-downsampled.

Every pixel with depth > 0 of every frame is back-projected with its pose and intrinsics from frames.json
(`cameras.unproject_depth`) and falls into a voxel of edge `voxel_size` metres. Per voxel we keep the mean
position, the mean colour, and the majority class id (votes over all pixels that landed in it). Frames are
reduced to voxels one at a time and merged, so memory follows the number of occupied voxels, not pixels.

PLY (binary little-endian, via plyfile), one `vertex` element with
    x, y, z   float32 world coordinates (metres, the scene's frame)
    red, green, blue   uint8 (rendered colour; class colour when the folder has no rgb/)
    label     uint16 original class id (the ScanNet `*.labels.ply` name; 0 = void)
Open3D and MeshLab read x, y, z and the colours; `label` rides along as an extra property.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labelfield.cameras import unproject_depth
from labelfield.errors import LabelfieldError
from labelfield.io import atomic_path
from labelfield.labelset import LabelSet
from labelfield.progress import Progress, ProgressFn

_OFFSET = 1 << 20  # voxel coordinates are stored in 21 bits each -> one int64 key per voxel


class _VoxelAccumulator:
    """Sums of position and colour, pixel counts, and (voxel, class) vote counts, keyed by voxel."""

    def __init__(self, voxel_size: float) -> None:
        self.voxel = float(voxel_size)
        self.keys = np.zeros(0, np.int64)
        self.xyz = np.zeros((0, 3), np.float64)
        self.rgb = np.zeros((0, 3), np.float64)
        self.n = np.zeros(0, np.int64)
        self.vote_keys = np.zeros(0, np.int64)
        self.vote_cls = np.zeros(0, np.int64)
        self.vote_n = np.zeros(0, np.int64)
        self.pending: list[tuple[np.ndarray, ...]] = []

    def _key(self, xyz: np.ndarray) -> np.ndarray:
        ijk = np.floor(xyz / self.voxel).astype(np.int64) + _OFFSET
        if ijk.min(initial=0) < 0 or ijk.max(initial=0) >= 2 * _OFFSET:
            raise LabelfieldError(f"point cloud too large for voxel size {self.voxel} m (use a larger --voxel-size)")
        return (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2]

    @staticmethod
    def _reduce(keys, xyz, rgb, n, vk, vc, vn):
        uk, inv = np.unique(keys, return_inverse=True)
        sx = np.stack([np.bincount(inv, xyz[:, d], len(uk)) for d in range(3)], 1)
        sc = np.stack([np.bincount(inv, rgb[:, d], len(uk)) for d in range(3)], 1)
        sn = np.bincount(inv, n, len(uk)).astype(np.int64)
        pair = np.stack([vk, vc], 1)
        up, pinv = np.unique(pair, axis=0, return_inverse=True)
        pn = np.bincount(pinv.ravel(), vn, len(up)).astype(np.int64)
        return uk, sx, sc, sn, up[:, 0], up[:, 1], pn

    def add(self, xyz: np.ndarray, rgb: np.ndarray, cls: np.ndarray) -> None:
        """Add points (P, 3) metres, colours (P, 3) 0..255, class ids (P,)."""
        if len(xyz) == 0:
            return
        k = self._key(xyz)
        ones = np.ones(len(k), np.int64)
        self.pending.append(self._reduce(k, xyz, rgb.astype(np.float64), ones, k, cls.astype(np.int64), ones))
        # merging re-sorts everything: do it only when the pending frames outgrow the merged set
        if sum(len(p[0]) for p in self.pending) > max(len(self.keys), 1 << 20):
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        current = (self.keys, self.xyz, self.rgb, self.n, self.vote_keys, self.vote_cls, self.vote_n)
        merged = [np.concatenate(parts) for parts in zip(current, *self.pending)]
        (self.keys, self.xyz, self.rgb, self.n, self.vote_keys, self.vote_cls, self.vote_n) = self._reduce(*merged)
        self.pending = []

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(V, 3) float32 mean positions, (V, 3) uint8 mean colours, (V,) majority class per voxel."""
        self._flush()
        xyz = (self.xyz / self.n[:, None]).astype(np.float32)
        rgb = (self.rgb / self.n[:, None]).round().clip(0, 255).astype(np.uint8)
        # votes are sorted by (voxel key, class); pick, per voxel, the class with most votes (ties: lowest id)
        order = np.lexsort((-self.vote_n, self.vote_keys))
        vk = self.vote_keys[order]
        first = np.r_[True, vk[1:] != vk[:-1]]
        best_keys, best_cls = vk[first], self.vote_cls[order][first]
        cls = best_cls[np.searchsorted(best_keys, self.keys)]
        return xyz, rgb, cls


def fuse_points(
    labelset: LabelSet, voxel_size: float | None = None, on_progress: ProgressFn | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Fuse all frames' rendered depth into voxels -> (xyz (V, 3) float32, rgb (V, 3) uint8, label (V,), voxel)."""
    names = [n for n in labelset.names if (labelset.root / "depth" / f"{n}.png").is_file()]
    if not names:
        raise LabelfieldError("no rendered depth (depth/) to fuse a point cloud from", labelset.root)
    acc: _VoxelAccumulator | None = None
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
        ok = depth > 0
        pts = unproject_depth(depth.astype(np.float64), intr, c2w)[ok]
        if acc is None:  # auto voxel: 1/256 of the first frame's extent (a few mm indoors)
            if voxel_size is None:
                ext = float(np.linalg.norm(pts.max(0) - pts.min(0))) if len(pts) else 1.0
                voxel_size = max(ext / 256.0, 1e-4)
            if voxel_size <= 0:
                raise LabelfieldError(f"--voxel-size must be positive, got {voxel_size}")
            acc = _VoxelAccumulator(voxel_size)
        acc.add(pts, rgb[ok], lab[ok])
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
