"""Compositing of packed samples with the C++ kernel (`field/_kernels/composite.cpp`), and its PyTorch reference.

Tensor vocabulary of `render/composite.py` (samples grouped by ray in increasing ray index, t order within a
ray). `composite(...)` returns, in one pass over the samples, what the renderers need per ray:

    weights (S,)   w_i = T_i (1 - exp(-sigma_i delta_i))            (render_weights)
    opacity (n,)   sum_i w_i                                        (accumulate(weights))
    depth (n,)     sum_i w_i tmid_i, tmid = (t_starts + t_ends) / 2  (accumulate(weights, t_mid))
    tau (n,)       sum_i sigma_i delta_i                            (accumulate(sigma * delta))
    acc (n, D)     sum_i w_i f_i for a feature f (S, D)             (accumulate(weights, f))

`composite_reference` computes them with the functions in brackets (the definition; tests compare the two,
values and gradients). The kernel path is a torch.autograd.Function with gradients for sigma and f (t_starts,
t_ends get none: marching is not differentiable); it replaces the reference's float64 cumsum, index_add and
gathers by one walk per ray (and one reverse walk in the backward), OpenMP over rays with torch's thread count.
It serves float32 CPU tensors when the kernel builds and t_starts/t_ends need no gradient; everything else
(CUDA, float64, a failed build, $LABELFIELD_COMPOSITE=torch) takes the reference.

Inference (`RoundCompositor`): the kernel's forward also composites incrementally, each ray carrying its optical
depth from one call to the next, so `NGPModel.render_labels` evaluates the density in rounds of samples
front to back and stops a ray once its transmittance is below a threshold, without sorting or scattering the
samples back (`lf_round_select` picks each round's samples and writes their normalised positions). The
per-ray label and confidence (`labels_from_features`: linear semantic head, softmax, argmax) are a third
kernel of the same file.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from labelfield.field import _build
from labelfield.render.composite import accumulate, ray_starts, render_weights
from labelfield.render.semantic import semantic_outputs


class Composited(NamedTuple):
    """Per-sample weights (S,) and per-ray opacity, depth, tau (n,), acc (n, D) (D = 0 without a feature)."""

    weights: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    tau: torch.Tensor
    acc: torch.Tensor


def _lib() -> ctypes.CDLL:
    lib = _build.load_library("composite")
    if not getattr(lib, "_lf_typed", False):
        p, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_float
        # n, sel, ri, ts, te, sigma, feat, dim, n_rays, weights, tau, opacity, depth, acc, threads
        lib.lf_composite_forward.argtypes = [i64, p, p, p, p, p, p, i64, i64, p, p, p, p, p, i32]
        lib.lf_composite_forward.restype = ctypes.c_int
        # n, ri, ts, te, sigma, feat, dim, n_rays, g_w, g_tau, g_opacity, g_depth, g_acc, g_sigma, g_feat, threads
        lib.lf_composite_backward.argtypes = [i64, p, p, p, p, p, i64, i64, p, p, p, p, p, p, p, i32]
        lib.lf_composite_backward.restype = ctypes.c_int
        # n_rays, starts, counts, tau, lo, hi, threshold, check, o, d, ts, te, box, sel, x, first, threads
        lib.lf_round_select.argtypes = [i64, p, p, p, i64, i64, f32, i32, p, p, p, p, p, p, p, p, i32]
        lib.lf_round_select.restype = ctypes.c_int64
        # n, D, C, acc, weight, bias, opacity, tau, background, label, confidence, log_probs, threads
        lib.lf_labels.argtypes = [i64, i64, i64, p, p, p, p, p, i64, p, p, p, i32]
        lib.lf_labels.restype = ctypes.c_int
        lib._lf_typed = True
    return lib


def available() -> bool:
    """True when the kernel builds and loads here and $LABELFIELD_COMPOSITE is not "torch"."""
    return _build.kernel_available(_lib, "LABELFIELD_COMPOSITE")


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check(rc: int, what: str) -> None:
    if rc == 2:
        raise ValueError(f"{what}: ray_indices must be grouped by ray in increasing order and lie in [0, n_rays)")
    if rc != 0:
        raise RuntimeError(f"{what} failed (code {rc})")


class _CompositeFn(torch.autograd.Function):
    """(t_starts, t_ends, sigma, feat | None, ray_indices, n_rays) -> weights, opacity, depth, tau, acc."""

    @staticmethod
    def forward(ctx: Any, ts, te, sigma, feat, ray_indices, n_rays):  # type: ignore[override]
        ts, te, ri = ts.detach().contiguous(), te.detach().contiguous(), ray_indices.contiguous()
        sigma = sigma.detach().contiguous()
        feat = None if feat is None else feat.detach().contiguous()
        n, dim = sigma.shape[0], 0 if feat is None else feat.shape[1]
        weights = torch.empty(n, dtype=torch.float32)
        opacity, depth, tau = (torch.zeros(n_rays, dtype=torch.float32) for _ in range(3))  # the kernel adds to them
        acc = torch.zeros(n_rays, dim, dtype=torch.float32)
        rc = _lib().lf_composite_forward(
            n, None, ri.data_ptr(), ts.data_ptr(), te.data_ptr(), sigma.data_ptr(), _ptr(feat), dim, n_rays,
            weights.data_ptr(), tau.data_ptr(), opacity.data_ptr(), depth.data_ptr(), _ptr(acc if dim else None),
            torch.get_num_threads(),
        )  # fmt: skip
        _check(rc, "composite kernel forward")
        ctx.save_for_backward(ts, te, sigma, feat, ri)
        ctx.n_rays = n_rays
        ctx.set_materialize_grads(False)
        return weights, opacity, depth, tau, acc

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g_w, g_opacity, g_depth, g_tau, g_acc):  # type: ignore[override]
        ts, te, sigma, feat, ri = ctx.saved_tensors
        n, dim = sigma.shape[0], 0 if feat is None else feat.shape[1]

        def prep(g: torch.Tensor | None) -> torch.Tensor | None:
            return None if g is None else g.to(torch.float32).contiguous()

        g_w, g_opacity, g_depth, g_tau, g_acc = map(prep, (g_w, g_opacity, g_depth, g_tau, g_acc))
        grad_sigma = torch.empty(n, dtype=torch.float32)
        need_feat = feat is not None and ctx.needs_input_grad[3]
        grad_feat = torch.empty(n, dim, dtype=torch.float32) if need_feat else None
        rc = _lib().lf_composite_backward(
            n, ri.data_ptr(), ts.data_ptr(), te.data_ptr(), sigma.data_ptr(), _ptr(feat), dim, ctx.n_rays,
            _ptr(g_w), _ptr(g_tau), _ptr(g_opacity), _ptr(g_depth), _ptr(g_acc if dim else None),
            grad_sigma.data_ptr(), _ptr(grad_feat), torch.get_num_threads(),
        )  # fmt: skip
        _check(rc, "composite kernel backward")
        return None, None, grad_sigma if ctx.needs_input_grad[2] else None, grad_feat, None, None


def composite_reference(
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    sigma: torch.Tensor,
    ray_indices: torch.Tensor,
    n_rays: int,
    feat: torch.Tensor | None = None,
) -> Composited:
    """The definition: `render_weights` and `accumulate` (any device and dtype, differentiable)."""
    weights = render_weights(t_starts, t_ends, sigma, ray_indices, n_rays)
    t_mid = 0.5 * (t_starts + t_ends)
    acc = (
        accumulate(weights, feat, ray_indices, n_rays)
        if feat is not None
        else sigma.new_zeros(n_rays, 0)
    )  # fmt: skip
    return Composited(
        weights,
        accumulate(weights, None, ray_indices, n_rays),
        accumulate(weights, t_mid, ray_indices, n_rays),
        accumulate(sigma * (t_ends - t_starts), None, ray_indices, n_rays),
        acc,
    )


def uses_kernel(*tensors: torch.Tensor | None) -> bool:
    """Whether `composite` takes the kernel for these tensors (CPU float32, kernel available)."""
    return all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors) and available()


def composite(
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    sigma: torch.Tensor,
    ray_indices: torch.Tensor,
    n_rays: int,
    feat: torch.Tensor | None = None,
) -> Composited:
    """Weights and per-ray sums of packed samples (module docstring); kernel or reference, same values.

    t_starts, t_ends, sigma (S,); ray_indices (S,) int64 grouped by ray in increasing order (the kernel checks
    and raises ValueError); feat (S, D) or None. Differentiable in sigma and feat (and, on the reference path,
    in t_starts / t_ends).
    """
    if feat is not None and feat.dim() != 2:
        raise ValueError(f"feat must be (n_samples, D), got {tuple(feat.shape)}")
    if t_starts.requires_grad or t_ends.requires_grad or not uses_kernel(t_starts, t_ends, sigma, feat):
        return composite_reference(t_starts, t_ends, sigma, ray_indices, n_rays, feat)
    return Composited(*_CompositeFn.apply(t_starts, t_ends, sigma, feat, ray_indices, n_rays))


def labels_from_features(
    acc: torch.Tensor,
    opacity: torch.Tensor,
    tau: torch.Tensor,
    head: torch.nn.Linear | None,
    background_class_index: int | None,
    log_probs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """label (n,) int64 (argmax), confidence (n,) (its probability) and optionally log_probs (n, C) per ray.

    acc (n, D): composited semantic features; with a linear `head` the logits are head.weight @ acc_r +
    opacity_r * head.bias (NGPModel's per-ray head), else acc are the logits. tau (n,): total optical depth.
    Reference (off the kernel path): that product, `render.semantic.semantic_outputs`, then max.
    """
    if not uses_kernel(acc, opacity, tau) or acc.requires_grad or (head is not None and not uses_kernel(head.weight)):
        logits = acc if head is None else torch.addmm(opacity[:, None] * head.bias, acc, head.weight.T)
        log_p = semantic_outputs(logits, opacity, tau, background_class_index)["log_probs"]
        best, label = log_p.max(-1)
        return label, best.exp(), (log_p if log_probs else None)
    acc, opacity, tau = acc.contiguous(), opacity.contiguous(), tau.contiguous()
    n, dim = acc.shape
    w = None if head is None else head.weight.detach().contiguous()
    b = None if head is None else head.bias.detach().contiguous()
    c = dim if w is None else w.shape[0]
    label = torch.empty(n, dtype=torch.int64)
    conf = torch.empty(n, dtype=torch.float32)
    lp = torch.empty(n, c, dtype=torch.float32) if log_probs else None
    bg = -1 if background_class_index is None else int(background_class_index)
    rc = _lib().lf_labels(
        n, dim, c, acc.data_ptr(), _ptr(w), _ptr(b), opacity.data_ptr(), tau.data_ptr(), bg, label.data_ptr(),
        conf.data_ptr(), _ptr(lp), torch.get_num_threads(),
    )  # fmt: skip
    _check(rc, "labels kernel")
    return label, conf, lp


class RoundCompositor:
    """Front-to-back compositing of packed samples evaluated in rounds (inference only, no autograd).

    Usage (see `NGPModel.render_labels`): `select(lo, hi)` picks, for each ray with at least lo + 1 samples
    that is not yet stopped (its optical depth is below -log(stop_transmittance); the first round takes all),
    its samples of rank [lo, hi), returning their packed indices sel (k,) and normalised positions x (k, 3);
    `add(sel, sigma, feat)` composites them. After the last round, opacity, depth, tau, acc hold what
    `composite` returns for the evaluated samples (each ray's samples form a prefix of its packed samples).

    Kernel path for CPU float32 when the kernel builds, else a PyTorch path with the same results.
    """

    def __init__(
        self,
        rays_o: torch.Tensor,
        rays_d: torch.Tensor,
        t_starts: torch.Tensor,
        t_ends: torch.Tensor,
        ray_indices: torch.Tensor,
        aabb: torch.Tensor,
        dim: int,
        stop_transmittance: float,
        depth: bool = False,
    ) -> None:
        n = rays_o.shape[0]
        self.n_rays, self.dim = n, dim
        self.kernel = uses_kernel(rays_o, rays_d, t_starts, t_ends)
        self.rays_o, self.rays_d = rays_o.contiguous(), rays_d.contiguous()
        self.t_starts, self.t_ends = t_starts.contiguous(), t_ends.contiguous()
        self.ray_indices = ray_indices.contiguous()
        self.box = aabb.to(rays_o).reshape(-1).contiguous()
        self.threshold = -math.log(stop_transmittance) if stop_transmittance > 0 else math.inf
        self.starts, self.counts = ray_starts(ray_indices, n)
        self.max_count = int(self.counts.max()) if n else 0
        dev, dt = rays_o.device, rays_o.dtype
        self.tau = torch.zeros(n, dtype=dt, device=dev)
        self.opacity = torch.zeros(n, dtype=dt, device=dev)
        self.depth = torch.zeros(n, dtype=dt, device=dev) if depth else None
        self.acc = torch.zeros(n, dim, dtype=dt, device=dev)
        self._first = torch.empty(n + 1, dtype=torch.int64) if self.kernel else None
        if not self.kernel:
            self._rank = torch.arange(ray_indices.numel(), device=dev) - self.starts[ray_indices]

    def select(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed indices sel (k,) int64 (increasing) and normalised midpoints x (k, 3) of this round."""
        check = lo > 0
        if not self.kernel:
            mask = (self._rank >= lo) & (self._rank < hi)
            if check:
                mask &= self.tau[self.ray_indices] < self.threshold
            sel = mask.nonzero()[:, 0]
            ri = self.ray_indices[sel]
            tm = 0.5 * (self.t_starts[sel] + self.t_ends[sel])
            x = torch.addcmul(self.rays_o[ri], self.rays_d[ri], tm[:, None])
            lo_b, hi_b = self.box[:3], self.box[3:]
            return sel, ((x - lo_b) / (hi_b - lo_b)).clamp(0.0, 1.0)
        cap = min(self.ray_indices.numel(), self.n_rays * (hi - lo))
        sel = torch.empty(cap, dtype=torch.int64)
        x = torch.empty(cap, 3, dtype=torch.float32)
        threshold = min(self.threshold, 3.0e38)
        k = _lib().lf_round_select(
            self.n_rays, self.starts.data_ptr(), self.counts.data_ptr(), self.tau.data_ptr(), lo, hi, threshold,
            int(check), self.rays_o.data_ptr(), self.rays_d.data_ptr(), self.t_starts.data_ptr(),
            self.t_ends.data_ptr(), self.box.data_ptr(), sel.data_ptr(), x.data_ptr(), self._first.data_ptr(),
            torch.get_num_threads(),
        )  # fmt: skip
        if k < 0:
            raise RuntimeError("round select kernel failed")
        return sel[:k], x[:k]

    def add(
        self, sel: torch.Tensor, sigma: torch.Tensor, feat: torch.Tensor, weights: bool = False
    ) -> torch.Tensor | None:
        """Composite the round's samples sel (k,) with densities sigma (k,) and features feat (k, dim) onto the
        rays' running sums; returns their weights (k,) when asked."""
        if not self.kernel:
            return self._add_reference(sel, sigma, feat, weights)
        sigma, feat = sigma.contiguous(), feat.contiguous()
        w = torch.empty(sel.numel(), dtype=torch.float32) if weights else None
        rc = _lib().lf_composite_forward(
            sel.numel(), sel.data_ptr(), self.ray_indices.data_ptr(), self.t_starts.data_ptr(),
            self.t_ends.data_ptr(), sigma.data_ptr(), feat.data_ptr() if self.dim else None, self.dim, self.n_rays,
            _ptr(w), self.tau.data_ptr(), self.opacity.data_ptr(), _ptr(self.depth),
            self.acc.data_ptr() if self.dim else None, torch.get_num_threads(),
        )  # fmt: skip
        _check(rc, "composite kernel (round)")
        return w

    def _add_reference(
        self, sel: torch.Tensor, sigma: torch.Tensor, feat: torch.Tensor, weights: bool
    ) -> torch.Tensor | None:
        ri = self.ray_indices[sel]
        ts, te = self.t_starts[sel], self.t_ends[sel]
        # the rays' transmittance so far enters as a per-ray factor; within the round, the reference weights
        w = torch.exp(-self.tau)[ri] * render_weights(ts, te, sigma, ri, self.n_rays)
        n = self.n_rays
        self.tau += accumulate(sigma * (te - ts), None, ri, n)
        self.opacity += accumulate(w, None, ri, n)
        if self.depth is not None:
            self.depth += accumulate(w, 0.5 * (ts + te), ri, n)
        if self.dim:
            self.acc += accumulate(w, feat, ri, n)
        return w if weights else None

    def rounds(self, first: int = 4) -> list[tuple[int, int]]:
        """Rank ranges of the rounds: [0, 4), [4, 8), [8, 16), [16, 32), ... up to the longest ray."""
        out, lo, size = [], 0, first
        while lo < self.max_count:
            out.append((lo, lo + size))
            lo, size = lo + size, size if lo == 0 else size * 2
        return out
