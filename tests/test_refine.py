"""annotate.refine: the depth-guided label refinement against a brute-force loop, and what it is for."""

from __future__ import annotations

import numpy as np

from labelfield.annotate.refine import refine_probs


def brute_force(probs: np.ndarray, depth: np.ndarray, radius: int, tol: float) -> np.ndarray:
    H, W, _ = probs.shape
    out = probs.astype(np.float32).copy()
    for y in range(H):
        for x in range(W):
            d = depth[y, x]
            if not d > 0:
                continue
            acc, n = np.zeros(probs.shape[2]), 0
            for dy in range(-radius, radius + 1):
                for dx in range(-radius, radius + 1):
                    yy, xx = min(max(y + dy, 0), H - 1), min(max(x + dx, 0), W - 1)  # edge padding
                    dn = depth[yy, xx]
                    if (dy == 0 and dx == 0) or (dn > 0 and abs(dn - d) <= tol * d):
                        acc += probs[yy, xx]
                        n += 1
            out[y, x] = acc / n
    return out


def test_matches_brute_force_on_random_input() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=(13, 17)).astype(np.float32)
    depth = rng.choice([1.0, 1.01, 1.5, 3.0, 0.0], size=(13, 17)).astype(np.float32)
    for radius, tol in ((1, 0.02), (2, 0.05)):
        got = refine_probs(probs, depth, radius, tol)
        np.testing.assert_allclose(got, brute_force(probs, depth, radius, tol), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_halo_on_the_background_moves_onto_the_depth_edge() -> None:
    # A square object (class 1) at 1 m in front of a wall (class 0) at 2 m; the prediction has an uncertain
    # one-pixel halo of class 1 on the wall around the square, as a blurred field renders it.
    H = W = 20
    depth = np.full((H, W), 2.0, np.float32)
    depth[6:14, 6:14] = 1.0
    probs = np.zeros((H, W, 2), np.float32)
    probs[..., 0] = 1.0
    probs[5:15, 5:15] = [0.4, 0.6]  # halo ring (and the object) predicted class 1
    probs[6:14, 6:14] = [0.0, 1.0]
    before = probs.argmax(-1)
    after = refine_probs(probs, depth).argmax(-1)
    truth = (depth < 1.5).astype(int)
    assert (before != truth).sum() == 36  # the ring
    assert (after != truth).sum() < 8  # only ring corners can keep a tie-ish vote
    assert np.array_equal(after[6:14, 6:14], truth[6:14, 6:14])  # the object keeps every pixel


def test_without_depth_nothing_changes() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=(6, 7)).astype(np.float32)
    assert np.array_equal(refine_probs(probs, None), probs)
    depth = np.zeros((6, 7), np.float32)
    depth[2, 3] = np.nan
    assert np.array_equal(refine_probs(probs, depth), probs)
