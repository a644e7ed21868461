"""3D consistency of label maps: do a pixel's label and the label where it reprojects agree?

For a pair of frames (i, j = i + k): every pixel of frame i with depth > 0 is back-projected with its
z-depth and frame i's pose, projected into frame j and rounded to the nearest pixel. It counts when it lands
inside frame j, in front of the camera, passes a z-test against frame j's depth (|z_proj - depth_j| <=
rel_tol * z_proj: otherwise it is occluded or disoccluded), and at least one of the two labels is non-void;
it agrees when both labels are equal. So a label that reprojects onto a hole (void) counts as a disagreement,
and void on both sides is ignored. The score is agreeing / counted pixels over all pairs: ~1 for ground
truth (only rounding at boundaries disagrees), lower for labels that flicker, drift or leave holes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from labelfield.cameras import Intrinsics, project, unproject_depth
from labelfield.scene import Frame


@dataclass
class ViewLabels:
    """What consistency needs of one frame: labels (H, W) original ids, depth (H, W) metres, camera."""

    labels: np.ndarray
    depth: np.ndarray
    intrinsics: Intrinsics
    c2w: np.ndarray

    @classmethod
    def from_frame(cls, frame: Frame) -> ViewLabels | None:
        """A scene frame's labels, depth and camera (None without labels or depth)."""
        labels, depth = frame.load_labels(), frame.load_depth()
        if labels is None or depth is None:
            return None
        return cls(labels, depth, frame.intrinsics, frame.c2w)


def partner(i: int, n: int, k: int = 1) -> int | None:
    """The frame frame i of n is compared with: i + k, or i - k near the end (k clamped to 1..n-1).

    None when there is no other frame.
    """
    if n < 2:
        return None
    k = max(1, min(k, n - 1))
    return i + k if i + k < n else i - k


def pair_agreement(
    a: ViewLabels, b: ViewLabels, rel_tol: float = 0.05, skip_boundaries: bool = False
) -> tuple[int, int]:
    """(agreeing, counted) pixels of view `a` reprojected into view `b`.

    skip_boundaries: also leave out points whose four surrounding pixels in `b` carry different labels; there,
    rounding to the nearest pixel decides the label (a check of exact ground truth uses it).
    """
    ok = (a.depth > 0) & np.isfinite(a.depth)
    if not ok.any():
        return 0, 0
    pts = unproject_depth(a.depth.astype(np.float64), a.intrinsics, a.c2w)[ok]
    uv, z = project(pts, b.intrinsics, b.c2w)
    u, v = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
    H, W = b.labels.shape
    inside = (z > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    src = a.labels[ok][inside]
    u, v, z = u[inside], v[inside], z[inside]
    db = b.depth[v, u]
    lb = b.labels[v, u]
    vis = (db > 0) & (np.abs(z - db) <= rel_tol * z) & ((lb != 0) | (src != 0))
    if skip_boundaries and H > 1 and W > 1:
        uv_in = uv[inside]
        u0 = np.clip(np.floor(uv_in[:, 0]).astype(np.int64), 0, W - 2)
        v0 = np.clip(np.floor(uv_in[:, 1]).astype(np.int64), 0, H - 2)
        corners = np.stack([b.labels[v0, u0], b.labels[v0, u0 + 1], b.labels[v0 + 1, u0], b.labels[v0 + 1, u0 + 1]])
        vis &= (corners == corners[0]).all(0)
    return int((src[vis] == lb[vis]).sum()), int(vis.sum())


def frame_agreement(
    view: Callable[[int], ViewLabels | None], i: int, n: int, k: int = 1, rel_tol: float = 0.05
) -> tuple[int, int]:
    """(agreeing, counted) pixels of frame i reprojected into its `partner`; `view(i)` gives a frame's
    ViewLabels (None: no depth, so the frame is not scored)."""
    j = partner(i, n, k)
    if j is None:
        return 0, 0
    a, b = view(i), view(j)
    if a is None or b is None:
        return 0, 0
    return pair_agreement(a, b, rel_tol)


def consistency(
    views: Sequence[ViewLabels | None], sources: list[int] | None = None, k: int = 1, rel_tol: float = 0.05
) -> float | None:
    """Agreement fraction over pairs (i, i + k) for i in `sources` (default: every frame).

    Frames near the end pair with i - k instead (`partner`), so every source frame is scored. Returns None
    when no pixel could be checked (no depth, no overlap).
    """
    n = len(views)
    agree = total = 0
    for i in sources if sources is not None else range(n):
        a, t = frame_agreement(views.__getitem__, i, n, k, rel_tol)
        agree, total = agree + a, total + t
    return agree / total if total else None
