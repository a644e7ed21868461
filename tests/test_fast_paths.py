"""The fast CPU paths against their references: the marching kernel (same samples as `march_rays`), the
inference-only `render_labels` (same labels as `render_rays`), and annotate with the labels-only renderer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labelfield.models import build_model, marching
from labelfield.models.base import ModelConfig
from labelfield.render.occupancy import OccupancyGrid
from labelfield.render.sampling import march_rays

pytestmark = pytest.mark.skipif(not marching.available(), reason="march kernel does not build here")


def _grid(seed: int = 0, res: int = 16) -> OccupancyGrid:
    g = torch.Generator().manual_seed(seed)
    aabb = torch.tensor([[-1.0, -0.5, -1.2], [1.0, 0.8, 1.0]])
    grid = OccupancyGrid(aabb, res, threshold=0.5)
    dens = torch.rand(res**3, generator=g) * 8.0
    dens[torch.rand(res**3, generator=g) < 0.6] = 0.0  # 60 % empty cells
    grid.density.copy_(dens)
    grid.binary.copy_(dens > 0.5)
    grid.mark_changed()
    return grid


def _rays(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 1.5
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    o[:5] = torch.tensor([0.1, 0.1, 0.1])  # origins inside the box
    d[5] = torch.tensor([1.0, 0.0, 0.0])  # axis-parallel
    return o, d


@pytest.mark.parametrize("stratified", [False, True])
@pytest.mark.parametrize("early_stop", [None, 1e-4, 0.3])
@pytest.mark.parametrize("k_max", [None, 4])
def test_march_kernel_matches_reference(stratified: bool, early_stop: float | None, k_max: int | None) -> None:
    grid = _grid()
    o, d = _rays(700)
    step = 0.021
    ref = march_rays(
        o,
        d,
        grid.aabb,
        step,
        near=0.05,
        occupied_fn=grid.is_occupied,
        stratified=stratified,
        max_samples_per_ray=k_max,
        proxy_density_fn=None if early_stop is None else grid.proxy_density,
        early_stop_eps=early_stop or 1e-4,
        near_occupied_fn=grid.is_occupied_near,
        generator=torch.Generator().manual_seed(3),
    )
    got = marching.march_grid(
        o,
        d,
        grid.aabb,
        step,
        grid,
        near=0.05,
        stratified=stratified,
        max_samples_per_ray=k_max,
        early_stop_eps=early_stop,
        generator=torch.Generator().manual_seed(3),
    )
    assert ref[0].numel() > 300  # the case is not trivial
    for a, b in zip(ref, got):
        assert a.dtype == b.dtype
        assert torch.equal(a, b)


def _sparse_grid(res: int = 64) -> OccupancyGrid:
    """A room-like grid: occupied shell (walls) and two blobs, the rest empty (the kernel skips empty blocks)."""
    aabb = torch.tensor([[-1.0, -0.5, -1.2], [1.0, 0.8, 1.0]])
    grid = OccupancyGrid(aabb, res, threshold=0.5)
    c = (torch.arange(res) + 0.5) / res
    x, y, z = torch.meshgrid(c, c, c, indexing="ij")
    wall = (torch.stack([x, y, z]) - 0.5).abs().amax(0) > 0.45
    blob = ((x - 0.3) ** 2 + (y - 0.6) ** 2 + (z - 0.4) ** 2 < 0.01) | ((x - 0.7) ** 2 + (z - 0.7) ** 2 < 0.004)
    occ = (wall | blob).reshape(-1)
    grid.density.copy_(torch.where(occ, 3.0, 0.0))
    grid.binary.copy_(occ)
    grid.mark_changed()
    return grid


@pytest.mark.parametrize("stratified", [False, True])
@pytest.mark.parametrize("early_stop", [None, 1e-4])
def test_march_kernel_matches_reference_sparse_grid(stratified: bool, early_stop: float | None) -> None:
    """Mostly empty space: the kernel's skipping of empty blocks changes no sample (bitwise)."""
    grid = _sparse_grid()
    g = torch.Generator().manual_seed(5)
    n = 3000
    o = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([1.8, 1.1, 2.0]) + torch.tensor([0.0, 0.15, -0.1])
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    o[:200] = torch.tensor([0.0, 0.1, 0.0]) + torch.randn(200, 3, generator=g) * 2.0  # some from outside
    d[200:260] = torch.tensor([0.0, 0.0, 1.0])  # axis-parallel rays
    d[260:300] = torch.nn.functional.normalize(torch.tensor([1.0, 1e-7, 0.0]), dim=0)  # near-grazing
    o[300:340] = torch.tensor([0.25, 0.0, 0.0])  # on a block face (x = 0.625 normalised, 40 / 64 cells)
    step = 0.9 * float((grid.aabb[1] - grid.aabb[0]).norm()) / 256
    common = dict(near=0.0, stratified=stratified, max_samples_per_ray=32)
    ref = march_rays(
        o, d, grid.aabb, step, occupied_fn=grid.is_occupied,
        proxy_density_fn=None if early_stop is None else grid.proxy_density, early_stop_eps=early_stop or 1e-4,
        near_occupied_fn=grid.is_occupied_near, generator=torch.Generator().manual_seed(3), **common,
    )  # fmt: skip
    got = marching.march_grid(
        o, d, grid.aabb, step, grid, early_stop_eps=early_stop, generator=torch.Generator().manual_seed(3), **common
    )
    assert ref[0].numel() > 5000
    for a, b in zip(ref, got):
        assert torch.equal(a, b)


