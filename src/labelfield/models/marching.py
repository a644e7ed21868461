"""Ray marching through an `OccupancyGrid` with the C++ kernel (`field/_kernels/march.cpp`), CPU only.

`march_grid(...)` returns exactly what `render.sampling.march_rays` returns when given the grid's
`is_occupied`, `proxy_density` and `is_occupied_near` (the reference; tested equal), without its Python-level
block bookkeeping: measured on the demo room (320x240 frame, 2 threads) marching fell from ~60 % of a
rendered frame to a few %. Each ray is walked step by step in C++ (OpenMP over rays): once to count its
samples, then again only between its first and last sample to write them packed.

`available()` says whether the kernel builds here; `NGPModel.march` uses it for CPU float32 rays and falls back
to the reference otherwise ($LABELFIELD_MARCH=torch forces the reference, for comparisons).
"""

from __future__ import annotations

import ctypes
import math

import torch

from labelfield.field import _build
from labelfield.render.occupancy import OccupancyGrid
from labelfield.render.sampling import ray_aabb_intersect


def _lib() -> ctypes.CDLL:
    lib = _build.load_library("march")
    if not getattr(lib, "_lf_typed", False):
        p, i64, i32, f32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_float, ctypes.c_double
        lib.lf_march.argtypes = [i64, p, p, p, p, p, p, f32, p, i32, p, p, f32, f64, i32, i64, p, p, p, p, p, p, i32]
        lib.lf_march.restype = ctypes.c_int
        lib._lf_typed = True
    return lib


def available() -> bool:
    """True when the kernel builds and loads here and $LABELFIELD_MARCH is not "torch"."""
    return _build.kernel_available(_lib, "LABELFIELD_MARCH")


def march_grid(
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    aabb: torch.Tensor,
    step_size: float,
    grid: OccupancyGrid,
    near: float | torch.Tensor | None = None,
    far: float | torch.Tensor | None = None,
    stratified: bool = False,
    max_samples_per_ray: int | None = None,
    early_stop_eps: float | None = 1e-4,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`march_rays` with the grid's occupancy and proxy density (early stop unless early_stop_eps is None).

    rays_o, rays_d: (n, 3) float32 CPU (unit directions). Returns t_starts, t_ends (S,) float32, ray_indices (S,)
    int64, packed by ray in t order. The stratified jitter draws the same random numbers as `march_rays`.
    """
    n_rays = rays_o.shape[0]
    dtype = rays_o.dtype
    with torch.no_grad():
        # Same per-ray set-up as march_rays (torch ops, so the rounding is the same).
        t_in, t_out = ray_aabb_intersect(rays_o, rays_d, aabb.to(dtype))
        t_lo = torch.maximum(t_in, _as_ray(near, t_in, 0.0))
        t_hi = torch.minimum(t_out, _as_ray(far, t_out, float("inf")))
        n_steps = torch.ceil((t_hi - t_lo) / step_size).clamp(min=0).long()
        if stratified:
            jitter = 1.0 - torch.rand(n_rays, dtype=dtype, generator=generator)
        else:
            jitter = torch.ones(n_rays, dtype=dtype)
        n_steps = torch.where(n_steps > 0, n_steps + 1, n_steps)
        t0 = (t_lo + (jitter - 1.0) * step_size).contiguous()
        o, d = rays_o.contiguous(), rays_d.contiguous()
        t_lo, t_hi = t_lo.contiguous(), t_hi.contiguous()
        box = grid.aabb.to(torch.float32).reshape(-1).contiguous()
        binary = grid.binary.contiguous().view(torch.uint8)
        density = grid.density.to(torch.float32).contiguous()
        cap = 3.0 / float(grid.cell_size.min())  # OccupancyGrid.proxy_density's default cap
        stop = early_stop_eps is not None
        threshold = -math.log(early_stop_eps) if stop else 0.0
        k_max = int(max_samples_per_ray) if max_samples_per_ray is not None else 0
        counts = torch.empty(n_rays, dtype=torch.int64)
        steps = torch.empty(n_rays, 3, dtype=torch.int64)  # first / after-last kept step, count before thinning
        lib, nt = _lib(), torch.get_num_threads()
        args = (
            n_rays,
            o.data_ptr(),
            d.data_ptr(),
            t0.data_ptr(),
            t_lo.data_ptr(),
            t_hi.data_ptr(),
            n_steps.data_ptr(),
            float(step_size),
            box.data_ptr(),
            grid.resolution,
            binary.data_ptr(),
            density.data_ptr(),
            cap,
            threshold,
            int(stop),
            k_max,
            counts.data_ptr(),
            steps.data_ptr(),
        )
        if lib.lf_march(*args, None, None, None, None, nt) != 0:
            raise RuntimeError("march kernel failed (count pass)")
        offsets = torch.cumsum(counts, 0) - counts
        total = int(counts.sum()) if n_rays else 0
        ts = torch.empty(total, dtype=torch.float32)
        te = torch.empty(total, dtype=torch.float32)
        ri = torch.empty(total, dtype=torch.int64)
        if total and lib.lf_march(*args, offsets.data_ptr(), ts.data_ptr(), te.data_ptr(), ri.data_ptr(), nt):
            raise RuntimeError("march kernel failed (write pass)")
    return ts, te, ri


def _as_ray(v: float | torch.Tensor | None, like: torch.Tensor, default: float) -> torch.Tensor:
    if v is None:
        v = default
    if isinstance(v, torch.Tensor):
        return v.to(like).expand_as(like)
    return torch.full_like(like, float(v))
