"""Multiresolution hash encoding (Instant-NGP, Müller et al. 2022): the maths, in plain PyTorch.

This module *defines* the encoding; the C++ kernel (`_kernels/hashgrid.cpp`) computes exactly the same thing
and is tested against it. It is also the path used on CUDA (when tiny-cuda-nn is not used) and wherever the
kernel cannot be built.

Notation
- L levels, F features per level, T = 2^log2_table_size entries per level at most.
- Growth factor b = exp((ln N_max - ln N_min) / (L - 1)) (b = 1 when L = 1).
- Resolution of level l: N_l = floor(N_min * b^l) (computed in float64 with a 1e-9 guard so that
  N_min * b^(L-1) = N_max does not round down to N_max - 1). Level l has (N_l + 1)^3 grid vertices.
- Alignment: a point x in [0, 1]^3 (clamped) sits at p = x * N_l in grid units, so vertices lie at multiples of
  1 / N_l and both borders 0 and 1 are vertices. The cell is c = clamp(floor(p), 0, N_l - 1) per axis and
  the fraction is w = p - c in [0, 1] (x = 1 falls in the last cell with w = 1). Instant-NGP shifts by +0.5
  to decorrelate levels; we keep the vertices on the borders, which makes dense levels exact and simple.
- Table size of level l: S_l = min(T, roundup8((N_l + 1)^3)) (multiples of 8, as in Instant-NGP).
- Index of vertex (i, j, k) in level l:
    dense  ((N_l + 1)^3 <= T): i + j (N_l + 1) + k (N_l + 1)^2
    hashed (otherwise):        (i * 1 ^ j * 2654435761 ^ k * 805459861) mod 2^32 mod T  (T a power of two)
- Parameters: one flat table (sum_l S_l, F); level l owns rows [offset_l, offset_l + S_l).
- Output: (N, L * F), level-major columns: out[:, l * F + f].
- Trilinear interpolation over the 8 corners; corner bit 0 = +x, bit 1 = +y, bit 2 = +z; weight
  ((wx' * wy') * wz') with wx' = wx for a +x corner and 1 - wx otherwise. Corners are summed in order 0..7.

Positions get no gradient by default (x is detached: only the table is learnt). With `position_grad=True`
the encoding is differentiable in x too: d out / d x_a = N_l sum_k (d w_k / d frac_a) table[row_k] per level
(the cell index is piecewise constant; an axis clamped to [0, 1] gets zero, as torch.clamp gives) — what camera
pose refinement back-propagates through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

PRIMES = (1, 2654435761, 805459861)


@dataclass(frozen=True)
class GridLayout:
    """Geometry of the levels: per-level resolution N_l, table size S_l, row offset and whether it is hashed."""

    n_levels: int
    n_features: int
    table_size: int  # T
    resolutions: tuple[int, ...]  # (L,) N_l
    sizes: tuple[int, ...]  # (L,) S_l
    offsets: tuple[int, ...]  # (L,) first row of level l in the flat table
    hashed: tuple[bool, ...]  # (L,)

    @property
    def total_rows(self) -> int:
        """Number of rows of the flat table, sum_l S_l."""
        return self.offsets[-1] + self.sizes[-1]


def grid_layout(
    n_levels: int, n_features: int, log2_table_size: int, base_resolution: int, max_resolution: int
) -> GridLayout:
    """Compute the level geometry (see the module docstring). Raises ValueError on impossible settings."""
    if n_levels < 1 or n_features < 1:
        raise ValueError(f"need n_levels >= 1 and n_features >= 1, got {n_levels}, {n_features}")
    if not 3 <= log2_table_size <= 30:
        raise ValueError(f"log2_table_size must be in [3, 30], got {log2_table_size}")
    if base_resolution < 1 or max_resolution < base_resolution:
        raise ValueError(f"need 1 <= base_resolution <= max_resolution, got {base_resolution}, {max_resolution}")
    table_size = 1 << log2_table_size
    growth = 1.0 if n_levels == 1 else math.exp((math.log(max_resolution) - math.log(base_resolution)) / (n_levels - 1))
    resolutions, sizes, offsets, hashed = [], [], [], []
    offset = 0
    for level in range(n_levels):
        res = max(1, int(math.floor(base_resolution * growth**level + 1e-9)))
        n_vertices = (res + 1) ** 3
        size = min(table_size, (n_vertices + 7) // 8 * 8)
        resolutions.append(res)
        sizes.append(size)
        offsets.append(offset)
        hashed.append(n_vertices > table_size)
        offset += size
    return GridLayout(n_levels, n_features, table_size, tuple(resolutions), tuple(sizes), tuple(offsets), tuple(hashed))


def _corner_offsets(device: torch.device) -> torch.Tensor:
    """(8, 3) int64 corner offsets; bit 0 -> x, bit 1 -> y, bit 2 -> z."""
    c = torch.arange(8, device=device)
    return torch.stack([c & 1, (c >> 1) & 1, (c >> 2) & 1], dim=1)


def level_indices_weights(x: torch.Tensor, layout: GridLayout, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and trilinear weights of the 8 corners of each point at one level.

    x: (N, 3) in [0, 1]^3 (clamped here). Returns rows (N, 8) int64 into the flat table (offset included) and
    weights (N, 8) in x's dtype.
    """
    res = layout.resolutions[level]
    p = x.clamp(0.0, 1.0) * res  # (N, 3) grid units, same float op as the kernel
    cell = torch.floor(p.detach()).clamp(0, res - 1)  # piecewise constant: no gradient
    frac = p - cell  # (N, 3) in [0, 1]
    cell = cell.long()
    corners = _corner_offsets(x.device)  # (8, 3)
    vert = cell[:, None, :] + corners[None]  # (N, 8, 3)
    if layout.hashed[level]:
        idx = (vert[..., 0] * PRIMES[0]) ^ (vert[..., 1] * PRIMES[1]) ^ (vert[..., 2] * PRIMES[2])
        idx = idx & (layout.sizes[level] - 1)  # sizes[level] = T, a power of two: mod 2^32 then mod T
    else:
        stride = res + 1
        idx = vert[..., 0] + vert[..., 1] * stride + vert[..., 2] * (stride * stride)
    # Per-axis factor: frac for a + corner, 1 - frac otherwise; product in x, y, z order like the kernel.
    fw = torch.where(corners[None].bool(), frac[:, None, :], 1.0 - frac[:, None, :])  # (N, 8, 3)
    weights = fw[..., 0] * fw[..., 1] * fw[..., 2]
    return idx + layout.offsets[level], weights


