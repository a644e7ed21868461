"""Baseline `reproject`: forward-warp labels from the nearest labelled frames with depth and poses.

What a user with RGB-D could do without learning. For each target frame, the `n_sources` labelled frames
nearest in sequence order are warped in turn, nearest first; a later source only fills pixels still empty.
Warping one source: its labelled pixels with depth > 0 are back-projected (z-depth, OpenCV c2w), projected
into the target and splatted onto the nearest pixel (onto the 2x2 pixels around it when the target has no
depth, to close the cracks of a 1-pixel splat where the target sees the surface larger); a z-buffer keeps
the nearest point per pixel. When the target
frame has depth, a splat whose z differs from it by more than `rel_tol` is dropped (occluded in the target,
or a foreground splat spilling onto background). With target depth, pixels still empty then get a z-tested
backward lookup into the same source (`lookup_labels`: fills splatting cracks). Pixels no source sees stay
void.
"""

from __future__ import annotations

import numpy as np

from labelfield.cameras import Intrinsics, project, unproject_depth
from labelfield.errors import LabelfieldError
from labelfield.labels import SparseLabels
from labelfield.progress import Progress, ProgressFn
from labelfield.scene import Scene


def warp_labels(
    labels: np.ndarray,
    depth: np.ndarray,
    intr: Intrinsics,
    c2w: np.ndarray,
    intr_t: Intrinsics,
    c2w_t: np.ndarray,
    depth_t: np.ndarray | None = None,
    rel_tol: float = 0.05,
    splat: int = 1,
) -> np.ndarray:
    """Warp one source's labels (H, W) into the target view; returns (H_t, W_t) ids, 0 where nothing landed.

    `splat`: 1 = the nearest pixel only; 2 = the 2x2 pixels around the projection (fewer cracks on surfaces
    seen magnified, but it dilates sparse labels such as clicks fourfold).
    """
    H, W = intr_t.height, intr_t.width
    out = np.zeros((H, W), labels.dtype)
    ok = (labels != 0) & (depth > 0) & np.isfinite(depth)
    if not ok.any():
        return out
    pts = unproject_depth(depth.astype(np.float64), intr, c2w)[ok]
    lab = labels[ok]
    uv, z = project(pts, intr_t, c2w_t)
    front = z > 1e-6
    uv, z, lab = uv[front], z[front], lab[front]
    if splat == 2:
        u0, v0 = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
        us = np.concatenate([u0, u0 + 1, u0, u0 + 1])
        vs = np.concatenate([v0, v0, v0 + 1, v0 + 1])
        zs, ls = np.tile(z, 4), np.tile(lab, 4)
    else:
        us, vs = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
        zs, ls = z, lab
    inside = (us >= 0) & (us < W) & (vs >= 0) & (vs < H)
    us, vs, zs, ls = us[inside], vs[inside], zs[inside], ls[inside]
    if depth_t is not None:
        dt = depth_t[vs, us]
        keep = (dt <= 0) | (np.abs(zs - dt) <= rel_tol * zs)
        us, vs, zs, ls = us[keep], vs[keep], zs[keep], ls[keep]
    if len(us) == 0:
        return out
    pix = vs * W + us
    order = np.lexsort((zs, pix))  # by pixel, then nearest first
    first = np.unique(pix[order], return_index=True)[1]
    win = order[first]
    out.reshape(-1)[pix[win]] = ls[win]
    return out


def lookup_labels(
    labels: np.ndarray,
    depth: np.ndarray,
    intr: Intrinsics,
    c2w: np.ndarray,
    intr_t: Intrinsics,
    c2w_t: np.ndarray,
    depth_t: np.ndarray,
    need: np.ndarray,
    rel_tol: float = 0.05,
) -> np.ndarray:
    """Backward lookup for target pixels `need` (H_t, W_t) bool: back-project them with the target depth,
    read the source label at the best-matching of the 2x2 pixels around the projection if its depth agrees
    (z-test: the point is visible in the source). Returns (H_t, W_t) ids, 0 elsewhere. Fills the cracks
    forward splatting leaves on surfaces the target sees magnified or at a grazing angle; disoccluded pixels
    fail the z-test and stay void.
    """
    out = np.zeros(need.shape, labels.dtype)
    need = need & (depth_t > 0) & np.isfinite(depth_t)
    if not need.any():
        return out
    pts = unproject_depth(depth_t.astype(np.float64), intr_t, c2w_t)[need]
    uv, z = project(pts, intr, c2w)
    # Of the 2x2 source pixels around the projection, take the one whose depth matches best: at grazing
    # angles depth changes fast across a pixel, and the nearest pixel alone often fails the z-test.
    u0, v0 = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    best_err = np.full(len(z), np.inf)
    best_lab = np.zeros(len(z), labels.dtype)
    for du, dv in ((0, 0), (1, 0), (0, 1), (1, 1)):
        u, v = u0 + du, v0 + dv
        ok = (z > 1e-6) & (u >= 0) & (u < intr.width) & (v >= 0) & (v < intr.height)
        u, v = np.where(ok, u, 0), np.where(ok, v, 0)
        ds = depth[v, u]
        err = np.where(ok & (ds > 0), np.abs(z - ds) / np.maximum(z, 1e-9), np.inf)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_lab = np.where(better, labels[v, u], best_lab)
    out[need] = np.where(best_err <= rel_tol, best_lab, 0)
    return out


def _depth(scene: Scene, i: int) -> np.ndarray:
    d = scene.frames[i].load_depth()
    if d is None:
        f = scene.frames[i]
        raise LabelfieldError(f"the reproject baseline needs depth maps; frame {f.name} has none",
                              f.rgb_path or scene.root)  # fmt: skip
    return d


def reproject_labels(
    scene: Scene,
    sparse: SparseLabels,
    n_sources: int = 4,
    rel_tol: float = 0.05,
    fill_cracks: bool = True,
    on_progress: ProgressFn | None = None,
) -> dict[int, np.ndarray]:
    """{frame index: (H, W) original ids} for every frame; labelled frames keep their sparse labels.

    `fill_cracks`: after each source's forward warp, pixels still void with target depth get a backward
    lookup into that source (z-tested), so only pixels no source sees stay void.
    """
    labelled = sorted(sparse)
    src_depth = {i: _depth(scene, i) for i in labelled}
    out: dict[int, np.ndarray] = {}
    for t, ft in enumerate(scene.frames):
        if t in sparse:
            out[t] = sparse[t].copy()
        else:
            depth_t = ft.load_depth()
            ordered = sorted(labelled, key=lambda j: (abs(j - t), j))[: max(1, n_sources)]  # nearest first
            acc = None
            for s in ordered:
                fs = scene.frames[s]
                w = warp_labels(sparse[s], src_depth[s], fs.intrinsics, fs.c2w, ft.intrinsics, ft.c2w, depth_t,
                                rel_tol, splat=1 if depth_t is not None else 2)  # fmt: skip
                acc = w if acc is None else np.where(acc != 0, acc, w)
                if fill_cracks and depth_t is not None:
                    acc = np.where(
                        acc != 0,
                        acc,
                        lookup_labels(
                            sparse[s],
                            src_depth[s],
                            fs.intrinsics,
                            fs.c2w,
                            ft.intrinsics,
                            ft.c2w,
                            depth_t,
                            acc == 0,
                            rel_tol,
                        ),
                    )
            out[t] = acc
        if on_progress is not None:
            on_progress(Progress("reproject", t + 1, len(scene.frames), "frames"))
    return out
