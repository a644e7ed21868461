"""A `RayDataset` whose sparse labels change while training runs (new strokes join without a restart).

The base class caches every frame's pixels once and keeps labels only for labelled frames, in one int16
tensor indexed through `label_offset`. Here a frame that gets its first stroke gets a block appended to that
tensor; later strokes overwrite the block. `labelled_pixels` (the global indices the labelled share of each
batch is drawn from) is rebuilt from per-frame lists. Updates must not overlap `sample` (the engine applies
them from the training thread, between steps).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from labelfield.scene import ClassTable, Scene
from labelfield.train.dataset import RayDataset


class OnlineRayDataset(RayDataset):
    """`RayDataset` over every frame of `scene`, starting without labels; see `set_frame_labels`."""

    def __init__(
        self,
        scene: Scene,
        load_depth: bool = False,
        labelled_fraction: float = 0.25,
        on_frame: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(scene, {}, load_depth, labelled_fraction, on_frame)
        self._frame_pixels: dict[int, torch.Tensor] = {}
        self._pix_dtype = self.labelled_pixels.dtype

    def set_frame_labels(self, frame: int, labels: np.ndarray, classes: ClassTable) -> None:
        """Replace frame `frame`'s labels by `labels` (H, W) original ids (0 = void)."""
        a, b = int(self.offsets[frame]), int(self.offsets[frame + 1])
        idx = torch.from_numpy(classes.to_index(np.asarray(labels)).reshape(-1).astype(np.int16))
        if idx.numel() != b - a:
            raise ValueError(f"frame {frame}: label map has {idx.numel()} pixels, expected {b - a}")
        if int(self.label_offset[frame]) < 0:
            self.label_offset[frame] = self.labels.numel()
            self.labels = torch.cat([self.labels, torch.full((b - a,), -1, dtype=torch.int16)])
        off = int(self.label_offset[frame])
        self.labels[off : off + b - a] = idx
        pix = (torch.nonzero(idx >= 0)[:, 0] + a).to(self._pix_dtype)
        if pix.numel():
            self._frame_pixels[frame] = pix
        else:
            self._frame_pixels.pop(frame, None)
        parts = [self._frame_pixels[i] for i in sorted(self._frame_pixels)]
        self.labelled_pixels = torch.cat(parts) if parts else torch.zeros(0, dtype=self._pix_dtype)
        self.labelled_frames = sorted(self._frame_pixels)
