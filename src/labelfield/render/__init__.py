"""Rendering functional core: bounds, occupancy grid, ray marching, compositing, chunked whole-frame rendering.

One tensor vocabulary throughout (docs/architecture.md): rays_o, rays_d (n_rays, 3), packed samples
t_starts, t_ends, ray_indices (n_samples,), weights (n_samples,).
"""

from labelfield.render.bounds import scene_bounds
from labelfield.render.composite import accumulate, render_weights
from labelfield.render.occupancy import OccupancyGrid
from labelfield.render.sampling import march_rays, ray_aabb_intersect

__all__ = ["OccupancyGrid", "accumulate", "march_rays", "ray_aabb_intersect", "render_weights", "scene_bounds"]
