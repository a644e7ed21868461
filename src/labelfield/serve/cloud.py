"""The 3D view's data (`GET /api/cloud?frames=K&max_points=N`): a labelled point cloud and every camera.

Points. K frames, evenly spaced over the sequence, are back-projected at thumbnail size and fused into voxels
(`labelfield.pointcloud`, as `export --format ply` does): per voxel the mean position and colour and the
majority predicted class. The voxel grows until at most N voxels remain (a fixed-seed subsample does the
rest), so the density stays even and a refresh does not shuffle the points.
- Depth: the scene's depth maps where the frame has one (nearest-sampled onto the prediction's grid), else the
  field's rendered depth (`Engine._render` adds it to thumbnails and previews of depth-less frames; a frame
  without one gets a `RENDER_SIZE` render on the worker, at most `RENDERS_PER_REQUEST` per request, one job
  each, cached for `GEOMETRY_MAX_AGE_S`).
- Labels: the newest prediction the engine already has for the frame (its strip thumbnail, refreshed in the
  background while training, or its preview, whichever is newer). Nothing is rendered for labels alone, so
  a refresh never stalls training for long; a frame without a prediction yet votes void, which wins a voxel
  only when no frame voted anything else. Before the first stroke every point is void.
- Colours: the frame's image (box-filtered to the grid) and the class table's colours (`VOID_COLOR` for void).

Cameras: centre, viewing direction (OpenCV +z) and the rays through the image's four corners (at unit
z-depth, world axes) of every frame, and whether the user has stroked it.

Response (application/octet-stream, little-endian):
    bytes 0-3   b"LFPC"
    bytes 4-7   uint32 H: length of the JSON header
    bytes 8-    the JSON header (UTF-8, space-padded so that 8 + H is a multiple of 4)
    then the arrays listed in header["arrays"], each {name, dtype, shape, offset (from byte 0)}:
        xyz float32 (N, 3) world metres · rgb uint8 (N, 3) · label_rgb uint8 (N, 3) · label uint16 (N,) ids
Header keys: version, count, step, frames (indices used), depth ("scene", "rendered", "mixed" or "none"),
labels_from ({"thumbnail": k, "preview": k, "render": k, "none": k} frames), voxel, void_color, up (a world
up estimated from the cameras), focus ({center, radius}: where to look), cameras [{frame, center, forward,
corners, labelled}], arrays.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from labelfield.pointcloud import VoxelAccumulator, auto_voxel_size, frame_points
from labelfield.serve.engine import Engine, Prediction

MAGIC = b"LFPC"
DEFAULT_FRAMES = 32
DEFAULT_POINTS = 50_000
MAX_POINTS = 200_000
MAX_FRAMES = 100_000  # asked for; clamped to the scene's frame count
RENDER_SIZE = 64  # longest side of a depth render made for the cloud alone (scenes without depth)
RENDERS_PER_REQUEST = 8
GEOMETRY_MAX_AGE_S = 10.0
VOID_COLOR = (96, 96, 96)
_INT = re.compile(r"[0-9]{1,9}")


def parse_cloud_query(query: Mapping[str, str], n_frames: int) -> tuple[int, int]:
    """`frames` and `max_points` from the query string -> (frames clamped to the scene, max_points).
    Raises ValueError with the reason on anything but whole numbers in range; other keys are ignored."""

    def get(name: str, default: int, hi: int) -> int:
        s = query.get(name)
        if s is None:
            return default
        if not _INT.fullmatch(s) or not 1 <= int(s) <= hi:
            raise ValueError(f"{name} must be a whole number in 1..{hi}, got {s[:20]!r}")
        return int(s)

    frames = get("frames", DEFAULT_FRAMES, MAX_FRAMES)
    return min(frames, n_frames), get("max_points", DEFAULT_POINTS, MAX_POINTS)


def pick_frames(n: int, k: int) -> list[int]:
    """k frame indices evenly spaced over 0..n-1 (first and last included)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, max(1, min(k, n))).round()})


