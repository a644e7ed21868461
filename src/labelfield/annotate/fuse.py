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

Pixels nothing reprojects to (disocclusions: the ceiling of a walk-through, the far side of an object) but
with the scene's depth (not the field's) then hear a second expert of the same form: the vote of the 16
labelled 3D points nearest by position, surface normal and colour (`labelfield.baselines.nearest_point`;
`UNSEEN_NORMAL_WEIGHT`, `UNSEEN_COLOR_WEIGHT`: a joint, "bilateral" neighbourhood, as dense CRFs use position
and colour), exponent `unseen_trust` = 8, as reprojection's.
History (four tune rooms, 10 % labelled, RGB-D, 1000 steps; with the 3 % z-test): 0.958 / 0.942 / 0.976 / 0.967
before (5 % z-test, no fill); the fill by position alone, exponent 3: 0.972 / 0.970 / 0.984 / 0.977 (exponent 8
then overruled the field on thin objects: 0.974 / 0.933 on the first two); by position, normal and colour,
exponent 3: 0.972 / 0.972 / 0.986 / 0.979, exponent 8: 0.978 / 0.972 / 0.987 / 0.980; `reproject` at 3 %: 0.949 /
0.959 / 0.965 / 0.960. Two rooms added later (t-walk-plaster, t-orbit-plain): 0.903 / 0.976 by position, 0.944 /
0.975 with normal and colour, 0.950 / 0.977 at exponent 8 (exponents 5 and 12 in docs/ablations-quality.md).

Depth: the scene's depth maps when it has them; otherwise the field's rendered depth (the labelled frames are
rendered once for their depth), so RGB-only scenes get geometric propagation too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from labelfield.annotate.frames import RenderFn, to_numpy
from labelfield.annotate.refine import DEFAULT_TOL, refine_probs
from labelfield.baselines.nearest_point import MAX_POINTS, QUERY_EPS, LabelledPoints, depth_normals, unit_rgb
from labelfield.baselines.pseudo_labels import pseudo_labels_for
from labelfield.baselines.reproject import REL_TOL
from labelfield.cameras import Intrinsics, unproject_depth
from labelfield.labels import SparseLabels
from labelfield.scene import ClassTable, Scene

