"""Render a `Room` with Mitsuba 3: RGB by path tracing, plus exact labels, instances and depth.

Two passes per frame, both in the package's camera convention (OpenCV c2w, pixel centres at integers):
    RGB: Mitsuba's `perspective` sensor with `to_world = opencv_to_mitsuba(c2w)` and the horizontal FOV of
        the intrinsics; Mitsuba's pixel (u, v) spans [u, u + 1], so a centred principal point cx = (W - 1) / 2
        lands exactly on its optical axis. `spp` samples per pixel, box filter, then a slight Gaussian blur.
    Ground truth: we build one ray per pixel centre ourselves (`labelfield.cameras` conventions) and call
        `scene.ray_intersect_preliminary`; the hit shape's index maps to (class id, instance id), and
        z-depth = t * z_scale. So labels and depth are exact at pixel centres, never anti-aliased.

Shapes: (H, W, 3) uint8 sRGB, (H, W) float32 z-depth in metres, (H, W) uint8 class ids, (H, W) uint16
instance ids. Mitsuba is imported lazily (`import_mitsuba`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache
from typing import Any

import numpy as np

from labelfield.cameras import Intrinsics, opencv_to_mitsuba
from labelfield.errors import LabelfieldError
from labelfield.progress import Progress, ProgressFn
from labelfield.scene import Frame, Scene
from labelfield.synth.room import Room

VARIANTS = ("auto", "scalar_rgb", "llvm_ad_rgb")
_MI_TYPE = {"box": "cube", "sphere": "sphere", "rect": "rectangle"}

# Renders a tiny scene in a child process: a broken LLVM aborts the whole process, so we cannot try in ours.
_PROBE = "; ".join(
    ["import mitsuba as mi", "mi.set_variant('llvm_ad_rgb')", "mi.render(mi.load_dict(mi.cornell_box()), spp=1)"]
)


@lru_cache(maxsize=1)
def llvm_works() -> bool:
    """True when Mitsuba's `llvm_ad_rgb` variant can render here (it needs a recent libLLVM)."""
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def import_mitsuba(variant: str = "auto") -> Any:
    """Import Mitsuba and set its variant. "auto": `llvm_ad_rgb` if it works here, else `scalar_rgb`.

    The environment variable LABELFIELD_MITSUBA_VARIANT overrides "auto".
    """
    if variant not in VARIANTS:
        raise LabelfieldError(f"unknown Mitsuba variant {variant!r} (choose from {', '.join(VARIANTS)})")
    try:
        import mitsuba as mi
    except ImportError as e:
        raise LabelfieldError("mitsuba is not installed: pip install 'labelfield[synth]'") from e
    if variant == "auto":
        variant = os.environ.get("LABELFIELD_MITSUBA_VARIANT") or ("llvm_ad_rgb" if llvm_works() else "scalar_rgb")
    try:
        mi.set_variant(variant)
    except (AttributeError, ImportError, ValueError) as e:
        raise LabelfieldError(f"Mitsuba variant {variant} is not available ({e})") from e
    return mi


def _bitmap_texture(mi: Any, tex: np.ndarray, uv_scale: tuple[float, float]) -> dict:
    return {
        "type": "bitmap",
        "bitmap": mi.Bitmap(np.ascontiguousarray(tex, np.float32)),  # float data: linear, no sRGB decoding
        "filter_type": "bilinear",
        "wrap_mode": "repeat",
        "to_uv": mi.ScalarTransform4f().scale([uv_scale[0], uv_scale[1], 1.0]),
    }


def build_mitsuba_scene(mi: Any, room: Room, max_depth: int = 4) -> tuple[Any, np.ndarray, np.ndarray]:
    """Mitsuba scene of the room, and per Mitsuba shape index its class id and instance id (two (S,) arrays).

    Every part gets its own id and BSDF so Mitsuba keeps it a separate shape. Mitsuba orders `scene.shapes()`
    differently on each load, so hits are mapped through the shape's id, never through the dict order.
    """
    d: dict[str, Any] = {"type": "scene", "integrator": {"type": "path", "max_depth": max_depth}}
    for k, p in enumerate(room.parts):
        shape: dict[str, Any] = {
            "type": _MI_TYPE[p.kind],
            "id": f"part_{k}",
            "to_world": mi.ScalarTransform4f(p.to_world.tolist()),
            "bsdf": {"type": "diffuse", "reflectance": _bitmap_texture(mi, p.texture, p.uv_scale)},
        }
        if p.emission > 0:
            shape["emitter"] = {"type": "area", "radiance": {"type": "rgb", "value": [p.emission] * 3}}
        d[f"part_{k}"] = shape
    scene = mi.load_dict(d)
    shapes = scene.shapes()
    classes = np.zeros(len(shapes), np.uint8)
    instances = np.zeros(len(shapes), np.uint16)
    seen = set()
    for i, sh in enumerate(shapes):
        sid = sh.id()
        if not sid.startswith("part_"):
            raise LabelfieldError(f"Mitsuba merged or renamed a shape ({sid!r}); cannot map hits to labels")
        part = room.parts[int(sid[5:])]
        classes[i], instances[i] = part.class_id, part.instance_id
        seen.add(sid)
    if len(seen) != len(room.parts):
        raise LabelfieldError(f"Mitsuba kept {len(seen)} of {len(room.parts)} shapes; cannot map hits to labels")
    return scene, classes, instances


