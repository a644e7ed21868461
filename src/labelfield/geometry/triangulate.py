"""Sparse depth from RGB alone: keypoints matched across frames, triangulated with the scene's KNOWN poses.

Why: without depth maps the field's near-uniform walls stay semi-transparent within our step budgets, so labels
smear along rays. A few thousand triangulated keypoints give the ray-termination loss (train/losses.py) a
depth target on textured pixels (DS-NeRF's idea), at the cost of a few seconds here.

Method (OpenCV, optional extra `geometry`): SIFT keypoints per frame (grey, at the scene's resolution); each
frame is matched with the frames `gaps` later in the sequence (Lowe's ratio test, mutual nearest neighbours);
matches must agree with the known relative pose (Sampson distance to the epipolar line <= `max_epipolar_px`);
surviving matches are chained into tracks, and each track of >= `min_track` views is triangulated from all
its views (linear DLT in normalised coordinates, P = [R | t] of each frame's world-to-camera) and kept when it
lies in front of every camera, reprojects within `max_reproj_px` in every view, and its widest pair of rays
meets at >= `min_angle_deg` (small angles give depth noise ~ z / angle). Measured: 773 observations of 144
points on the demo room (80 frames 320x240) in ~8 s on 2 shared cores; on a textured analytic room the points
lie a median 8 mm from the true surface.

Output: `SparseDepth`, one observation per (point, frame) it was triangulated from (M observations):
    frame (M,) int64 frame index; u, v (M,) float32 pixel coordinates (OpenCV: pixel centres at integers, the
    convention of `labelfield.cameras`); z (M,) float32 z-depth in metres in that frame; error (M,) float32
    reprojection error in pixels (max over the two views); weight (M,) float32 = 1 / (1 + error^2).
Poses are OpenCV camera-to-world (`Frame.c2w`); the world-to-camera comes from `cameras.c2w_to_w2c`.

Cache: `load_or_triangulate(scene, cache_file)` stores the result as .npz with a key hashed from the frames'
names, poses, intrinsics, image sizes and the options, and recomputes when the key differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from labelfield.cameras import c2w_to_w2c
from labelfield.errors import LabelfieldError
from labelfield.scene import Scene

CACHE_VERSION = 1
_FIELDS = ("frame", "u", "v", "z", "error", "weight", "points")


@dataclass(frozen=True)
class TriangulationOptions:
    """Matching and filtering thresholds (pixels at the scene's loaded resolution)."""

    gaps: tuple[int, ...] = (1, 2, 4, 8)
    """Each frame is matched with frames i + gap (short gaps: overlap; long gaps: wide baselines)."""
    max_features: int = 2000
    """SIFT keypoints per frame at most."""
    ratio: float = 0.8
    """Lowe's ratio test threshold."""
    max_epipolar_px: float = 1.5
    """Largest Sampson distance to the known epipolar geometry, in pixels."""
    max_reproj_px: float = 1.5
    """Largest reprojection error of a triangulated point, in pixels (both views)."""
    min_angle_deg: float = 3.0
    """Smallest angle between the widest pair of viewing rays of a track (depth noise grows as it shrinks)."""
    min_track: int = 3
    """Views a point needs: 3 rejects matches that slid along the epipolar line (a third view disagrees)."""


@dataclass
class SparseDepth:
    """Per-frame sparse depth observations (M of them; see the module docstring)."""

    frame: np.ndarray
    u: np.ndarray
    v: np.ndarray
    z: np.ndarray
    error: np.ndarray
    weight: np.ndarray
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    """(N, 3) float64 world points; each point's observations are consecutive rows (one per view of its track)."""

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    @staticmethod
    def empty() -> SparseDepth:
        z = np.zeros(0, np.float32)
        return SparseDepth(np.zeros(0, np.int64), z, z.copy(), z.copy(), z.copy(), z.copy())

    def per_frame_counts(self, n_frames: int) -> np.ndarray:
        """(n_frames,) number of observations per frame."""
        return np.bincount(self.frame, minlength=n_frames)


def _grey(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY)


def _import_cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise LabelfieldError(
            "keypoint triangulation needs OpenCV: pip install 'labelfield[geometry]' (opencv-python-headless)"
        ) from e
    return cv2


def _skew(t: np.ndarray) -> np.ndarray:
    return np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])


