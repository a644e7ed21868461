"""RGB-only geometry: keypoint triangulation with known poses, its cache, the ray-termination and distortion
losses, and a fit whose scene yields no keypoints (one warning, training goes on)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from rich.console import Console

from labelfield.cameras import Intrinsics, project
from labelfield.render.composite import render_weights
from labelfield.scene import ClassTable, Frame, Scene
from labelfield.synth.toy import look_at, toy_scene
from labelfield.train.config import FitConfig
from labelfield.train.losses import distortion_loss, ray_termination_loss

pytest.importorskip("cv2")

from labelfield.geometry.triangulate import (  # noqa: E402
    TriangulationOptions,
    load_or_triangulate,
    triangulate_scene,
)

_LO, _HI = np.array([-2.0, -2.0, 0.0]), np.array([2.0, 2.0, 2.5])


def _box_exit(eye: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Distance along rays d (N, 3) from `eye` inside the room box to the box's wall."""
    with np.errstate(divide="ignore"):
        return np.max([(_HI - eye) / d, (_LO - eye) / d], 0).min(1)


def textured_room(n_frames: int = 8, width: int = 128, height: int = 96, seed: int = 0) -> Scene:
    """The inside of a 4 x 4 x 2.5 m box painted with a non-repeating sum of sinusoids (SIFT needs texture that
    does not repeat; the toy room's checker does), 2x2 supersampled; cameras on an 80 degree arc."""
    rng = np.random.default_rng(seed)
    freqs = rng.normal(size=(24, 3))
    freqs *= rng.uniform(10, 40, (24, 1)) / np.linalg.norm(freqs, axis=1, keepdims=True)
    phase, amp = rng.uniform(0, 2 * np.pi, 24), rng.uniform(0.5, 1.0, 24) / 7
    intr = Intrinsics.from_fov_x(np.deg2rad(70), width, height)
    sub = np.array([-0.25, 0.25])
    frames = []
    for i in range(n_frames):
        a = np.deg2rad(-40 + 80 * i / max(n_frames - 1, 1))
        eye = np.array([0.8 * np.sin(a), -0.8 * np.cos(a), 1.2])
        c2w = look_at(eye, np.array([0.0, 1.0, 0.8]))
        v, u = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        shape = (height, width, 2, 2)  # 2x2 sub-pixel samples
        uu = np.broadcast_to(u[..., None, None] + sub[None, None, None, :], shape).reshape(-1)
        vv = np.broadcast_to(v[..., None, None] + sub[None, None, :, None], shape).reshape(-1)
        d = np.stack([(uu - intr.cx) / intr.fx, (vv - intr.cy) / intr.fy, np.ones_like(uu)], -1) @ c2w[:3, :3].T
        p = eye + _box_exit(eye, d)[:, None] * d
        val = np.clip(0.5 + (np.sin(p @ freqs.T + phase) * amp).sum(1), 0, 1).reshape(height, width, 4).mean(-1)
        dz = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones(u.shape)], -1).reshape(-1, 3)
        depth = _box_exit(eye, dz @ c2w[:3, :3].T).reshape(height, width)
        rgb = np.repeat((val * 255).round().astype(np.uint8)[..., None], 3, -1)
        arrays = {"rgb": rgb, "depth": depth.astype(np.float32), "labels": np.ones((height, width), np.uint8)}
        frames.append(Frame(f"f{i:02d}", intr, c2w, arrays=arrays))
    return Scene(frames, ClassTable.from_names(["void", "room"]), None, "memory")


@pytest.fixture(scope="module")
def room() -> Scene:
    return textured_room()


def test_triangulation_recovers_known_surface_points(room):
    sd = triangulate_scene(room)
    assert len(sd.points) >= 50
    # every point lies on the box's surface: distance to the nearest wall plane
    dist = np.minimum(np.abs(sd.points - _LO), np.abs(_HI - sd.points)).min(1)
    assert np.median(dist) < 0.01, np.median(dist)
    assert np.mean(dist < 0.03) > 0.9
    # observations: z is the point's depth in that frame, and (u, v) reprojects within the threshold
    opts = TriangulationOptions()
    k = 0
    for p in sd.points[:20]:
        while True:  # observations of one point are consecutive rows
            f = room.frames[sd.frame[k]]
            uv, z = project(p[None], f.intrinsics, f.c2w)
            if abs(z[0] - sd.z[k]) > 1e-4:
                break
            assert np.hypot(uv[0, 0] - sd.u[k], uv[0, 1] - sd.v[k]) <= opts.max_reproj_px + 1e-4
            k += 1
    assert k >= 20 * opts.min_track


def test_triangulation_cache_is_keyed_by_poses(tmp_path, room):
    cache = tmp_path / "sparse_depth.npz"
    a, cached_a = load_or_triangulate(room, cache)
    b, cached_b = load_or_triangulate(room, cache)
    assert not cached_a and cached_b and np.array_equal(a.z, b.z) and cache.is_file()
    moved = dataclasses.replace(room, frames=[dataclasses.replace(room.frames[0], c2w=room.frames[0].c2w + 0)])
    moved.frames += room.frames[1:]
    moved.frames[0].c2w[0, 3] += 0.01
    _, cached_c = load_or_triangulate(moved, cache)
    assert not cached_c


