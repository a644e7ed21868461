"""Training rays: a compact pixel cache of every frame and seeded sampling of ray batches.

Notation:
    F frames; frame f has H_f x W_f pixels; P = sum_f H_f W_f pixels in all.
    A pixel has a *global index* g in [0, P): frame f's pixels are g in [offsets[f], offsets[f + 1]),
    row-major, so local index l = g - offsets[f], row v = l // W_f, column u = l % W_f.

Memory (why it is laid out like this): colour is kept as uint8 (P, 3) — 900 frames at 640x480 take 0.83 GB,
where float32 would take 3.3 GB; depth, only when the depth loss is on, as uint16 millimetres; labels only
for labelled frames, as int16 training indices (-1 = void); plus the int32 list of labelled pixels to sample
from. Rays are made per batch from the per-frame camera tables (`labelfield.cameras.rays_from_pixels`).

Each batch mixes `n * labelled_fraction` rays drawn from labelled pixels with rays drawn uniformly from all
pixels of all frames (which carry their label too when they land on a labelled pixel), so the semantic loss
has gradient on every step, however sparse the labels.

Class balance (`class_balance` = b): of the labelled rays, a share b is drawn class by class — the classes
present in the labelled frames take turns (round-robin from a random start), and each draws uniformly among
its own pixels — the rest uniformly over all labelled pixels. With b = 1 every present class is in every
batch of at least as many labelled rays as classes; b = 0 is the old uniform sampling. Why: uniform
sampling gives a mug covering 0.1 % of the labelled pixels 1 ray in 1000, so small objects learn last and a
short budget cuts them off (issue 8).

Pseudo-labels (`pseudo`): frame -> (labels, confidence) for frames without user labels (reprojected through
depth, `labelfield.baselines.pseudo_labels`). A share `pseudo_fraction` of each batch is drawn from pseudo-labelled
pixels (class-balanced like the labelled rays); every ray carries `label_weight` = 1 on user labels and the
pseudo-label's confidence on pseudo-labels (stored as uint8, 255 = 1).
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
    label_weight: torch.Tensor | None = None
    """(n,) float32 weight of each ray's label (1 = user label, < 1 = pseudo-label confidence); None = all 1."""

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
        class_balance: share of the labelled rays drawn class by class (0 = uniform over labelled pixels).
        depth_fn: `i -> (H, W) z-depth or None` used instead of `frame.load_depth()` (e.g. with sensor noise).
        pseudo: frame index -> (labels (H, W) original ids, 0 = none; confidence (H, W) in [0, 1]) for frames
            without user labels; pixels with confidence < `pseudo_min_confidence` are dropped.
        pseudo_fraction: share of each batch drawn from pseudo-labelled pixels (when there are any).

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
        class_balance: float = 0.0,
        depth_fn: Callable[[int], np.ndarray | None] | None = None,
        pseudo: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
        pseudo_fraction: float = 0.25,
        pseudo_min_confidence: float = 0.0,
    ) -> None:
        for name, v in (
            ("labelled ray fraction", labelled_fraction),
            ("class balance", class_balance),
            ("pseudo-label ray fraction", pseudo_fraction),
        ):
            if not 0.0 <= v <= 1.0:
                raise LabelfieldError(f"{name} must be in [0, 1], got {v}")
        pseudo = {int(i): p for i, p in (pseudo or {}).items() if int(i) not in sparse_labels}
        if labelled_fraction + (pseudo_fraction if pseudo else 0.0) > 1.0:
            raise LabelfieldError("labelled + pseudo-label ray fractions exceed 1")
        frames = scene.frames
        sizes = np.array([f.intrinsics.width * f.intrinsics.height for f in frames], np.int64)
        self.num_frames = len(frames)
        self.labelled_fraction = float(labelled_fraction)
        self.class_balance = float(class_balance)
        self.pseudo_fraction = float(pseudo_fraction) if pseudo else 0.0
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
        n_lab_pix = int(sum(sizes[i] for i in labelled) + sum(sizes[i] for i in pseudo))
        self.labels = torch.full((n_lab_pix,), -1, dtype=torch.int16)
        # Label weights only when there are pseudo-labels (uint8, 255 = 1): user labels weigh 1.
        self.label_weight = torch.full((n_lab_pix,), 255, dtype=torch.uint8) if pseudo else None
        labelled_pixels: list[torch.Tensor] = []
        pseudo_pixels: list[torch.Tensor] = []
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
                d = frame.load_depth() if depth_fn is None else depth_fn(i)
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
            elif i in pseudo:
                lab, conf = (np.asarray(x) for x in pseudo[i])
                if lab.shape != (h, w) or conf.shape != (h, w):
                    raise LabelfieldError(f"pseudo-labels of frame {frame.name} are {lab.shape}, expected {(h, w)}")
                idx = scene.classes.to_index(lab).reshape(-1).astype(np.int16)
                c8 = np.round(np.clip(conf, 0.0, 1.0) * 255.0).astype(np.uint8).reshape(-1)
                idx[(c8 == 0) | (c8 < pseudo_min_confidence * 255.0)] = -1
                idx_t = torch.from_numpy(idx)
                self.label_offset[i] = pos
                self.labels[pos : pos + b - a] = idx_t
                self.label_weight[pos : pos + b - a] = torch.from_numpy(c8)
                pseudo_pixels.append((torch.nonzero(idx_t >= 0)[:, 0] + a).to(pix_dtype))
                pos += b - a
            if on_frame is not None:
                on_frame(i)
        self.labelled_pixels, self.class_starts = self._by_class(labelled_pixels, pix_dtype)
        self.pseudo_pixels, self.pseudo_class_starts = self._by_class(pseudo_pixels, pix_dtype)
        self.labelled_frames = labelled
        self.pseudo_frames = sorted(pseudo)

    def _by_class(self, parts: list[torch.Tensor], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated global pixel indices (m,) sorted by class (stable), and class starts (C + 1,) int64."""
        pix = torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)
        if pix.numel() == 0:
            return pix, torch.zeros(1, dtype=torch.int64)
        cls = self._label_at(pix.long()).long()
        order = torch.argsort(cls, stable=True)
        counts = torch.bincount(cls, minlength=int(cls.max()) + 1)
        starts = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)])
        return pix[order], starts

    def _label_at(self, g: torch.Tensor) -> torch.Tensor:
        """Stored label (training index, -1 = none) of global pixels g (m,) of labelled/pseudo frames."""
        f = torch.searchsorted(self.offsets, g, right=True) - 1
        return self.labels[self.label_offset[f] + g - self.offsets[f]]

    @property
    def num_pixels(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_labelled_pixels(self) -> int:
        return int(self.labelled_pixels.numel())

    @property
    def num_pseudo_pixels(self) -> int:
        return int(self.pseudo_pixels.numel())

    def present_classes(self, pseudo: bool = False) -> list[int]:
        """Training indices with at least one labelled (or pseudo-labelled) pixel."""
        starts = self.pseudo_class_starts if pseudo else self.class_starts
        return [int(c) for c in torch.nonzero(starts[1:] > starts[:-1])[:, 0]]

    def nbytes(self) -> int:
        """Bytes held by the caches (what grows with the scene)."""
        ts = [self.rgb, self.labels, self.labelled_pixels, self.depth_mm, self.label_weight, self.pseudo_pixels]
        return sum(t.numel() * t.element_size() for t in ts if t is not None)

    def sample(self, n: int, generator: torch.Generator) -> RayBatch:
        """A batch of n rays: round(n * labelled_fraction) from labelled pixels (class-balanced share
        `class_balance`), round(n * pseudo_fraction) from pseudo-labelled pixels, the rest from all pixels.

        Deterministic for a given generator state (the generator lives on the CPU).
        """
        n_lab = round(n * self.labelled_fraction) if self.num_labelled_pixels > 0 else 0
        n_ps = round(n * self.pseudo_fraction) if self.num_pseudo_pixels > 0 else 0
        g_lab = _draw(self.labelled_pixels, self.class_starts, n_lab, self.class_balance, generator)
        g_ps = _draw(self.pseudo_pixels, self.pseudo_class_starts, n_ps, self.class_balance, generator)
        g_all = torch.randint(self.num_pixels, (n - n_lab - n_ps,), generator=generator)
        return self.gather(torch.cat([g_lab, g_ps, g_all]))

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
        weight = None
        if self.label_weight is not None:
            weight = torch.zeros(g.shape, dtype=torch.float32)
            weight[has] = self.label_weight[(lab_off + local)[has]].float() / 255.0
        return RayBatch(rays_o, rays_d, z_scale, rgb, labels, depth, f, weight)


def _draw(pixels: torch.Tensor, starts: torch.Tensor, n: int, balance: float, gen: torch.Generator) -> torch.Tensor:
    """n global pixel indices (int64) from `pixels` (sorted by class, class c in [starts[c], starts[c+1])):
    round(n * balance) class by class (present classes in turn from a random start, uniform within a class),
    the rest uniformly. No generator draws when n = 0 (and none for the balanced part when balance = 0)."""
    m = pixels.numel()
    if n == 0 or m == 0:
        return torch.zeros(0, dtype=torch.int64)
    n_bal = round(n * balance)
    parts = []
    if n_bal > 0:
        counts = starts[1:] - starts[:-1]
        present = torch.nonzero(counts > 0)[:, 0]
        first = torch.randint(len(present), (1,), generator=gen)
        cls = present[(torch.arange(n_bal) + first) % len(present)]
        u = torch.rand(n_bal, generator=gen, dtype=torch.float64)
        pos = starts[cls] + (u * counts[cls]).long().clamp_max(counts[cls] - 1)
        parts.append(pixels[pos].long())
    if n - n_bal > 0:
        parts.append(pixels[torch.randint(m, (n - n_bal,), generator=gen)].long())
    return torch.cat(parts)
