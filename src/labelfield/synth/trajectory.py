"""Smooth, hand-held-like camera paths through the room's free zone (OpenCV camera-to-world poses).

Three kinds (`make_trajectory`): "loop" (`room_trajectory`, the demo scene's, described below), "walk" (a
ScanNet-like walk-through that pans left and right) and "orbit" (round the room's centre, looking at it).

The loop walks once round a small loop inside the free zone while turning once round (yaw goes through
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


PATH_KINDS = ("loop", "walk", "orbit")


def orbit_trajectory(
    n_frames: int,
    free_zone: tuple[float, float],
    seed: int = 0,
    height: tuple[float, float] = (1.2, 1.8),
    target_height: float = 0.7,
) -> np.ndarray:
    """(n_frames, 4, 4) OpenCV c2w poses orbiting the room centre once, always looking at it.

    The camera circles an ellipse at 85% of the free zone (plus a 10% wobble) and aims at a point that wanders
    round the centre (+-70% of the free zone, at `target_height` +-0.3 m), so it sees each side of the room
    across the middle, from far, corners included.
    """
    rng = np.random.default_rng(seed + 104729)
    s = np.arange(n_frames) / max(n_frames, 1)
    phase = rng.uniform(0, 2 * np.pi)
    direction = 1 if rng.random() < 0.5 else -1
    hx, hy = free_zone
    theta = phase + direction * 2 * np.pi * s
    x = 0.85 * hx * np.cos(theta) + _wobble(rng, s, 0.1 * hx, (2, 3))
    y = 0.85 * hy * np.sin(theta) + _wobble(rng, s, 0.1 * hy, (2, 3))
    z = (height[0] + height[1]) / 2 + _wobble(rng, s, (height[1] - height[0]) / 2, (1, 2))
    tx, ty = _wobble(rng, s, 0.7 * hx, (2, 3, 5)), _wobble(rng, s, 0.7 * hy, (2, 3, 5))  # pans across the room
    tz = target_height + _wobble(rng, s, 0.3, (1, 2))
    d = np.stack([tx - x, ty - y, tz - z], -1)
    yaw, pitch = np.arctan2(d[:, 1], d[:, 0]), np.arctan2(d[:, 2], np.linalg.norm(d[:, :2], axis=1))
    roll = _wobble(rng, s, np.deg2rad(2), (2, 4))
    return np.stack([camera_pose(np.array([x[i], y[i], z[i]]), yaw[i], pitch[i], roll[i]) for i in range(n_frames)])


def _catmull_rom_closed(points: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Closed uniform Catmull-Rom spline through `points` (K, D) at parameters t in [0, 1) -> (len(t), D)."""
    k = len(points)
    u = t * k
    i = np.floor(u).astype(int)
    f = (u - i)[:, None]
    p0, p1, p2, p3 = (points[(i + j) % k] for j in (-1, 0, 1, 2))
    return 0.5 * (2 * p1 + (p2 - p0) * f + (2 * p0 - 5 * p1 + 4 * p2 - p3) * f**2 + (3 * p1 - p0 - 3 * p2 + p3) * f**3)


def walk_trajectory(
    n_frames: int,
    free_zone: tuple[float, float],
    seed: int = 0,
    height: tuple[float, float] = (1.2, 1.7),
    pitch_deg: tuple[float, float] = (-35.0, 5.0),
) -> np.ndarray:
    """(n_frames, 4, 4) OpenCV c2w poses of a person walking through the room with a phone (ScanNet-like).

    A closed smooth path through 6 seeded waypoints round the free zone (at 30-85% of it, so it wanders in and
    out); the camera looks roughly where it walks and pans +-70 degrees left and right on the way, tilts down
    to tables and up to the walls, with a small faster shake on top. Smooth, no per-frame noise.
    """
    rng = np.random.default_rng(seed + 15485863)
    k = 6
    hx, hy = free_zone
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))  # waypoints in angular order: the walk goes round the room once
    if rng.random() < 0.5:
        ang = ang[::-1]
    rad = rng.uniform(0.3, 0.85, k)
    way = np.stack([rad * hx * np.cos(ang), rad * hy * np.sin(ang)], -1)
    s = np.arange(n_frames) / max(n_frames, 1)
    xy = _catmull_rom_closed(way, s)
    xy = np.clip(xy, [-0.95 * hx, -0.95 * hy], [0.95 * hx, 0.95 * hy])  # the spline may overshoot a little
    ahead = _catmull_rom_closed(way, (s + 1e-3) % 1.0) - _catmull_rom_closed(way, s)
    heading = np.unwrap(np.arctan2(ahead[:, 1], ahead[:, 0]))
    yaw = heading + _wobble(rng, s, np.deg2rad(70), (2, 3, 5)) + _wobble(rng, s, np.deg2rad(3), (11, 13))
    z = (height[0] + height[1]) / 2 + _wobble(rng, s, (height[1] - height[0]) / 2, (1, 3))
    mid, half = np.deg2rad(np.mean(pitch_deg)), np.deg2rad(pitch_deg[1] - pitch_deg[0]) / 2
    pitch = mid + _wobble(rng, s, half, (2, 3, 5)) + _wobble(rng, s, np.deg2rad(2), (9, 12))
    roll = _wobble(rng, s, np.deg2rad(4), (2, 5, 8))
    return np.stack(
        [camera_pose(np.array([xy[i, 0], xy[i, 1], z[i]]), yaw[i], pitch[i], roll[i]) for i in range(n_frames)]
    )


def make_trajectory(kind: str, n_frames: int, free_zone: tuple[float, float], seed: int = 0) -> np.ndarray:
    """(n_frames, 4, 4) poses of path `kind`: "loop" (`room_trajectory`, the demo's), "walk" or "orbit"."""
    if kind == "loop":
        return room_trajectory(n_frames, free_zone, seed)
    if kind == "walk":
        return walk_trajectory(n_frames, free_zone, seed)
    if kind == "orbit":
        return orbit_trajectory(n_frames, free_zone, seed)
    raise ValueError(f"unknown path kind {kind!r} (choose from {', '.join(PATH_KINDS)})")