def test_ray_termination_loss_moves_the_weight_peak_to_the_target():
    """One ray through a 1-D density grid (64 cells over 4 m): a few Adam steps put the peak at the target."""
    n = 64
    t = torch.linspace(0, 4, n + 1)
    t_starts, t_ends = t[:-1], t[1:]
    ray_indices = torch.zeros(n, dtype=torch.int64)
    raw = torch.full((n,), -1.0, requires_grad=True)
    raw.data[10] = 3.0  # a floater at 0.7 m
    target = torch.tensor([2.5])
    opt = torch.optim.Adam([raw], lr=0.2)

    def weights() -> torch.Tensor:
        return render_weights(t_starts, t_ends, torch.nn.functional.softplus(raw), ray_indices, 1)

    assert abs(float(t_starts[weights().argmax()]) - 2.5) > 1.0
    for _ in range(60):
        loss = ray_termination_loss(t_starts, t_ends, ray_indices, weights(), target, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = weights().detach()
    peak = 0.5 * float(t_starts[w.argmax()] + t_ends[w.argmax()])
    assert abs(peak - 2.5) <= 0.1, peak
    assert float(w[8:13].sum()) < 0.05  # the floater is gone
    # no target: exactly 0, finite gradient
    zero = ray_termination_loss(t_starts, t_ends, ray_indices, weights(), torch.tensor([0.0]), 0.1)
    assert float(zero.detach()) == 0.0


def test_distortion_loss_matches_the_double_sum():
    g = torch.Generator().manual_seed(0)
    counts = [3, 0, 5, 1]
    t_starts, t_ends, w, ri = [], [], [], []
    for r, c in enumerate(counts):
        edges = torch.sort(torch.rand(c + 1, generator=g) * 3).values
        t_starts.append(edges[:-1])
        t_ends.append(edges[1:])
        w.append(torch.rand(c, generator=g) / max(c, 1))
        ri.append(torch.full((c,), r, dtype=torch.int64))
    ts, te, ww, rr = (torch.cat(x) for x in (t_starts, t_ends, w, ri))
    expected = 0.0
    for r in range(len(counts)):
        m = 0.5 * (ts + te)[rr == r] / 2.0
        wr = ww[rr == r]
        expected += float((wr[:, None] * wr[None] * (m[:, None] - m[None]).abs()).sum())
        expected += float((wr**2 * (te - ts)[rr == r] / 2.0).sum() / 3)
    got = distortion_loss(ts, te, rr, ww, len(counts), scale=2.0)
    assert abs(float(got) - expected / len(counts)) < 1e-5


def test_fit_without_keypoint_matches_warns_once_and_trains(tmp_path):
    from labelfield.train.trainer import fit

    scene = toy_scene(6, 32, 24, seed=0, binary=True, room=False)  # tiny, textureless: nothing triangulates
    cfg = FitConfig(out=tmp_path / "run", labelled="every:3", steps=6, batch_rays=128, progress=False)
    small = dict(log2_table_size=12, n_levels=4, max_resolution=64, occupancy_resolution=16, hidden_dim=16)
    cfg = dataclasses.replace(
        cfg, model_config=dataclasses.replace(cfg.model_config, **small), keypoint_depth="on", distortion_weight=0.01
    )
    buf = io.StringIO()
    result = fit(cfg, scene=scene, console=Console(file=buf, width=200))
    warnings = [line for line in buf.getvalue().splitlines() if "warning" in line and "keypoint" in line]
    assert len(warnings) == 1, buf.getvalue()
    assert result.step == 6 and np.isfinite(result.loss)
    assert (tmp_path / "run" / "sparse_depth.npz").is_file()


def test_render_rays_returns_samples_only_when_asked():
    from labelfield.models import build_model

    cfg = FitConfig().model_config
    cfg = dataclasses.replace(cfg, log2_table_size=10, n_levels=4, max_resolution=32, occupancy_resolution=16)
    model = build_model("ngp", cfg, np.array([[-1.0, -1, -1], [1, 1, 1]]), 3, None)
    o = torch.zeros(4, 3)
    d = torch.nn.functional.normalize(torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    plain = model.render_rays(o, d)
    full = model.render_rays(o, d, return_samples=True)
    assert "weights" not in plain
    assert full["weights"].shape == full["t_starts"].shape == full["ray_indices"].shape
    acc = torch.zeros(4).index_add_(0, full["ray_indices"], full["weights"])
    assert torch.allclose(acc, full["opacity"], atol=1e-5)


def test_near_camera_gradient_scaling_keeps_the_forward_pass():
    from labelfield.models import build_model

    base = FitConfig().model_config
    base = dataclasses.replace(base, log2_table_size=10, n_levels=4, max_resolution=32, occupancy_resolution=16)
    box = np.array([[-1.0] * 3, [1.0] * 3])
    o = torch.zeros(8, 3)
    d = torch.nn.functional.normalize(torch.randn(8, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    grads, outs = [], []
    for r in (0.0, 5.0):  # 5 m: every sample in the 2 m box is "near", its gradient scaled by (t / 5)^2 < 0.12
        torch.manual_seed(0)
        model = build_model("ngp", dataclasses.replace(base, near_grad_radius=r), box, 3, None)
        model.train()
        torch.manual_seed(1)  # same stratified jitter
        out = model.render_rays(o, d, background=torch.zeros(3))
        out["rgb"].sum().backward()
        outs.append(out["rgb"].detach())
        grads.append(float(sum(p.grad.abs().sum() for p in model.density_head.parameters())))
    assert torch.allclose(outs[0], outs[1])
    assert 0 < grads[1] < 0.2 * grads[0]


def test_keypoint_depth_auto_is_on_exactly_without_depth_supervision():
    from labelfield.train.geometry_priors import _keypoints_wanted

    scene = toy_scene(2, 8, 6)
    assert _keypoints_wanted(FitConfig(depth_loss=False), scene, None)
    assert not _keypoints_wanted(FitConfig(depth_loss=True), scene, None)
