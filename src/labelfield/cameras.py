"""Camera models and conventions. This is the ONLY module where a convention flips.

Notation (fixed for the whole package):
    Internal convention: **OpenCV camera-to-world** (`c2w`, a (4, 4) float64 array).
        camera axes: +x right, +y down, +z forward (looking direction).
    Pixel coordinates: OpenCV's — the centre of pixel (column u, row v) is at (u, v), integers.
        So a centred principal point is cx = (W - 1) / 2.
    K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] maps camera points to pixels: (u, v) = (fx x/z + cx, fy y/z + cy).

Other conventions and how they come in (each converter below says the flip it does):
    OpenGL / nerfstudio / instant-ngp / Blender c2w: +x right, +y up, camera looks along -z.
    Mitsuba sensor to_world: +x left, +y up, camera looks along +z.
    COLMAP / ScanNet extrinsics: OpenCV axes; COLMAP stores world-to-camera (w2c) as quaternion + translation.
    ARKit (Record3D, Polycam): camera axes are OpenGL's; c2w. Record3D stores [qx, qy, qz, qw, tx, ty, tz];
        Polycam stores the 3x4 matrix in a world with +y up, which nerfstudio (and we) turn to +z up.
    Pixel centres at +0.5 (COLMAP, nerfstudio, instant-ngp): the centre of pixel u is at u + 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where rays are built, so readers and exporters start fast
    import torch

# diag(1, -1, -1): negating the camera's y and z axes turns OpenGL camera axes into OpenCV ones and back.
_GL_CV_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in the internal (OpenCV, integer pixel centre) convention.

    `distortion` holds OpenCV's (k1, k2, p1, p2[, k3]) when the source had any; rays ignore it (rectify first).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: tuple[float, ...] | None = None

    def K(self) -> np.ndarray:
        """(3, 3) float64 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, factor: float) -> Intrinsics:
        """Intrinsics of the image resized by `factor` (0.5 = half size).

        Pixel centres sit at integers, so the principal point scales about -0.5, the image's outer edge.
        """
        return self.resized(round(self.width * factor), round(self.height * factor))

    def resized(self, w: int, h: int) -> Intrinsics:
        """Intrinsics of the image resized to w x h (pixel centres at integers, as in `scaled`)."""
        sx, sy = w / self.width, h / self.height
        return replace(
            self,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=w,
            height=h,
        )

    @staticmethod
    def from_fov_x(fov_x: float, width: int, height: int) -> Intrinsics:
        """Centred intrinsics from a horizontal field of view in radians (fx = fy)."""
        f = 0.5 * width / np.tan(0.5 * fov_x)
        return Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2, width, height)

    # --- principal point conventions -------------------------------------------------------------
    @staticmethod
    def from_half_pixel(
        fx: float, fy: float, cx: float, cy: float, width: int, height: int, distortion=None
    ) -> Intrinsics:
        """From a source whose pixel centres are at +0.5 (COLMAP, nerfstudio, instant-ngp): shift cx, cy by -0.5."""
        return Intrinsics(fx, fy, cx - 0.5, cy - 0.5, int(width), int(height), distortion)

    def to_half_pixel(self) -> tuple[float, float]:
        """(cx, cy) for a destination whose pixel centres are at +0.5: shift by +0.5."""
        return self.cx + 0.5, self.cy + 0.5


def from_half_pixel_uv(uv: np.ndarray) -> np.ndarray:
    """Pixel coordinates (..., 2) from a source with pixel centres at +0.5 (COLMAP keypoints) -> internal."""
    return np.asarray(uv, np.float64) - 0.5


# --- pose conventions -----------------------------------------------------------------------------
def opengl_to_opencv(c2w_gl: np.ndarray) -> np.ndarray:
    """OpenGL c2w (nerfstudio, instant-ngp, Blender) -> OpenCV c2w: flip the camera's y and z axes.

    Right-multiplying flips the camera-frame axes (columns 1 and 2), leaving the camera centre in place.
    """
    return np.asarray(c2w_gl, np.float64) @ _GL_CV_FLIP


def opencv_to_opengl(c2w_cv: np.ndarray) -> np.ndarray:
    """OpenCV c2w -> OpenGL c2w: the same flip (it is its own inverse)."""
    return np.asarray(c2w_cv, np.float64) @ _GL_CV_FLIP


def opencv_to_mitsuba(c2w_cv: np.ndarray) -> np.ndarray:
    """OpenCV c2w -> Mitsuba sensor `to_world`: negate the camera's x and y axes.

    Mitsuba's camera looks along +z with +y up and +x to the image's *left* (its `look_at` builds
    [left, up, forward]), so OpenCV's right/down axes are its -x/-y.
    """
    return np.asarray(c2w_cv, np.float64) @ np.diag([-1.0, -1.0, 1.0, 1.0])


