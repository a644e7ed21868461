"""Ray marching: ray/box intersection and packed uniform samples that skip empty space.

Notation: rays_o, rays_d (n_rays, 3) with unit directions, so t is a distance in metres along the ray;
aabb (2, 3) = [[x_min, y_min, z_min], [x_max, y_max, z_max]] (a tensor on the rays' device).
Output is packed: t_starts, t_ends, ray_indices (n_samples,), grouped by increasing ray index and sorted by t
within a ray, every interval inside the box and inside [near, far].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from labelfield.render.composite import exclusive_segment_cumsum, ray_starts

OccupiedFn = Callable[[torch.Tensor], torch.Tensor]  # (N, 3) world points -> (N,) bool
DensityFn = Callable[[torch.Tensor], torch.Tensor]  # (N, 3) world points -> (N,) density
NearFn = Callable[[torch.Tensor, float], torch.Tensor]  # (N, 3) points, radius -> (N,) bool


def ray_aabb_intersect(
    rays_o: torch.Tensor, rays_d: torch.Tensor, aabb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances (n_rays,) of the rays through the box (slab method).

    A ray misses when t_exit < t_entry; the entry is negative for origins inside the box.
    Axis-parallel rays (a zero direction component) are handled by the +/-inf of 1/0.
    """
    inv = 1.0 / torch.where(rays_d == 0, torch.full_like(rays_d, 1e-12), rays_d)
    t0 = (aabb[0] - rays_o) * inv
    t1 = (aabb[1] - rays_o) * inv
    return torch.minimum(t0, t1).amax(-1), torch.maximum(t0, t1).amin(-1)


def _as_ray_tensor(v: float | torch.Tensor | None, like: torch.Tensor, default: float) -> torch.Tensor:
    if v is None:
        v = default
    if isinstance(v, torch.Tensor):
        return v.to(like).expand_as(like)
    return torch.full_like(like, float(v))


