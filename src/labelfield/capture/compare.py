"""Compare captured poses with ground truth: similarity alignment (Umeyama) and per-frame errors.

Used by the tests and by anyone checking a capture against known poses (synthetic scenes, RGB-D rigs).
"""

from __future__ import annotations

import numpy as np

from labelfield.capture.normalize import Similarity


def umeyama(src: np.ndarray, dst: np.ndarray) -> Similarity:
    """Least-squares similarity with dst ~ scale * R @ src + t for point sets (N, 3) (Umeyama 1991)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1.0
    R = U @ D @ Vt
    scale = float(np.trace(np.diag(S) @ D) / max((a**2).sum() / len(src), 1e-18))
    return Similarity(scale, R, md - scale * R @ ms)


def align_poses(src: np.ndarray, dst: np.ndarray) -> Similarity:
    """The similarity taking cameras `src` (N, 4, 4) onto `dst` (N, 4, 4) (OpenCV c2w): the rotation from the
    orientations (the one closest to all R_dst R_src^T), then scale and translation from the centres by least
    squares. Use it, not `umeyama` on the centres, to move a scene into another's frame: on a camera path that
    is nearly a line or a plane the centres leave rotations about it free (a 60-degree arc of level cameras
    came out tilted by 22-32 degrees), and the orientations do not."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    U, _, Vt = np.linalg.svd(np.einsum("nij,nkj->ik", dst[:, :3, :3], src[:, :3, :3]))  # sum R_dst R_src^T
    R = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    a = src[:, :3, 3] @ R.T
    b = dst[:, :3, 3]
    a0, b0 = a - a.mean(0), b - b.mean(0)
    scale = float((a0 * b0).sum() / max((a0**2).sum(), 1e-18))
    return Similarity(scale, R, b.mean(0) - scale * a.mean(0))


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Angle in degrees of rotation matrices (..., 3, 3)."""
    c = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def pose_errors(c2w_est: np.ndarray, c2w_gt: np.ndarray, scene_size: float | None = None) -> dict:
    """Per-frame errors of estimated poses (N, 4, 4) against ground truth (N, 4, 4), both OpenCV c2w.

    Returns `rot_deg` (N,): angle between each frame's rotation relative to frame 0 in the estimate and in the
    ground truth (gauge-free, accumulates drift); `step_rot_deg` (N-1,): the same for the rotation between
    consecutive frames; `aligned_rot_deg` (N,): rotation error after the one world rotation that best aligns
    all frames (the chordal mean of R_gt R_est^T: drift split both ways);
    `pos` (N,): camera-centre distance after the best similarity from the estimate onto the ground truth,
    divided by `scene_size` (default: the longest side of the box of ground-truth centres); `alignment`.
    """
    est, gt = np.asarray(c2w_est, np.float64), np.asarray(c2w_gt, np.float64)
    rel_est = np.einsum("ji,njk->nik", est[0, :3, :3], est[:, :3, :3])  # R_0^T R_i: the gauge cancels
    rel_gt = np.einsum("ji,njk->nik", gt[0, :3, :3], gt[:, :3, :3])
    rot = rotation_angle_deg(np.einsum("nij,nkj->nik", rel_est, rel_gt))
    step = rotation_angle_deg(
        np.einsum("nji,njk->nik", rel_est[:-1], rel_est[1:])
        @ np.swapaxes(np.einsum("nji,njk->nik", rel_gt[:-1], rel_gt[1:]), -1, -2)
    )
    sim = umeyama(est[:, :3, 3], gt[:, :3, 3])
    W = align_poses(est, gt).R  # the rotation closest to all R_gt R_est^T
    aligned = rotation_angle_deg(np.einsum("ij,njk,nlk->nil", W, est[:, :3, :3], gt[:, :3, :3]))
    size = scene_size if scene_size is not None else float(np.ptp(gt[:, :3, 3], axis=0).max())
    pos = np.linalg.norm(sim.points(est[:, :3, 3]) - gt[:, :3, 3], axis=1) / max(size, 1e-12)
    return {
        "rot_deg": rot,
        "step_rot_deg": step,
        "aligned_rot_deg": aligned,
        "pos": pos,
        "scene_size": size,
        "alignment": sim,
    }