# ARKit, the tracking behind the iOS capture apps, reports camera-to-world poses whose camera axes are OpenGL's
# (+x right, +y up, looking along -z); its world is gravity-aligned with +y up. The conventions below come from
# public readers (Record3D's author in its issue tracker, viser's Record3D loader, nerfstudio's
# process_data/record3d_utils.py and polycam_utils.py); they were not checked against a real device export.
def arkit_to_opencv(c2w_arkit: np.ndarray) -> np.ndarray:
    """ARKit c2w (OpenGL camera axes) -> OpenCV c2w: flip the camera's y and z axes (the world stays)."""
    return np.asarray(c2w_arkit, np.float64) @ _GL_CV_FLIP


def opencv_to_arkit(c2w_cv: np.ndarray) -> np.ndarray:
    """OpenCV c2w -> ARKit c2w: the same flip (it is its own inverse)."""
    return np.asarray(c2w_cv, np.float64) @ _GL_CV_FLIP


def record3d_to_opencv(pose: np.ndarray) -> np.ndarray:
    """Record3D pose [qx, qy, qz, qw, tx, ty, tz] (ARKit c2w, quaternion scalar *last*) -> (4, 4) OpenCV c2w.

    No world rotation: Record3D's world is its own (per its author the first pose is the identity, so it need
    not be gravity-aligned), and nerfstudio and viser use it as it is.
    """
    p = np.asarray(pose, np.float64)
    c2w = np.eye(4)
    c2w[:3, :3] = qvec_to_rotmat(p[[3, 0, 1, 2]])
    c2w[:3, 3] = p[4:7]
    return arkit_to_opencv(c2w)


def opencv_to_record3d(c2w_cv: np.ndarray) -> np.ndarray:
    """OpenCV c2w -> Record3D pose (7,) [qx, qy, qz, qw, tx, ty, tz] (the inverse of `record3d_to_opencv`)."""
    c2w = opencv_to_arkit(c2w_cv)
    w, x, y, z = rotmat_to_qvec(c2w[:3, :3])
    return np.array([x, y, z, w, *c2w[:3, 3]])