def fundamental_from_poses(K1: np.ndarray, c2w1: np.ndarray, K2: np.ndarray, c2w2: np.ndarray) -> np.ndarray:
    """F (3, 3) with x2^T F x1 = 0 for pixels x1 of camera 1 and x2 of camera 2 (OpenCV c2w poses)."""
    w2c1, w2c2 = c2w_to_w2c(c2w1), c2w_to_w2c(c2w2)
    R = w2c2[:3, :3] @ w2c1[:3, :3].T  # camera 1 -> camera 2
    t = w2c2[:3, 3] - R @ w2c1[:3, 3]
    E = _skew(t) @ R
    return np.linalg.inv(K2).T @ E @ np.linalg.inv(K1)


def sampson_distance(F: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """First-order geometric distance (pixels) of matches x1, x2 (N, 2) to the epipolar geometry F."""
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], 1)
    h2 = np.concatenate([x2, np.ones((len(x2), 1))], 1)
    Fx1 = h1 @ F.T
    Ftx2 = h2 @ F
    num = np.einsum("ij,ij->i", h2, Fx1)
    den = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    return np.abs(num) / np.sqrt(np.maximum(den, 1e-12))


def _dedupe(kp: np.ndarray, desc: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Drop SIFT's repeated keypoints at one location (one per dominant orientation): keep the first."""
    if desc is None or len(kp) == 0:
        return kp, desc
    _, first = np.unique(np.round(kp, 2), axis=0, return_index=True)
    first = np.sort(first)
    return kp[first], desc[first]


def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        parent[i], i = root, parent[i]
    return root


def triangulate_track(K: np.ndarray, w2c: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Least-squares (DLT) point (3,) seen at pixels x (k, 2) by cameras K (k, 3, 3), w2c (k, 4, 4).

    Works in normalised image coordinates (K^-1 x), which keeps the linear system well conditioned.
    """
    xn = np.einsum("kij,kj->ki", np.linalg.inv(K), np.concatenate([x, np.ones((len(x), 1))], 1))
    P = w2c[:, :3, :4]
    A = np.concatenate([xn[:, :1] * P[:, 2] - P[:, 0], xn[:, 1:2] * P[:, 2] - P[:, 1]], 0)  # (2k, 4)
    X = np.linalg.svd(A)[2][-1]
    return X[:3] / X[3] if abs(X[3]) > 1e-12 else np.full(3, np.nan)


def triangulate_scene(
    scene: Scene, opts: TriangulationOptions | None = None, frames: Sequence[int] | None = None
) -> SparseDepth:
    """Sparse depth observations of `scene` (every frame, or `frames`) from matched, triangulated keypoints.

    Pairwise matches that agree with the known epipolar geometry are chained into tracks (union-find; a
    track holding two keypoints of one frame is dropped); each track is triangulated from all its views and
    kept when every view reprojects within `max_reproj_px`, the point is in front of every camera, and the
    widest pair of viewing rays meets at >= `min_angle_deg`. A wrong match that slips along its epipolar line
    (repeated texture) disagrees with a third view and is dropped with its track.

    Example:
        >>> sd = triangulate_scene(scene)
        >>> sd.frame[:3], sd.z[:3]
    """
    cv2 = _import_cv2()
    opts = opts or TriangulationOptions()
    idx = list(range(len(scene.frames))) if frames is None else [int(i) for i in frames]
    sift = cv2.SIFT_create(nfeatures=opts.max_features)
    kps: list[np.ndarray] = []
    descs: list[np.ndarray | None] = []
    for i in idx:
        kp, desc = sift.detectAndCompute(_grey(scene.frames[i].load_rgb()), None)
        k, d = _dedupe(np.array([p.pt for p in kp], np.float64).reshape(-1, 2), desc)
        kps.append(k)
        descs.append(d)
    offsets = np.concatenate([[0], np.cumsum([len(k) for k in kps])]).astype(np.int64)
    parent = np.arange(int(offsets[-1]))
    Ks = [scene.frames[i].intrinsics.K() for i in idx]
    c2ws = [np.asarray(scene.frames[i].c2w, np.float64) for i in idx]
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    for a in range(len(idx)):
        for gap in opts.gaps:
            b = a + gap
            if b >= len(idx) or descs[a] is None or descs[b] is None or len(kps[a]) < 2 or len(kps[b]) < 2:
                continue
            fwd = matcher.knnMatch(descs[a], descs[b], k=2)
            bwd = {m.queryIdx: m.trainIdx for m in matcher.match(descs[b], descs[a])}
            pairs = [
                (m[0].queryIdx, m[0].trainIdx)
                for m in fwd
                if len(m) == 2
                and m[0].distance < opts.ratio * m[1].distance
                and bwd.get(m[0].trainIdx) == m[0].queryIdx  # mutual best match
            ]
            if not pairs:
                continue
            ia, ib = np.array(pairs).T
            F = fundamental_from_poses(Ks[a], c2ws[a], Ks[b], c2ws[b])
            ok = sampson_distance(F, kps[a][ia], kps[b][ib]) <= opts.max_epipolar_px
            for p, q in zip(ia[ok] + offsets[a], ib[ok] + offsets[b]):
                rp, rq = _find(parent, int(p)), _find(parent, int(q))
                if rp != rq:
                    parent[max(rp, rq)] = min(rp, rq)
    roots = np.array([_find(parent, i) for i in range(len(parent))], np.int64)
    frame_of = np.repeat(np.arange(len(idx)), np.diff(offsets))
    order = np.argsort(roots, kind="stable")
    bounds = np.flatnonzero(np.diff(roots[order])) + 1
    w2cs = np.stack([c2w_to_w2c(c) for c in c2ws]) if c2ws else np.zeros((0, 4, 4))
    K_all = np.stack(Ks) if Ks else np.zeros((0, 3, 3))
    obs_f, obs_uv, obs_z, obs_e, points = [], [], [], [], []
    for track in np.split(order, bounds):
        if len(track) < opts.min_track:
            continue
        fr = frame_of[track]
        if len(np.unique(fr)) != len(fr):
            continue  # two keypoints of one frame: inconsistent chain
        x = np.stack([kps[f][i - offsets[f]] for f, i in zip(fr, track)])
        X = triangulate_track(K_all[fr], w2cs[fr], x)
        if not np.all(np.isfinite(X)):
            continue
        pc = np.einsum("kij,j->ki", w2cs[fr][:, :3, :3], X) + w2cs[fr][:, :3, 3]
        z = pc[:, 2]
        if np.any(z <= 0):
            continue
        uv = np.einsum("kij,kj->ki", K_all[fr], pc)[:, :2] / z[:, None]
        err = np.linalg.norm(uv - x, axis=1)
        if err.max() > opts.max_reproj_px:
            continue
        centres = np.stack([c2ws[f][:3, 3] for f in fr])
        r = X - centres
        r /= np.linalg.norm(r, axis=1, keepdims=True)
        if np.degrees(np.arccos(np.clip((r @ r.T).min(), -1.0, 1.0))) < opts.min_angle_deg:
            continue
        points.append(X)
        obs_f.append(np.array([idx[f] for f in fr]))
        obs_uv.append(x)
        obs_z.append(z)
        obs_e.append(np.full(len(fr), err.max()))
    if not points:
        return SparseDepth.empty()
    e = np.concatenate(obs_e).astype(np.float32)
    uv = np.concatenate(obs_uv).astype(np.float32)
    return SparseDepth(
        np.concatenate(obs_f).astype(np.int64),
        uv[:, 0],
        uv[:, 1],
        np.concatenate(obs_z).astype(np.float32),
        e,
        (1.0 / (1.0 + e**2)).astype(np.float32),
        np.stack(points),
    )


def cache_key(scene: Scene, opts: TriangulationOptions) -> str:
    """Hash of what the result depends on: frame names, poses, intrinsics, image sizes, options, version."""
    h = hashlib.sha256()
    h.update(json.dumps({"v": CACHE_VERSION, "opts": asdict(opts)}, sort_keys=True).encode())
    for f in scene.frames:
        i = f.intrinsics
        h.update(f"{f.name}|{i.fx:.6f},{i.fy:.6f},{i.cx:.6f},{i.cy:.6f},{i.width},{i.height}|".encode())
        h.update(np.asarray(f.c2w, np.float64).round(9).tobytes())
    return h.hexdigest()[:24]


def load_or_triangulate(
    scene: Scene, cache_file: str | Path | None, opts: TriangulationOptions | None = None
) -> tuple[SparseDepth, bool]:
    """The cached result in `cache_file` when its key matches this scene and options, else triangulate
    (and write the cache atomically). Returns (sparse depth, whether it came from the cache)."""
    from labelfield.io import atomic_path

    opts = opts or TriangulationOptions()
    key = cache_key(scene, opts)
    path = None if cache_file is None else Path(cache_file)
    if path is not None and path.is_file():
        try:
            with np.load(path) as d:
                if str(d["key"]) == key:
                    return SparseDepth(*(d[k] for k in _FIELDS)), True
        except (OSError, KeyError, ValueError):
            pass  # unreadable or stale cache: recompute
    sd = triangulate_scene(scene, opts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, key=np.array(key), **{k: getattr(sd, k) for k in _FIELDS})
    return sd, False
