"""Labelled point clouds from depth maps: back-project a frame's pixels, fuse many frames into voxels.

Shared by `labelfield export --format ply` (a LABELS folder's rendered depth, full size) and the 3D view of
`labelfield serve` (the scene's depth or the field's, at thumbnail size). Numpy only: no torch, no trainer.

Per voxel of edge `voxel` metres we keep the mean position, the mean colour, and the majority class id (votes
over all pixels that landed in it). Frames are reduced to voxels one at a time and merged, so memory follows
the number of occupied voxels, not pixels.
"""

from __future__ import annotations

import numpy as np

from labelfield.cameras import Intrinsics, unproject_depth
from labelfield.errors import LabelfieldError

VOXEL_RANGE = 1 << 20  # voxel coordinates are stored in 21 bits each -> one int64 key per voxel


def frame_points(
    depth: np.ndarray, intr: Intrinsics, c2w: np.ndarray, rgb: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixels of one frame with depth > 0 as world points.

    depth (H, W) z-depth in metres (0 = none), intr of that H x W grid, c2w (4, 4) OpenCV camera-to-world,
    rgb (H, W, 3) uint8, labels (H, W) ids. Returns xyz (P, 3) float64, rgb (P, 3) uint8, labels (P,).
    """
    if depth.shape != labels.shape or depth.shape != rgb.shape[:2] or depth.shape != (intr.height, intr.width):
        raise LabelfieldError(
            f"depth {depth.shape}, labels {labels.shape}, colours {rgb.shape[:2]} and camera "
            f"{(intr.height, intr.width)} differ in size"
        )
    ok = np.isfinite(depth) & (depth > 0)
    xyz = unproject_depth(np.where(ok, depth, 0).astype(np.float64), intr, c2w)[ok]
    return xyz, rgb[ok], labels[ok]


def auto_voxel_size(xyz: np.ndarray, divisions: float = 256.0) -> float:
    """A voxel edge of 1/`divisions` of the points' bounding-box diagonal (a few mm indoors at 256)."""
    ext = float(np.linalg.norm(xyz.max(0) - xyz.min(0))) if len(xyz) else 1.0
    return max(ext / divisions, 1e-4)


class VoxelAccumulator:
    """Sums of position and colour, pixel counts, and (voxel, class) vote counts, keyed by voxel.

    `weak_id`: a class id (e.g. void for "no prediction yet") whose votes win a voxel only when it has no
    other vote. None: every id counts alike.
    """

    def __init__(self, voxel_size: float, weak_id: int | None = None) -> None:
        if not voxel_size > 0:
            raise LabelfieldError(f"voxel size must be positive, got {voxel_size}")
        self.voxel = float(voxel_size)
        self.weak_id = weak_id
        self.keys = np.zeros(0, np.int64)
        self.xyz = np.zeros((0, 3), np.float64)
        self.rgb = np.zeros((0, 3), np.float64)
        self.n = np.zeros(0, np.int64)
        self.vote_keys = np.zeros(0, np.int64)
        self.vote_cls = np.zeros(0, np.int64)
        self.vote_n = np.zeros(0, np.int64)
        self.pending: list[tuple[np.ndarray, ...]] = []

    def in_range(self, xyz: np.ndarray) -> np.ndarray:
        """(P,) bool: the points whose voxel coordinates fit the 21-bit keys."""
        ijk = np.floor(xyz / self.voxel)
        return np.all((ijk >= -VOXEL_RANGE) & (ijk < VOXEL_RANGE), axis=1)

    def _key(self, xyz: np.ndarray) -> np.ndarray:
        if not self.in_range(xyz).all():
            raise LabelfieldError(f"point cloud too large for voxel size {self.voxel} m (use a larger --voxel-size)")
        ijk = np.floor(xyz / self.voxel).astype(np.int64) + VOXEL_RANGE
        return (ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2]

    @staticmethod
    def _reduce(keys, xyz, rgb, n, vk, vc, vn):
        uk, inv = np.unique(keys, return_inverse=True)
        inv = inv.ravel()
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

    def __len__(self) -> int:
        self._flush()
        return len(self.keys)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(V, 3) float32 mean positions, (V, 3) uint8 mean colours, (V,) majority class per voxel."""
        self._flush()
        xyz = (self.xyz / np.maximum(self.n, 1)[:, None]).astype(np.float32)
        rgb = (self.rgb / np.maximum(self.n, 1)[:, None]).round().clip(0, 255).astype(np.uint8)
        # votes are sorted by (voxel key, class); per voxel pick the class with most votes (ties: lowest id),
        # a weak id only when nothing else voted
        weak = self.vote_cls == self.weak_id if self.weak_id is not None else np.zeros(len(self.vote_cls), bool)
        order = np.lexsort((-self.vote_n, weak, self.vote_keys))
        vk = self.vote_keys[order]
        first = np.r_[True, vk[1:] != vk[:-1]] if len(vk) else np.zeros(0, bool)
        best_keys, best_cls = vk[first], self.vote_cls[order][first]
        cls = best_cls[np.searchsorted(best_keys, self.keys)]
        return xyz, rgb, cls
