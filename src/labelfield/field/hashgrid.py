"""`HashGrid`: the multiresolution hash encoding as an nn.Module, with a choice of backend.

The maths (levels, alignment, table sizes, hashing, output layout) is defined in `hashgrid_ref.py`.
Shapes: x (N, 3) float32 in [0, 1]^3 (clamped) -> features (N, L * F) float32, level-major columns.
Parameters: `table` (sum_l S_l, F), initialised uniform in [-1e-4, 1e-4] as in Instant-NGP.

Backends (`backend=`; the one in use is `backend_name`, logged once per process):
- "kernel": the C++ kernel (`_kernels/hashgrid.cpp`, built at first use by `_build.py`, called through ctypes from
  a torch.autograd.Function) for float32 tensors on the CPU. Forward loops level by level over chunks of 2^16
  points (each level's table stays in cache) with OpenMP over points; the backward gives each thread whole
  levels (no atomics, so the gradient is deterministic, bitwise, whatever the thread count). Uses
  torch.get_num_threads() threads; the OpenMP runtime is torch's own (see `_build`).
- "torch": the plain-PyTorch reference (any device and dtype; slow on the CPU).
- "tcnn": tiny-cuda-nn's HashGrid on CUDA, configured with the same L, F, T, base resolution and growth, but
  with its own parameters and conventions (+0.5 alignment, its own level sizes and hash): not bit-compatible
  with the two above, so a checkpoint does not move between them. Untested here (no GPU on the dev machine).
- "auto": with `device` CUDA (or another non-CPU device): "tcnn" when tinycudann imports, else "torch".
  Otherwise "kernel" when it builds, else "torch" with one warning. A "kernel" module moved to CUDA, or cast
  to float64, takes the reference path for those inputs (logged once).

Positions get a gradient when they require one (camera pose refinement, `train/camera_opt.py`): the kernel then
also runs `lf_hashgrid_backward_x` (d trilinear interpolation / d x through each level's scale, zero on a clamped
axis; per-point rows, no atomics), the reference keeps x in the graph (`position_grad`). Positions that need no
gradient (the default: rays are data) cost nothing extra. tiny-cuda-nn's path detaches x (no position gradient).
"""

from __future__ import annotations

import ctypes
import logging
import math
import warnings
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from labelfield.field import _build
from labelfield.field.hashgrid_ref import GridLayout, encode_reference, grid_layout

log = logging.getLogger(__name__)

BACKENDS = ("auto", "kernel", "torch", "tcnn")
_LOGGED: set[str] = set()  # backends already announced in the log
_WARNED: set[str] = set()  # fallback warnings already given


def _announce(name: str) -> None:
    if name not in _LOGGED:
        _LOGGED.add(name)
        log.info("hash grid backend: %s", name)


def _kernel_lib() -> ctypes.CDLL:
    """The compiled hash-grid library with its C signatures set (raises _build.KernelBuildError)."""
    lib = _build.load_library("hashgrid")
    if not getattr(lib, "_lf_typed", False):
        p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
        # x, n, table, res, offsets, sizes, L, F, out|grad, stride_n, stride_l, n_threads
        sig = [p, i64, p, p, p, p, i32, i32, p, i64, i64, i32]
        lib.lf_hashgrid_forward.argtypes = sig
        lib.lf_hashgrid_forward.restype = ctypes.c_int
        # backward: x, n, grad_out, res, offsets, sizes, L, F, grad_table, stride_n, stride_l, n_threads
        lib.lf_hashgrid_backward.argtypes = sig
        lib.lf_hashgrid_backward.restype = ctypes.c_int
        # backward_x: x, n, grad_out, table, res, offsets, sizes, L, F, grad_x, stride_n, stride_l, n_threads
        lib.lf_hashgrid_backward_x.argtypes = [p, i64, p, p, p, p, p, i32, i32, p, i64, i64, i32]
        lib.lf_hashgrid_backward_x.restype = ctypes.c_int
        lib._lf_typed = True
    return lib


