"""Small MLP heads on top of an encoding (Instant-NGP layout, semantic head added).

Notation: h (N, enc_dim) encoded positions; g (N, geo_dim) geometry features; e_d (N, dir_dim) encoded
viewing directions; C classes.

- `DensityHead`: h -> sigma (N,) = trunc_exp(raw_0 - 1), g (N, geo_dim) = raw_1: (the -1 starts the
  density small, so a fresh field is nearly empty rather than a fog).
- `ColorHead`: (g, e_d) -> rgb (N, 3) in [0, 1] (sigmoid): view-dependent colour.
- `SemanticHead`: g -> logits (N, C): position only (never sees the direction), so labels are view-consistent.
  hidden_dim = 0 makes it linear, which commutes with compositing (see models/ngp.py).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from labelfield.field.mlp_kernel import mlp_inference


class _TruncExp(torch.autograd.Function):
    """exp(x) with the backward's exponent clamped at 15: avoids inf gradients from a large raw density."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp with a truncated gradient (Instant-NGP's density activation)."""
    return _TruncExp.apply(x)


def mlp(in_dim: int, hidden_dim: int, n_hidden: int, out_dim: int) -> nn.Sequential:
    """Linear-ReLU stack: n_hidden hidden layers of width hidden_dim (n_hidden = 0: one linear layer)."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(n_hidden):
        layers += [nn.Linear(d, hidden_dim), nn.ReLU(inplace=True)]
        d = hidden_dim
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class DensityHead(nn.Module):
    """h (N, in_dim) -> (sigma (N,), g (N, geo_dim))."""

    def __init__(self, in_dim: int, hidden_dim: int = 64, n_hidden: int = 1, geo_dim: int = 15) -> None:
        super().__init__()
        self.geo_dim = geo_dim
        self.net = mlp(in_dim, hidden_dim, n_hidden, 1 + geo_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(h)
        return trunc_exp(out[:, 0] - 1.0), out[:, 1:]


class ColorHead(nn.Module):
    """(g (N, geo_dim), e_d (N, dir_dim)) -> rgb (N, 3) in [0, 1].

    With `ray_indices` (N,), e_d is per ray (n_rays, dir_dim) and is gathered per sample first. (Computing the
    first layer's direction term once per ray and gathering that (n_rays, hidden) product saves forward FLOPs,
    but its backward is an index_put with accumulate into (n_rays, hidden): ~20 ms of a 4096-ray CPU step,
    more than the whole colour MLP; gathering the 16-wide encoding needs no backward at all.)
    """

    def __init__(self, geo_dim: int, dir_dim: int, hidden_dim: int = 64, n_hidden: int = 2) -> None:
        super().__init__()
        self.geo_dim = geo_dim
        self.net = mlp(geo_dim + dir_dim, hidden_dim, n_hidden, 3)

    def forward(self, g: torch.Tensor, e_d: torch.Tensor, ray_indices: torch.Tensor | None = None) -> torch.Tensor:
        if ray_indices is not None:
            e_d = e_d.index_select(0, ray_indices)
        # Without autograd (rendering with colour) the C++ inference MLP runs it; else the module itself.
        return torch.sigmoid(mlp_inference(self.net, torch.cat([g, e_d], -1)))


class SemanticHead(nn.Module):
    """g (N, geo_dim) -> logits (N, C); linear when hidden_dim == 0 or n_hidden == 0."""

    def __init__(self, geo_dim: int, num_classes: int, hidden_dim: int = 0, n_hidden: int = 1) -> None:
        super().__init__()
        self.linear = hidden_dim == 0 or n_hidden == 0
        self.net = mlp(geo_dim, hidden_dim, 0 if self.linear else n_hidden, num_classes)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.net(g)