def _nearest(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """(H, W) -> (h, w), the value at the source pixel under each target pixel's centre (no mixing of depths)."""
    H, W = img.shape[:2]
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return img[rows][:, cols]


class CloudBuilder:
    """Builds `/api/cloud` answers from an engine; caches the frames' small images and depth maps."""

    def __init__(self, engine: Engine, file_ok: Callable[[Path | None], bool] = lambda p: True) -> None:
        self.engine = engine
        self.file_ok = file_ok  # the app's rule for frame files (inside the scene folder); others are skipped
        self.small: dict[tuple[str, int, int, int], np.ndarray] = {}
        self.lock = threading.Lock()  # one build at a time: a second one would only repeat the first's renders

    def _small(self, kind: str, i: int, w: int, h: int) -> np.ndarray:
        key = (kind, i, w, h)
        if key not in self.small:
            f = self.engine.scene.frames[i]
            if kind == "rgb":
                self.small[key] = np.asarray(Image.fromarray(f.load_rgb()).resize((w, h), Image.BOX))
            else:
                self.small[key] = _nearest(f.load_depth(), w, h)
        return self.small[key]

    def _thumb_grid(self, i: int) -> tuple[int, int]:
        intr = self.engine.scene.frames[i].intrinsics
        s = min(1.0, self.engine.thumb_size / max(intr.width, intr.height))
        return intr.scaled(s).width, intr.scaled(s).height

    def _frame(self, i: int, budget: list[int], has_labels: bool) -> tuple[tuple[np.ndarray, ...], str, str] | None:
        """Points of frame i and where its depth and labels came from; None when it has no depth yet (or its
        files may not be read)."""
        eng = self.engine
        f = eng.scene.frames[i]
        if not (self.file_ok(f.rgb_path) and self.file_ok(f.depth_path)):
            return None
        p: Prediction | None = eng.latest_prediction(i)
        src = "none" if p is None else ("thumbnail" if p is eng.thumbs.get(i) else "preview")
        if f.has_depth():
            w, h = (p.labels.shape[1], p.labels.shape[0]) if p is not None else self._thumb_grid(i)
            depth, kind = self._small("depth", i, w, h), "scene"
        else:
            if p is None or p.depth is None:
                cached = eng.geometry.get(i)
                if budget[0] > 0:
                    p = eng.geometry_of(i, RENDER_SIZE, GEOMETRY_MAX_AGE_S)
                    budget[0] -= p is not cached
                else:
                    p = cached
                if p is None:
                    return None
                src = "render"
            h, w = p.labels.shape
            depth, kind = p.depth, "rendered"
        if p is None or not has_labels:  # no prediction yet (or an untrained semantic head): void
            labels, src = np.full((h, w), eng.classes.void_id, np.int64), "none"
        else:
            labels = p.labels
        intr = f.intrinsics.resized(w, h)
        return frame_points(depth, intr, f.c2w, self._small("rgb", i, w, h), labels), kind, src

    def build(self, k: int, max_points: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(header without `arrays`, {xyz, rgb, label_rgb, label}) for K frames and at most N points."""
        eng = self.engine
        frames = pick_frames(len(eng.scene), k)
        has_labels = eng.dataset.num_labelled_pixels > 0
        budget = [RENDERS_PER_REQUEST]
        parts, kinds, used = [], set(), []
        labels_from = {"thumbnail": 0, "preview": 0, "render": 0, "none": 0}
        for i in frames:
            got = self._frame(i, budget, has_labels)
            if got is None:
                continue
            pts, kind, src = got
            parts.append(pts)
            kinds.add(kind)
            labels_from[src] += 1
            used.append(i)
        void = eng.classes.void_id
        xyz = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 3))
        rgb = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, 3), np.uint8)
        lab = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64)
        xyz, rgb, lab, voxel = fuse_to_budget(xyz, rgb, lab, max_points, void)
        label_rgb = eng.classes.colorize(lab)
        label_rgb[lab == void] = VOID_COLOR
        cams = cameras(eng)
        header = {
            "version": 1,
            "count": len(xyz),
            "step": eng.step,
            "frames": used,
            "depth": "none" if not kinds else kinds.pop() if len(kinds) == 1 else "mixed",
            "labels_from": labels_from,
            "voxel": voxel,
            "void_color": list(VOID_COLOR),
            "up": world_up(eng),
            "focus": focus(xyz, np.array([c["center"] for c in cams])),
            "cameras": cams,
        }
        arrays = {
            "xyz": xyz.astype("<f4"),
            "rgb": rgb.astype(np.uint8),
            "label_rgb": label_rgb.astype(np.uint8),
            "label": lab.astype("<u2"),
        }
        return header, arrays

    def response(self, k: int, max_points: int) -> bytes:
        with self.lock:
            header, arrays = self.build(k, max_points)
        return encode(header, arrays)


def fuse_to_budget(
    xyz: np.ndarray, rgb: np.ndarray, lab: np.ndarray, max_points: int, void_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Voxel-fuse points, growing the voxel until at most `max_points` remain (then a fixed-seed subsample).
    Points far outside the bulk (rendered depth of an untrained field) that no voxel key can hold are dropped."""
    if len(xyz) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.int64), 0.0
    lo, hi = np.percentile(xyz, [1, 99], axis=0)
    voxel = auto_voxel_size(np.stack([lo, hi]))
    for _ in range(4):
        acc = VoxelAccumulator(voxel, weak_id=void_id)
        keep = acc.in_range(xyz)
        acc.add(xyz[keep], rgb[keep], lab[keep])
        if len(acc) <= max_points:
            break
        voxel *= 1.05 * float(np.sqrt(len(acc) / max_points))  # surfaces: voxel count ~ 1 / voxel^2
    out_xyz, out_rgb, out_lab = acc.result()
    if len(out_xyz) > max_points:
        pick = np.sort(np.random.default_rng(0).choice(len(out_xyz), max_points, replace=False))
        out_xyz, out_rgb, out_lab = out_xyz[pick], out_rgb[pick], out_lab[pick]
    return out_xyz, out_rgb, out_lab, float(voxel)


def cameras(engine: Engine) -> list[dict[str, Any]]:
    """Every frame's camera: centre, viewing direction and the image corners' rays (top-left, top-right,
    bottom-right, bottom-left; world directions at unit z-depth), and whether it has strokes."""
    stroked = {i for i, n in engine.store.counts().items() if n > 0}
    out = []
    for i, f in enumerate(engine.scene.frames):
        c2w, K = np.asarray(f.c2w, np.float64), f.intrinsics
        u = np.array([-0.5, K.width - 0.5, K.width - 0.5, -0.5])  # the outer edges of the corner pixels
        v = np.array([-0.5, -0.5, K.height - 0.5, K.height - 0.5])
        cam = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones(4)], 1)
        rnd = lambda a: np.round(a, 5).tolist()  # noqa: E731
        out.append(
            {
                "frame": i,
                "center": rnd(c2w[:3, 3]),
                "forward": rnd(c2w[:3, 2]),
                "corners": rnd(cam @ c2w[:3, :3].T),
                "labelled": i in stroked,
            }
        )
    return out


