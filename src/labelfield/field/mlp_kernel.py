"""Inference of the Linear-ReLU heads with the C++ kernel (`_kernels/mlp.cpp`): no autograd, CPU float32 only.

`mlp_inference(net, x)` equals `net(x)` for an `nn.Sequential` of Linear layers with a ReLU between them
(`heads.mlp`), and `density_inference(head, h)` equals `DensityHead.forward` (sigma = exp(raw_0 - 1), g); both
fall back to the module itself (the reference) for other devices or dtypes, when autograd is recording, when
the kernel does not build, or with $LABELFIELD_MLP=torch. Values agree to float32 rounding (the kernel sums in
a different order than the BLAS).

Measured on the annotate path (demo room, 320x240 frame, 32 -> 64 -> 16 density MLP over ~0.7 M samples):
see docs/performance.md.
"""

from __future__ import annotations

import ctypes

import torch
from torch import nn

from labelfield.field import _build


def _lib() -> ctypes.CDLL:
    lib = _build.load_library("mlp")
    if not getattr(lib, "_lf_typed", False):
        p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
        # n, in, n_layers, dims, weights, biases, density, sigma, out, threads
        lib.lf_mlp_forward.argtypes = [i64, p, i32, p, p, p, i32, p, p, i32]
        lib.lf_mlp_forward.restype = ctypes.c_int
        lib._lf_typed = True
    return lib


def available() -> bool:
    """True when the kernel builds and loads here and $LABELFIELD_MLP is not "torch"."""
    return _build.kernel_available(_lib, "LABELFIELD_MLP")


def _linears(net: nn.Sequential) -> list[nn.Linear] | None:
    """The Linear layers of a Linear(-ReLU-Linear)* stack, or None when net has another shape."""
    mods = list(net)
    if not mods or len(mods) % 2 == 0:
        return None
    for i, m in enumerate(mods):
        if i % 2 == 0 and not (isinstance(m, nn.Linear) and m.bias is not None):
            return None
        if i % 2 == 1 and not isinstance(m, nn.ReLU):
            return None
    return mods[::2]  # type: ignore[return-value]


def _usable(net: nn.Sequential, x: torch.Tensor) -> list[nn.Linear] | None:
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in net.parameters())):
        return None
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 2:
        return None
    layers = _linears(net)
    if layers is None or any(m.weight.dtype != torch.float32 or m.weight.device.type != "cpu" for m in layers):
        return None
    return layers if available() else None


def _run(layers: list[nn.Linear], x: torch.Tensor, density: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
    x = x.contiguous()
    n = x.shape[0]
    ws = [m.weight.detach().contiguous() for m in layers]  # named locals: they must outlive the call
    bs = [m.bias.detach().contiguous() for m in layers]
    dims = torch.tensor([layers[0].in_features] + [m.out_features for m in layers], dtype=torch.int64)
    wp = (ctypes.c_void_p * len(ws))(*[w.data_ptr() for w in ws])
    bp = (ctypes.c_void_p * len(bs))(*[b.data_ptr() for b in bs])
    d_out = layers[-1].out_features
    sigma = torch.empty(n, dtype=torch.float32) if density else None
    out = torch.empty(n, d_out - 1 if density else d_out, dtype=torch.float32)
    rc = _lib().lf_mlp_forward(
        n, x.data_ptr(), len(layers), dims.data_ptr(), wp, bp, int(density),
        None if sigma is None else sigma.data_ptr(), out.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"mlp kernel failed (code {rc})")
    return sigma, out


def mlp_inference(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """net(x) for x (N, d_in): the kernel when usable (module docstring), else net itself."""
    layers = _usable(net, x)
    if layers is None:
        return net(x)
    return _run(layers, x, density=False)[1]


def density_inference(head: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`DensityHead` head(h) -> sigma (N,), g (N, geo_dim): the kernel when usable, else head(h)."""
    layers = _usable(head.net, h)
    if layers is None:
        return head(h)
    sigma, g = _run(layers, h, density=True)
    assert sigma is not None
    return sigma, g
