"""The compositing, early-stop-round, labels and MLP kernels against their PyTorch references (values and
gradients), and the NGP renderers with the kernels against the same renderers on the reference path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labelfield.field import _build, mlp_kernel
from labelfield.field.heads import DensityHead, mlp
from labelfield.models import build_model
from labelfield.models.base import ModelConfig, semantic_outputs
from labelfield.render import composite_kernel as ck
from labelfield.render.composite import ray_starts

pytestmark = pytest.mark.skipif(not ck.available(), reason="composite kernel does not build here")


def _packed(n_rays: int, seed: int = 0, max_count: int = 20, dim: int = 5) -> tuple[torch.Tensor, ...]:
    """Random packed samples: ray_indices sorted (some rays empty), t increasing within a ray."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_count, (n_rays,), generator=g)
    if n_rays > 3:
        counts[0] = counts[3] = 0  # empty rays, the first among them
    ri = torch.repeat_interleave(torch.arange(n_rays), counts)
    s = ri.numel()
    delta = torch.rand(s, generator=g) * 0.2 + 0.01
    gap = torch.rand(s, generator=g) * 0.05
    step = delta + gap
    starts, _ = ray_starts(ri, n_rays)
    cum = torch.cumsum(step, 0)
    t_starts = 0.3 + cum - step - (cum - step)[starts[ri]]  # per-ray running start
    t_ends = t_starts + delta
    sigma = torch.rand(s, generator=g) * 6.0
    sigma[torch.rand(s, generator=g) < 0.2] = 0.0
    feat = torch.randn(s, dim, generator=g)
    return t_starts, t_ends, sigma, ri, feat


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dim", [0, 1, 18])
def test_composite_matches_reference_values_and_gradients(threads: int, dim: int) -> None:
    n = 3000
    ts, te, sigma, ri, feat = _packed(n, seed=dim, dim=max(dim, 1))
    feat = feat[:, :dim] if dim else None
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(1)
        s1, s2 = sigma.clone().requires_grad_(True), sigma.clone().requires_grad_(True)
        f1 = None if feat is None else feat.clone().requires_grad_(True)
        f2 = None if feat is None else feat.clone().requires_grad_(True)
        got = ck.composite(ts, te, s1, ri, n, f1)
        ref = ck.composite_reference(ts, te, s2, ri, n, f2)
        loss1 = loss2 = 0.0
        for a, b in zip(got, ref):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert torch.allclose(a, b, atol=2e-5, rtol=1e-5), (a - b).abs().max()
            c = torch.randn(a.shape, generator=gen)
            loss1, loss2 = loss1 + (a * c).sum(), loss2 + (b * c).sum()
        assert got.weights.grad_fn is not None and "Composite" in type(got.weights.grad_fn).__name__
        loss1.backward()
        loss2.backward()
    finally:
        torch.set_num_threads(old)
    assert torch.allclose(s1.grad, s2.grad, atol=5e-5, rtol=1e-4), (s1.grad - s2.grad).abs().max()
    if feat is not None:
        assert torch.allclose(f1.grad, f2.grad, atol=1e-5, rtol=1e-5)
    assert float(got.opacity.detach().max()) <= 1.0 and float(got.opacity[0].detach()) == 0.0


def test_composite_partial_outputs_and_float64_gradcheck() -> None:
    ts, te, sigma, ri, feat = _packed(200, seed=4, dim=3)
    s1, s2 = sigma.clone().requires_grad_(True), sigma.clone().requires_grad_(True)
    got = ck.composite(ts, te, s1, ri, 200, feat)  # feat without gradient, only tau and depth used
    ref = ck.composite_reference(ts, te, s2, ri, 200, feat)
    (got.tau.sum() + 2.0 * got.depth.sum()).backward()
    (ref.tau.sum() + 2.0 * ref.depth.sum()).backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-5)
    # float64 takes the reference, which gradcheck accepts
    sd = sigma[:60].double().requires_grad_(True)
    n60 = int(ri[59]) + 1
    out = ck.composite(ts[:60].double(), te[:60].double(), sd, ri[:60], n60)
    assert out.weights.grad_fn is not None and "Composite" not in type(out.weights.grad_fn).__name__


