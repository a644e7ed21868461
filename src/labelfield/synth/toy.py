"""A tiny analytic scene in memory, for tests: exact RGB, depth, labels and poses in milliseconds.

World: z up, metres. A room (box x, y in [-2, 2], z in [0, 2.5]) holds a sphere and a box. Cameras circle the
room's centre at varying height and look at a point near the objects. Every pixel is ray-cast analytically at
its centre (no anti-aliasing), so labels, depth and colour agree exactly.

Class ids (room=True):  1 floor, 2 wall, 3 ceiling, 4 sphere, 5 box   (binary=True: 1 room, 2 object)
With room=False the objects float in empty space; rays that miss are white, depth 0, class `background` (1),
and the class table declares it as `background_class` (like an object capture).
"""

from __future__ import annotations

import numpy as np

from labelfield.cameras import Intrinsics
from labelfield.scene import ClassTable, Frame, Scene

_ROOM_LO, _ROOM_HI = np.array([-2.0, -2.0, 0.0]), np.array([2.0, 2.0, 2.5])
_SPHERE_C, _SPHERE_R = np.array([0.5, 0.3, 0.6]), 0.5
_BOX_LO, _BOX_HI = np.array([-1.2, -0.9, 0.0]), np.array([-0.4, -0.2, 0.8])
_BASE = {1: (0.75, 0.6, 0.45), 2: (0.85, 0.85, 0.8), 3: (0.95, 0.95, 0.95), 4: (0.8, 0.2, 0.2), 5: (0.2, 0.4, 0.8)}
_LIGHT = np.array([0.4, 0.3, 0.85]) / np.linalg.norm([0.4, 0.3, 0.85])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """OpenCV camera-to-world (4, 4) at `eye` looking at `target` (+z forward, +y down, +x right)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, z], 1)
    c2w[:3, 3] = eye
    return c2w


def _slab(o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ray/AABB entry and exit distances (N,), and the axis of entry per ray."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t0, t1 = (lo - o) * inv, (hi - o) * inv
    tmin, tmax = np.minimum(t0, t1), np.maximum(t0, t1)
    return tmin.max(1), tmax.min(1)


def _cast(o: np.ndarray, d: np.ndarray, room: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit distance t (N,) (inf = miss), class id (N,) and normal (N, 3) for rays o, d (N, 3)."""
    n = len(o)
    t = np.full(n, np.inf)
    cls = np.zeros(n, np.int64)
    normal = np.zeros((n, 3))
    if room:  # inside the room: the exit distance of the room box is the wall/floor/ceiling hit
        _, t_exit = _slab(o, d, _ROOM_LO, _ROOM_HI)
        p = o + t_exit[:, None] * d
        t = t_exit
        on_floor = np.abs(p[:, 2] - _ROOM_LO[2]) < 1e-6
        on_ceil = np.abs(p[:, 2] - _ROOM_HI[2]) < 1e-6
        cls = np.where(on_floor, 1, np.where(on_ceil, 3, 2))
        axis = np.argmax(np.abs(p - (_ROOM_LO + _ROOM_HI) / 2) / ((_ROOM_HI - _ROOM_LO) / 2), 1)
        normal[np.arange(n), axis] = -np.sign(p[np.arange(n), axis] - ((_ROOM_LO + _ROOM_HI) / 2)[axis])
    # sphere
    oc = o - _SPHERE_C
    b = (oc * d).sum(1)
    disc = b * b - ((oc * oc).sum(1) - _SPHERE_R**2)
    ts = np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
    ts = np.where(ts > 1e-6, ts, np.inf)
    hit = ts < t
    t, cls = np.where(hit, ts, t), np.where(hit, 4, cls)
    normal[hit] = (o[hit] + ts[hit, None] * d[hit] - _SPHERE_C) / _SPHERE_R
    # box
    tb0, tb1 = _slab(o, d, _BOX_LO, _BOX_HI)
    tb = np.where((tb1 >= tb0) & (tb0 > 1e-6), tb0, np.inf)
    hit = tb < t
    t, cls = np.where(hit, tb, t), np.where(hit, 5, cls)
    if hit.any():
        p = o[hit] + tb[hit, None] * d[hit]
        c, h = (_BOX_LO + _BOX_HI) / 2, (_BOX_HI - _BOX_LO) / 2
        axis = np.argmax(np.abs(p - c) / h, 1)
        nb = np.zeros_like(p)
        nb[np.arange(len(p)), axis] = np.sign(p[np.arange(len(p)), axis] - c[axis])
        normal[hit] = nb
    return t, cls, normal


