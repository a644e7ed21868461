"""Strokes: validation, exact rasterisation, and the append-only log that makes them survive anything.

A stroke is a polyline drawn on one frame, in that frame's pixel coordinates (pixel centres at integers, as
everywhere in labelfield): `points` (K, 2) as (x = column, y = row), a `radius` in pixels and a `tool`:
    brush   paints `class_id` on every pixel whose centre lies within `radius` of the polyline
    eraser  the same pixels back to void (0): "not labelled", never trained on
    click   one labelled point: radius 0, the pixel nearest the point
Besides the distance rule, the pixel nearest each point is always painted, so a tiny radius still marks
something. Later strokes paint over earlier ones; `undo` removes a stroke (the frame is replayed).

Persistence (why a log): every accepted stroke is one JSON line appended to RUN/strokes.jsonl and fsync'd
before the request is answered, so a reload, a browser crash or `kill -9` of the server loses nothing that
was acknowledged. The resulting sparse label maps (original class ids, 0 = void) are derived from the log and
written atomically to RUN/sparse_labels/<frame>.png for other tools; on start the log is replayed (a torn last
line from a crash is dropped). Undo appends {"op": "undo", "id": N}; nothing is ever rewritten in place.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelfield.errors import LabelfieldError
from labelfield.io import write_image
from labelfield.run.folder import STROKE_LABELS_DIR
from labelfield.scene import ClassTable, Scene

STROKES_FILE = "strokes.jsonl"
SPARSE_DIR = STROKE_LABELS_DIR  # the run package owns the name
TOOLS = ("brush", "eraser", "click")
MAX_POINTS = 20000
MAX_RADIUS = 256.0


@dataclass
class Stroke:
    """One stroke. points: (K, 2) float (x, y) pixel coordinates; class_id: original id (0 for the eraser)."""

    frame: int
    class_id: int
    tool: str
    radius: float
    points: np.ndarray
    id: int = -1

    def to_json(self) -> dict[str, Any]:
        return {
            "op": "stroke",
            "id": self.id,
            "frame": self.frame,
            "class_id": self.class_id,
            "tool": self.tool,
            "radius": self.radius,
            "points": [[round(float(x), 2), round(float(y), 2)] for x, y in self.points],
        }


def parse_stroke(d: Any, scene: Scene, classes: ClassTable) -> Stroke:
    """A stroke from untrusted JSON; ValueError with a one-line reason for anything malformed."""
    if not isinstance(d, dict):
        raise ValueError("a stroke must be a JSON object")
    tool = d.get("tool", "brush")
    if tool not in TOOLS:
        raise ValueError(f"unknown tool {tool!r} (brush, eraser, click)")
    frame = d.get("frame")
    if not isinstance(frame, int) or isinstance(frame, bool) or not 0 <= frame < len(scene):
        raise ValueError(f"frame must be an index in 0..{len(scene) - 1}")
    class_id = d.get("class_id", 0)
    if not isinstance(class_id, int) or isinstance(class_id, bool):
        raise ValueError("class_id must be an integer")
    if tool == "eraser":
        class_id = classes.void_id
    elif class_id not in classes.ids or class_id == classes.void_id:
        raise ValueError(f"class id {class_id} is not in the class table (ids {classes.train_ids})")
    radius = d.get("radius", 0.0)
    if not isinstance(radius, (int, float)) or not 0.0 <= float(radius) <= MAX_RADIUS:
        raise ValueError(f"radius must be a number in [0, {MAX_RADIUS:g}]")
    pts = d.get("points")
    if not isinstance(pts, list) or not 1 <= len(pts) <= MAX_POINTS:
        raise ValueError(f"points must be a list of 1..{MAX_POINTS} [x, y] pairs")
    try:
        arr = np.asarray(pts, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("points must be [x, y] number pairs") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all() or np.abs(arr).max() > 1e5:
        raise ValueError("points must be finite [x, y] pairs")
    if tool == "click":
        arr, radius = arr[:1], 0.0
    return Stroke(frame, int(class_id), tool, float(radius), arr)


def stroke_mask(points: np.ndarray, radius: float, height: int, width: int) -> np.ndarray:
    """(H, W) bool: pixels whose centre (u, v) is within `radius` of the polyline `points` (K, 2) (x, y), plus
    the pixel nearest each point. Exact (no anti-aliasing): this is what the test checks pixel by pixel."""
    mask = np.zeros((height, width), bool)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    segs = [(pts[i], pts[i + 1]) for i in range(len(pts) - 1)] or [(pts[0], pts[0])]
    for a, b in segs:
        lo = np.floor(np.minimum(a, b) - radius).astype(int)
        hi = np.ceil(np.maximum(a, b) + radius).astype(int)
        x0, y0 = max(lo[0], 0), max(lo[1], 0)
        x1, y1 = min(hi[0], width - 1), min(hi[1], height - 1)
        if x0 > x1 or y0 > y1:
            continue
        v, u = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
        ab = b - a
        L2 = float(ab @ ab)
        t = np.zeros_like(u) if L2 == 0 else np.clip(((u - a[0]) * ab[0] + (v - a[1]) * ab[1]) / L2, 0.0, 1.0)
        d2 = (u - (a[0] + t * ab[0])) ** 2 + (v - (a[1] + t * ab[1])) ** 2
        mask[y0 : y1 + 1, x0 : x1 + 1] |= d2 <= radius * radius + 1e-9
    near = np.floor(pts + 0.5).astype(int)  # round half up: the pixel whose centre is nearest
    ok = (near[:, 0] >= 0) & (near[:, 0] < width) & (near[:, 1] >= 0) & (near[:, 1] < height)
    mask[near[ok, 1], near[ok, 0]] = True
    return mask


def rasterise(stroke: Stroke, labels: np.ndarray) -> np.ndarray:
    """Paint `stroke` into `labels` (H, W) original ids, in place; returns the painted mask."""
    mask = stroke_mask(stroke.points, stroke.radius, *labels.shape)
    labels[mask] = stroke.class_id
    return mask


class StrokeStore:
    """The strokes of a run: the append-only log, the live sparse label maps and their PNGs.

    `labels[i]` is frame i's (H, W) map of original ids (0 = void), present once frame i has had a stroke.
    Thread-safe (one lock around the log and the maps).
    """

    def __init__(self, run_dir: Path, scene: Scene, classes: ClassTable) -> None:
        self.run_dir, self.scene, self.classes = Path(run_dir), scene, classes
        self.path = self.run_dir / STROKES_FILE
        self.strokes: dict[int, Stroke] = {}  # live (not undone) strokes by id, in drawing order
        self.next_id = 0
        self.labels: dict[int, np.ndarray] = {}
        self.lock = threading.Lock()
        self.version = 0  # bumped on every change (the trainer polls it)
        self._read_log()

    # -- loading ------------------------------------------------------------------------------------
    def _read_log(self) -> None:
        """Replay RUN/strokes.jsonl; a torn last line (kill -9 mid-write) is ignored. Bad content: exit 2."""
        if not self.path.is_file():
            return
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        complete, torn = lines[:-1], lines[-1]  # text after the last newline was never acknowledged
        for n, line in enumerate(complete, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise LabelfieldError(f"line {n} is not valid JSON", self.path) from None
            self._apply(rec, n)
        if torn.strip():
            self._torn = len(raw) - len(torn)
        for i in self.labels:
            self._replay(i)

    def _apply(self, rec: dict[str, Any], n: int) -> None:
        op = rec.get("op")
        if op == "stroke":
            try:
                s = parse_stroke(rec, self.scene, self.classes)
            except ValueError as e:
                raise LabelfieldError(f"line {n}: {e}", self.path) from None
            s.id = int(rec.get("id", self.next_id))
            self.strokes[s.id] = s
            self.next_id = max(self.next_id, s.id + 1)
            self.labels.setdefault(s.frame, self._blank(s.frame))
        elif op == "undo":
            self.strokes.pop(int(rec.get("id", -1)), None)
        else:
            raise LabelfieldError(f"line {n}: unknown record {op!r}", self.path)

    def _blank(self, frame: int) -> np.ndarray:
        w, h = self.scene.frames[frame].size
        return np.zeros((h, w), np.uint16 if self.classes.max_id > 255 else np.uint8)

    def _replay(self, frame: int) -> None:
        lab = self._blank(frame)
        for s in self.strokes.values():
            if s.frame == frame:
                rasterise(s, lab)
        self.labels[frame] = lab

    def repair(self) -> None:
        """Cut a torn last line off the log (before the first append), so new records start on a line."""
        torn = getattr(self, "_torn", None)
        if torn is not None:
            with open(self.path, "r+b") as f:
                f.truncate(torn)
            self._torn = None

    # -- changes ------------------------------------------------------------------------------------
    def _append(self, rec: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def add(self, stroke: Stroke) -> int:
        """Log the stroke (durably), paint it, write the frame's sparse PNG. Returns its id."""
        with self.lock:
            stroke.id = self.next_id
            self.next_id += 1
            rec = stroke.to_json() | {"t": round(time.time(), 3)}
            self._append(rec)
            self.strokes[stroke.id] = stroke
            lab = self.labels.setdefault(stroke.frame, self._blank(stroke.frame))
            rasterise(stroke, lab)
            self._write_png(stroke.frame)
            self.version += 1
            return stroke.id

    def undo(self, frame: int) -> int | None:
        """Undo the last live stroke on `frame`; returns its id, or None when there is none."""
        with self.lock:
            ids = [k for k, s in self.strokes.items() if s.frame == frame]
            if not ids:
                return None
            sid = ids[-1]
            self._append({"op": "undo", "id": sid, "frame": frame, "t": round(time.time(), 3)})
            del self.strokes[sid]
            self._replay(frame)
            self._write_png(frame)
            self.version += 1
            return sid

    def _write_png(self, frame: int) -> None:
        name = self.scene.frames[frame].name
        write_image(self.run_dir / SPARSE_DIR / f"{name}.png", self.labels[frame])

    def write_all_pngs(self) -> None:
        with self.lock:
            for i in self.labels:
                self._write_png(i)

    # -- queries ------------------------------------------------------------------------------------
    def frame_labels(self, frame: int) -> np.ndarray | None:
        with self.lock:
            lab = self.labels.get(frame)
            return None if lab is None else lab.copy()

    def snapshot(self) -> dict[int, np.ndarray]:
        """Copies of every frame's map that has at least one labelled pixel."""
        with self.lock:
            return {i: lab.copy() for i, lab in self.labels.items() if lab.any()}

    def counts(self) -> dict[int, int]:
        """Live strokes per frame."""
        with self.lock:
            out: dict[int, int] = {}
            for s in self.strokes.values():
                out[s.frame] = out.get(s.frame, 0) + 1
            return out

    def class_ids_used(self) -> set[int]:
        with self.lock:
            return {s.class_id for s in self.strokes.values()}