def test_composite_empty_and_bad_order(monkeypatch: pytest.MonkeyPatch) -> None:
    e = torch.zeros(0)
    ri = torch.zeros(0, dtype=torch.int64)
    out = ck.composite(e, e, e.clone().requires_grad_(True), ri, 5, torch.zeros(0, 4))
    assert out.weights.shape == (0,) and out.opacity.shape == (5,) and out.acc.shape == (5, 4)
    assert float((out.opacity.abs().sum() + out.acc.abs().sum()).detach()) == 0.0
    out.opacity.sum().backward()
    out = ck.composite(e, e, e, ri, 0)
    assert out.opacity.shape == (0,) and out.acc.shape == (0, 0)
    ts, te, sigma, ri, _ = _packed(50, seed=2)
    with pytest.raises(ValueError, match="increasing"):
        ck.composite(ts, te, sigma, ri.flip(0), 50)
    with pytest.raises(ValueError, match="increasing"):
        ck.composite(ts, te, sigma, ri, 10)  # ray index out of range
    monkeypatch.setenv("LABELFIELD_COMPOSITE", "torch")
    assert not ck.available()
    out = ck.composite(ts, te, sigma.requires_grad_(True), ri, 50)
    assert "Composite" not in type(out.weights.grad_fn).__name__


