"""Training losses: L = MSE(rgb) + lambda * CE(logits, labels; void ignored) [+ w_d * L1(z-depth)].

Two-pass models (outputs `rgb_coarse`, `logits_coarse` / `log_probs_coarse`) add the coarse terms as
Semantic-NeRF does: MSE_c + MSE_f + lambda (CE_c + CE_f); `Losses.mse` / `semantic` report the fine pass.

Notation: n rays per batch; `pred` is a model's `render_rays` output (rgb (n, 3), depth (n,) distance along
the ray, logits (n, C) composited before the softmax, as in Semantic-NeRF); targets come from a `RayBatch`.
Labels are training indices, -1 for void/unlabelled. A model that composites probabilities instead (and
returns `log_probs`, like `render.chunked` accepts) gets the NLL of those. Every term is a mean over the
rays it applies to, and a batch in which no ray applies gives exactly 0 for that term (finite, zero
gradient) rather than 0/0 = NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Losses:
    """The total and its parts (0-dim tensors; `total` carries the graph)."""

    total: torch.Tensor
    mse: torch.Tensor
    semantic: torch.Tensor
    depth: torch.Tensor
    n_labelled: torch.Tensor


def semantic_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    log_probs: bool = False,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (weighted) cross-entropy over rays with a label (labels >= 0); 0 when there is none.

    logits: (n, C) (or log-probabilities with `log_probs`, for models that composite probabilities);
    labels: (n,) int64, -1 = void; weights: optional (n,) per-ray label weights (pseudo-label confidence).
    The weighted sum is divided by the number of labelled rays
    (not the weight sum), so a low-confidence pseudo-label only ever pulls less. Returns (loss, number of
    labelled rays). No host sync: divided by max(count, 1), finite whatever the batch holds.
    """
    valid = labels >= 0
    target = labels.clamp_min(0)
    if log_probs:
        ce = F.nll_loss(logits.float(), target, reduction="none")  # (n,)
    else:
        ce = F.cross_entropy(logits.float(), target, reduction="none")  # (n,)
    w = valid.float()
    if weights is not None:
        w = w * weights.float()
    count = valid.sum()
    return (ce * w).sum() / count.clamp_min(1), count


def depth_loss(pred_distance: torch.Tensor, z_scale: torch.Tensor, target_z: torch.Tensor) -> torch.Tensor:
    """Mean L1 between rendered z-depth (distance * z_scale) and target z-depth where the target is known (> 0)."""
    valid = target_z > 0
    err = (pred_distance * z_scale - target_z).abs() * valid
    return err.sum() / valid.sum().clamp_min(1)


