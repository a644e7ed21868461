"""Camera pose refinement (train/camera_opt.py): the exponential map, rays vs refined poses, --pose-refine auto,
coarse-to-fine weights, the gradient's direction on a fitted field, resume and load_run with refined poses."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
from dataclasses import replace

import numpy as np
import pytest
import torch

from labelfield.cameras import frame_rays
from labelfield.run import checkpoint_path, load_run
from labelfield.scene import Scene
from labelfield.synth.toy import toy_scene
from labelfield.train.camera_opt import (
    CameraOptimizer,
    coarse_to_fine_weights,
    resolve_pose_refine,
    so3_exp,
)
from labelfield.train.checkpoint import load_checkpoint
from labelfield.train.config import FitConfig
from labelfield.train.trainer import fit


def small_config(out, **kw) -> FitConfig:
    """8 frames of 32x24 on one core (as tests/test_train.py)."""
    cfg = FitConfig(out=out, labelled="every:4", steps=200, batch_rays=256, log_every=25, progress=False, threads=1)
    small = dict(log2_table_size=14, n_levels=8, max_resolution=256, occupancy_resolution=32, hidden_dim=32)
    small.update(samples_per_diagonal=128, max_samples_per_ray=32)
    return dataclasses.replace(cfg, model_config=dataclasses.replace(cfg.model_config, **small), **kw)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return toy_scene(8, 32, 24, seed=0, binary=True, room=False)


def test_zero_correction_is_identity(scene):
    cam = CameraOptimizer(len(scene))
    f = scene.frames[3]
    o, d, _ = frame_rays(f.intrinsics, f.c2w)
    o2, d2 = cam.apply(o, d, torch.full((o.shape[0],), 3))
    assert torch.equal(o2, o) and torch.equal(d2, d)
    np.testing.assert_array_equal(cam.refined_poses(scene.poses()), scene.poses())
    assert float(cam.penalty().detach()) == 0.0


def test_exp_map_and_corrected_rays_match_refined_poses(scene):
    theta = 0.3
    rot = so3_exp(torch.tensor([[0.0, 0.0, theta]], dtype=torch.float64))[0].numpy()
    c, s = math.cos(theta), math.sin(theta)
    np.testing.assert_allclose(rot, [[c, -s, 0], [s, c, 0], [0, 0, 1]], atol=1e-12)

    cam = CameraOptimizer(len(scene))
    with torch.no_grad():
        cam.adjustment.copy_(torch.randn(len(scene), 6, generator=torch.Generator().manual_seed(0)) * 0.05)
    refined = cam.refined_poses(scene.poses())
    for i in (1, 6):
        f = scene.frames[i]
        o, d, zs = frame_rays(f.intrinsics, f.c2w)
        o2, d2 = cam.apply(o, d, torch.full((o.shape[0],), i))
        o3, d3, zs3 = frame_rays(f.intrinsics, refined[i])  # rays of the refined camera
        torch.testing.assert_close(o2, o3, atol=1e-5, rtol=0)
        torch.testing.assert_close(d2, d3, atol=1e-5, rtol=0)
        torch.testing.assert_close(zs, zs3)  # z-depth factor: intrinsics only
    np.testing.assert_allclose(
        refined[:, :3, :3] @ refined[:, :3, :3].transpose(0, 2, 1), np.eye(3)[None].repeat(8, 0), atol=1e-12
    )


def test_auto_is_on_for_estimated_poses_only(scene, tmp_path):
    assert resolve_pose_refine("auto", scene)[0] is False  # in memory (synthetic, exact poses)
    assert resolve_pose_refine("on", scene)[0] is True and resolve_pose_refine("off", scene)[0] is False
    (tmp_path / "capture.json").write_text("{}")
    on, msg = resolve_pose_refine("auto", replace(scene, root=tmp_path, format="transforms"))
    assert on and "capture.json" in msg
    assert resolve_pose_refine("auto", replace(scene, format="colmap"))[0] is True
    assert resolve_pose_refine("auto", replace(scene, format="replica"))[0] is False
    assert FitConfig(pose_refine=True).pose_refine == "on"  # type: ignore[arg-type]


def test_coarse_to_fine_weights():
    w0 = coarse_to_fine_weights(0.0, 8, 0.5)
    assert w0[0] == 1 and torch.all(w0[1:] == 0)
    mid = coarse_to_fine_weights(0.25, 8, 0.5)
    assert torch.all(mid[:-1] >= mid[1:]) and 0 < mid.sum() < 8
    assert torch.all(coarse_to_fine_weights(0.5, 8, 0.5) == 1) and torch.all(coarse_to_fine_weights(0.1, 8, 0) == 1)


def test_pose_gradient_points_back_to_the_true_pose(scene, tmp_path):
    """On a field fitted with exact poses, a frame turned by 3 degrees gets a rotation gradient (photometric
    loss over the whole frame) that points back: descent moves the correction towards undoing the turn."""
    fit(small_config(tmp_path / "run", steps=150, pose_refine="off"), scene=scene)
    run = load_run(tmp_path / "run", scene=scene)
    assert not run.poses_refined and run.scene is scene
    cosines = []
    for i, axis in ((1, (1.0, 0.0, 0.0)), (2, (0.0, 1.0, 0.0)), (5, (0.0, 0.0, 1.0)), (6, (0.6, 0.8, 0.0))):
        f = scene.frames[i]
        cam = CameraOptimizer(len(scene))
        turn = torch.tensor(axis) * math.radians(3.0)
        with torch.no_grad():
            cam.adjustment[i, 3:] = turn
        o, d, _ = frame_rays(f.intrinsics, f.c2w)
        o2, d2 = cam.apply(o, d, torch.full((o.shape[0],), i))
        out = run.model.render_rays(o2, d2)
        target = torch.from_numpy(f.load_rgb()).float().reshape(-1, 3) / 255.0
        ((out["rgb"] - target) ** 2).mean().backward()
        g = cam.adjustment.grad[i, 3:]
        cosines.append(float(torch.dot(g, turn) / (g.norm() * turn.norm())))  # -grad . (-turn)
    assert all(c > 0 for c in cosines) and np.mean(cosines) > 0.3, cosines


def test_resume_restores_corrections_and_load_run_uses_refined_poses(tmp_path, scene):
    kw = dict(steps=30, checkpoint_every=15, keep_checkpoints=0, pose_refine="on", lr_warmup_steps=0)
    full = fit(small_config(tmp_path / "full", **kw), scene=scene)
    assert full.step == 30
    first = load_checkpoint(checkpoint_path(tmp_path / "full", 15))
    assert "camera_opt" in first and first["poses"].shape == (8, 4, 4)
    # A second run stopped at step 15 (Ctrl-C), then resumed: same corrections as the uninterrupted run.
    part = tmp_path / "part"

    def interrupt(step: int) -> None:
        if step == 15:
            os.kill(os.getpid(), signal.SIGINT)

    assert fit(small_config(part, **kw), scene=scene, on_step=interrupt).interrupted
    resumed = fit(dataclasses.replace(small_config(None, **kw), resume=part), scene=scene)
    assert resumed.step == 30
    a = load_checkpoint(checkpoint_path(tmp_path / "full", 30))
    b = load_checkpoint(checkpoint_path(part, 30))
    assert torch.equal(a["camera_opt"]["adjustment"], b["camera_opt"]["adjustment"])
    assert float(a["camera_opt"]["adjustment"].abs().max()) > 0  # the corrections moved
    run = load_run(tmp_path / "full", scene=scene)
    assert run.poses_refined
    np.testing.assert_array_equal(run.given_poses, scene.poses())  # the caller's scene is untouched
    np.testing.assert_allclose(run.scene.poses(), a["poses"].numpy())
    assert not np.allclose(run.scene.poses(), scene.poses())
