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

from collections.abc import Callable

import numpy as np

from labelfield.cameras import Intrinsics, project, unproject_depth
from labelfield.errors import LabelfieldError
from labelfield.labels import SparseLabels
from labelfield.progress import Progress, ProgressFn
from labelfield.scene import Scene

REL_TOL = 0.03
"""Default z-test: a warped label counts where its depth is within 3 % of the target's. Measured on the four
tune rooms (10 % labelled, exact depth, 8 scored frames), `reproject` mIoU at 0.05 / 0.03 / 0.02:
t-orbit-wallpaper 0.923 / 0.959 / 0.960, t-walk-plain 0.942 / 0.949 / 0.950, t-loop-plaster 0.963 / 0.965 /
0.965, t-walk-wallpaper 0.946 / 0.960 / 0.961 — a looser test lets a label slide across contact edges (an
object's foot onto the table). With sensor-like depth (holes 0.2, 1 % noise, edge dropouts) annotate's fused
output still gains on t-orbit-wallpaper (0.905 at 0.05, 0.910 at 0.03, 0.911 at 0.02); 0.03 keeps 3 sigma of
1 % noise."""


def warp_labels(
    labels: np.ndarray,
    depth: np.ndarray,
    intr: Intrinsics,
    c2w: np.ndarray,
    intr_t: Intrinsics,
    c2w_t: np.ndarray,
    depth_t: np.ndarray | None = None,
    rel_tol: float = REL_TOL,
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
    rel_tol: float = REL_TOL,
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


DepthFn = Callable[[int], "np.ndarray | None"]


def _depth(scene: Scene, i: int, depth_fn: DepthFn | None = None) -> np.ndarray:
    d = scene.frames[i].load_depth() if depth_fn is None else depth_fn(i)
    if d is None:
        f = scene.frames[i]
        raise LabelfieldError(
            f"the reproject baseline needs depth maps; frame {f.name} has none", f.rgb_path or scene.root
        )
    return d


def nearest_sources(labelled: list[int], t: int, n_sources: int) -> list[int]:
    """The `n_sources` labelled frames nearest to frame t in sequence order, nearest first."""
    return sorted(labelled, key=lambda j: (abs(j - t), j))[: max(1, n_sources)]


def source_warps(
    scene: Scene,
    sparse: SparseLabels,
    t: int,
    sources: list[int],
    src_depth: dict[int, np.ndarray],
    depth_t: np.ndarray | None,
    rel_tol: float = REL_TOL,
    fill_cracks: bool = True,
) -> list[np.ndarray]:
    """Each source's labels warped into frame t: a list of (H_t, W_t) ids (0 = this source does not see it).

    Per source: forward warp (z-buffered, z-tested against `depth_t` when given), then with `depth_t` and
    `fill_cracks` a z-tested backward lookup (`lookup_labels`) for the pixels the splat left empty.
    """
    ft = scene.frames[t]
    out = []
    for s in sources:
        fs = scene.frames[s]
        w = warp_labels(
            sparse[s],
            src_depth[s],
            fs.intrinsics,
            fs.c2w,
            ft.intrinsics,
            ft.c2w,
            depth_t,
            rel_tol,
            splat=1 if depth_t is not None else 2,
        )
        if fill_cracks and depth_t is not None:
            looked = lookup_labels(
                sparse[s], src_depth[s], fs.intrinsics, fs.c2w, ft.intrinsics, ft.c2w, depth_t, w == 0, rel_tol
            )
            w = np.where(w != 0, w, looked)
        out.append(w)
    return out


def vote(warps: list[np.ndarray], weights: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Combine per-source warps (nearest first) into (labels (H, W) ids, confidence (H, W) float32 in [0, 1]).

    Each source votes for its label with weight `weights[k]` (default 1 / (1 + k): nearer sources count more);
    the label with the largest vote wins (ties: the nearer source's). Confidence = winning vote / the votes of
    all sources, seen or not: high where several sources agree, lower where only one sees the pixel or they
    disagree, 0 where none sees it.
    """
    if weights is None:
        weights = [1.0 / (1.0 + k) for k in range(len(warps))]
    total = float(sum(weights))
    best = np.zeros_like(warps[0])
    best_w = np.zeros(warps[0].shape, np.float32)
    for wk in warps:
        support = np.zeros(wk.shape, np.float32)
        for j, wj in enumerate(warps):
            support += np.where((wj == wk) & (wk != 0), weights[j], 0.0).astype(np.float32)
        better = support > best_w + 1e-6  # strict: a tie keeps the nearer source's label
        best = np.where(better, wk, best)
        best_w = np.where(better, support, best_w)
    return best, (best_w / max(total, 1e-9)).astype(np.float32)


def reproject_labels(
    scene: Scene,
    sparse: SparseLabels,
    n_sources: int = 4,
    rel_tol: float = REL_TOL,
    fill_cracks: bool = True,
    on_progress: ProgressFn | None = None,
    depth_fn: DepthFn | None = None,
    targets: list[int] | None = None,
) -> dict[int, np.ndarray]:
    """{frame index: (H, W) original ids} for every frame (or `targets`); labelled frames keep their sparse labels.

    Warps from the nearest sources, nearest first; a later source only fills pixels still empty.
    `fill_cracks`: after each source's forward warp, pixels still void with target depth get a backward
    lookup into that source (z-tested), so only pixels no source sees stay void. `depth_fn`: `i -> depth`
    instead of the scene's (e.g. sensor noise for experiments).
    """
    labelled = sorted(sparse)
    src_depth = {i: _depth(scene, i, depth_fn) for i in labelled}
    out: dict[int, np.ndarray] = {}
    for t in range(len(scene.frames)) if targets is None else targets:
        if t in sparse:
            out[t] = sparse[t].copy()
        else:
            depth_t = scene.frames[t].load_depth() if depth_fn is None else depth_fn(t)
            sources = nearest_sources(labelled, t, n_sources)
            acc = None
            for w in source_warps(scene, sparse, t, sources, src_depth, depth_t, rel_tol, fill_cracks):
                acc = w if acc is None else np.where(acc != 0, acc, w)
            out[t] = acc
        if on_progress is not None:
            total = len(scene.frames) if targets is None else len(targets)
            on_progress(Progress("reproject", len(out), total, "frames"))
    return out
