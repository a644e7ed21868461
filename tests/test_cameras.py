"""Camera conventions: a known 3D point lands on the same pixel whichever convention carries the camera."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from labelfield.cameras import (
    Intrinsics,
    c2w_to_colmap,
    c2w_to_w2c,
    colmap_to_c2w,
    frame_rays,
    is_valid_pose,
    opencv_to_opengl,
    opengl_to_opencv,
    project,
    qvec_to_rotmat,
    rotmat_to_qvec,
    unproject_depth,
    w2c_to_c2w,
)
from labelfield.synth.toy import look_at

INTR = Intrinsics(fx=120.0, fy=110.0, cx=31.5, cy=23.5, width=64, height=48)
C2W = look_at(np.array([1.0, -2.0, 1.5]), np.array([0.1, 0.2, 0.4]))
POINT = np.array([[0.3, 0.1, 0.6]])


def test_hand_computed_projection() -> None:
    # camera at the origin looking along +z: u = fx x / z + cx, v = fy y / z + cy
    uv, z = project(np.array([[1.0, 2.0, 4.0]]), INTR, np.eye(4))
    np.testing.assert_allclose(uv[0], [120 * 0.25 + 31.5, 110 * 0.5 + 23.5])
    assert z[0] == 4.0


def test_opengl_c2w_projects_to_the_same_pixel() -> None:
    uv, z = project(POINT, INTR, C2W)
    gl = opencv_to_opengl(C2W)
    # OpenGL camera: looks along -z, +y up; the image row grows downwards, so v uses -y
    p = (c2w_to_w2c(gl) @ np.append(POINT[0], 1.0))[:3]
    depth = -p[2]
    u_gl, v_gl = INTR.fx * p[0] / depth + INTR.cx, INTR.cy - INTR.fy * p[1] / depth
    np.testing.assert_allclose([u_gl, v_gl], uv[0], atol=1e-9)
    assert depth == pytest.approx(z[0])
    np.testing.assert_allclose(gl[:3, 3], C2W[:3, 3])  # same camera centre
    np.testing.assert_allclose(opengl_to_opencv(gl), C2W, atol=1e-15)


def test_colmap_w2c_quaternion_and_half_pixel_project_to_the_same_pixel() -> None:
    uv, _ = project(POINT, INTR, C2W)
    q, t = c2w_to_colmap(C2W)
    assert q[0] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
    p = qvec_to_rotmat(q) @ POINT[0] + t  # COLMAP: world -> camera, OpenCV axes
    cx_h, cy_h = INTR.to_half_pixel()  # COLMAP's pixel centres are at +0.5
    u_h, v_h = INTR.fx * p[0] / p[2] + cx_h, INTR.fy * p[1] / p[2] + cy_h
    np.testing.assert_allclose([u_h - 0.5, v_h - 0.5], uv[0], atol=1e-9)
    np.testing.assert_allclose(colmap_to_c2w(q, t), C2W, atol=1e-12)
    back = Intrinsics.from_half_pixel(INTR.fx, INTR.fy, cx_h, cy_h, 64, 48)
    assert back == INTR


def test_known_quaternion() -> None:
    # 90 degrees about z: x -> y
    q = np.array([np.cos(np.pi / 4), 0.0, 0.0, np.sin(np.pi / 4)])
    R = qvec_to_rotmat(q)
    np.testing.assert_allclose(R, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(rotmat_to_qvec(R), q, atol=1e-12)
    # the OpenGL <-> OpenCV flip diag(1, -1, -1) is a half turn about x
    np.testing.assert_allclose(rotmat_to_qvec(np.diag([1.0, -1.0, -1.0])), [0, 1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(rotmat_to_qvec(np.eye(3)), [1, 0, 0, 0], atol=1e-12)


def test_w2c_inverse_and_validity() -> None:
    np.testing.assert_allclose(w2c_to_c2w(c2w_to_w2c(C2W)), C2W, atol=1e-12)
    np.testing.assert_allclose(c2w_to_w2c(C2W) @ C2W, np.eye(4), atol=1e-12)
    assert is_valid_pose(C2W) and not is_valid_pose(np.full((4, 4), np.nan)) and not is_valid_pose(np.eye(3))


def test_rays_pass_through_the_projected_point() -> None:
    uv, z = project(POINT, INTR, C2W)
    u, v = torch.tensor([uv[0, 0]]), torch.tensor([uv[0, 1]])
    from labelfield.cameras import rays_from_pixels

    k = torch.tensor([[INTR.fx, INTR.fy, INTR.cx, INTR.cy]], dtype=torch.float64)
    o, d, zs = rays_from_pixels(u.double(), v.double(), k, torch.from_numpy(C2W)[None])
    t = z[0] / zs[0].item()  # distance along the ray to z-depth z
    np.testing.assert_allclose((o + t * d)[0].numpy(), POINT[0], atol=1e-9)
    # the per-frame ray grid is row-major: ray (row v, column u) sits at v * W + u
    o, d, _ = frame_rays(INTR, C2W)
    assert d.shape == (64 * 48, 3)
    pix = np.array([[10.0, 20.0]])
    depth = np.full((48, 64), 2.0)
    pts = unproject_depth(depth, INTR, C2W)
    uv2, z2 = project(pts[20:21, 10], INTR, C2W)
    np.testing.assert_allclose(uv2, pix, atol=1e-9)
    ray = d[20 * 64 + 10].double().numpy()
    direction = pts[20, 10] - C2W[:3, 3]
    np.testing.assert_allclose(ray, direction / np.linalg.norm(direction), atol=1e-6)


def test_scaled_intrinsics_keep_the_point_on_the_same_spot() -> None:
    uv, _ = project(POINT, INTR, C2W)
    half = INTR.scaled(0.5)
    assert (half.width, half.height) == (32, 24) and half.cx == 15.5  # still centred
    uv_half, _ = project(POINT, half, C2W)
    # pixel edges scale: the image point at u (pixel-centre coordinates) moves to (u + 0.5) / 2 - 0.5
    np.testing.assert_allclose(uv_half[0], (uv[0] + 0.5) / 2 - 0.5, atol=1e-9)
    f = Intrinsics.from_fov_x(np.pi / 2, 64, 48)
    np.testing.assert_allclose([f.fx, f.fy, f.cx, f.cy], [32.0, 32.0, 31.5, 23.5])


@pytest.mark.parametrize("fmt", ["replica", "transforms"])
def test_written_scene_projects_the_point_to_the_same_pixel(fmt: str, tmp_path: Path) -> None:
    from labelfield.formats import load_scene, write_scene
    from labelfield.synth.toy import toy_scene

    scene = toy_scene(3, 32, 24)
    back = load_scene(write_scene(scene, tmp_path / fmt, fmt))
    for a, b in zip(scene.frames, back.frames):
        np.testing.assert_allclose(project(POINT, b.intrinsics, b.c2w)[0], project(POINT, a.intrinsics, a.c2w)[0])
    if fmt == "transforms":  # and by hand, from the file, in nerfstudio's own convention
        d = json.loads((tmp_path / fmt / "transforms.json").read_text())
        gl = np.array(d["frames"][1]["transform_matrix"])
        p = np.linalg.inv(gl) @ np.append(POINT[0], 1.0)
        u = d["fl_x"] * p[0] / -p[2] + d["cx"] - 0.5
        v = -d["fl_y"] * p[1] / -p[2] + d["cy"] - 0.5
        np.testing.assert_allclose([u, v], project(POINT, scene.frames[1].intrinsics, scene.frames[1].c2w)[0][0])