def march_rays(
    rays_o: torch.Tensor,
    rays_d: torch.Tensor,
    aabb: torch.Tensor,
    step_size: float,
    near: float | torch.Tensor | None = None,
    far: float | torch.Tensor | None = None,
    occupied_fn: OccupiedFn | None = None,
    stratified: bool = False,
    max_samples_per_ray: int | None = None,
    proxy_density_fn: DensityFn | None = None,
    early_stop_eps: float = 1e-4,
    near_occupied_fn: NearFn | None = None,
    block: int = 8,
    blocks_per_round: int = 4,
    max_candidates: int = 1 << 21,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uniform samples of length `step_size` in [max(near, box entry), min(far, box exit)], empty cells dropped.

    Args:
        rays_o, rays_d: (n_rays, 3), unit directions.
        aabb: (2, 3) scene box.
        step_size: marching step in metres.
        near, far: scalars or (n_rays,) tensors; None = 0 and +inf (the box still bounds the samples).
        occupied_fn: keeps a sample iff its midpoint is occupied; None keeps all.
        stratified: shift each ray's sample grid by a uniform fraction of a step (training), else fixed.
        max_samples_per_ray: bound on the samples per ray kept after culling. A ray with c > K samples keeps
            every s-th one (s = ceil(c / K)) and each kept interval is widened to s steps, so the ray is still
            covered end to end, only coarser (this mostly happens early in training, while everything is
            occupied). None = no bound.
        proxy_density_fn: a cheap density estimate (e.g. `OccupancyGrid.proxy_density`); samples whose
            transmittance under it has fallen below `early_stop_eps` are dropped (Instant-NGP's early ray
            termination, without a network pass: everything behind the first surfaces). None = no early stop.
        early_stop_eps: transmittance below which a ray stops.
        near_occupied_fn: (x (N, 3), radius) -> (N,) bool, True whenever an occupied sample could lie within
            `radius` of x (conservative; e.g. `OccupancyGrid.is_occupied_near`). With it, steps are first
            examined in blocks of `block` and only blocks near occupied space are expanded (the same samples
            come out, ~block times fewer candidates in empty space).
        block: steps per block for near_occupied_fn.
        blocks_per_round: with near_occupied_fn and early stopping, blocks are expanded this many at a time
            per ray, front to back, and rays stop being expanded once stopped.
        max_candidates: candidate samples examined at once (bounds memory; rays are processed in chunks).
        generator: for the stratified jitter.

    Returns:
        t_starts, t_ends (n_samples,) float, ray_indices (n_samples,) int64 (packed, see module header).
        Not differentiable (sample positions are data).
    """
    n_rays = rays_o.shape[0]
    dev, dtype = rays_o.device, rays_o.dtype
    with torch.no_grad():
        t_in, t_out = ray_aabb_intersect(rays_o, rays_d, aabb.to(dev, dtype))
        t_lo = torch.maximum(t_in, _as_ray_tensor(near, t_in, 0.0))
        t_hi = torch.minimum(t_out, _as_ray_tensor(far, t_out, float("inf")))
        n_steps = torch.ceil((t_hi - t_lo) / step_size).clamp(min=0).long()
        # Interval k is [t_lo + (k - 1 + j) step, t_lo + (k + j) step] clipped to [t_lo, t_hi], j in (0, 1]:
        # ceil(L / step) + 1 of them cover [t_lo, t_hi]; j = 1 (not stratified) makes the grid start at t_lo and
        # the extra last interval empty (dropped).
        if stratified:
            jitter = 1.0 - torch.rand(n_rays, device=dev, dtype=dtype, generator=generator)
        else:
            jitter = torch.ones(n_rays, device=dev, dtype=dtype)
        n_steps = torch.where(n_steps > 0, n_steps + 1, n_steps)
        out_s, out_e, out_r = [], [], []
        max_steps = int(n_steps.max()) if n_rays else 0
        use_blocks = near_occupied_fn is not None and 1 < block < max_steps
        per_ray = -(-max_steps // block) if use_blocks else max_steps
        chunk = max(1, max_candidates // max(per_ray, 1))
        radius = 0.5 * block * step_size * (1.0 + 1e-4)
        threshold = -math.log(early_stop_eps)
        # per-ray table gathered once per block: start of interval 0, t_lo, t_hi, n_steps, origin, direction
        table = torch.cat(
            [torch.stack([t_lo + (jitter - 1.0) * step_size, t_lo, t_hi, n_steps.to(dtype)], -1), rays_o, rays_d], -1
        )
        for r0 in range(0, n_rays if max_steps > 0 else 0, chunk):
            r1 = min(r0 + chunk, n_rays)
            ns = n_steps[r0:r1]
            m = int(ns.max())
            if m == 0:
                continue
            # Steps are handled in blocks of B (one block per ray without near_occupied_fn). A block whose
            # midpoint has no occupied cell within half a block length cannot hold an occupied sample.
            B = block if use_blocks else m
            jb = torch.arange(-(-m // B), device=dev)
            ri, bi = (jb[None, :] * B < ns[:, None]).nonzero(as_tuple=True)
            tab = table[r0 + ri]
            if use_blocks:
                t_mid = tab[:, 0] + (bi.to(dtype) + 0.5) * (B * step_size)
                sel = near_occupied_fn(tab[:, 4:7] + tab[:, 7:10] * t_mid[:, None], radius).nonzero()[:, 0]
                ri, bi, tab = ri[sel], bi[sel], tab[sel]
            if not (use_blocks and proxy_density_fn is not None and occupied_fn is not None):
                ts, te, rl = _expand(ri, bi, tab, B, step_size, occupied_fn, proxy_density_fn, None, threshold)
            else:
                # Wavefront: expand the first `blocks_per_round` surviving blocks of every ray still alive, then
                # the next ones, so the steps behind an early stop are never generated.
                starts, _ = ray_starts(ri, r1 - r0)
                rank = torch.arange(len(ri), device=dev) - starts[ri]
                acc = torch.zeros(r1 - r0, device=dev, dtype=dtype)  # proxy optical depth so far per ray
                parts = []
                for first in range(0, int(rank.max()) + 1 if len(rank) else 0, blocks_per_round):
                    sel = ((rank >= first) & (rank < first + blocks_per_round) & (acc[ri] < threshold)).nonzero()[:, 0]
                    if sel.numel() == 0:
                        break
                    parts.append(
                        _expand(ri[sel], bi[sel], tab[sel], B, step_size, occupied_fn, proxy_density_fn, acc, threshold)
                    )
                if parts:  # rounds are ordered in t, so a stable sort by ray restores the packed order
                    ts, te, rl = (torch.cat(x) for x in zip(*parts))
                    order = torch.sort(rl, stable=True).indices
                    ts, te, rl = ts[order], te[order], rl[order]
                else:
                    ts = te = torch.zeros(0, device=dev, dtype=dtype)
                    rl = torch.zeros(0, device=dev, dtype=torch.long)
            out_s.append(ts)
            out_e.append(te)
            out_r.append(r0 + rl)
        if not out_r:
            empty = torch.zeros(0, device=dev, dtype=dtype)
            return empty, empty.clone(), torch.zeros(0, device=dev, dtype=torch.long)
        t_starts, t_ends, ray_indices = torch.cat(out_s), torch.cat(out_e), torch.cat(out_r)
        if max_samples_per_ray is not None and ray_indices.numel():
            t_starts, t_ends, ray_indices = _thin(
                t_starts, t_ends, ray_indices, n_rays, max_samples_per_ray, step_size, t_hi
            )
    return t_starts, t_ends, ray_indices


def _expand(
    ri: torch.Tensor,
    bi: torch.Tensor,
    tab: torch.Tensor,
    B: int,
    step_size: float,
    occupied_fn: OccupiedFn | None,
    proxy_density_fn: DensityFn | None,
    acc: torch.Tensor | None,
    threshold: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps of blocks (ray ri, block bi; sorted by ray then block) that are occupied and not early-stopped.

    tab (n_blocks, 10) holds each block's ray: start of interval 0, t_lo, t_hi, n_steps, origin, direction.
    acc (n_chunk_rays,), when given, is the proxy optical depth accumulated by earlier blocks; it is updated in
    place. Returns ts, te, chunk-local ray (n_kept,), sorted by ray then t.
    """
    k = (bi[:, None] * B + torch.arange(B, device=bi.device)).to(tab.dtype)  # (n_blocks, B) step numbers
    ts = torch.maximum(tab[:, :1] + k * step_size, tab[:, 1:2])
    te = torch.minimum(tab[:, :1] + (k + 1.0) * step_size, tab[:, 2:3])
    keep = (k < tab[:, 3:4]) & (te > ts)
    if occupied_fn is not None and ri.numel():
        mid = (tab[:, None, 4:7] + tab[:, None, 7:10] * (0.5 * (ts + te))[..., None]).reshape(-1, 3)
        keep &= occupied_fn(mid).view_as(keep)
        if proxy_density_fn is not None:
            tau = torch.where(keep, proxy_density_fn(mid).view_as(keep) * (te - ts), 0.0).reshape(-1)
            rows = ri[:, None].expand_as(keep).reshape(-1)  # chunk-local ray of each candidate
            n = int(rows.max()) + 1
            depth = exclusive_segment_cumsum(tau, rows, n)
            if acc is not None:
                depth = depth + acc[rows]
                acc.index_add_(0, rows, tau)
            keep &= (depth < threshold).view_as(keep)
    bsel, ksel = keep.nonzero(as_tuple=True)
    return ts[bsel, ksel], te[bsel, ksel], ri[bsel]


def _thin(
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    n_rays: int,
    k_max: int,
    step_size: float,
    t_hi: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep every s-th sample of rays with more than k_max samples, widening the kept intervals to s steps.

    Widened intervals never overlap the next kept one: kept samples are >= s steps apart along the ray.
    """
    starts, counts = ray_starts(ray_indices, n_rays)
    stride = torch.div(counts + k_max - 1, k_max, rounding_mode="floor").clamp(min=1)
    if int(stride.max()) == 1:
        return t_starts, t_ends, ray_indices
    s = stride[ray_indices]
    rank = torch.arange(ray_indices.numel(), device=ray_indices.device) - starts[ray_indices]
    keep = rank % s == 0
    t_starts, ray_indices, s = t_starts[keep], ray_indices[keep], s[keep]
    wide = torch.minimum(t_starts + s.to(t_starts.dtype) * step_size, t_hi[ray_indices])
    t_ends = torch.where(s > 1, wide, t_ends[keep])
    return t_starts, t_ends, ray_indices
