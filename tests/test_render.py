"""Rendering core: compositing vs a brute-force loop, occupancy never culls dense cells, marching, bounds."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from labelfield.cameras import Intrinsics, unproject_depth
from labelfield.render.bounds import scene_bounds
from labelfield.render.composite import accumulate, render_weights
from labelfield.render.occupancy import OccupancyGrid
from labelfield.render.sampling import march_rays, ray_aabb_intersect
from labelfield.scene import ClassTable, Frame, Scene
from labelfield.synth.toy import toy_scene


def _packed(n_rays: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 12, (n_rays,), generator=g)
    counts[1] = 0  # a ray without samples
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    deltas = torch.rand(len(ray_indices), generator=g) * 0.3 + 0.01
    t_ends = torch.zeros_like(deltas)
    t_starts = torch.zeros_like(deltas)
    for r in range(n_rays):  # contiguous intervals per ray with random gaps
        m = ray_indices == r
        d = deltas[m]
        s = torch.cumsum(d + torch.rand(len(d), generator=g) * 0.1, 0) - d
        t_starts[m], t_ends[m] = s, s + d
    sigmas = torch.rand(len(ray_indices), generator=g) * 5.0
    return t_starts, t_ends, sigmas, ray_indices


def test_weights_match_brute_force_and_sum_at_most_one() -> None:
    n_rays = 40
    t_starts, t_ends, sigmas, ray_indices = _packed(n_rays)
    sigmas = sigmas.double().requires_grad_(True)
    w = render_weights(t_starts.double(), t_ends.double(), sigmas, ray_indices, n_rays)
    ref = torch.zeros_like(w)
    for r in range(n_rays):
        T = 1.0
        for i in (ray_indices == r).nonzero()[:, 0].tolist():
            a = 1.0 - math.exp(-float(sigmas[i].detach()) * float(t_ends[i] - t_starts[i]))
            ref[i] = T * a
            T *= 1.0 - a
    assert torch.allclose(w, ref, atol=1e-10)
    opacity = accumulate(w, None, ray_indices, n_rays)
    assert float(opacity.detach().max()) <= 1.0 and float(opacity[1].detach()) == 0.0
    values = torch.randn(len(w), 3, dtype=torch.float64)
    acc = accumulate(w, values, ray_indices, n_rays)
    brute = torch.stack([(ref[ray_indices == r, None] * values[ray_indices == r]).sum(0) for r in range(n_rays)])
    assert torch.allclose(acc, brute, atol=1e-10)
    acc.sum().backward()
    assert sigmas.grad is not None and torch.isfinite(sigmas.grad).all()


def test_weights_precise_with_many_samples_float32() -> None:
    n_rays, per = 2000, 64  # a long packed batch: the global running sum gets large
    ray_indices = torch.arange(n_rays).repeat_interleave(per)
    t_starts = torch.arange(per, dtype=torch.float32).repeat(n_rays) * 0.01
    sigmas = torch.full((n_rays * per,), 20.0)
    w = render_weights(t_starts, t_starts + 0.01, sigmas, ray_indices, n_rays)
    assert torch.allclose(w.view(n_rays, per)[-1], w.view(n_rays, per)[0], atol=1e-6)


def test_occupancy_never_culls_dense_cells() -> None:
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 2.0, 1.0]])
    grid = OccupancyGrid(aabb, resolution=16, threshold=0.5, warmup_updates=2)
    table = torch.rand(16**3, generator=torch.Generator().manual_seed(0)) ** 4 * 2.0  # mostly small

    def density(x: torch.Tensor) -> torch.Tensor:  # constant per cell
        return table[grid.cell_index(x)[0]]

    gen = torch.Generator().manual_seed(1)
    for _ in range(4):  # warm-up (all cells) then subset updates
        grid.update(density, generator=gen)
    x = aabb[0] + torch.rand(20000, 3, generator=gen) * (aabb[1] - aabb[0])
    dense = density(x) > grid.threshold
    assert dense.any() and (~grid.is_occupied(x)).any()  # the test can fail both ways
    assert grid.is_occupied(x)[dense].all()
    outside = torch.tensor([[0.0, 2.5, 0.0], [-1.5, 0.0, 0.0]])
    assert not grid.is_occupied(outside).any()


def test_march_inside_box_sorted_and_culled() -> None:
    g = torch.Generator().manual_seed(0)
    n = 300
    rays_o = torch.randn(n, 3, generator=g) * 2.0
    rays_d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    aabb = torch.tensor([[-1.0, -0.5, -1.0], [1.0, 1.0, 0.8]])
    grid = OccupancyGrid(aabb, resolution=8)
    grid.binary.copy_(torch.rand(8**3, generator=g) > 0.5)
    for stratified in (False, True):
        ts, te, ri = march_rays(
            rays_o, rays_d, aabb, 0.05, near=0.1, occupied_fn=grid.is_occupied, stratified=stratified, generator=g
        )
        assert len(ri) > 100
        assert (ri[1:] >= ri[:-1]).all()
        same = ri[1:] == ri[:-1]
        assert (ts[1:][same] >= te[:-1][same] - 1e-6).all()  # sorted, non-overlapping per ray
        assert (te > ts).all() and (te - ts <= 0.05 + 1e-6).all() and (ts >= 0.1 - 1e-6).all()
        for t in (ts, te):
            x = rays_o[ri] + rays_d[ri] * t[:, None]
            assert ((x >= aabb[0] - 1e-4) & (x <= aabb[1] + 1e-4)).all()
        mid = rays_o[ri] + rays_d[ri] * (0.5 * (ts + te))[:, None]
        assert grid.is_occupied(mid).all()
    # block skipping with the coarse grid gives exactly the same samples
    grid.mark_changed()
    for stratified in (False, True):
        runs = []
        for near_fn in (None, grid.is_occupied_near):
            gen = torch.Generator().manual_seed(5)
            runs.append(
                march_rays(
                    rays_o,
                    rays_d,
                    aabb,
                    0.02,
                    near=0.1,
                    occupied_fn=grid.is_occupied,
                    stratified=stratified,
                    generator=gen,
                    near_occupied_fn=near_fn,
                    block=8,
                )
            )
        for a, b in zip(*runs):
            assert torch.equal(a, b)
    # without culling, the samples cover [entry, exit] exactly
    t_in, t_out = ray_aabb_intersect(rays_o, rays_d, aabb)
    ts, te, ri = march_rays(rays_o, rays_d, aabb, 0.05, near=0.0, stratified=True, generator=g)
    hit = (t_out > t_in.clamp(min=0)).nonzero()[:, 0]
    covered = torch.zeros(n).index_add(0, ri, te - ts)
    assert torch.allclose(covered[hit], (t_out - t_in.clamp(min=0))[hit], atol=1e-4)
    # bounded samples per ray: coverage kept, count bounded
    ts, te, ri = march_rays(rays_o, rays_d, aabb, 0.01, max_samples_per_ray=16)
    counts = torch.bincount(ri, minlength=n)
    assert int(counts.max()) <= 16 and int(counts.max()) >= 8
    covered = torch.zeros(n).index_add(0, ri, te - ts)
    assert torch.allclose(covered[hit], (t_out - t_in.clamp(min=0))[hit], atol=1e-3)


def test_scene_bounds_depth_and_object() -> None:
    room = toy_scene(8, 16, 12)
    aabb, near = scene_bounds(room)
    pts = np.concatenate(
        [unproject_depth(f.load_depth(), f.intrinsics, f.c2w).reshape(-1, 3) for f in room.frames]
        + [room.poses()[:, :3, 3]]
    )
    assert np.all(aabb[0] <= np.percentile(pts, 1, 0)) and np.all(aabb[1] >= np.percentile(pts, 99, 0))
    assert np.all(aabb[0] >= [-2.5, -2.5, -0.5]) and np.all(aabb[1] <= [2.5, 2.5, 3.0])
    assert np.all(aabb[1] - aabb[0] < 6.0) and 0.01 <= near <= 0.1
    obj = toy_scene(8, 16, 12, room=False)
    for f in obj.frames:
        del f.arrays["depth"]
    aabb, near = scene_bounds(obj)
    # objects: sphere centre (0.5, 0.3, 0.6) r 0.5, box (-1.2, -0.9, 0) .. (-0.4, -0.2, 0.8)
    assert np.all(aabb[0] <= [-1.2, -0.9, 0.1]) and np.all(aabb[1] >= [1.0, 0.8, 1.1])
    assert np.all(aabb[1] - aabb[0] < 8.0) and near > 0


def _level_cameras(n: int = 6) -> Scene:
    """n level cameras (no pitch, 90-degree vertical field of view) on a line at height 1.5, all looking along
    +y at a room's wall: neither depth nor converging axes, so the box comes from points or the views."""
    intr = Intrinsics(fx=16.0, fy=12.0, cx=15.5, cy=11.5, width=32, height=24)
    frames = []
    for k in range(n):
        c2w = np.eye(4)
        # camera x, y (down), z (ahead) -> world x, -z, +y
        c2w[:3, :3] = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
        c2w[:3, 3] = [0.2 * k, 0.0, 1.5]
        frames.append(Frame(f"f{k}", intr, c2w, arrays={"rgb": np.zeros((24, 32, 3), np.uint8)}))
    return Scene(frames, ClassTable.from_names(["void", "thing"]))


