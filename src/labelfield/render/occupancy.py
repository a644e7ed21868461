"""Occupancy grid: a binary res^3 grid over the scene box that lets the sampler skip empty space.

Instant-NGP style. Each cell keeps a running density estimate `density` (res^3,), updated every few steps by
evaluating the field at one random point per selected cell and taking max(decay * old, new). During warm-up
every cell is refreshed; later a random quarter of all cells plus a quarter drawn from the occupied ones
(occupied cells stay accurate, empty ones are revisited now and then). A cell is occupied when its estimate
exceeds min(threshold, mean estimate): the mean clamp keeps the grid from emptying out early in training, when
every density is still small.

Notation: aabb (2, 3) world box; cell (i, j, k) covers aabb[0] + ([i, i+1], [j, j+1], [k, k+1]) * size / res;
flat cell index = (i * res + j) * res + k.

Guarantee (tested): a point at which an update measured density > threshold lies in an occupied cell until a
later update of that cell measures less (the estimate only decays by `decay` per update, and the threshold
never exceeds `threshold`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

DensityFn = Callable[[torch.Tensor], torch.Tensor]  # (N, 3) world points -> (N,) sigma


class OccupancyGrid(nn.Module):
    """Binary occupancy over `aabb` at resolution `resolution`^3 (buffers: density, binary; saved with the model).

    Args:
        aabb: (2, 3) world box.
        resolution: cells per axis (64: a full refresh costs 262k field queries; 128: 2.1M).
        threshold: density sigma above which a cell is occupied.
        decay: EMA decay of the density estimate per update.
        warmup_updates: number of first updates that refresh every cell.
    """

    def __init__(
        self,
        aabb: torch.Tensor,
        resolution: int = 64,
        threshold: float = 0.01,
        decay: float = 0.95,
        warmup_updates: int = 16,
    ) -> None:
        super().__init__()
        self.resolution = int(resolution)
        self.threshold = float(threshold)
        self.decay = float(decay)
        self.warmup_updates = int(warmup_updates)
        n = self.resolution**3
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone())
        self.register_buffer("density", torch.zeros(n))
        self.register_buffer("binary", torch.ones(n, dtype=torch.bool))  # all occupied until the first update
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))
        self._coarse: torch.Tensor | None = None
        self._coarse_key: tuple[int, int, int, str] | None = None
        self._version = 0

    @property
    def cell_size(self) -> torch.Tensor:
        """(3,) cell edge lengths in metres."""
        return (self.aabb[1] - self.aabb[0]) / self.resolution

    def cell_index(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat cell index (N,) int64 of world points x (N, 3), and whether each point is inside the box."""
        u = (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((u >= 0) & (u <= 1)).all(-1)
        ijk = (u * self.resolution).long().clamp(0, self.resolution - 1)
        r = self.resolution
        return (ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2], inside

    def is_occupied(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) bool: x (N, 3) lies inside the box, in an occupied cell."""
        idx, inside = self.cell_index(x)
        return self.binary[idx] & inside

    def is_occupied_near(self, x: torch.Tensor, radius: float) -> torch.Tensor:
        """(N,) bool, True whenever an occupied cell lies within `radius` of x (N, 3) (conservative, cheap).

        Looks x up in a coarse grid (f = ceil(radius / smallest cell edge) cells pooled per coarse cell, then
        dilated by one coarse cell): every point within radius of x lies in x's coarse cell or a neighbour.
        Points outside the box are clamped to it (projection onto the box only brings inside points closer).
        The coarse grid is cached until the next update.
        """
        f = max(1, math.ceil(radius / float(self.cell_size.min())))
        key = (f, int(self.n_updates), self._version, str(self.binary.device))
        if self._coarse_key != key:
            r = self.resolution
            grid = self.binary.view(1, 1, r, r, r).float()
            pooled = torch.nn.functional.max_pool3d(grid, f, f, ceil_mode=True)
            dilated = torch.nn.functional.max_pool3d(pooled, 3, 1, 1)
            self._coarse, self._coarse_key = dilated[0, 0] > 0, key
        rc = self._coarse.shape[0]
        u = ((x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])).clamp(0.0, 1.0)
        ijk = (u * (self.resolution / f)).long().clamp(0, rc - 1)  # = fine cell index // f
        return self._coarse[ijk[:, 0], ijk[:, 1], ijk[:, 2]]

    def mark_changed(self) -> None:
        """Call after editing `binary` by hand (invalidates the cached coarse grid)."""
        self._version += 1

    def proxy_density(self, x: torch.Tensor, max_tau_per_cell: float = 3.0) -> torch.Tensor:
        """(N,) a stand-in density at x (N, 3) from the grid alone: the cell's estimate where occupied, else 0.

        The estimate is a running max over points of the cell, so it overstates the density in the empty part
        of a surface cell; capping it at `max_tau_per_cell` optical depth per cell length keeps an early stop
        based on it (sampling.march_rays) from cutting a ray before it has crossed a few occupied cells.
        """
        idx, inside = self.cell_index(x)
        cap = max_tau_per_cell / float(self.cell_size.min())
        return torch.where(self.binary[idx] & inside, self.density[idx].clamp(max=cap), 0.0)

    def occupancy_fraction(self) -> float:
        return float(self.binary.float().mean())

    def _cell_points(self, cells: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        r = self.resolution
        ijk = torch.stack([cells // (r * r), (cells // r) % r, cells % r], -1).to(self.aabb.dtype)
        jitter = torch.rand(ijk.shape, generator=generator).to(ijk.device)
        return self.aabb[0] + (ijk + jitter) * self.cell_size

    @torch.no_grad()
    def update(self, density_fn: DensityFn, chunk: int = 1 << 16, generator: torch.Generator | None = None) -> None:
        """Refresh the density estimates (all cells during warm-up, else a random half) and the binary grid.

        Args:
            density_fn: (N, 3) world points -> (N,) density; called in chunks of `chunk` points, no grad.
            generator: for the random cells and points (a CPU generator; points are made on the grid's device).
        """
        n = self.density.numel()
        dev = self.density.device
        if int(self.n_updates) < self.warmup_updates:
            cells = torch.arange(n, device=dev)
        else:
            uniform = torch.randint(0, n, (n // 4,), generator=generator).to(dev)
            occupied = self.binary.nonzero(as_tuple=True)[0]
            if occupied.numel():
                pick = torch.randint(0, occupied.numel(), (n // 4,), generator=generator).to(dev)
                cells = torch.cat([uniform, occupied[pick]])
            else:
                cells = uniform
            cells = torch.unique(cells)
        x = self._cell_points(cells, generator)
        sigma = torch.cat([density_fn(x[i : i + chunk]).reshape(-1).float() for i in range(0, len(x), chunk)])
        self.density[cells] = torch.maximum(self.density[cells] * self.decay, sigma)
        thr = min(self.threshold, float(self.density.mean()))
        self.binary.copy_(self.density > thr)
        self.n_updates += 1
        self.mark_changed()