class _Meta:
    """Per-level arrays handed to the kernel (CPU tensors kept alive for their data_ptr)."""

    def __init__(self, layout: GridLayout) -> None:
        self.layout = layout
        self.res = torch.tensor(layout.resolutions, dtype=torch.int32)
        self.offsets = torch.tensor(layout.offsets, dtype=torch.int64)
        self.sizes = torch.tensor(layout.sizes, dtype=torch.int64)

    def args(self) -> tuple[int, int, int, int, int]:
        lay = self.layout
        return self.res.data_ptr(), self.offsets.data_ptr(), self.sizes.data_ptr(), lay.n_levels, lay.n_features


def _weighted_levels(g: torch.Tensor, weights: torch.Tensor | None, n_levels: int) -> torch.Tensor:
    """grad_out (N, L * F) with level l's columns times weights[l] (None: g itself)."""
    if weights is None:
        return g
    n = g.shape[0]
    w = weights.to(device=g.device, dtype=g.dtype)
    return (g.view(n, n_levels, -1) * w[None, :, None]).reshape(n, -1).contiguous()


def _call(fn: Any, what: str, *args: Any) -> None:
    """Call a kernel entry point with these arguments and torch's thread count; raise on a non-zero code."""
    rc = fn(*args, torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"hash grid kernel {what} failed (code {rc})")


