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
