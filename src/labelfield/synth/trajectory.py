"""A smooth, hand-held-like camera path through the room's free zone (OpenCV camera-to-world poses).

The camera walks once round a small loop inside the free zone while turning once round (yaw goes through
360 degrees), looking outwards across the room, so the sequence sees every wall and every piece of furniture
and neighbouring frames overlap strongly. Height, pitch, roll and the path itself wobble with a few
low-frequency sines with seeded phases (a person holding a phone), never with per-frame noise, so the motion
stays smooth. World: z up, metres (see room.py).
"""

from __future__ import annotations

import numpy as np


def _wobble(rng: np.random.Generator, s: np.ndarray, amplitude: float, freqs=(1, 2, 3)) -> np.ndarray:
    """Sum of sines over the path parameter s in [0, 1): periodic, smooth, about +-amplitude."""
    out = np.zeros_like(s)
    for f in freqs:
        out += rng.uniform(0.5, 1.0) / len(freqs) * np.sin(2 * np.pi * f * s + rng.uniform(0, 2 * np.pi))
    return amplitude * out


def camera_pose(eye: np.ndarray, yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """OpenCV c2w (4, 4) at `eye` looking along (yaw about z from +x, pitch up from horizontal), rolled."""
    fwd = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    cr, sr = np.cos(roll), np.sin(roll)
    right, down = cr * right + sr * down, -sr * right + cr * down  # turn the image about the optical axis
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([right, down, fwd], 1)
    c2w[:3, 3] = eye
    return c2w


def room_trajectory(
    n_frames: int,
    free_zone: tuple[float, float],
    seed: int = 0,
    height: tuple[float, float] = (1.1, 1.7),
    pitch_deg: tuple[float, float] = (-24.0, 6.0),
) -> np.ndarray:
    """(n_frames, 4, 4) OpenCV c2w poses inside |x| < free_zone[0], |y| < free_zone[1].

    Example:
        >>> poses = room_trajectory(80, (2.0, 1.2), seed=0)
        >>> poses.shape
        (80, 4, 4)
    """
    rng = np.random.default_rng(seed + 7919)  # its own stream: the room's layout does not shift the path
    s = np.arange(n_frames) / max(n_frames, 1)
    phase = rng.uniform(0, 2 * np.pi)
    # Loop at 45% of the free zone plus a wobble of up to 15%: the camera stays inside it.
    hx, hy = free_zone
    x = 0.45 * hx * np.cos(2 * np.pi * s + phase) + _wobble(rng, s, 0.15 * hx, (2, 3))
    y = 0.45 * hy * np.sin(2 * np.pi * s + phase) + _wobble(rng, s, 0.15 * hy, (2, 3))
    z = (height[0] + height[1]) / 2 + _wobble(rng, s, (height[1] - height[0]) / 2, (1, 2))
    direction = 1 if rng.random() < 0.5 else -1
    yaw = phase + direction * 2 * np.pi * s + _wobble(rng, s, np.deg2rad(12), (2, 3, 5))
    mid, half = np.deg2rad(np.mean(pitch_deg)), np.deg2rad(pitch_deg[1] - pitch_deg[0]) / 2
    pitch = mid + _wobble(rng, s, half, (1, 2, 3))
    roll = _wobble(rng, s, np.deg2rad(3), (2, 4))
    return np.stack([camera_pose(np.array([x[i], y[i], z[i]]), yaw[i], pitch[i], roll[i]) for i in range(n_frames)])