class _KernelEncode(torch.autograd.Function):
    """x (N, 3) float32, table (R, F) float32 on CPU -> (N, L * F). Gradients for the table, and for x when it
    requires one (the table is then saved for the backward)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, table: torch.Tensor, meta: _Meta, level_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        lib = _kernel_lib()
        x = x.detach().contiguous()
        n, n_levels, n_feat = x.shape[0], meta.layout.n_levels, meta.layout.n_features
        # Written in place as (N, L * F): measured faster than a level-major buffer plus a transpose.
        out = torch.empty((n, n_levels * n_feat), dtype=torch.float32)
        tab = table.detach().contiguous()  # a named local: it must outlive the call
        _call(
            lib.lf_hashgrid_forward,
            "forward",
            x.data_ptr(),
            n,
            tab.data_ptr(),
            *meta.args(),
            out.data_ptr(),
            n_levels * n_feat,
            n_feat,
        )
        ctx.save_for_backward(x, tab if ctx.needs_input_grad[0] else None)
        ctx.meta, ctx.table_shape, ctx.level_weights = meta, table.shape, level_weights
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        x, tab = ctx.saved_tensors
        meta: _Meta = ctx.meta
        n, n_levels, n_feat = x.shape[0], meta.layout.n_levels, meta.layout.n_features
        g = grad_out.to(torch.float32).contiguous()  # (N, L * F)
        lib = _kernel_lib()
        grad_table = None
        if ctx.needs_input_grad[1]:
            grad_table = torch.empty(ctx.table_shape, dtype=torch.float32)  # the kernel writes every row
            _call(
                lib.lf_hashgrid_backward,
                "backward",
                x.data_ptr(),
                n,
                g.data_ptr(),
                *meta.args(),
                grad_table.data_ptr(),
                n_levels * n_feat,
                n_feat,
            )
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty((n, 3), dtype=torch.float32)  # the kernel writes every row
            gw = _weighted_levels(g, ctx.level_weights, n_levels)
            _call(
                lib.lf_hashgrid_backward_x,
                "position backward",
                x.data_ptr(),
                n,
                gw.data_ptr(),
                tab.data_ptr(),
                *meta.args(),
                grad_x.data_ptr(),
                n_levels * n_feat,
                n_feat,
            )
        return grad_x, grad_table, None, None


def _tcnn_available() -> bool:
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA install raising at import
        return False
    return True


class HashGrid(nn.Module):
    """Multiresolution hash encoding: (N, 3) positions in [0, 1]^3 -> (N, n_levels * n_features) features."""

    def __init__(
        self,
        n_levels: int = 16,
        n_features: int = 2,
        log2_table_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 2048,
        backend: str = "auto",
        device: str | torch.device | None = None,
    ) -> None:
        """`device` only steers backend="auto" (tiny-cuda-nn for CUDA); parameters are created on it."""
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.layout = grid_layout(n_levels, n_features, log2_table_size, base_resolution, max_resolution)
        self.n_levels, self.n_features = n_levels, n_features
        self.log2_table_size = log2_table_size
        self.base_resolution, self.max_resolution = base_resolution, max_resolution
        self.resolutions: list[int] = list(self.layout.resolutions)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        self._meta = _Meta(self.layout)
        self.position_grad_weights: torch.Tensor | None = None
        """(L,) factors on each level's share of the position gradient (coarse-to-fine pose refinement sets
        them during training; None = all 1). Values and the table gradient do not depend on them."""
        self._tcnn: nn.Module | None = None
        self.backend_name = self._choose_backend(backend, dev)
        if self.backend_name == "tcnn":
            self._tcnn = self._make_tcnn(dev)
            self.register_parameter("table", None)
        else:
            self.table = nn.Parameter(torch.empty(self.layout.total_rows, n_features, device=dev).uniform_(-1e-4, 1e-4))
        _announce(self.backend_name)

    @property
    def output_dim(self) -> int:
        """Width of the encoding, n_levels * n_features."""
        return self.n_levels * self.n_features

    def _choose_backend(self, backend: str, dev: torch.device) -> str:
        if backend == "tcnn" or (backend == "auto" and dev.type == "cuda" and _tcnn_available()):
            if not _tcnn_available():
                raise RuntimeError("backend='tcnn' needs the tinycudann package (tiny-cuda-nn)")
            return "tcnn"
        if backend == "torch" or (backend == "auto" and dev.type != "cpu"):
            return "torch"  # the reference runs on any device; the C++ kernel is for CPU tensors
        try:
            _kernel_lib()
        except _build.KernelBuildError as e:
            if backend == "kernel":
                raise RuntimeError(f"hash grid C++ kernel unavailable: {e}") from e
            if "kernel" not in _WARNED:
                _WARNED.add("kernel")
                warnings.warn(
                    f"hash grid C++ kernel unavailable ({e}); using the slow PyTorch path", RuntimeWarning, stacklevel=3
                )
            return "torch"
        return "kernel"

    def _make_tcnn(self, dev: torch.device) -> nn.Module:
        import tinycudann as tcnn

        growth = (
            1.0
            if self.n_levels == 1
            else math.exp((math.log(self.max_resolution) - math.log(self.base_resolution)) / (self.n_levels - 1))
        )
        config = {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features,
            "log2_hashmap_size": self.log2_table_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": growth,
        }
        return tcnn.Encoding(3, config, dtype=torch.float32).to(dev)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3) in [0, 1]^3 (clamped) -> (N, n_levels * n_features), in the table's dtype.

        Differentiable in x when x requires a gradient (kernel and reference backends; not tiny-cuda-nn)."""
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"HashGrid expects positions of shape (N, 3), got {tuple(x.shape)}")
        if self._tcnn is not None:
            return self._tcnn(x.detach().clamp(0.0, 1.0)).float()
        table = self.table
        if (
            self.backend_name == "kernel"
            and x.device.type == "cpu"
            and table.device.type == "cpu"
            and table.dtype == torch.float32
        ):
            return _KernelEncode.apply(x.to(torch.float32), table, self._meta, self.position_grad_weights)
        if self.backend_name == "kernel":  # moved to CUDA, or float64: the reference serves these
            _announce(f"torch reference ({table.device.type}, {table.dtype})")
        return encode_reference(x, table, self.layout, x.requires_grad, self.position_grad_weights)

    def extra_repr(self) -> str:
        return (
            f"levels={self.n_levels}, features={self.n_features}, log2_T={self.log2_table_size}, "
            f"resolution={self.base_resolution}..{self.max_resolution}, backend={self.backend_name}"
        )
