"""The Model interface every radiance field implements, and the hash-grid model's configuration.

A model maps rays to per-ray outputs (tensor vocabulary of docs/architecture.md):
    render_rays(rays_o (n, 3), rays_d (n, 3) unit, near=None, far=None, background=None) -> dict with
        rgb (n, 3) in [0, 1], composited over the background colour;
        depth (n,) expected termination distance along the ray, sum_i w_i t_i (NOT normalised by opacity);
        opacity (n,) accumulated opacity sum_i w_i in [0, 1];
        logits (n, C) semantic logits over training indices, ready for cross-entropy;
        log_probs (n, C) log class probabilities (what softmax(logits) gives, taken in log space);
        n_samples int, the number of samples that went through the network.
    Two-pass models also return rgb_coarse, logits_coarse.
    before_step(step) is called by the trainer before every optimisation step (occupancy grid refresh).
    param_groups(lr) gives optimizer parameter groups (per-group lr, eps and weight decay).
Fields never read files: aabb, class count and background class come from the caller (build_model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ModelConfig:
    """Configuration of the semantic hash-grid model ("ngp")."""

    n_levels: int = 16
    """Hash grid levels L."""
    n_features: int = 2
    """Features per level F."""
    log2_table_size: int = 19
    """log2 of the hash table size T per level."""
    base_resolution: int = 16
    """Coarsest grid resolution."""
    max_resolution: int = 2048
    """Finest grid resolution over the scene box (the levels grow geometrically between the two)."""
    hash_backend: str = "auto"
    """Hash encoding backend: auto, kernel (C++ CPU), torch (reference) or tcnn (CUDA)."""
    hidden_dim: int = 64
    """Width of the density and colour MLPs."""
    density_layers: int = 1
    """Hidden layers of the density MLP (encoding -> sigma + geometry features)."""
    color_layers: int = 1
    """Hidden layers of the colour MLP (geometry features + direction encoding -> rgb). Instant-NGP uses 2; 1
    cut a CPU training step by ~15 % here (labels do not need fine view-dependent colour)."""
    geo_feat_dim: int = 15
    """Geometry features passed from the density MLP to the colour and semantic heads."""
    sh_degree: int = 4
    """Spherical-harmonics degree of the direction encoding (degree^2 values)."""
    semantic_head: str = "per_ray"
    """"per_ray": one linear head on the composited geometry features (exactly equal to compositing per-sample
    linear logits, ~n_samples/n_rays times cheaper); "per_sample": an MLP per sample, logits composited."""
    semantic_hidden_dim: int = 64
    """Hidden width of the per-sample semantic MLP (semantic_head="per_sample" only)."""
    occupancy_resolution: int = 64
    """Occupancy grid cells per axis (64 or 128; a full refresh evaluates res^3 points)."""
    occupancy_threshold: float = 0.01
    """A cell is occupied when one marching step through it would be this opaque: sigma > -ln(1 - thr) / step."""
    occupancy_update_interval: int = 8
    """Refresh the occupancy grid every N training steps (8: a full 64^3 refresh costs ~8 ms per step)."""
    occupancy_warmup_steps: int = 256
    """During the first N steps every cell is refreshed; later a random half."""
    occupancy_decay: float = 0.7
    """Decay of the per-cell density estimate per refresh. Instant-NGP's 0.95 suits 30k-step runs; in our
    few-hundred-step CPU budgets it left empty space occupied for the whole run (demo room: ~50 samples/ray,
    2.0 steps/s); 0.7 empties it within ~100 steps (with samples_per_diagonal 256: 5.5 steps/s)."""
    step_size: float | None = None
    """Marching step in metres; None = the scene box diagonal / samples_per_diagonal."""
    samples_per_diagonal: int = 256
    """Marching steps along the scene box diagonal when step_size is None."""
    max_samples_per_ray: int | None = 32
    """Bound on the samples per ray after empty-space skipping (longer rays are sampled more coarsely)."""
    early_stop_eps: float | None = 1e-4
    """Stop a ray once its transmittance under the occupancy grid's density estimate (capped at 3 optical
    depths per cell) falls below this; None marches through (slower: samples behind surfaces)."""
    near: float = 0.05
    """Default near distance in metres when render_rays gets none."""
    background_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour of the remaining transmittance (1 - opacity), unless render_rays is given a background."""
    random_background: bool | None = False
    """Training only, when render_rays gets no background: a random colour per ray for the remaining
    transmittance; None = random exactly when the scene has no background class. Off by default: on the toy
    room (cameras on a circle, looking inward) it drove the field into a degenerate "bubble" per camera
    (opaque fog right in front of each camera, painted with its view: train PSNR 27, held-out 14, held-out
    label accuracy 0.3 vs 0.94 with the constant colour). For RGBA data the trainer can pass its own random
    colours to render_rays and composite the target over them."""
    near_grad_radius: float = 0.0
    """Training only: scale the gradient of each sample's density and features by min(1, (t / r)^2), t its
    distance from the camera, r this radius in metres ("Floaters No More", Philip & Deschaintre 2023: samples
    near a camera are seen by few rays and get outsized gradients); 0 = off."""


class Model(nn.Module):
    """Base class of the radiance-field models (see the module docstring for the contract).

    Attributes: aabb (2, 3) buffer (world box), num_classes C, background_class_index (training index of
    the class given to rays that hit nothing, or None).
    """

    aabb: torch.Tensor

    def __init__(self, aabb: torch.Tensor, num_classes: int, background_class_index: int | None) -> None:
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone())
        self.num_classes = int(num_classes)
        self.background_class_index = None if background_class_index is None else int(background_class_index)
        if self.background_class_index is not None and not 0 <= self.background_class_index < self.num_classes:
            raise ValueError(f"background_class_index {background_class_index} is not in 0..{num_classes - 1}")

    def render_rays(
        self,
        rays_o: torch.Tensor,
        rays_d: torch.Tensor,
        near: float | torch.Tensor | None = None,
        far: float | torch.Tensor | None = None,
        background: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def before_step(self, step: int) -> None:
        """Called before each training step; the default does nothing."""

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups; the default is one group with every parameter."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]


def semantic_outputs(
    logits: torch.Tensor, opacity: torch.Tensor, total_tau: torch.Tensor, background_class_index: int | None
) -> dict[str, torch.Tensor]:
    """Per-ray semantic outputs from composited logits z (n, C).

    Without a background class: Semantic-NeRF's rule, p = softmax(z); logits = z.
    With one (index b): the transmittance left over, 1 - opacity, is background:
        p = opacity * softmax(z) + (1 - opacity) * onehot(b),
    computed in log space (log(1 - opacity) = -total_tau exactly, log opacity = log(-expm1(-total_tau))), and
    logits = log p, which cross-entropy accepts (log_softmax(log p) = log p). A ray that hits nothing is then
    labelled background with certainty, and a background label teaches the field to stay empty there.

    Args:
        logits: (n, C) composited logits; opacity: (n,); total_tau: (n,) sum of sigma * delta per ray.
    """
    log_sm = torch.log_softmax(logits, -1)
    if background_class_index is None:
        return {"logits": logits, "log_probs": log_sm}
    log_o = torch.log((-torch.expm1(-total_tau)).clamp(min=1e-12))
    log_p = log_sm + log_o[:, None]
    b = background_class_index
    log_bg = torch.logaddexp(log_p[:, b], -total_tau)
    log_p = torch.cat([log_p[:, :b], log_bg[:, None], log_p[:, b + 1 :]], -1)
    del opacity  # the exact opacity comes from total_tau; the argument documents the relation
    return {"logits": log_p, "log_probs": log_p}
