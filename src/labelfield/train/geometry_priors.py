"""Geometry priors for scenes without depth: keypoint rays with a ray-termination loss, distortion, opacity.

The trainer asks this module for each batch and for the extra loss; with every prior off it is not built
at all (`build_geometry_priors` returns None) and training is exactly what it was.

Keypoint rays: `labelfield.geometry.triangulate` gives M observations (frame, u, v, z, weight).
`round(n * keypoint_ray_fraction)` of the n rays of each batch are drawn from them (uniformly) and appended
to the dataset's ordinary batch: their colour and label come from the nearest pixel (`RayDataset.gather`),
their ray goes through the exact sub-pixel keypoint, and their target is the distance t = z / z_scale along
the ray. The ray-termination loss (train/losses.py) applies to those rays only, with sigma = s * z, s
annealed from `keypoint_sigma_start` to `keypoint_sigma_end` by the middle of the run.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from labelfield.cameras import rays_from_pixels
from labelfield.progress import ProgressFn, message
from labelfield.scene import Scene
from labelfield.train.config import FitConfig
from labelfield.train.dataset import RayBatch, RayDataset
from labelfield.train.losses import annealed, distortion_loss, opacity_entropy_loss, ray_termination_loss

SPARSE_DEPTH_FILE = "sparse_depth.npz"


def concat_batches(a: RayBatch, b: RayBatch) -> RayBatch:
    """Rays of a followed by rays of b (depth: None unless both have it)."""
    cat = lambda x, y: None if x is None or y is None else torch.cat([x, y])
    return RayBatch(*(cat(getattr(a, k), getattr(b, k)) for k in RayBatch.__dataclass_fields__))


class KeypointRays:
    """Sparse depth observations as rays of a `RayDataset`'s cameras.

    Args: frame (M,) int64, u, v, z, weight (M,) float32 (see `labelfield.geometry.SparseDepth`).
    """

    def __init__(
        self, frame: np.ndarray, u: np.ndarray, v: np.ndarray, z: np.ndarray, weight: np.ndarray, dataset: RayDataset
    ) -> None:
        self.dataset = dataset
        self.frame = torch.as_tensor(frame, dtype=torch.int64)
        self.u = torch.as_tensor(u, dtype=torch.float32)
        self.v = torch.as_tensor(v, dtype=torch.float32)
        self.z = torch.as_tensor(z, dtype=torch.float32)
        self.weight = torch.as_tensor(weight, dtype=torch.float32)
        w, h = dataset.widths[self.frame], dataset.heights[self.frame]
        col = self.u.round().long().clamp(min=torch.zeros_like(w), max=w - 1)
        row = self.v.round().long().clamp(min=torch.zeros_like(h), max=h - 1)
        self.pixel = dataset.offsets[self.frame] + row * w + col  # (M,) global pixel index

    def __len__(self) -> int:
        return int(self.frame.numel())

    def sample(self, n: int, generator: torch.Generator) -> tuple[RayBatch, torch.Tensor, torch.Tensor, torch.Tensor]:
        """n keypoint rays: (batch, target distance t (n,), z-depth (n,), confidence (n,)); t = z / z_scale."""
        pick = torch.randint(len(self), (n,), generator=generator)
        batch = self.dataset.gather(self.pixel[pick])
        f = self.frame[pick]
        o, d, zs = rays_from_pixels(self.u[pick], self.v[pick], self.dataset.intr[f], self.dataset.c2w[f])
        batch.rays_o, batch.rays_d, batch.z_scale = o, d, zs
        return batch, self.z[pick] / zs, self.z[pick], self.weight[pick]


class GeometryPriors:
    """Batch sampling and extra loss terms of the RGB-only geometry priors (built by `build_geometry_priors`)."""

    def __init__(self, config: FitConfig, keypoints: KeypointRays | None, scale: float) -> None:
        self.config = config
        self.keypoints = keypoints
        self.scale = scale  # scene diagonal (distortion loss distances)
        self._targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.n_kp = 0

    @property
    def render_kwargs(self) -> dict[str, bool]:
        needs = self.keypoints is not None or self.config.distortion_weight > 0
        return {"return_samples": True} if needs else {}

    def sample(self, dataset: RayDataset, n: int, generator: torch.Generator) -> RayBatch:
        """The ordinary batch with its last round(n * keypoint_ray_fraction) rays replaced by keypoint rays."""
        self.n_kp = round(n * self.config.keypoint_ray_fraction) if self.keypoints is not None else 0
        base = dataset.sample(n - self.n_kp, generator)
        if self.n_kp == 0:
            self._targets = None
            return base
        kp, t, z, w = self.keypoints.sample(self.n_kp, generator)  # type: ignore[union-attr]
        self._targets = (t, z, w)
        return concat_batches(base, kp)

    def loss(self, pred: dict[str, torch.Tensor], n_rays: int, progress: float) -> torch.Tensor:
        """Sum of the enabled prior terms for the batch last returned by `sample`."""
        cfg = self.config
        total = torch.zeros((), device=pred["rgb"].device)
        if self._targets is not None:
            t, z, w = (x.to(total.device) for x in self._targets)
            target = torch.zeros(n_rays, device=total.device)
            target[n_rays - self.n_kp :] = t
            rel = annealed(progress, cfg.keypoint_sigma_start, cfg.keypoint_sigma_end)
            sigma = torch.ones(n_rays, device=total.device)
            sigma[n_rays - self.n_kp :] = rel * z
            conf = torch.zeros(n_rays, device=total.device)
            conf[n_rays - self.n_kp :] = w
            total = total + cfg.keypoint_weight * ray_termination_loss(
                pred["t_starts"], pred["t_ends"], pred["ray_indices"], pred["weights"], target, sigma, conf
            )
        if cfg.distortion_weight > 0:
            total = total + cfg.distortion_weight * distortion_loss(
                pred["t_starts"], pred["t_ends"], pred["ray_indices"], pred["weights"], n_rays, self.scale
            )
        if cfg.opacity_entropy_weight > 0:
            total = total + cfg.opacity_entropy_weight * opacity_entropy_loss(pred["opacity"])
        return total


def build_geometry_priors(
    config: FitConfig,
    scene: Scene,
    dataset: RayDataset,
    model: torch.nn.Module,
    run_dir: Path,
    on_progress: ProgressFn | None = None,
) -> GeometryPriors | None:
    """The priors the config asks for, or None when every one is off (the trainer then runs unchanged).

    Keypoints are triangulated once and cached in RUN/sparse_depth.npz (keyed by the scene's frames, poses
    and the options). Too few points: one warning line, training goes on without them. A model whose
    `render_rays` cannot return its samples: one warning line, the sample-based terms are skipped.
    """
    cfg = config
    if cfg.keypoint_depth == "auto":
        cfg = replace(cfg, keypoint_depth="on" if _keypoints_wanted(cfg, scene, on_progress) else "off")
    wants_samples = cfg.keypoint_depth == "on" or cfg.distortion_weight > 0
    if not (wants_samples or cfg.opacity_entropy_weight > 0):
        return None
    if wants_samples and "return_samples" not in inspect.signature(model.render_rays).parameters:
        message(
            on_progress,
            f"model {cfg.model!r} does not return its samples: keypoint depth and distortion loss are off",
            "warning",
        )
        cfg = _without_sample_terms(cfg)
        if cfg.opacity_entropy_weight <= 0:
            return None
    keypoints = None
    if cfg.keypoint_depth == "on":
        from labelfield.geometry.triangulate import load_or_triangulate

        t0 = time.perf_counter()
        threads = torch.get_num_threads()
        sd, cached = load_or_triangulate(scene, Path(run_dir) / SPARSE_DEPTH_FILE)
        torch.set_num_threads(threads)  # OpenCV's thread pool must not change torch's (bit-exact resume)
        n_points = len(sd.points)
        if n_points < cfg.keypoint_min_points:
            message(
                on_progress,
                f"only {n_points} keypoints triangulated (< {cfg.keypoint_min_points}): "
                "training without keypoint depth",
                "warning",
            )
        else:
            keypoints = KeypointRays(sd.frame, sd.u, sd.v, sd.z, sd.weight, dataset)
            covered = int((sd.per_frame_counts(len(scene.frames)) > 0).sum())
            message(
                on_progress,
                f"keypoint depth: {n_points} points, {len(sd)} observations in {covered}/{len(scene.frames)} frames "
                + ("(cached)" if cached else f"({time.perf_counter() - t0:.1f} s)"),
            )
    aabb = getattr(model, "aabb", None)
    scale = float((aabb[1] - aabb[0]).norm()) if aabb is not None else 1.0
    return GeometryPriors(cfg, keypoints, scale)


def _without_sample_terms(cfg: FitConfig) -> FitConfig:
    return replace(cfg, keypoint_depth="off", distortion_weight=0.0)


def depth_supervised(config: FitConfig, scene: Scene) -> bool:
    """Whether the fit trains on depth maps (`depth_loss` as a bool, or as "auto"/"on"/"off")."""
    d = config.depth_loss
    if isinstance(d, str):
        return d == "on" or (d == "auto" and scene.frames[0].has_depth())
    return bool(d)


def _keypoints_wanted(config: FitConfig, scene: Scene, on_progress: ProgressFn | None) -> bool:
    """keypoint_depth "auto": on without depth supervision, when OpenCV is there (else one hint line)."""
    if depth_supervised(config, scene):
        return False
    try:
        import cv2  # noqa: F401
    except ImportError:
        hint = "RGB-only fit; pip install 'labelfield[geometry]' for keypoint depth (better geometry)"
        message(on_progress, hint, "hint")
        return False
    return True