def compute_losses(
    pred: dict[str, torch.Tensor],
    rgb: torch.Tensor,
    labels: torch.Tensor,
    semantic_weight: float,
    depth: torch.Tensor | None = None,
    z_scale: torch.Tensor | None = None,
    depth_weight: float = 0.0,
    label_weight: torch.Tensor | None = None,
) -> Losses:
    """All terms for one batch. pred: render_rays output; rgb (n, 3); labels (n,); depth, z_scale (n,) or None;
    label_weight (n,) or None: per-ray weight of the label (pseudo-label confidence, 1 for user labels)."""
    mse = F.mse_loss(pred["rgb"].float(), rgb)
    lw = label_weight
    if "log_probs" in pred:
        sem, count = semantic_loss(pred["log_probs"], labels, log_probs=True, weights=lw)
    else:
        sem, count = semantic_loss(pred["logits"], labels, weights=lw)
    total = mse + semantic_weight * sem
    if "rgb_coarse" in pred:  # two-pass models (semantic-nerf): + MSE_c + lambda CE_c on the coarse pass
        total = total + F.mse_loss(pred["rgb_coarse"].float(), rgb)
        if "log_probs_coarse" in pred:
            total = total + semantic_weight * semantic_loss(pred["log_probs_coarse"], labels, True, lw)[0]
        elif "logits_coarse" in pred:
            total = total + semantic_weight * semantic_loss(pred["logits_coarse"], labels, weights=lw)[0]
    dl = torch.zeros((), device=mse.device)
    if depth is not None and z_scale is not None and depth_weight > 0:
        dl = depth_loss(pred["depth"].float(), z_scale, depth)
        total = total + depth_weight * dl
    return Losses(total, mse.detach(), sem.detach(), dl.detach(), count)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for colours in [0, 1]."""
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


# --- geometry priors for RGB-only scenes (packed samples: see render/composite.py) -------------------
def ray_termination_loss(
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    weights: torch.Tensor,
    target_t: torch.Tensor,
    sigma: torch.Tensor | float,
    ray_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """DS-NeRF's depth term: KL from a Gaussian N(target_t, sigma^2) along the ray to the ray's weights.

    Up to a constant, KL(q || w) = -sum_i q_i log(w_i + eps) with q_i the Gaussian's mass over sample i's
    interval [t_start, t_end) (exact, via erf, so it is well behaved for any sigma, also below the step
    size). Raising w_i near the target needs density there and transparency in front of it: floaters and
    semi-transparent surfaces both cost. Mass that falls in skipped (empty) space adds nothing.

    Args:
        t_starts, t_ends, ray_indices, weights: (n_samples,) packed samples of the rendered rays.
        target_t: (n_rays,) target distance along each ray; rays with target_t <= 0 are ignored.
        sigma: scalar or (n_rays,) standard deviation in metres.
        ray_weight: (n_rays,) confidence per ray (None: 1).
    Returns the confidence-weighted mean over rays with a target (0 when there is none).
    """
    n = target_t.shape[0]
    has = target_t > 0
    sig = torch.as_tensor(sigma, dtype=t_starts.dtype, device=t_starts.device).expand(n)
    d = target_t[ray_indices]
    s = sig[ray_indices] * math.sqrt(2.0)
    q = 0.5 * (torch.erf((t_ends - d) / s) - torch.erf((t_starts - d) / s))  # (n_samples,)
    per_sample = -q.detach() * torch.log(weights + 1e-5)
    per_ray = torch.zeros(n, dtype=per_sample.dtype, device=per_sample.device).index_add_(0, ray_indices, per_sample)
    rw = has.to(per_ray.dtype) if ray_weight is None else ray_weight.to(per_ray.dtype) * has
    return (per_ray * rw).sum() / rw.sum().clamp_min(1e-8)


def distortion_loss(
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    weights: torch.Tensor,
    n_rays: int,
    scale: float = 1.0,
) -> torch.Tensor:
    """Mip-NeRF 360's distortion loss over packed samples, mean over rays, O(n_samples).

    L_r = sum_{i,j} w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (t_end_i - t_start_i), with midpoints m and
    distances divided by `scale` (e.g. the scene diagonal, so the weight does not depend on the scene's size).
    The double sum is 2 sum_i w_i (m_i W_<i - S_<i) with per-ray exclusive cumulative sums W of w and S of w m
    (samples are sorted by t within a ray). It is small when each ray's weight sits in one short interval.
    """
    from labelfield.render.composite import exclusive_segment_cumsum

    if weights.numel() == 0:
        return weights.sum()
    m = 0.5 * (t_starts + t_ends) / scale
    delta = (t_ends - t_starts) / scale
    w_before = exclusive_segment_cumsum(weights, ray_indices, n_rays)
    wm_before = exclusive_segment_cumsum(weights * m, ray_indices, n_rays)
    inter = 2.0 * weights * (m * w_before - wm_before)
    intra = weights.square() * delta / 3.0
    return (inter + intra).sum() / max(n_rays, 1)


def opacity_entropy_loss(opacity: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy of the rays' opacity (n,): pushes each ray to fully opaque or fully empty."""
    o = opacity.clamp(1e-5, 1.0 - 1e-5)
    return -(o * torch.log(o) + (1.0 - o) * torch.log1p(-o)).mean()


def annealed(progress: float, start: float, end: float, until: float = 0.5) -> float:
    """Geometric interpolation from `start` to `end` as progress goes from 0 to `until` (then `end`)."""
    p = min(max(progress / until, 0.0), 1.0) if until > 0 else 1.0
    return start * (end / start) ** p if start > 0 and end > 0 else end