def test_kernels_built_without_openmp(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """The fallback build (no OpenMP, no -march=native) runs one thread whatever torch's thread count, with
    the same results (its parallel regions run once, so the kernel must not split the work)."""
    monkeypatch.setenv("LABELFIELD_CACHE", str(tmp_path))
    monkeypatch.setattr(_build, "FLAGS", ("-O3", "--labelfield-no-such-flag", "-shared", "-fPIC"))
    _build.reset_cache()
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ts, te, sigma, ri, feat = _packed(4000, seed=9, dim=6)
        got = ck.composite(ts, te, sigma, ri, 4000, feat)
        ref = ck.composite_reference(ts, te, sigma, ri, 4000, feat)
        for a, b in zip(got, ref):
            assert torch.allclose(a, b, atol=2e-5, rtol=1e-5)
        net = mlp(32, 64, 1, 16)
        x = torch.randn(1000, 32)
        with torch.inference_mode():
            assert torch.allclose(mlp_kernel.mlp_inference(net, x), net(x), atol=1e-5, rtol=1e-5)
        assert len(list(tmp_path.glob("composite-*.failed"))) == 1  # the fast build failed, the fallback ran
    finally:
        torch.set_num_threads(old)
        _build.reset_cache()


@pytest.mark.parametrize("kernel", [True, False])
def test_rounds_every_sample_equal_composite(kernel: bool) -> None:
    """stop_transmittance 0 (never stop): the rounds composite exactly what one composite call does."""
    n = 500
    ts, te, sigma, ri, feat = _packed(n, seed=5, max_count=40, dim=4)
    o, d = torch.randn(n, 3), torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    aabb = torch.tensor([[-2.0, -2.0, -2.0], [2.0, 2.0, 2.0]])
    rc = ck.RoundCompositor(o, d, ts, te, ri, aabb, 4, 0.0, depth=True)
    rc.kernel = rc.kernel and kernel
    if not rc.kernel:
        rc._rank = torch.arange(ri.numel()) - rc.starts[ri]
    seen = []
    for lo, hi in rc.rounds():
        sel, x = rc.select(lo, hi)
        seen.append(sel)
        ref_x = ((o[ri[sel]] + d[ri[sel]] * (0.5 * (ts[sel] + te[sel]))[:, None] + 2.0) / 4.0).clamp(0, 1)
        assert torch.allclose(x, ref_x, atol=1e-6)
        rc.add(sel, sigma[sel], feat[sel])
    assert torch.equal(torch.sort(torch.cat(seen))[0], torch.arange(ri.numel()))
    ref = ck.composite_reference(ts, te, sigma, ri, n, feat)
    assert torch.allclose(rc.opacity, ref.opacity, atol=1e-6)
    assert torch.allclose(rc.tau, ref.tau, atol=1e-5, rtol=1e-6)
    assert torch.allclose(rc.depth, ref.depth, atol=1e-5)
    assert torch.allclose(rc.acc, ref.acc, atol=1e-5)


@pytest.mark.parametrize("kernel", [True, False])
def test_rounds_early_stop_within_bound(kernel: bool) -> None:
    """With a stop: each ray's evaluated samples are a prefix, the ray stops only once its transmittance is
    below the threshold, and every output differs from rendering every sample by less than that weight."""
    n, stop = 800, 1e-2
    ts, te, sigma, ri, feat = _packed(n, seed=6, max_count=60, dim=3)
    sigma = sigma * 4.0  # dense: many rays stop early
    o, d = torch.zeros(n, 3), torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    aabb = torch.tensor([[-20.0, -20.0, -20.0], [20.0, 20.0, 20.0]])
    rc = ck.RoundCompositor(o, d, ts, te, ri, aabb, 3, stop)
    rc.kernel = rc.kernel and kernel
    if not rc.kernel:
        rc._rank = torch.arange(ri.numel()) - rc.starts[ri]
    done = torch.zeros(ri.numel(), dtype=torch.bool)
    for lo, hi in rc.rounds():
        sel, _ = rc.select(lo, hi)
        if sel.numel() == 0:
            break
        done[sel] = True
        rc.add(sel, sigma[sel], feat[sel])
    assert not bool(done.all())  # the case is not trivial
    # prefix per ray; a ray with dropped samples has transmittance < stop
    starts, counts = ray_starts(ri, n)
    n_done = torch.zeros(n, dtype=torch.int64).index_add_(0, ri, done.long())
    rank = torch.arange(ri.numel()) - starts[ri]
    assert torch.equal(done, rank < n_done[ri])
    cut = n_done < counts
    assert bool((torch.exp(-rc.tau[cut]) < stop).all())
    full = ck.composite_reference(ts, te, sigma, ri, n, feat)
    assert float((full.opacity - rc.opacity).abs().max()) < stop
    bound = stop * float(feat.abs().max()) + 1e-5
    assert float((full.acc - rc.acc).abs().max()) < bound


@pytest.mark.parametrize("bg", [None, 0, 2])
@pytest.mark.parametrize("linear_head", [True, False])
def test_labels_kernel_matches_semantic_outputs(bg: int | None, linear_head: bool) -> None:
    g = torch.Generator().manual_seed(7)
    n, c = 5000, 6
    tau = torch.rand(n, generator=g) * 12.0
    tau[:10] = 0.0  # rays that hit nothing
    tau[10:20] = 1e-7
    opacity = 1.0 - torch.exp(-tau)
    head = torch.nn.Linear(15, c) if linear_head else None
    acc = torch.randn(n, 15 if linear_head else c, generator=g) * 4.0
    with torch.no_grad():
        label, conf, lp = ck.labels_from_features(acc, opacity, tau, head, bg, log_probs=True)
        logits = acc if head is None else acc @ head.weight.T + opacity[:, None] * head.bias
    ref = semantic_outputs(logits, opacity, tau, bg)["log_probs"]
    assert torch.allclose(lp, ref, atol=1e-5, rtol=1e-5)
    best, ref_label = ref.max(-1)
    assert float((label != ref_label).float().mean()) < 1e-3  # ties within rounding only
    assert torch.allclose(conf, best.exp(), atol=1e-6)
    n0 = ck.labels_from_features(torch.zeros(0, c), torch.zeros(0), torch.zeros(0), None, bg)
    assert n0[0].shape == (0,) and n0[2] is None


@pytest.mark.parametrize("n", [0, 1, 37, 5000])
@pytest.mark.parametrize("shape", [(32, 64, 1, 16), (7, 10, 2, 5), (15, 64, 0, 9)])
def test_mlp_kernel_matches_torch(n: int, shape: tuple[int, int, int, int]) -> None:
    if not mlp_kernel.available():
        pytest.skip("mlp kernel does not build here")
    d_in, hidden, n_hidden, d_out = shape
    torch.manual_seed(n)
    net = mlp(d_in, hidden, n_hidden, d_out)
    x = torch.randn(n, d_in)
    with torch.inference_mode():
        assert torch.allclose(mlp_kernel.mlp_inference(net, x), net(x), atol=1e-5, rtol=1e-5)
        head = DensityHead(d_in, hidden, max(n_hidden, 1), d_out - 1)
        s_ref, g_ref = head(x)
        s, g_ = mlp_kernel.density_inference(head, x)
        assert torch.allclose(s, s_ref, rtol=1e-5, atol=1e-6) and torch.allclose(g_, g_ref, atol=1e-5)
    # with autograd recording, the module itself runs (gradients flow)
    out = mlp_kernel.mlp_inference(net, x)
    assert out.requires_grad


def _model(bg: int | None, head: str = "per_ray") -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_levels=4, log2_table_size=12, max_resolution=64, hidden_dim=16, occupancy_resolution=16, semantic_head=head
    )
    model = build_model("ngp", cfg, np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), 4, bg)
    with torch.no_grad():  # a denser field than the initialisation, with structure
        model.encoding.table.uniform_(-1.0, 1.0)
        model.density_head.net[-1].bias[0] += 2.0
    model.occupancy.update(model.density)
    return model