def check_camera(intr: Intrinsics) -> float:
    """Horizontal FOV in degrees of a camera Mitsuba's pinhole can reproduce exactly (square, centred)."""
    W, H = intr.width, intr.height
    if (
        abs(intr.fx - intr.fy) > 1e-6 * intr.fx
        or abs(intr.cx - (W - 1) / 2) > 1e-6
        or abs(intr.cy - (H - 1) / 2) > 1e-6
    ):
        raise LabelfieldError("synth renders square-pixel cameras with a centred principal point only")
    return float(np.degrees(2 * np.arctan(W / (2 * intr.fx))))


def make_sensor(mi: Any, intr: Intrinsics, c2w: np.ndarray, spp: int, sampler: str = "independent") -> Any:
    """Mitsuba perspective sensor matching `intr` and OpenCV `c2w` (see the module header).

    Box pixel filter: each sample lands in one pixel only, so the threads' image blocks do not overlap and the
    result does not depend on thread timing (Mitsuba's wider filters sum block borders in thread order).
    sampler="pixel_centre" takes exactly one sample at each pixel centre (stratified, no jitter); tests use it
    to check that the sensor's rays are exactly ours.
    """
    samp = {"type": "independent", "sample_count": spp}
    if sampler == "pixel_centre":
        samp = {"type": "stratified", "sample_count": 1, "jitter": False}
    return mi.load_dict(
        {
            "type": "perspective",
            "fov": check_camera(intr),
            "fov_axis": "x",
            "near_clip": 0.01,
            "far_clip": 1000.0,
            "to_world": mi.ScalarTransform4f(opencv_to_mitsuba(c2w).tolist()),
            "sampler": samp,
            "film": {
                "type": "hdrfilm",
                "width": intr.width,
                "height": intr.height,
                "rfilter": {"type": "box"},
                "pixel_format": "rgb",
                "sample_border": False,
            },
        }
    )


def linear_to_srgb8(img: np.ndarray) -> np.ndarray:
    """Linear RGB (H, W, 3) float -> sRGB (H, W, 3) uint8 (the standard sRGB transfer curve)."""
    x = np.clip(np.asarray(img, np.float64), 0.0, 1.0)
    s = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return (s * 255.0 + 0.5).astype(np.uint8)


def soften(img: np.ndarray) -> np.ndarray:
    """Separable 3-tap Gaussian (std 0.5 px) on (H, W, C), centred on each pixel, edges clamped.

    A slight lens-like blur that cuts path-tracing noise by a third (and the PNGs by a quarter) without moving
    anything: the kernel is symmetric about the pixel centre, where labels are taken.
    """
    w = np.exp(-0.5 * (np.array([-1.0, 0.0, 1.0]) / 0.5) ** 2)
    w /= w.sum()
    p = np.pad(img, ((1, 1), (0, 0), (0, 0)), mode="edge")
    img = w[0] * p[:-2] + w[1] * p[1:-1] + w[2] * p[2:]
    p = np.pad(img, ((0, 0), (1, 1), (0, 0)), mode="edge")
    return w[0] * p[:, :-2] + w[1] * p[:, 1:-1] + w[2] * p[:, 2:]


def render_rgb(mi: Any, scene: Any, intr: Intrinsics, c2w: np.ndarray, spp: int, seed: int) -> np.ndarray:
    """Path-traced image (H, W, 3) uint8 sRGB, softened (see `soften`) in linear space."""
    sensor = make_sensor(mi, intr, c2w, spp)
    img = np.array(mi.render(scene, sensor=sensor, spp=spp, seed=seed), np.float64)
    return linear_to_srgb8(soften(img[..., :3]))