def test_scene_bounds_sparse_points_hold_the_room_not_the_strays() -> None:
    scene = _level_cameras()
    rng = np.random.default_rng(0)
    room = rng.uniform([-2.0, -0.5, 0.0], [3.0, 3.0, 2.6], (2000, 3))  # floor 0 .. ceiling 2.6
    strays = rng.normal(size=(10, 3)) * 1e3  # near-infinite triangulations (0.5 %)
    aabb, near = scene_bounds(replace(scene, points=np.concatenate([room, strays])))
    assert np.all(aabb[0] <= room.min(0)) and np.all(aabb[1] >= room.max(0))  # every surface, the ceiling too
    assert np.all(aabb[1] - aabb[0] < 1.2 * np.ptp(room, axis=0))  # not the strays
    assert 0 < near < 0.1
    aabb_few, _ = scene_bounds(replace(scene, points=room[:5]))  # too few points: the views decide
    assert not np.allclose(aabb_few, aabb)


def test_scene_bounds_without_depth_or_points_hold_the_top_and_bottom_of_the_views() -> None:
    scene = _level_cameras()
    aabb, _ = scene_bounds(scene)
    # one scene scale (1) ahead, a 90-degree vertical view spans heights 0.5 .. 2.5: ceiling and floor, which
    # a box of the optical axes (all at height 1.5) cut off
    assert aabb[0, 2] <= 0.5 and aabb[1, 2] >= 2.5
    assert aabb[1, 1] >= 1.0 and aabb[0, 1] <= 0.0


