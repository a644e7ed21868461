"""Fuse the field's prediction with labels reprojected through depth, at annotate time.

For a frame without user labels, the user's labels of the nearest labelled frames are reprojected into it
(`labelfield.baselines.pseudo_labels`: z-tested warps, a vote, a confidence q in [0, 1]) and combined with the
field's class probabilities p (H, W, C) as a product of experts:

    fused(c) ∝ p(c) * r(c)^trust,   r(c) = q for the reprojected class, (1 - q) / (C - 1) for the others,

with q clipped to [1/C, `max_confidence`] (a reprojection never makes a class impossible). trust = 8 by
default (measured, 200 steps: room3 mIoU 0.873 field alone, 0.919 trust 1, 0.943 trust 4, 0.952 trust 8,
0.954 trust 16, reproject 0.946; demo 0.667 / 0.946 / 0.967 / 0.970 at 8, reproject 0.965). So where the field
is sure and reprojection is weak (one far source, sources disagreeing) the field wins; where the field is
unsure or misses a small object that several sources agree on, reprojection wins; where nothing reprojects
(disocclusions, no depth) the field alone decides.

Depth: the scene's depth maps when it has them; otherwise the field's rendered depth (the labelled frames are
rendered once for their depth), so RGB-only scenes get geometric propagation too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from labelfield.annotate.frames import RenderFn, to_numpy
from labelfield.annotate.refine import DEFAULT_TOL, refine_probs
from labelfield.baselines.pseudo_labels import pseudo_labels_for
from labelfield.cameras import Intrinsics
from labelfield.labels import SparseLabels
from labelfield.scene import ClassTable, Scene


def fuse_probs(
    probs: np.ndarray,
    pseudo_index: np.ndarray,
    confidence: np.ndarray,
    trust: float = 8.0,
    max_confidence: float = 0.99,
) -> np.ndarray:
    """Product of experts of the field's probs (H, W, C) and a reprojected label map.

    pseudo_index: (H, W) training indices of the reprojected labels, -1 = none; confidence: (H, W) in [0, 1].
    Returns fused probabilities (H, W, C) float32 (rows sum to 1); pixels without a reprojected label keep p.
    """
    p = np.asarray(probs, np.float32)
    C = p.shape[-1]
    has = (pseudo_index >= 0) & (confidence > 0)
    if C < 2 or not has.any():
        return p.copy()
    q = np.clip(np.asarray(confidence, np.float32)[has], 1.0 / C, max_confidence)
    other = (1.0 - q) / (C - 1)
    r = np.repeat(other[:, None], C, 1)  # (m, C)
    r[np.arange(len(q)), pseudo_index[has]] = q
    f = p[has] * r**trust
    out = p.copy()
    out[has] = f / np.maximum(f.sum(-1, keepdims=True), 1e-12)
    return out


class FusedRenderer:
    """A `render_fn` that fuses the wrapped render's probs with reprojected user labels for scene frames.

    Frames are recognised by their camera (the exact c2w and size annotate passes); other cameras
    (trajectories) and labelled frames are returned as rendered.

    Args:
        render_fn: the field's `(intrinsics, c2w) -> dict` (`render.chunked.render_image`).
        scene, classes: the scene (its depth maps are used when every frame has one) and class table.
        sparse: the user's labels, frame index -> (H, W) original ids.
        n_sources, rel_tol: as in the `reproject` baseline; trust: exponent of the reprojection expert.
        depth_fn: `i -> depth` to use instead of the scene's depth maps (experiments with sensor noise).
        scene_depth: use the scene's depth (None: when every frame has some); False: the field's rendered depth.
        refine: then pull the label boundaries onto the frame's depth edges (`annotate.refine.refine_probs`,
            with that same depth); None/0 = off.
    """

    def __init__(
        self,
        render_fn: RenderFn,
        scene: Scene,
        classes: ClassTable,
        sparse: SparseLabels,
        n_sources: int = 4,
        rel_tol: float = 0.05,
        trust: float = 8.0,
        depth_fn: Callable[[int], np.ndarray | None] | None = None,
        scene_depth: bool | None = None,
        refine: float | None = DEFAULT_TOL,
    ) -> None:
        self.render_fn, self.scene, self.classes, self.sparse = render_fn, scene, classes, sparse
        self.n_sources, self.rel_tol, self.trust, self.refine = n_sources, rel_tol, trust, refine
        has = len(scene.frames) > 0 and all(f.has_depth() for f in scene.frames)
        self.scene_depth = has if scene_depth is None else bool(scene_depth) and has
        self.depth_fn = depth_fn or (lambda i: scene.frames[i].load_depth())
        self._by_pose = {self._key(f.intrinsics, f.c2w): i for i, f in enumerate(scene.frames)}
        self._src_depth: dict[int, np.ndarray] | None = None
        self.fused_frames = 0

    @staticmethod
    def _key(intr: Intrinsics, c2w: np.ndarray) -> tuple:
        return (intr.width, intr.height, np.asarray(c2w, np.float64).round(9).tobytes())

    def source_depth(self) -> dict[int, np.ndarray]:
        """Depth of the labelled frames: the scene's, or rendered by the field (once)."""
        if self._src_depth is None:
            self._src_depth = {}
            for i in sorted(self.sparse):
                f = self.scene.frames[i]
                d = self.depth_fn(i) if self.scene_depth else to_numpy(self.render_fn(f.intrinsics, f.c2w)["depth"])
                self._src_depth[i] = np.nan_to_num(np.asarray(d, np.float32), nan=0.0)
        return self._src_depth

    def __call__(self, intr: Intrinsics, c2w: np.ndarray) -> dict[str, Any]:
        out = self.render_fn(intr, c2w)
        t = self._by_pose.get(self._key(intr, c2w))
        if t is None or t in self.sparse or not self.sparse:
            return out
        depth_t = self.depth_fn(t) if self.scene_depth else to_numpy(out["depth"])
        depth_t = np.nan_to_num(np.asarray(depth_t, np.float32), nan=0.0)
        labels, conf = pseudo_labels_for(
            self.scene, self.sparse, t, depth_t, self.source_depth(), self.n_sources, self.rel_tol
        )
        index = self.classes.to_index(labels)
        probs = to_numpy(out["probs"]).astype(np.float32)
        fused = dict(out)
        fused["probs"] = fuse_probs(probs, index, conf, self.trust)
        if self.refine:
            fused["probs"] = refine_probs(fused["probs"], depth_t, tol=self.refine)
        if "label" in out:  # the inference-only render's argmax and confidence follow the fused probs
            fused["confidence"], fused["label"] = fused["probs"].max(-1), fused["probs"].argmax(-1)
        if "opacity" in out and out["opacity"] is not None:
            # A pixel the reprojection labels is a surface, whatever the field's opacity says there.
            op = to_numpy(out["opacity"]).astype(np.float32).reshape(labels.shape)
            fused["opacity"] = np.where(index >= 0, np.maximum(op, 1.0), op)
        self.fused_frames += 1
        return fused