def test_march_kernel_empty_inputs() -> None:
    grid = _grid()
    o, d = torch.zeros(0, 3), torch.zeros(0, 3)
    ts, te, ri = marching.march_grid(o, d, grid.aabb, 0.02, grid)
    assert ts.numel() == te.numel() == ri.numel() == 0
    grid.binary.zero_()  # nothing occupied: no samples
    o, d = _rays(50)
    assert marching.march_grid(o, d, grid.aabb, 0.02, grid)[0].numel() == 0


def _model(bg: int | None) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(n_levels=4, log2_table_size=12, max_resolution=64, hidden_dim=16, occupancy_resolution=16)
    model = build_model("ngp", cfg, np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]), 4, bg)
    with torch.no_grad():  # a denser field than the initialisation, with structure
        model.encoding.table.uniform_(-1.0, 1.0)
        model.density_head.net[-1].bias[0] += 2.0
    model.occupancy.update(model.density)
    return model.eval()


@pytest.mark.parametrize("bg", [None, 2])
def test_render_labels_matches_render_rays(bg: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(bg)
    o, d = _rays(300, seed=1)
    o = o * 0.3
    with torch.no_grad():
        full = model.render_rays(o, d)
    fast = model.render_labels(o, d, rgb=True, depth=True, probs=True)
    probs = full["log_probs"].exp()
    assert torch.allclose(fast["probs"], probs, atol=1e-5)
    conf, label = probs.max(-1)
    assert torch.equal(fast["label"], label)
    assert torch.allclose(fast["confidence"], conf, atol=1e-5)
    assert torch.allclose(fast["opacity"], full["opacity"], atol=1e-6)
    assert torch.allclose(fast["depth"], full["depth"], atol=1e-5)
    assert (fast["rgb"] - full["rgb"]).abs().max() < 5e-3  # colour head skipped on samples with weight < 1e-4
    assert set(model.render_labels(o, d)) == {"label", "confidence", "opacity"}
    # the kernel and the reference marcher render the same thing
    monkeypatch.setenv("LABELFIELD_MARCH", "torch")
    with torch.no_grad():
        ref = model.render_rays(o, d)
    assert torch.equal(ref["opacity"], full["opacity"])


@pytest.mark.parametrize("writer_thread", [True, False])
def test_annotate_with_label_renders_and_no_overlay(tmp_path, writer_thread: bool) -> None:
    """A render dict with `label` + `confidence` (render_labels_image) gives the same LABELS as one with probs;
    overlay=False and a render without rgb/depth write only what was asked."""
    from labelfield.annotate import annotate_frames
    from labelfield.io import atomic_dir
    from labelfield.labelset import read_labelset
    from labelfield.synth.toy import toy_scene

    scene = toy_scene(4, 32, 24)
    classes = scene.classes

    def render(intr, c2w):
        i = int(np.argmin(np.abs(scene.poses() - np.asarray(c2w)[None]).sum((1, 2))))
        f = scene.frames[i]
        idx = classes.to_index(f.load_labels()).clip(0)
        return {
            "label": torch.as_tensor(idx),
            "confidence": torch.full(idx.shape, 0.75),
            "opacity": torch.as_tensor((f.load_depth() > 0).astype(np.float32)),
        }

    out = tmp_path / "LABELS"
    with atomic_dir(out) as tmp:
        annotate_frames(render, scene, classes, tmp, range(4), set(), overlay=False, writer_thread=writer_thread)
    ls = read_labelset(out)
    for f in scene.frames:
        gt = f.load_labels().copy()
        gt[f.load_depth() <= 0] = 0
        np.testing.assert_array_equal(ls.load_labels(f.name), gt)
        conf = ls.load_confidence(f.name)
        assert abs(conf[f.load_depth() > 0] - 0.75).max() < 3e-3  # 8-bit
    for sub, n in (("labels", 4), ("labels_color", 4), ("confidence", 4), ("overlay", 0), ("rgb", 0), ("depth", 0)):
        assert len(list((out / sub).glob("*.png"))) == n, sub


def test_render_labels_image_shapes() -> None:
    from labelfield.cameras import Intrinsics
    from labelfield.render.chunked import render_image, render_labels_image

    model = _model(None)
    intr = Intrinsics(fx=20.0, fy=20.0, cx=11.5, cy=8.5, width=24, height=18)
    c2w = np.eye(4)
    c2w[2, 3] = -0.5
    out = render_labels_image(model, intr, c2w, rgb=True, depth=True, chunk=100)
    assert out["label"].shape == (18, 24) and out["label"].dtype == torch.int64
    assert out["rgb"].shape == (18, 24, 3) and out["depth"].shape == (18, 24) and "probs" not in out
    ref = render_image(model, intr, c2w)
    assert torch.allclose(out["opacity"], ref["opacity"], atol=1e-4)
    agree = (out["label"] == ref["probs"].argmax(-1)).float().mean()
    assert agree > 0.99