# Polycam's world has +y up (ARKit's). nerfstudio's polycam_utils reorders the matrix rows to (z, x, y), a
# proper rotation of the world that puts up on +z; we do the same, so a Polycam scene read here has the poses
# `ns-process-data polycam` gives, and +z up like `labelfield capture`.
_Y_UP_TO_Z_UP = np.array([[0.0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])


def polycam_to_opencv(t: np.ndarray) -> np.ndarray:
    """Polycam camera matrix (3, 4) rows t_00..t_23 (ARKit c2w, world +y up) -> (4, 4) OpenCV c2w, world +z up."""
    c2w = np.eye(4)
    c2w[:3, :4] = np.asarray(t, np.float64).reshape(3, 4)
    return _Y_UP_TO_Z_UP @ arkit_to_opencv(c2w)


def opencv_to_polycam(c2w_cv: np.ndarray) -> np.ndarray:
    """OpenCV c2w (world +z up) -> Polycam (3, 4) camera matrix (the inverse of `polycam_to_opencv`)."""
    return opencv_to_arkit(_Y_UP_TO_Z_UP.T @ np.asarray(c2w_cv, np.float64))[:3, :4]


def w2c_to_c2w(w2c: np.ndarray) -> np.ndarray:
    """World-to-camera -> camera-to-world (rigid inverse; the axes stay OpenCV)."""
    w2c = np.asarray(w2c, np.float64)
    c2w = np.eye(4)
    R, t = w2c[:3, :3], w2c[:3, 3]
    c2w[:3, :3] = R.T
    c2w[:3, 3] = -R.T @ t
    return c2w


def c2w_to_w2c(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world -> world-to-camera (rigid inverse)."""
    return w2c_to_c2w(c2w)


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """COLMAP quaternion (w, x, y, z) -> (3, 3) rotation matrix."""
    w, x, y, z = np.asarray(qvec, np.float64) / np.linalg.norm(qvec)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> COLMAP quaternion (w, x, y, z) with w >= 0."""
    R = np.asarray(R, np.float64)
    K = (
        np.array(
            [
                [R[0, 0] - R[1, 1] - R[2, 2], 0, 0, 0],
                [R[1, 0] + R[0, 1], R[1, 1] - R[0, 0] - R[2, 2], 0, 0],
                [R[2, 0] + R[0, 2], R[2, 1] + R[1, 2], R[2, 2] - R[0, 0] - R[1, 1], 0],
                [R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1], R[0, 0] + R[1, 1] + R[2, 2]],
            ]
        )
        / 3.0
    )
    vals, vecs = np.linalg.eigh(K)
    q = vecs[[3, 0, 1, 2], np.argmax(vals)]
    return -q if q[0] < 0 else q


def colmap_to_c2w(qvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """COLMAP image pose (w2c as quaternion + translation, OpenCV axes) -> OpenCV c2w."""
    w2c = np.eye(4)
    w2c[:3, :3] = qvec_to_rotmat(qvec)
    w2c[:3, 3] = tvec
    return w2c_to_c2w(w2c)


def c2w_to_colmap(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV c2w -> COLMAP (qvec, tvec) of the w2c."""
    w2c = c2w_to_w2c(c2w)
    return rotmat_to_qvec(w2c[:3, :3]), w2c[:3, 3].copy()


def is_valid_pose(c2w: np.ndarray) -> bool:
    """True for a finite 4x4 rigid transform (rotation part orthonormal to 1e-3, last row 0 0 0 1)."""
    c2w = np.asarray(c2w)
    if c2w.shape != (4, 4) or not np.all(np.isfinite(c2w)):
        return False
    R = c2w[:3, :3]
    return bool(np.allclose(R @ R.T, np.eye(3), atol=1e-3) and np.allclose(c2w[3], [0, 0, 0, 1], atol=1e-6))


# --- projection and rays --------------------------------------------------------------------------
def project(points_world: np.ndarray, intr: Intrinsics, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points (N, 3) -> pixel coordinates (N, 2) (u, v) and depth z (N,) along the optical axis."""
    w2c = c2w_to_w2c(c2w)
    pc = points_world @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    uv = np.stack([intr.fx * pc[:, 0] / z + intr.cx, intr.fy * pc[:, 1] / z + intr.cy], -1)
    return uv, z


def unproject_depth(depth: np.ndarray, intr: Intrinsics, c2w: np.ndarray) -> np.ndarray:
    """Back-project a depth map (H, W) of z-depth in metres to world points (H, W, 3)."""
    v, u = np.meshgrid(np.arange(intr.height), np.arange(intr.width), indexing="ij")
    x = (u - intr.cx) / intr.fx * depth
    y = (v - intr.cy) / intr.fy * depth
    pc = np.stack([x, y, depth], -1)
    return pc @ np.asarray(c2w)[:3, :3].T + np.asarray(c2w)[:3, 3]


def pixel_directions(
    u: torch.Tensor, v: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor
) -> torch.Tensor:
    """Camera-frame ray directions (N, 3) with z = 1 for pixel coordinates u, v (N,) (OpenCV axes)."""
    import torch

    return torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u)], -1)


def rays_from_pixels(
    u: torch.Tensor,
    v: torch.Tensor,
    intr: torch.Tensor,
    c2w: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """World rays through pixel coordinates.

    Args:
        u, v: (N,) float pixel coordinates (pixel centres are integers).
        intr: (N, 4) fx, fy, cx, cy per ray.
        c2w: (N, 3, 4) or (N, 4, 4) OpenCV camera-to-world per ray.

    Returns:
        rays_o: (N, 3) origins, rays_d: (N, 3) unit directions, z_scale: (N,) factor from distance along
        the ray to z-depth (z = t * z_scale), used to turn rendered distance into depth maps.

    Differentiable in nothing that matters (inputs are data). Example:
        >>> o, d, zs = rays_from_pixels(u, v, intr, c2w)
    """
    import torch

    d_cam = pixel_directions(u, v, intr[:, 0], intr[:, 1], intr[:, 2], intr[:, 3])
    norm = d_cam.norm(dim=-1, keepdim=True)
    rays_d = torch.einsum("nij,nj->ni", c2w[:, :3, :3], d_cam / norm)
    rays_o = c2w[:, :3, 3].expand_as(rays_d).contiguous()
    return rays_o, rays_d, (1.0 / norm[:, 0])


def frame_rays(intr: Intrinsics, c2w: np.ndarray, device: torch.device | str = "cpu"):
    """Rays for every pixel of one frame, row-major: rays_o, rays_d (H*W, 3), z_scale (H*W,)."""
    import torch

    v, u = torch.meshgrid(
        torch.arange(intr.height, dtype=torch.float32, device=device),
        torch.arange(intr.width, dtype=torch.float32, device=device),
        indexing="ij",
    )
    n = intr.height * intr.width
    k = torch.tensor([intr.fx, intr.fy, intr.cx, intr.cy], dtype=torch.float32, device=device).expand(n, 4)
    pose = torch.as_tensor(np.asarray(c2w)[:3, :4], dtype=torch.float32, device=device).expand(n, 3, 4)
    return rays_from_pixels(u.reshape(-1), v.reshape(-1), k, pose)