def _shade(p: np.ndarray, cls: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Base colour x checker texture x Lambert + ambient, in [0, 1]."""
    base = np.array([_BASE.get(int(c), (1.0, 1.0, 1.0)) for c in range(6)])[cls]
    checker = (np.floor(p * 4.0).astype(np.int64).sum(1) % 2) * 0.25 + 0.75
    lambert = np.clip(np.abs((normal * _LIGHT).sum(1)), 0, 1) * 0.6 + 0.4
    return np.clip(base * (checker * lambert)[:, None], 0, 1)


def toy_scene(
    n_frames: int = 12,
    width: int = 32,
    height: int = 24,
    seed: int = 0,
    room: bool = True,
    binary: bool = False,
    fov_x_deg: float = 80.0,
) -> Scene:
    """Make a toy scene in memory. Frames are named `frame_000`, ...; every frame has full labels and depth.

    Example:
        >>> scene = toy_scene(8, 32, 24)
        >>> scene.frames[0].load_labels().shape
        (24, 32)
    """
    rng = np.random.default_rng(seed)
    intr = Intrinsics.from_fov_x(np.deg2rad(fov_x_deg), width, height)
    radius = 1.4 if room else 2.6
    frames = []
    for i in range(n_frames):
        a = 2 * np.pi * i / max(n_frames, 1) + rng.uniform(-0.1, 0.1)
        eye = np.array([radius * np.cos(a), radius * np.sin(a), rng.uniform(1.0, 1.6)])
        target = np.array([0.0, 0.0, 0.5]) + rng.uniform(-0.2, 0.2, 3)
        c2w = look_at(eye, target)
        v, u = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        d_cam = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u, float)], -1)
        d_cam = d_cam.reshape(-1, 3)
        z_of_t = 1.0 / np.linalg.norm(d_cam, axis=1)
        d = (d_cam * z_of_t[:, None]) @ c2w[:3, :3].T
        o = np.broadcast_to(eye, d.shape)
        t, cls, normal = _cast(o, d, room)
        hit = np.isfinite(t)
        p = o + np.where(hit, t, 0)[:, None] * d
        rgb = np.where(hit[:, None], _shade(p, cls, normal), 1.0)
        depth = np.where(hit, t * z_of_t, 0.0)
        labels = cls.copy()
        if binary:
            labels = np.where(cls >= 4, 2, np.where(hit, 1, 0))
        if not room:
            labels = np.where(hit, labels if binary else cls, 1)
        frames.append(
            Frame(
                name=f"frame_{i:03d}",
                intrinsics=intr,
                c2w=c2w,
                arrays={
                    "rgb": (rgb.reshape(height, width, 3) * 255).round().astype(np.uint8),
                    "depth": depth.reshape(height, width).astype(np.float32),
                    "labels": labels.reshape(height, width).astype(np.uint8),
                },
            )
        )
    if binary:
        names = ["void", "background" if not room else "room", "object"]
    elif room:
        names = ["void", "floor", "wall", "ceiling", "sphere", "box"]
    else:
        names = ["void", "background", "unused", "unused2", "sphere", "box"]
    classes = ClassTable.from_names(names, background_class=None if room else 1)
    return Scene(frames, classes, None, "memory")
