"""Hash-grid encoding: C++ kernel vs the PyTorch reference, gradient check, fallback, determinism, build cache."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch

from labelfield.field import HashGrid, _build, hashgrid
from labelfield.field.hashgrid_ref import encode_reference, grid_layout


def _kernel_or_skip() -> None:
    try:
        hashgrid._kernel_lib()
    except _build.KernelBuildError as e:  # pragma: no cover - only on machines without a compiler
        pytest.skip(f"C++ kernel unavailable: {e}")


def _points(n: int, res: list[int], seed: int) -> torch.Tensor:
    """Random points plus the hard cases: coordinates exactly 0 and 1, and points exactly on grid vertices."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=gen)
    borders = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.0, 1.0], [0.3, 1.0, 0.0]])
    on_vertices = torch.cat([torch.randint(0, r + 1, (8, 3), generator=gen).float() / r for r in res])
    outside = torch.tensor([[-0.1, 0.5, 1.2], [1.5, -2.0, 0.5]])  # clamped to the cube
    return torch.cat([x, borders, on_vertices, outside])


@pytest.fixture
def clean_backend_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Forget the loaded kernel and the once-only warnings before and after a test."""
    _build.reset_cache()
    monkeypatch.setattr(hashgrid, "_WARNED", set())
    yield
    monkeypatch.undo()
    _build.reset_cache()


def test_layout_defaults() -> None:
    lay = grid_layout(16, 2, 19, 16, 2048)
    assert lay.resolutions[0] == 16 and lay.resolutions[-1] == 2048
    assert all(a < b for a, b in zip(lay.resolutions, lay.resolutions[1:]))
    for res, size, hashed in zip(lay.resolutions, lay.sizes, lay.hashed):
        assert size % 8 == 0
        assert hashed == ((res + 1) ** 3 > 2**19)
        assert size == (2**19 if hashed else (res + 1) ** 3 + (-((res + 1) ** 3)) % 8)
    assert any(lay.hashed) and not all(lay.hashed)
    assert lay.total_rows == sum(lay.sizes)
    g = HashGrid(backend="torch")
    assert g.output_dim == 32 and g.resolutions == list(lay.resolutions)
    assert g.table.shape == (lay.total_rows, 2) and g.table.abs().max() <= 1e-4


# (levels, features, log2 T, base, max): each has dense and hashed levels; F=3 takes the kernel's generic path.
CONFIGS = [(4, 2, 10, 4, 32), (3, 4, 9, 3, 40), (2, 3, 8, 2, 16), (5, 1, 12, 8, 128)]


@pytest.mark.parametrize("config", CONFIGS)
def test_kernel_matches_reference(config: tuple[int, int, int, int, int]) -> None:
    _kernel_or_skip()
    n_levels, n_feat, log2_t, base, top = config
    grid = HashGrid(n_levels, n_feat, log2_t, base, top, backend="kernel")
    assert any(grid.layout.hashed) and not all(grid.layout.hashed)
    torch.manual_seed(1)
    with torch.no_grad():
        grid.table.uniform_(-1.0, 1.0)  # order-one values make the 1e-5 tolerance meaningful
    x = _points(3000, grid.resolutions, seed=2)
    grad_out = torch.randn(x.shape[0], grid.output_dim)

    out_k = grid(x)
    (gk,) = torch.autograd.grad(out_k, grid.table, grad_out)
    out_r = encode_reference(x, grid.table, grid.layout)
    (gr,) = torch.autograd.grad(out_r, grid.table, grad_out)

    assert out_k.shape == (x.shape[0], n_levels * n_feat) and out_k.dtype == torch.float32
    torch.testing.assert_close(out_k, out_r, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gk, gr, atol=5e-5, rtol=1e-5)  # float32 sums in another order
    assert gk.abs().sum() > 0


def test_border_values_exact() -> None:
    """At a vertex the encoding equals that vertex's table row (dense level: known index)."""
    grid = HashGrid(1, 2, 10, 4, 4, backend="torch")  # one dense level, 5^3 vertices
    with torch.no_grad():
        grid.table.copy_(torch.arange(grid.table.numel(), dtype=torch.float32).view_as(grid.table))
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.25, 0.5, 1.0]])
    rows = torch.tensor([0, 4 + 4 * 5 + 4 * 25, 1 + 2 * 5 + 4 * 25])
    torch.testing.assert_close(grid(x), grid.table[rows].detach())


def test_reference_gradcheck() -> None:
    lay = grid_layout(2, 2, 6, 2, 4)  # level 0 dense (27 vertices), level 1 hashed (125 > 64)
    assert lay.hashed == (False, True)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(20, 3, generator=gen, dtype=torch.float64)
    table = torch.randn(lay.total_rows, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: encode_reference(x, t, lay), (table,))