def _rays(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 0.3
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return o, d


@pytest.mark.parametrize("head", ["per_ray", "per_sample"])
def test_render_rays_kernel_matches_reference_with_gradients(head: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training forward + backward: the compositing kernel and the reference give the same outputs and the same
    parameter gradients."""
    model = _model(2, head).train()
    o, d = _rays(400, 3)
    results = []
    for which in ("", "torch"):
        monkeypatch.setenv("LABELFIELD_COMPOSITE", which)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(5)  # same stratified jitter and random background
        out = model.render_rays(o, d, return_samples=True)
        assert ("Composite" in type(out["weights"].grad_fn).__name__) == (which == "")
        loss = (
            out["rgb"].square().sum()
            + out["depth"].sum()
            + out["opacity"].sum()
            + out["log_probs"][:, 1].sum()
            + out["weights"].square().sum()
        )
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results.append(({k: v.detach() for k, v in out.items()}, grads))
    (got, g_got), (ref, g_ref) = results
    assert got["n_samples"] == ref["n_samples"] and int(got["n_samples"]) > 1000
    for k in ("rgb", "depth", "opacity", "log_probs", "weights"):
        assert torch.allclose(got[k], ref[k], atol=2e-5, rtol=1e-4), k
    assert g_got.keys() == g_ref.keys()
    assert float(g_ref["encoding.table"].abs().max()) > 0.0
    for k in g_got:
        scale = float(g_ref[k].abs().max()) + 1e-12
        assert float((g_got[k] - g_ref[k]).abs().max()) <= 1e-4 * scale + 1e-7, k


@pytest.mark.parametrize("head", ["per_ray", "per_sample"])
def test_render_labels_kernels_match_reference_path(head: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """render_labels with every kernel vs every reference (compositing, rounds, MLP, labels), and its early stop
    vs evaluating every sample."""
    model = _model(None, head).eval()
    o, d = _rays(600, 4)
    fast = model.render_labels(o, d, rgb=True, depth=True, probs=True)
    every = model.render_labels(o, d, depth=True, probs=True, stop_transmittance=None)
    monkeypatch.setenv("LABELFIELD_COMPOSITE", "torch")
    monkeypatch.setenv("LABELFIELD_MLP", "torch")
    ref = model.render_labels(o, d, rgb=True, depth=True, probs=True)
    for k in ("probs", "confidence", "opacity", "depth", "rgb"):
        assert torch.allclose(fast[k], ref[k], atol=2e-5), k
    assert float((fast["label"] != ref["label"]).float().mean()) < 0.01
    # dropping what weighs < 1e-4 moves each output by at most that weight (times its magnitude)
    assert float((fast["opacity"] - every["opacity"]).abs().max()) < 1e-4
    assert float((fast["probs"] - every["probs"]).abs().max()) < 1e-3
    assert float((fast["depth"] - every["depth"]).abs().max()) < 1e-4 * 4.0
    assert math.isclose(float(fast["opacity"].mean()), float(every["opacity"].mean()), abs_tol=1e-5)
