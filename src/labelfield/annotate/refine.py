"""Depth-guided label refinement: class probabilities averaged over the neighbours on the same surface.

Notation: probs (H, W, C) per-pixel class probabilities; depth (H, W) z-depth in metres, 0 or NaN = unknown.
A neighbour q of pixel p (|dx|, |dy| <= radius, p itself included) is on p's surface when both depths are known
and |d_q - d_p| <= tol * d_p. The refined probabilities of p are the mean of probs over those neighbours; a pixel
without depth keeps its own.

Why: a rendered label map is blurred at object boundaries (the field's density is smooth at the hash grid's
resolution, a reprojected label lands within a pixel of where it belongs), so thin halos of a foreground class
lie on the background behind it and small objects lose their rim. The depth map's edges are where the object
boundaries are, to the pixel: averaging only across same-surface neighbours pulls a label boundary onto the
depth edge, and never mixes a foreground object into the background. On a depth-continuous boundary (a book
lying on a table) it is a plain 3x3 box filter, which leaves a boundary where it is.

Measured on the tune scene t-orbit-wallpaper (RGB-D, 10 % labelled, 1000 steps, the field fused with reprojected
labels, 8 scored frames): mIoU 0.928 -> 0.942 (small classes 0.866 -> 0.897) with radius 1, tol 0.02;
tol 0.005 / 0.01: 0.941; radius 2: 0.936-0.926; two or three passes: no gain. About half of the fused labels'
errors lie on a GT boundary pixel (3914 of 9342), which is what this removes; see docs/results.md.

Example:
    >>> p = refine_probs(probs, depth)            # (H, W, C), rows still sum to 1
"""

from __future__ import annotations

import numpy as np

DEFAULT_TOL = 0.02
"""Relative depth difference under which two neighbouring pixels count as one surface."""


def refine_probs(probs: np.ndarray, depth: np.ndarray | None, radius: int = 1, tol: float = DEFAULT_TOL) -> np.ndarray:
    """Refined probabilities (H, W, C) float32: the mean of `probs` over each pixel's same-surface neighbours.

    probs: (H, W, C); depth: (H, W) z-depth (0 / NaN unknown) or None (returns probs as float32 unchanged).
    Rows that summed to 1 still do. Cost: (2 radius + 1)^2 passes over probs.
    """
    p = np.asarray(probs, np.float32)
    if depth is None or radius < 1 or p.ndim != 3:
        return p
    d = np.nan_to_num(np.asarray(depth, np.float32), nan=0.0).reshape(p.shape[:2])
    H, W, _ = p.shape
    known = d > 0
    pp = np.pad(p, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    dp = np.pad(d, radius, mode="edge")
    limit = tol * d
    acc = np.zeros_like(p)
    count = np.zeros((H, W), np.float32)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            dn = dp[dy : dy + H, dx : dx + W]
            same = known & (dn > 0) & (np.abs(dn - d) <= limit)
            same |= (dy == radius) & (dx == radius)  # p itself always counts (also without depth)
            w = same.astype(np.float32)
            acc += w[..., None] * pp[dy : dy + H, dx : dx + W]
            count += w
    out = acc / count[..., None]
    out[~known] = p[~known]
    return out
