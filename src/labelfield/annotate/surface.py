"""Experiment (issue 8, item 7): read the label at the surface instead of compositing logits along the ray.

Semantic-NeRF composites logits, z = sum_i w_i s(x_i): a ray grazing a small object in front of a wall mixes
both. Here the label is the semantic head at one sample: the ray's median-depth sample (the first whose
cumulative weight reaches half the opacity). For the ngp model only (it needs `geometry` and `semantic_head`).
"""

from __future__ import annotations

import numpy as np
import torch

from labelfield.cameras import Intrinsics, frame_rays
from labelfield.render.chunked import render_image
from labelfield.render.composite import exclusive_segment_cumsum, render_weights
from labelfield.render.sampling import march_rays


@torch.no_grad()
def surface_logits(model: torch.nn.Module, rays_o: torch.Tensor, rays_d: torch.Tensor) -> torch.Tensor:
    """(n, C) semantic logits of each ray's median-depth sample (zeros for rays without samples). Eval mode."""
    n = rays_o.shape[0]
    c = model.config
    t0, t1, ri = march_rays(
        rays_o, rays_d, model.aabb, model.step_size, near=c.near, occupied_fn=model.occupancy.is_occupied,
        stratified=False, max_samples_per_ray=c.max_samples_per_ray,
        proxy_density_fn=None if c.early_stop_eps is None else model.occupancy.proxy_density,
        early_stop_eps=c.early_stop_eps or 1e-4, near_occupied_fn=model.occupancy.is_occupied_near,
    )  # fmt: skip
    C = model.num_classes
    if ri.numel() == 0:
        return torch.zeros(n, C)
    x = rays_o[ri] + rays_d[ri] * (0.5 * (t0 + t1))[:, None]
    sigma, g = model.geometry(x)
    w = render_weights(t0, t1, sigma, ri, n)
    cum = exclusive_segment_cumsum(w, ri, n) + w  # inclusive cumulative weight per ray
    opacity = torch.zeros(n).index_add(0, ri, w)
    reached = cum >= 0.5 * opacity[ri]
    idx = torch.arange(len(ri))
    first = torch.full((n,), len(ri), dtype=torch.int64)
    first = first.scatter_reduce(0, ri[reached], idx[reached], reduce="amin")
    has = first < len(ri)
    out = torch.zeros(n, C)
    out[has] = model.semantic_head(g[first[has]]).float()
    return out


def render_image_surface(model: torch.nn.Module, intr: Intrinsics, c2w: np.ndarray, chunk: int = 16384) -> dict:
    """`render_image` with probs from the median-depth sample's logits (rgb, depth, opacity unchanged)."""
    out = render_image(model, intr, c2w, chunk=chunk)
    rays_o, rays_d, _ = frame_rays(intr, c2w, "cpu")
    was = model.training
    model.eval()
    try:
        logits = torch.cat([surface_logits(model, rays_o[i : i + chunk], rays_d[i : i + chunk])
                            for i in range(0, rays_o.shape[0], chunk)])  # fmt: skip
    finally:
        model.train(was)
    out["probs"] = torch.softmax(logits, -1).reshape(intr.height, intr.width, -1)
    return out
