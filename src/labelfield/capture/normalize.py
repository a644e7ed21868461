"""Scale and orientation of an SfM reconstruction: gravity up along +z, the scene in a unit box.

SfM recovers poses up to a similarity (rotation, translation, scale). We fix it as follows:
1. **Up**: the mean of the cameras' up vectors (the negated image-down axis, -y of each OpenCV camera, in the
   world) is taken as gravity-up and rotated onto +z by the shortest rotation. People hold phones upright and
   rarely roll far, so the mean is a good estimate (roll noise averages out). The yaw stays as SfM left it.
2. **Box**: after the rotation, the axis-aligned box holding every camera centre and the 1st..99th percentile
   of the sparse points along each axis (stray points ignored) is moved to the origin and scaled
   uniformly so that its longest side is 1: the scene lies in [-0.5, 0.5]^3 (up to the 1 % stray points).
The similarity is returned so that it can be saved (capture.json) and undone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Similarity:
    """x' = scale * R @ x + t, for world points; R (3, 3), t (3,)."""

    scale: float
    R: np.ndarray
    t: np.ndarray

    def points(self, x: np.ndarray) -> np.ndarray:
        """Transform points (N, 3)."""
        return self.scale * np.asarray(x, np.float64) @ self.R.T + self.t

    def pose(self, c2w: np.ndarray) -> np.ndarray:
        """Transform a camera-to-world (4, 4): the camera turns with R and its centre moves as a point."""
        out = np.eye(4)
        out[:3, :3] = self.R @ np.asarray(c2w)[:3, :3]
        out[:3, 3] = self.points(np.asarray(c2w)[None, :3, 3])[0]
        return out

    def to_json(self) -> dict:
        return {"scale": float(self.scale), "rotation": self.R.tolist(), "translation": self.t.tolist()}


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shortest rotation (3, 3) taking unit direction `a` onto unit direction `b` (Rodrigues)."""
    a = np.asarray(a, np.float64) / np.linalg.norm(a)
    b = np.asarray(b, np.float64) / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1.0 + 1e-9:  # opposite: half a turn about any axis perpendicular to a
        axis = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def camera_up(c2ws: np.ndarray) -> np.ndarray:
    """Mean up direction (3,) of OpenCV cameras (N, 4, 4): the mean of -y axes, normalised."""
    up = -np.asarray(c2ws)[:, :3, 1].mean(0)
    return up / max(np.linalg.norm(up), 1e-12)


def normalising_similarity(c2ws: np.ndarray, points: np.ndarray, percentile: float = 1.0) -> Similarity:
    """The similarity that puts the mean camera up on +z and cameras + sparse points in a unit box."""
    c2ws = np.asarray(c2ws, np.float64)
    R = rotation_between(camera_up(c2ws), np.array([0.0, 0.0, 1.0]))
    centres = c2ws[:, :3, 3] @ R.T
    pts = np.asarray(points, np.float64).reshape(-1, 3) @ R.T
    lo, hi = centres.min(0), centres.max(0)
    if len(pts):
        lo = np.minimum(lo, np.percentile(pts, percentile, axis=0))
        hi = np.maximum(hi, np.percentile(pts, 100.0 - percentile, axis=0))
    scale = 1.0 / max(float((hi - lo).max()), 1e-9)
    return Similarity(scale, R, -scale * (lo + hi) / 2.0)
