"""Baseline `nearest`: every frame takes the labels of the nearest labelled frame in sequence order.

What naive propagation gives. Ties (a frame exactly between two labelled frames) go to the earlier one.
Labelled frames keep their own (sparse) labels.
"""

from __future__ import annotations

import numpy as np

from labelfield.labels import SparseLabels


def nearest_source(index: int, labelled: list[int]) -> int:
    """The labelled frame index nearest to `index` (the earlier on a tie)."""
    return min(labelled, key=lambda j: (abs(j - index), j))


def nearest_labels(sparse: SparseLabels, n_frames: int) -> dict[int, np.ndarray]:
    """{frame index: (H, W) original ids} for all `n_frames` frames, copied from the nearest labelled frame."""
    labelled = sorted(sparse)
    return {i: sparse[nearest_source(i, labelled)].copy() for i in range(n_frames)}