def world_up(engine: Engine) -> list[float]:
    """The mean of the cameras' up axes (OpenCV -y), normalised: a hand-held capture's sky direction."""
    up = -np.mean([np.asarray(f.c2w)[:3, 1] for f in engine.scene.frames], 0)
    n = float(np.linalg.norm(up))
    return np.round(up / n, 5).tolist() if n > 1e-3 else [0.0, 0.0, 1.0]


def focus(xyz: np.ndarray, centers: np.ndarray) -> dict[str, Any]:
    """Where the view looks first: the points' median and the radius holding 95% of points and cameras."""
    pts = (xyz if len(xyz) else centers).astype(np.float64)
    c = np.median(pts, 0)
    d = np.linalg.norm(np.concatenate([pts, centers.astype(np.float64)]) - c, axis=1)
    r = float(np.percentile(d, 95)) if len(d) else 1.0
    return {"center": np.round(c, 5).tolist(), "radius": round(max(r, 1e-3), 5)}


def encode(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """The binary response: magic, header length, JSON header, 4-byte aligned arrays (see the module doc)."""
    names = list(arrays)

    def layout(start: int) -> list[dict[str, Any]]:
        rows, off = [], start
        for name in names:
            a = arrays[name]
            rows.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape), "offset": off})
            off += (a.nbytes + 3) // 4 * 4
        return rows

    # the header holds the offsets, which depend on its own length: settle it by iterating (twice at most)
    start = 0
    while True:
        text = json.dumps({**header, "arrays": layout(start)}, separators=(",", ":")).encode()
        size = (8 + len(text) + 3) // 4 * 4 - 8
        if 8 + size == start:
            break
        start = 8 + size
    body = [MAGIC, np.uint32(size).astype("<u4").tobytes(), text.ljust(size, b" ")]
    for name in names:
        b = np.ascontiguousarray(arrays[name]).tobytes()
        body += [b, b"\0" * ((4 - len(b) % 4) % 4)]
    return b"".join(body)


def decode(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of `encode` (tests, scripts)."""
    if data[:4] != MAGIC:
        raise ValueError("not a labelfield point cloud")
    size = int(np.frombuffer(data[4:8], "<u4")[0])
    header = json.loads(data[8 : 8 + size])
    arrays = {}
    for a in header["arrays"]:
        n = int(np.prod(a["shape"])) if a["shape"] else 1
        arrays[a["name"]] = np.frombuffer(data, a["dtype"], n, a["offset"]).reshape(a["shape"])
    return header, arrays