# Metres of neighbour distance per unit of normal difference in the fill. Tune split (10 % RGB-D, 1000 steps, the
# same fits): by position 0.972 / 0.970 / 0.984 / 0.977 / 0.903 (t-walk-plain, t-orbit-wallpaper, t-loop-plaster,
# t-walk-wallpaper, t-walk-plaster); 0.5: 0.973 / 0.972 / 0.985 / 0.979 / 0.911; 1.0: 0.972 / 0.972 / 0.985 /
# 0.981 / 0.911. With sensor-like depth (holes=0.1,rel=0.01,edges=1) on the first two: 0.936 / 0.912 by position,
# 0.934 / 0.916 at 0.5.
UNSEEN_NORMAL_WEIGHT = 0.5
# Metres per unit of RGB difference (colours in [0, 1]) in the same search: a rug or a picture no labelled frame shows
# is not voted floor or wall by the labelled floor or wall around it. Tune split, with the normals at 0.5: 0.973 /
# 0.972 / 0.985 / 0.979 / 0.911 / 0.974 without colour (the five rooms above, then t-orbit-plain); 2: 0.972 / 0.972 /
# 0.986 / 0.979 / 0.937 / 0.975; 4: 0.972 / 0.972 / 0.986 / 0.979 / 0.944 / 0.975 (t-walk-plaster's rug 0.17 ->
# > 0.85); 8: the same but 0.978 on t-walk-wallpaper. With sensor-like depth (holes=0.1,rel=0.01,edges=1): t-walk-plain,
# t-orbit-wallpaper, t-walk-plaster 0.936 / 0.912 / 0.870 by position alone, 0.933 / 0.918 / 0.904 with both.
UNSEEN_COLOR_WEIGHT = 4.0


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
        unseen_k: pixels that nothing reprojects to (but with depth) take the vote of the `unseen_k` nearest
            labelled 3D points (`baselines.nearest_point`) as a second expert, with exponent `unseen_trust`
            (as reprojection's: the normal and colour terms make up for the missing z-test); 0 = leave them to
            the field. Used only with the scene's depth: the field's rendered depth is least reliable exactly
            where no labelled frame looked (report split, RGB only, `--fuse on`: 0.849 without, 0.839 with).
        unseen_normal_weight, unseen_color_weight: the fill's neighbours are searched in (xyz, w_n surface normal,
            w_c RGB), so unseen ceiling asks labelled ceiling, not the wall beside it, and an unseen rug labelled
            rug, not the floor around it (`baselines.nearest_point`); 0, 0 = by position alone.
        unseen_max_points: labelled points in that search at most (`baselines.nearest_point.MAX_POINTS`); idle,
            the normal + colour fill adds 45-85 ms to a fused 320x240 frame.
        unseen_eps: that search is approximate to (1 + eps) in distance (`nearest_point.QUERY_EPS`: half the
            time, 99.9 % the same labels); 0 = exact.
    """

    def __init__(
        self,
        render_fn: RenderFn,
        scene: Scene,
        classes: ClassTable,
        sparse: SparseLabels,
        n_sources: int = 4,
        rel_tol: float = REL_TOL,
        trust: float = 8.0,
        depth_fn: Callable[[int], np.ndarray | None] | None = None,
        scene_depth: bool | None = None,
        refine: float | None = DEFAULT_TOL,
        unseen_k: int = 16,
        unseen_trust: float = 8.0,
        unseen_normal_weight: float = UNSEEN_NORMAL_WEIGHT,
        unseen_color_weight: float = UNSEEN_COLOR_WEIGHT,
        unseen_max_points: int = MAX_POINTS,
        unseen_eps: float = QUERY_EPS,
    ) -> None:
        self.render_fn, self.scene, self.classes, self.sparse = render_fn, scene, classes, sparse
        self.n_sources, self.rel_tol, self.trust, self.refine = n_sources, rel_tol, trust, refine
        has = len(scene.frames) > 0 and all(f.has_depth() for f in scene.frames)
        self.scene_depth = has if scene_depth is None else bool(scene_depth) and has
        self.depth_fn = depth_fn or (lambda i: scene.frames[i].load_depth())
        self._by_pose = {self._key(f.intrinsics, f.c2w): i for i, f in enumerate(scene.frames)}
        self._src_depth: dict[int, np.ndarray] | None = None
        self.unseen_k, self.unseen_trust, self.unseen_normal_weight = unseen_k, unseen_trust, unseen_normal_weight
        self.unseen_color_weight, self.unseen_max_points = unseen_color_weight, unseen_max_points
        self.unseen_eps = unseen_eps
        self._points: LabelledPoints | None = None
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

    def unseen_labels(
        self,
        covered: np.ndarray,
        depth_t: np.ndarray,
        intr: Intrinsics,
        c2w: np.ndarray,
        opacity: np.ndarray | None = None,
        rgb: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels (H, W) ids, confidence (H, W)) from the nearest labelled 3D points, for the pixels not
        `covered` by reprojection that have depth; 0 elsewhere. With the field's `opacity` (H, W), only where it
        is > 0.5: a rendered depth is no surface where the ray sees the background. `rgb` (H, W, 3): the frame's
        image, for a fill that also compares colours."""
        labels = np.zeros(covered.shape, np.int64)
        conf = np.zeros(covered.shape, np.float32)
        empty = ~covered & (depth_t > 0) & np.isfinite(depth_t)
        if opacity is not None:
            empty &= opacity > 0.5
        if empty.any():
            wn, wc = self.unseen_normal_weight, self.unseen_color_weight
            if self._points is None:
                self._points = LabelledPoints.from_frames(
                    self.scene, self.sparse, self.source_depth(), self.unseen_max_points, wn, wc
                )
            xyz = unproject_depth(depth_t.astype(np.float64), intr, c2w)
            normals = depth_normals(xyz, depth_t, c2w)[empty] if wn > 0 else None
            colors = unit_rgb(rgb)[empty] if wc > 0 and rgb is not None else None
            labels[empty], conf[empty] = self._points.query(
                xyz[empty], self.unseen_k, normals=normals, colors=colors, eps=self.unseen_eps
            )
        return labels, conf

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
        if self.unseen_k > 0 and self.scene_depth:  # sensor depth only: see the class docstring
            op = out.get("opacity")
            op = None if op is None else to_numpy(op).astype(np.float32).reshape(labels.shape)
            rgb = self.scene.frames[t].load_rgb() if self.unseen_color_weight > 0 else None
            nn_ids, nn_conf = self.unseen_labels((index >= 0) & (conf > 0), depth_t, intr, c2w, op, rgb)
            nn_index = self.classes.to_index(nn_ids)
            fused["probs"] = fuse_probs(fused["probs"], nn_index, nn_conf, self.unseen_trust)
            index = np.where(index >= 0, index, nn_index)
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