def test_early_stop_behind_dense_slab() -> None:
    aabb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    grid = OccupancyGrid(aabb, resolution=10)
    grid.binary.fill_(True)
    grid.density.fill_(0.0)
    grid.density.view(10, 10, 10)[:, :, 4:8] = 1e4  # an opaque slab z in [0.4, 0.8]
    grid.mark_changed()
    rays_o = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]])
    rays_d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    ts, te, ri = march_rays(
        rays_o, rays_d, aabb, 0.01, occupied_fn=grid.is_occupied, proxy_density_fn=grid.proxy_density
    )
    # the capped proxy (3 optical depths per cell) stops each ray ~3 cells into the slab, not before it
    assert 0.65 <= float(te.max()) <= 0.75
    counts = torch.bincount(ri).tolist()
    assert counts[0] == counts[1] and 65 <= counts[0] <= 75


def test_wavefront_blocks_match_plain_marching_with_early_stop() -> None:
    g = torch.Generator().manual_seed(3)
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    grid = OccupancyGrid(aabb, resolution=16)
    grid.density.copy_((torch.rand(16**3, generator=g) > 0.8) * torch.rand(16**3, generator=g) * 400.0)
    grid.binary.copy_(grid.density > 0)
    grid.mark_changed()
    rays_o = torch.randn(500, 3, generator=g) * 0.5
    rays_d = torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1)
    common = dict(occupied_fn=grid.is_occupied, proxy_density_fn=grid.proxy_density, stratified=True)
    plain = march_rays(rays_o, rays_d, aabb, 0.01, generator=torch.Generator().manual_seed(0), **common)
    waves = march_rays(
        rays_o,
        rays_d,
        aabb,
        0.01,
        generator=torch.Generator().manual_seed(0),
        near_occupied_fn=grid.is_occupied_near,
        block=4,
        blocks_per_round=2,
        **common,
    )
    assert len(plain[2]) > 1000
    for a, b in zip(plain, waves):
        assert torch.allclose(a, b) if a.is_floating_point() else torch.equal(a, b)
