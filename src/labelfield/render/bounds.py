"""Scene bounds from the cameras (and depth when present): the box the field lives in and a near distance.

Heuristic, in order:
1. **Depth present** (RGB-D captures, rooms): back-project the valid depth of up to `max_frames` frames
   (subsampled pixels), drop points deeper than 1.5 x the 99th depth percentile (stray depth), take the
   extent of the rest joined with the camera centres, and pad by 5 % of it. (Coordinate percentiles would
   cut off the ceiling, which few pixels see; a surface outside the box makes the field fill the box with
   fog to explain it.) near = half the 1st percentile of the depths, in [0.01, 0.1] m.
2. **No depth, cameras looking inward** (object captures such as NeRF synthetic): the optical axes converge.
   Find the point p closest to all axes in least squares; if it lies in front of >= 80 % of the cameras, the
   object sits around p and must fit in the images, so the box is a cube centred at p with half-size
   1.1 * median(camera distance to p) * tan(half the narrower field of view) — the half-width of the
   view at p. For lego (distance 4.03, fov 39.6 deg) that gives +-1.6 around p, which holds the model
   (NeRF synthetic objects fit in [-1.5, 1.5]^3). near = 5 % of the median camera distance.
3. **No depth, sparse points** (`Scene.points`: COLMAP's points3D, nerfstudio's / `labelfield capture`'s
   `sparse_pc.ply`): as 1, with the points: drop points farther from the cameras' centroid than 1.5 x the
   99th percentile of that distance (stray, near-infinite triangulations), take the extent of the rest joined
   with the camera centres, and pad by 5 %. near = 1 % of the box's longest side.
4. **Otherwise** (forward-facing or unordered captures without depth or points): the camera centres and the
   corners of every camera's view at one "scene scale" ahead (scale = the cameras' spread, at least 1), padded
   by 10 %. The corners, not just the optical axes: a room swept by level cameras has its ceiling and floor at
   the top and bottom of the views (a box of the axes cut them off: the field filled the box with fog, and the
   ceiling's labels were lost). near = 1 % of the scale. A rough guess: give depth or points when you can.
"""

from __future__ import annotations

import numpy as np

from labelfield.cameras import Intrinsics, unproject_depth
from labelfield.scene import Scene

MIN_POINTS = 20  # fewer sparse points than this say little about the scene's extent: heuristic 4


def _depth_points(scene: Scene, max_frames: int, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """World points (M, 3) and their z-depths (M,) from up to max_frames frames with depth."""
    with_depth = [f for f in scene.frames if f.has_depth()]
    if not with_depth:
        return np.zeros((0, 3)), np.zeros(0)
    pick = np.linspace(0, len(with_depth) - 1, min(max_frames, len(with_depth))).round().astype(int)
    pts, zs = [], []
    for i in np.unique(pick):
        f = with_depth[i]
        depth = f.load_depth()
        if depth is None:
            continue
        stride = max(1, int(np.sqrt(depth.size / max(max_points // len(pick), 1))))
        xyz = unproject_depth(depth, f.intrinsics, f.c2w)[::stride, ::stride]
        z = depth[::stride, ::stride]
        ok = np.isfinite(z) & (z > 0)
        pts.append(xyz[ok])
        zs.append(z[ok])
    if not pts:
        return np.zeros((0, 3)), np.zeros(0)
    return np.concatenate(pts), np.concatenate(zs)


def _axes_convergence(centres: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Least-squares point closest to the lines centres + t * axes (unit): sum_i (I - a a^T)(p - c_i) = 0."""
    proj = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]
    A = proj.sum(0)
    b = (proj @ centres[:, :, None]).sum(0)[:, 0]
    return np.linalg.lstsq(A, b, rcond=None)[0]


def scene_bounds(scene: Scene, max_frames: int = 32, max_points: int = 200_000) -> tuple[np.ndarray, float]:
    """Scene box and near distance from poses (and depth), by the heuristic in the module docstring.

    Returns:
        aabb: (2, 3) float64 [[x_min, y_min, z_min], [x_max, y_max, z_max]] in world metres.
        near: float, the distance along a ray before which nothing is sampled.
    """
    poses = scene.poses()
    centres = poses[:, :3, 3]
    pts, zs = _depth_points(scene, max_frames, max_points)
    if len(pts) >= 100:
        # Stray depth is far depth (through windows, sensor noise): drop points deeper than 1.5 x the 99th
        # percentile, then take the full extent (coordinate percentiles would cut off ceilings and corners,
        # which few pixels see).
        keep = zs <= 1.5 * np.percentile(zs, 99)
        lo, hi = pts[keep].min(0), pts[keep].max(0)
        lo, hi = np.minimum(lo, centres.min(0)), np.maximum(hi, centres.max(0))
        pad = 0.05 * (hi - lo).max()
        near = float(np.clip(0.5 * np.percentile(zs.astype(np.float64), 1), 0.01, 0.1))
        return np.stack([lo - pad, hi + pad]), near
    p = inward_centre(scene)
    if p is not None:
        dist = float(np.median(np.linalg.norm(p - centres, axis=1)))
        intr = scene.frames[0].intrinsics
        half_fov = min(np.arctan2(intr.width / 2, intr.fx), np.arctan2(intr.height / 2, intr.fy))
        half = 1.1 * dist * np.tan(half_fov)
        return np.stack([p - half, p + half]), 0.05 * dist
    if scene.points is not None and len(scene.points) >= MIN_POINTS:
        pts = np.asarray(scene.points, np.float64)
        r = np.linalg.norm(pts - centres.mean(0), axis=1)
        pts = pts[r <= 1.5 * np.percentile(r, 99)]
        lo, hi = np.minimum(pts.min(0), centres.min(0)), np.maximum(pts.max(0), centres.max(0))
        pad = 0.05 * (hi - lo).max()
        return np.stack([lo - pad, hi + pad]), 0.01 * float((hi - lo).max())
    spread = float(np.linalg.norm(centres.max(0) - centres.min(0))) if len(centres) > 1 else 0.0
    scale = max(spread, 1.0)
    ext = np.concatenate([centres] + [f.c2w[:3, 3] + scale * view_corners(f.c2w, f.intrinsics) for f in scene.frames])
    lo, hi = ext.min(0), ext.max(0)
    pad = 0.1 * (hi - lo).max()
    return np.stack([lo - pad, hi + pad]), 0.01 * scale


def inward_centre(scene: Scene) -> np.ndarray | None:
    """The point (3,) the cameras look at when they look inward (an object capture: the point nearest to every
    optical axis lies in front of >= 80 % of the cameras, heuristic 2), else None."""
    poses = scene.poses()
    if len(poses) < 3:
        return None
    centres, axes = poses[:, :3, 3], poses[:, :3, 2]  # OpenCV: +z is the viewing direction
    p = _axes_convergence(centres, axes)
    return p if (((p - centres) * axes).sum(1) > 0).mean() >= 0.8 else None


def view_corners(c2w: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """World offsets (4, 3) from the camera centre to its view's corners at z-depth 1 (OpenCV: +z ahead)."""
    x = (np.array([-0.5, intr.width - 0.5]) - intr.cx) / intr.fx  # pixel centres are integers: edges at -0.5
    y = (np.array([-0.5, intr.height - 0.5]) - intr.cy) / intr.fy
    cam = np.array([[a, b, 1.0] for a in x for b in y])
    return cam @ np.asarray(c2w)[:3, :3].T
