"""Alpha compositing of packed samples (nerfacc-style; no python loop over rays).

Notation (see docs/architecture.md, "tensor vocabulary"):
    n_rays rays; n_samples packed samples, **grouped by ray in increasing ray index and sorted by t within a
    ray** (what `labelfield.render.sampling.march_rays` returns).
    t_starts, t_ends: (n_samples,) interval bounds along the ray (distance, the ray direction is unit length).
    ray_indices: (n_samples,) int64 ray of each sample.
    sigmas: (n_samples,) densities >= 0.
    weights: (n_samples,) w_i = T_i (1 - exp(-sigma_i delta_i)), T_i = exp(-sum_{j<i, same ray} sigma_j delta_j).

Per ray the weights sum to 1 - exp(-sum_i sigma_i delta_i) <= 1 (the opacity); 1 - opacity is the
transmittance left for the background.

These functions are the definition (any device, dtype, differentiable everywhere). The renderers call
`render.composite_kernel.composite`, which computes the same weights and per-ray sums in one C++ pass on the
CPU (tested against these) and falls back to them elsewhere.
"""

from __future__ import annotations

import torch


def ray_starts(ray_indices: torch.Tensor, n_rays: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first sample of every ray and the sample count per ray, both (n_rays,) int64.

    Rays without samples get a start equal to the start of the next ray (never read).
    """
    counts = torch.bincount(ray_indices, minlength=n_rays)
    starts = torch.cumsum(counts, 0) - counts
    return starts, counts


def exclusive_segment_cumsum(x: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Per-ray exclusive cumulative sum of packed values x (n_samples,) -> (n_samples,).

    Computed as one global cumsum minus the value at each ray's first sample. The global sum grows with the
    number of samples, so it runs in float64 (float32 would lose the small per-ray differences once the
    running total is large); the result comes back in x's dtype. Differentiable (cumsum, gather).
    """
    if x.numel() == 0:
        return x
    inclusive = torch.cumsum(x.double(), 0)
    exclusive = inclusive - x.double()
    starts, _ = ray_starts(ray_indices, n_rays)
    return (exclusive - exclusive[starts[ray_indices]]).to(x.dtype)


def render_weights(
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    sigmas: torch.Tensor,
    ray_indices: torch.Tensor,
    n_rays: int,
) -> torch.Tensor:
    """Volume-rendering weights of packed samples.

    Args:
        t_starts, t_ends: (n_samples,) interval bounds, sorted per ray.
        sigmas: (n_samples,) densities (>= 0).
        ray_indices: (n_samples,) int64, non-decreasing.
        n_rays: number of rays (rays without samples are allowed).

    Returns:
        weights (n_samples,), each in [0, 1]; per ray they sum to at most 1.

    Differentiable with respect to sigmas (and t_starts, t_ends) through plain autograd ops: the
    transmittance term carries the usual "later samples are occluded" gradient.
    """
    tau = sigmas * (t_ends - t_starts)
    transmittance = torch.exp(-exclusive_segment_cumsum(tau, ray_indices, n_rays))
    alpha = 1.0 - torch.exp(-tau)
    return transmittance * alpha


def accumulate(
    weights: torch.Tensor,
    values: torch.Tensor | None,
    ray_indices: torch.Tensor,
    n_rays: int,
) -> torch.Tensor:
    """Sum weighted per-sample values into their rays.

    Args:
        weights: (n_samples,).
        values: (n_samples, k) or (n_samples,), or None for the weights themselves (-> opacity).
        ray_indices: (n_samples,) int64 (any order here).
        n_rays: number of rays.

    Returns:
        (n_rays, k) when values is 2-D, else (n_rays,). Rays without samples get 0.
        Differentiable in weights and values (index_add is linear).
    """
    src = weights if values is None else (weights[:, None] * values if values.dim() == 2 else weights * values)
    out = torch.zeros((n_rays, *src.shape[1:]), dtype=src.dtype, device=src.device)
    return out.index_add(0, ray_indices, src)