def encode_reference(
    x: torch.Tensor,
    table: torch.Tensor,
    layout: GridLayout,
    position_grad: bool = False,
    level_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hash-grid encoding in plain PyTorch (autograd gives the table gradient, and x's with `position_grad`).

    x: (N, 3) positions in [0, 1]^3 (detached unless position_grad); table: (total_rows, F).
    level_weights: (L,) factors on each level's share of the position gradient (coarse-to-fine pose
    refinement); the values and the table gradient are unchanged. Returns (N, L * F) in table's dtype,
    level-major columns.
    """
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {tuple(x.shape)}")
    x = (x if position_grad else x.detach()).to(table.dtype)
    outs = []
    for level in range(layout.n_levels):
        xl = x
        if position_grad and level_weights is not None:  # forward unchanged, this level's x-gradient scaled
            xl = x.detach() + (x - x.detach()) * level_weights[level].to(x.dtype)
        rows, weights = level_indices_weights(xl, layout, level)
        feats = table[rows]  # (N, 8, F)
        acc = feats[:, 0] * weights[:, 0, None]
        for corner in range(1, 8):  # sequential sum in corner order, like the kernel
            acc = acc + feats[:, corner] * weights[:, corner, None]
        outs.append(acc)
    return torch.cat(outs, dim=1)
