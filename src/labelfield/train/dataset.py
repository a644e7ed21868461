"""Training rays: a compact pixel cache of every frame and seeded sampling of ray batches.

Notation:
    F frames; frame f has H_f x W_f pixels; P = sum_f H_f W_f pixels in all.
    A pixel has a *global index* g in [0, P): frame f's pixels are g in [offsets[f], offsets[f + 1]),
    row-major, so local index l = g - offsets[f], row v = l // W_f, column u = l % W_f.

Memory (why it is laid out like this): colour is kept as uint8 (P, 3) — 900 frames at 640x480 take 0.83 GB,
where float32 would take 3.3 GB; depth, only when the depth loss is on, as uint16 millimetres; labels only
for labelled frames, as int16 training indices (-1 = void); plus the int32 list of labelled pixels to sample
from. Rays are made per batch from the per-frame camera tables (`labelfield.cameras.rays_from_pixels`).

Each batch mixes `n * labelled_fraction` rays drawn uniformly from labelled pixels with rays drawn uniformly
from all pixels of all frames (which carry their label too when they land on a labelled pixel), so the
semantic loss has gradient on every step, however sparse the labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from labelfield.cameras import rays_from_pixels
from labelfield.errors import LabelfieldError
from labelfield.io import MM_PER_METRE, depth_to_mm
from labelfield.scene import Scene


@dataclass
class RayBatch:
    """One batch of n rays and their targets (all on one device).

    rays_o, rays_d: (n, 3) float32 (unit directions); z_scale: (n,) distance-to-z-depth factor;
    rgb: (n, 3) float32 in [0, 1]; labels: (n,) int64 training indices, -1 = void/unlabelled;
    depth: (n,) float32 z-depth in metres, 0 = unknown (None without the depth loss); frame: (n,) int64.
    """

    rays_o: torch.Tensor
    rays_d: torch.Tensor
    z_scale: torch.Tensor
    rgb: torch.Tensor
    labels: torch.Tensor
    depth: torch.Tensor | None
    frame: torch.Tensor

    def to(self, device: torch.device | str) -> RayBatch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)
        return RayBatch(*(move(getattr(self, k)) for k in self.__dataclass_fields__))

    def __len__(self) -> int:
        return self.rays_o.shape[0]


class RayDataset:
    """All frames' pixels (uint8), per-frame cameras and sparse labels; samples `RayBatch`es.

    Args:
        scene: frames to cache (images are loaded once here).
        sparse_labels: frame index -> (H, W) original class ids, 0 = void (from `labels.make_sparse_labels`).
        load_depth: keep depth (uint16 mm) for the depth loss.
        labelled_fraction: share of each batch drawn from labelled pixels.
        on_frame: called after each frame is cached (progress).

    Example:
        >>> ds = RayDataset(scene, {0: labels0})
        >>> batch = ds.sample(4096, torch.Generator().manual_seed(0))
    """

    def __init__(
        self,
        scene: Scene,
        sparse_labels: dict[int, np.ndarray],
        load_depth: bool = False,
        labelled_fraction: float = 0.25,
        on_frame: Callable[[int], None] | None = None,
    ) -> None:
        if not 0.0 <= labelled_fraction <= 1.0:
            raise LabelfieldError(f"labelled ray fraction must be in [0, 1], got {labelled_fraction}")
        frames = scene.frames
        sizes = np.array([f.intrinsics.width * f.intrinsics.height for f in frames], np.int64)
        self.num_frames = len(frames)
        self.labelled_fraction = float(labelled_fraction)
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)]))  # (F + 1,) int64
        self.widths = torch.tensor([f.intrinsics.width for f in frames], dtype=torch.int64)  # (F,)
        self.heights = torch.tensor([f.intrinsics.height for f in frames], dtype=torch.int64)
        self.intr = torch.tensor(
            [[f.intrinsics.fx, f.intrinsics.fy, f.intrinsics.cx, f.intrinsics.cy] for f in frames], dtype=torch.float32
        )  # (F, 4)
        self.c2w = torch.from_numpy(np.stack([np.asarray(f.c2w, np.float64)[:3, :4] for f in frames])).float()
        n_pix = int(self.offsets[-1])
        self.rgb = torch.empty((n_pix, 3), dtype=torch.uint8)  # (P, 3)
        self.depth_mm = torch.zeros(n_pix, dtype=torch.uint16) if load_depth else None  # (P,) mm, 0 = unknown
        # Labels of labelled frames only: label_offset[f] is where frame f's pixels start in `labels`, or -1.
        self.label_offset = torch.full((self.num_frames,), -1, dtype=torch.int64)
        labelled = sorted(int(i) for i in sparse_labels)
        n_lab_pix = int(sum(sizes[i] for i in labelled))
        self.labels = torch.full((n_lab_pix,), -1, dtype=torch.int16)
        labelled_pixels: list[torch.Tensor] = []
        pix_dtype = torch.int32 if n_pix < 2**31 else torch.int64  # halves the labelled-pixel list
        pos = 0
        for i, frame in enumerate(frames):
            a, b = int(self.offsets[i]), int(self.offsets[i + 1])
            w, h = frame.size
            rgb = frame.load_rgb()
            if rgb.shape[:2] != (h, w):
                raise LabelfieldError(f"image is {rgb.shape[1]}x{rgb.shape[0]}, camera says {w}x{h}", frame.rgb_path)
            self.rgb[a:b] = torch.from_numpy(np.ascontiguousarray(rgb[..., :3]).reshape(-1, 3))
            if self.depth_mm is not None:
                d = frame.load_depth()
                if d is not None:
                    self.depth_mm[a:b] = torch.from_numpy(depth_to_mm(d).reshape(-1))
            if i in sparse_labels:
                lab = np.asarray(sparse_labels[i])
                if lab.shape != (h, w):
                    raise LabelfieldError(f"label map of frame {frame.name} is {lab.shape}, expected {(h, w)}")
                idx = torch.from_numpy(scene.classes.to_index(lab).reshape(-1).astype(np.int16))
                self.label_offset[i] = pos
                self.labels[pos : pos + b - a] = idx
                labelled_pixels.append((torch.nonzero(idx >= 0)[:, 0] + a).to(pix_dtype))
                pos += b - a
            if on_frame is not None:
                on_frame(i)
        self.labelled_pixels = torch.cat(labelled_pixels) if labelled_pixels else torch.zeros(0, dtype=pix_dtype)
        self.labelled_frames = labelled

    @property
    def num_pixels(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_labelled_pixels(self) -> int:
        return int(self.labelled_pixels.numel())

    def nbytes(self) -> int:
        """Bytes held by the caches (what grows with the scene)."""
        ts = [self.rgb, self.labels, self.labelled_pixels, self.depth_mm]
        return sum(t.numel() * t.element_size() for t in ts if t is not None)

    def sample(self, n: int, generator: torch.Generator) -> RayBatch:
        """A batch of n rays: round(n * labelled_fraction) from labelled pixels, the rest from all pixels.

        Deterministic for a given generator state (the generator lives on the CPU).
        """
        n_lab = round(n * self.labelled_fraction) if self.num_labelled_pixels > 0 else 0
        pick = torch.randint(self.num_labelled_pixels or 1, (n_lab,), generator=generator)
        g_lab = self.labelled_pixels[pick].long()
        g_all = torch.randint(self.num_pixels, (n - n_lab,), generator=generator)
        return self.gather(torch.cat([g_lab, g_all]))

    def gather(self, g: torch.Tensor) -> RayBatch:
        """Rays and targets of global pixel indices g (n,) int64."""
        f = torch.searchsorted(self.offsets, g, right=True) - 1
        local = g - self.offsets[f]
        w = self.widths[f]
        v = torch.div(local, w, rounding_mode="floor")
        u = local - v * w
        rays_o, rays_d, z_scale = rays_from_pixels(u.float(), v.float(), self.intr[f], self.c2w[f])
        rgb = self.rgb[g].float().mul_(1.0 / 255.0)
        lab_off = self.label_offset[f]
        has = lab_off >= 0
        labels = torch.full_like(g, -1)
        labels[has] = self.labels[(lab_off + local)[has]].long()
        depth = None if self.depth_mm is None else self.depth_mm[g].float().mul_(1.0 / MM_PER_METRE)
        return RayBatch(rays_o, rays_d, z_scale, rgb, labels, depth, f)