def test_positions_get_no_gradient_unless_asked() -> None:
    for backend in ("torch", "auto"):
        grid = HashGrid(2, 2, 8, 2, 8, backend=backend)
        x = torch.rand(50, 3)
        grid(x).sum().backward()  # the default path: rays are data
        assert grid.table.grad is not None
        x = torch.rand(50, 3, requires_grad=True)
        lay = grid.layout
        (gx,) = torch.autograd.grad(encode_reference(x, grid.table, lay).sum(), x, allow_unused=True)
        assert gx is None  # the reference detaches x by default
        (gx,) = torch.autograd.grad(grid(x).sum(), x)
        assert gx.shape == (50, 3) and gx.abs().sum() > 0


def test_reference_position_gradcheck() -> None:
    """d encoding / d x of the reference (float64) against finite differences, dense and hashed levels."""
    lay = grid_layout(2, 2, 6, 2, 4)
    gen = torch.Generator().manual_seed(6)
    # Inside cells (away from vertex planes, where the encoding has a kink) and inside the cube.
    x = (0.05 + 0.9 * torch.rand(20, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    table = torch.randn(lay.total_rows, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, t: encode_reference(p, t, lay, position_grad=True), (x, table))


@pytest.mark.parametrize("config", CONFIGS)
def test_kernel_position_gradient_matches_reference(config: tuple[int, int, int, int, int]) -> None:
    _kernel_or_skip()
    grid = HashGrid(*config, backend="kernel")
    torch.manual_seed(7)
    with torch.no_grad():
        grid.table.uniform_(-1.0, 1.0)
    x = _points(3000, grid.resolutions, seed=8).requires_grad_()  # borders, vertices and clamped points too
    grad_out = torch.randn(x.shape[0], grid.output_dim)
    gx_k, gt_k = torch.autograd.grad(grid(x), (x, grid.table), grad_out)
    gx_r, gt_r = torch.autograd.grad(encode_reference(x, grid.table, grid.layout, True), (x, grid.table), grad_out)
    scale = max(grid.resolutions)  # gradients are O(N_l): float32 sums in another order
    torch.testing.assert_close(gx_k, gx_r, atol=2e-5 * scale, rtol=1e-4)
    torch.testing.assert_close(gt_k, gt_r, atol=5e-5, rtol=1e-5)
    outside = (x.detach() < 0) | (x.detach() > 1)
    assert outside.any() and torch.all(gx_k[outside] == 0)  # clamped axes get no gradient
    # the table gradient does not change when x also needs one
    (gt_only,) = torch.autograd.grad(grid(x.detach()), grid.table, grad_out)
    assert torch.equal(gt_only, gt_k)


def test_kernel_position_gradient_deterministic_across_threads() -> None:
    _kernel_or_skip()
    grid = HashGrid(6, 2, 12, 4, 96, backend="kernel")
    with torch.no_grad():
        grid.table.uniform_(-1.0, 1.0)
    x = torch.rand(70000, 3, generator=torch.Generator().manual_seed(9)).requires_grad_()
    grad_out = torch.randn(x.shape[0], grid.output_dim, generator=torch.Generator().manual_seed(10))
    threads = torch.get_num_threads()
    grads = []
    try:
        for n_threads in (1, 2, 3):
            torch.set_num_threads(n_threads)
            (g,) = torch.autograd.grad(grid(x), x, grad_out)
            grads.append(g)
    finally:
        torch.set_num_threads(threads)
    for g in grads[1:]:
        assert torch.equal(g, grads[0])


def test_backward_deterministic_across_threads() -> None:
    _kernel_or_skip()
    grid = HashGrid(6, 2, 12, 4, 96, backend="kernel")
    x = torch.rand(70000, 3, generator=torch.Generator().manual_seed(4))  # > one 2^16-point chunk of the kernel
    grad_out = torch.randn(x.shape[0], grid.output_dim, generator=torch.Generator().manual_seed(5))
    threads = torch.get_num_threads()
    grads = []
    try:
        for n_threads in (1, 2, 2, 3):
            torch.set_num_threads(n_threads)
            (g,) = torch.autograd.grad(grid(x), grid.table, grad_out)
            grads.append(g)
    finally:
        torch.set_num_threads(threads)
    for g in grads[1:]:
        assert torch.equal(g, grads[0])
    torch.testing.assert_close(grid(x), encode_reference(x, grid.table, grid.layout), atol=1e-6, rtol=1e-5)


def test_fallback_without_compiler_warns_once(
    clean_backend_state: None, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("LABELFIELD_CACHE", str(tmp_path))  # no cached build to fall back on
    monkeypatch.setattr(_build, "COMPILER", "labelfield-no-such-compiler")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grids = [HashGrid(2, 2, 8, 2, 8) for _ in range(3)]
    ours = [w for w in caught if "kernel unavailable" in str(w.message)]
    assert len(ours) == 1 and issubclass(ours[0].category, RuntimeWarning)
    assert all(g.backend_name == "torch" for g in grids)
    x = torch.rand(10, 3)
    torch.testing.assert_close(grids[0](x), encode_reference(x, grids[0].table, grids[0].layout))
    with pytest.raises(RuntimeError, match="kernel unavailable"):
        HashGrid(2, 2, 8, 2, 8, backend="kernel")


def test_build_is_cached(clean_backend_state: None, monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    _kernel_or_skip()
    monkeypatch.setenv("LABELFIELD_CACHE", str(tmp_path))
    path = _build.build_library("hashgrid")
    assert path.parent == tmp_path and path.name.startswith("hashgrid-") and path.exists()
    mtime = path.stat().st_mtime_ns
    assert _build.build_library("hashgrid") == path and path.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob("*.tmp"))  # no leftover partial builds


def test_auto_on_other_device_uses_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashgrid, "_tcnn_available", lambda: False)
    grid = HashGrid(2, 2, 8, 2, 8, device="meta")  # stands in for CUDA: no kernel build, no warning
    assert grid.backend_name == "torch" and grid.table.device.type == "meta"


def test_empty_batch() -> None:
    grid = HashGrid(3, 2, 8, 2, 16)  # auto: the kernel where it builds
    out = grid(torch.zeros(0, 3))
    assert out.shape == (0, 6)
    out.sum().backward()
    assert grid.table.grad is not None and torch.count_nonzero(grid.table.grad) == 0


def test_build_falls_back_to_plain_flags(
    clean_backend_state: None, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """A compiler that rejects the fast flags (e.g. no OpenMP) still gets a single-threaded kernel."""
    _kernel_or_skip()
    monkeypatch.setenv("LABELFIELD_CACHE", str(tmp_path))
    monkeypatch.setattr(_build, "FLAGS", ("-O3", "--labelfield-no-such-flag", "-shared", "-fPIC"))
    path = _build.build_library("hashgrid")
    assert len(list(tmp_path.glob("*.failed"))) == 1  # the failure is remembered, not retried each run
    assert _build.build_library("hashgrid") == path
    grid = HashGrid(3, 2, 9, 4, 40, backend="kernel")
    x = torch.rand(500, 3)
    torch.testing.assert_close(grid(x), encode_reference(x, grid.table, grid.layout), atol=1e-6, rtol=1e-6)


def test_bad_input() -> None:
    grid = HashGrid(2, 2, 8, 2, 8, backend="torch")
    with pytest.raises(ValueError):
        grid(torch.rand(4, 2))
    with pytest.raises(ValueError):
        HashGrid(backend="cuda-magic")
    with pytest.raises(ValueError):
        HashGrid(base_resolution=64, max_resolution=32)


def test_level_weights_scale_only_the_position_gradient() -> None:
    """Coarse-to-fine pose refinement: per-level factors on the position gradient, same on both backends;
    the values and the table gradient do not change."""
    _kernel_or_skip()
    grid = HashGrid(4, 2, 10, 4, 32, backend="kernel")
    with torch.no_grad():
        grid.table.uniform_(-1.0, 1.0)
    x = torch.rand(500, 3, generator=torch.Generator().manual_seed(11)).requires_grad_()
    grad_out = torch.randn(500, grid.output_dim, generator=torch.Generator().manual_seed(12))
    out0 = grid(x)
    gx0, gt0 = torch.autograd.grad(out0, (x, grid.table), grad_out)
    w = torch.tensor([1.0, 0.5, 0.0, 0.0])
    grid.position_grad_weights = w
    out1 = grid(x)
    gx1, gt1 = torch.autograd.grad(out1, (x, grid.table), grad_out)
    assert torch.equal(out0, out1) and torch.equal(gt0, gt1)
    ref = encode_reference(x, grid.table, grid.layout, True, w)
    (gxr,) = torch.autograd.grad(ref, x, grad_out)
    torch.testing.assert_close(gx1, gxr, atol=1e-3, rtol=1e-4)
    assert not torch.allclose(gx1, gx0)
    # only level 0 on: the gradient of a one-level encoding of the coarsest level alone
    grid.position_grad_weights = torch.tensor([1.0, 0.0, 0.0, 0.0])
    (gx_c,) = torch.autograd.grad(grid(x), x, grad_out)
    coarse = torch.autograd.grad(encode_reference(x, grid.table, grid.layout, True)[:, :2], x, grad_out[:, :2])[0]
    torch.testing.assert_close(gx_c, coarse, atol=1e-3, rtol=1e-4)
