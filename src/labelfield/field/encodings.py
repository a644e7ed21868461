"""Direction and position encodings (the hash grid is in hashgrid.py).

- `SphericalHarmonics(degree=4)`: real SH basis of a unit direction d (N, 3) -> (N, degree^2), the viewing
  direction encoding of Instant-NGP (degree 4 = 16 values). Constants as in tiny-cuda-nn / Instant-NGP.
- `FrequencyEncoding(n_freqs, include_input=True)`: NeRF's positional encoding
  x (N, D) -> [x, sin(2^k pi x), cos(2^k pi x)]_{k < n_freqs} (N, D (1 + 2 n_freqs)) (Semantic-NeRF: 10 for
  positions, 4 for directions). Whether pi multiplies is a convention; we follow NeRF's code, which omits it
  for inputs already scaled to about [-1, 1]: `scale_pi=False` gives sin(2^k x).

Both are parameter-free and differentiable.
"""

from __future__ import annotations

import torch
from torch import nn


class SphericalHarmonics(nn.Module):
    """Real spherical harmonics up to `degree` - 1 (degree in 1..4): (N, 3) unit vectors -> (N, degree^2)."""

    def __init__(self, degree: int = 4) -> None:
        super().__init__()
        if not 1 <= degree <= 4:
            raise ValueError("spherical harmonics degree must be in 1..4")
        self.degree = degree

    @property
    def output_dim(self) -> int:
        return self.degree**2

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        x, y, z = d.unbind(-1)
        out = [torch.full_like(x, 0.28209479177387814)]
        if self.degree > 1:
            out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
        if self.degree > 2:
            xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
            out += [
                1.0925484305920792 * xy,
                -1.0925484305920792 * yz,
                0.94617469575755997 * zz - 0.31539156525251999,
                -1.0925484305920792 * xz,
                0.54627421529603959 * (xx - yy),
            ]
        if self.degree > 3:
            out += [
                0.59004358992664352 * y * (-3.0 * xx + yy),
                2.8906114426405538 * xy * z,
                0.45704579946446572 * y * (1.0 - 5.0 * zz),
                0.3731763325901154 * z * (5.0 * zz - 3.0),
                0.45704579946446572 * x * (1.0 - 5.0 * zz),
                1.4453057213202769 * z * (xx - yy),
                0.59004358992664352 * x * (-xx + 3.0 * yy),
            ]
        return torch.stack(out, -1)


class FrequencyEncoding(nn.Module):
    """NeRF positional encoding: (N, in_dim) -> (N, in_dim * (include_input + 2 n_freqs))."""

    def __init__(self, in_dim: int = 3, n_freqs: int = 10, include_input: bool = True, scale_pi: bool = False):
        super().__init__()
        self.in_dim, self.n_freqs, self.include_input = in_dim, n_freqs, include_input
        scale = torch.pi if scale_pi else 1.0
        self.register_buffer("freqs", scale * 2.0 ** torch.arange(n_freqs, dtype=torch.float32), persistent=False)

    @property
    def output_dim(self) -> int:
        return self.in_dim * (int(self.include_input) + 2 * self.n_freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = (x[..., None] * self.freqs).flatten(-2)  # (N, in_dim * n_freqs)
        parts = [x] if self.include_input else []
        return torch.cat([*parts, torch.sin(xf), torch.cos(xf)], -1)
