"""Pseudo-labels from geometry: the user's labels reprojected through depth into the unlabelled frames.

For each unlabelled frame t the `n_sources` labelled frames nearest in sequence order are warped into t
(`labelfield.baselines.reproject.source_warps`: forward splat z-tested against t's depth, cracks filled by a
z-tested backward lookup — the same code as the `reproject` baseline) and combined by a weighted vote
(`reproject.vote`): label = the class with the largest vote, confidence = its vote over all sources' votes
(nearer sources weigh more). So a pixel that three of four sources agree on gets a high confidence; one seen
by a single far source, or where sources disagree (boundaries, thin structures, depth noise), a low one.

Uses: extra labelled rays weighted by confidence in training (`RayDataset(pseudo=...)`), and fusion with
the field's prediction at annotate time (`labelfield.annotate.fuse`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from labelfield.baselines.reproject import REL_TOL, nearest_sources, source_warps, vote
from labelfield.labels import SparseLabels
from labelfield.scene import Scene

DepthFn = Callable[[int], "np.ndarray | None"]
PseudoLabels = dict[int, tuple[np.ndarray, np.ndarray]]
"""frame index -> (labels (H, W) original ids, 0 = none; confidence (H, W) float32 in [0, 1])."""


def pseudo_labels_for(
    scene: Scene,
    sparse: SparseLabels,
    t: int,
    depth_t: np.ndarray | None,
    src_depth: dict[int, np.ndarray],
    n_sources: int = 4,
    rel_tol: float = REL_TOL,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels (H, W) ids, confidence (H, W)) for one frame t, from the labelled frames' depth `src_depth`
    (index -> (H, W) z-depth) and t's depth (None: forward splatting only, no z-test in t)."""
    sources = nearest_sources(sorted(sparse), t, n_sources)
    warps = source_warps(scene, sparse, t, sources, src_depth, depth_t, rel_tol)
    return vote(warps)


def make_pseudo_labels(
    scene: Scene,
    sparse: SparseLabels,
    depth_fn: DepthFn | None = None,
    n_sources: int = 4,
    rel_tol: float = REL_TOL,
    targets: Iterable[int] | None = None,
) -> PseudoLabels:
    """Pseudo-labels for every frame without user labels (or `targets`), or {} when depth is missing.

    depth_fn: `i -> (H, W) z-depth or None` (default: the scene's depth maps); a labelled frame without depth
    contributes nothing, a target without depth is warped into without a z-test.
    """
    load = depth_fn or (lambda i: scene.frames[i].load_depth())
    src_depth = {}
    for i in sorted(sparse):
        d = load(i)
        if d is not None:
            src_depth[i] = np.nan_to_num(np.asarray(d, np.float32), nan=0.0)
    if not src_depth:
        return {}
    usable = {i: sparse[i] for i in src_depth}
    out: PseudoLabels = {}
    for t in range(len(scene.frames)) if targets is None else targets:
        if t in sparse:
            continue
        d = load(t)
        out[t] = pseudo_labels_for(
            scene, usable, t, None if d is None else np.nan_to_num(d, nan=0.0), src_depth, n_sources, rel_tol
        )
    return out


def coverage(pseudo: PseudoLabels, min_confidence: float = 0.0) -> float:
    """Share of the pseudo-labelled frames' pixels that carry a pseudo-label with confidence >= min_confidence."""
    n = sum(c.size for _, c in pseudo.values())
    k = sum(int(((lab != 0) & (c >= max(min_confidence, 1e-6))).sum()) for lab, c in pseudo.values())
    return k / n if n else 0.0