def pixel_rays(intr: Intrinsics, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One ray per pixel centre, row-major: origin (3,), unit directions (H*W, 3), z_scale (H*W,) (z = t z_scale)."""
    v, u = np.meshgrid(np.arange(intr.height), np.arange(intr.width), indexing="ij")
    d_cam = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones(u.shape)], -1).reshape(-1, 3)
    norm = np.linalg.norm(d_cam, axis=1)
    c2w = np.asarray(c2w, np.float64)
    return c2w[:3, 3].copy(), (d_cam / norm[:, None]) @ c2w[:3, :3].T, 1.0 / norm


def intersect(mi: Any, scene: Any, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit distance t (N,) (inf = miss) and Mitsuba shape index (N,) (-1 = miss) per ray."""
    n = len(dirs)
    if mi.variant().startswith("scalar"):
        t = np.full(n, np.inf)
        idx = np.full(n, -1, np.int64)
        o = mi.Point3f(*origin.tolist())
        for k, d in enumerate(dirs.tolist()):  # scalar variant: one ray per call (about 1 us each)
            pi = scene.ray_intersect_preliminary(mi.Ray3f(o, mi.Vector3f(*d)))
            if pi.is_valid():
                t[k], idx[k] = pi.t, pi.shape_index
        return t, idx
    # JIT variants (llvm/cuda) trace every ray in one call.
    o = mi.Point3f(*[np.full(n, c, np.float32) for c in origin])
    d = mi.Vector3f(*[np.ascontiguousarray(dirs[:, j], np.float32) for j in range(3)])
    pi = scene.ray_intersect_preliminary(mi.Ray3f(o, d))
    valid = np.array(pi.is_valid(), bool)
    t = np.where(valid, np.array(pi.t, np.float64), np.inf)
    idx = np.where(valid, np.array(pi.shape_index, np.int64), -1)
    return t, idx


def render_ground_truth(
    mi: Any, scene: Any, shape_classes: np.ndarray, shape_instances: np.ndarray, intr: Intrinsics, c2w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z-depth (H, W) float32 metres, class ids (H, W) uint8, instance ids (H, W) uint16 at pixel centres.

    Rays that hit nothing (impossible inside the closed room) get depth 0 and id 0 (void).
    """
    origin, dirs, z_scale = pixel_rays(intr, c2w)
    t, idx = intersect(mi, scene, origin, dirs)
    hit = idx >= 0
    shape = (intr.height, intr.width)
    depth = np.where(hit, t * z_scale, 0.0).astype(np.float32).reshape(shape)
    labels = np.where(hit, shape_classes[np.maximum(idx, 0)], 0).astype(np.uint8).reshape(shape)
    inst = np.where(hit, shape_instances[np.maximum(idx, 0)], 0).astype(np.uint16).reshape(shape)
    return depth, labels, inst


def render_room(
    room: Room,
    poses: np.ndarray,
    intr: Intrinsics,
    spp: int = 32,
    seed: int = 0,
    variant: str = "auto",
    on_progress: ProgressFn | None = None,
    max_depth: int = 4,
) -> Scene:
    """Render every pose (N, 4, 4) OpenCV c2w into an in-memory `Scene` (frames `frame_000`, ...).

    The RGB noise of frame i is seeded with `(seed * 100003 + i) mod 2^32`, so the output is deterministic.
    `on_progress` receives Progress("render", done, total, "frames") after each frame.
    `max_depth` is the path tracer's (2 = direct light only; 3 = one indirect bounce, about half the cost of 4).
    """
    if spp < 1:
        raise LabelfieldError(f"--spp must be at least 1, got {spp}")
    if max_depth < 2:
        raise LabelfieldError(f"--max-depth must be at least 2 (direct light), got {max_depth}")
    mi = import_mitsuba(variant)
    check_camera(intr)
    mscene, shape_classes, shape_instances = build_mitsuba_scene(mi, room, max_depth)
    frames = []
    for i, c2w in enumerate(poses):
        rgb = render_rgb(mi, mscene, intr, c2w, spp, (seed * 100003 + i) % 2**32)
        depth, labels, inst = render_ground_truth(mi, mscene, shape_classes, shape_instances, intr, c2w)
        arrays = {"rgb": rgb, "depth": depth, "labels": labels, "instance": inst}
        frames.append(Frame(name=f"frame_{i:03d}", intrinsics=intr, c2w=np.asarray(c2w, np.float64), arrays=arrays))
        if on_progress is not None:
            on_progress(Progress("render", i + 1, len(poses), "frames"))
    return Scene(frames, room.classes, None, "memory")
