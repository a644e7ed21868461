"""The LABELS folder: dense label maps for a whole sequence, written by `annotate` and the baselines.

Layout (see docs/architecture.md, "LABELS folder"); every image is named `<frame name>.png`:
    labels/        (H, W) original class ids, uint8 (uint16 when an id > 255), 0 = void
    labels_color/  (H, W, 3) uint8 class colours          overlay/  input frame blended with the colours
    confidence/    (H, W) uint8, round(255 * max prob)    probs/<frame>.npz  "probs" (H, W, C) float16 over
                                                          training indices, "ids" (C,) their original ids
    rgb/           (H, W, 3) uint8 rendered colour        depth/    (H, W) uint16 z-depth in millimetres
    classes.json   ClassTable.to_json()
    frames.json    {"scene", "format", "downscale", "method", "frames": [FrameRecord as dict, ...]}

Per-file writes are atomic (`labelfield.io.write_image`); whole-folder atomicity is the caller's job
(write into `labelfield.io.atomic_dir`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from labelfield.cameras import Intrinsics
from labelfield.errors import LabelfieldError
from labelfield.io import atomic_path, depth_to_mm, mm_to_depth, read_image, read_json, write_image, write_json
from labelfield.scene import ClassTable, Frame

SUBDIRS = ("labels", "labels_color", "overlay", "confidence", "probs", "rgb", "depth")


def intrinsics_to_dict(intr: Intrinsics) -> dict:
    """Intrinsics -> JSON-able dict (internal OpenCV convention, integer pixel centres)."""
    d = {"fx": intr.fx, "fy": intr.fy, "cx": intr.cx, "cy": intr.cy, "width": intr.width, "height": intr.height}
    if intr.distortion is not None:
        d["distortion"] = list(intr.distortion)
    return d


def intrinsics_from_dict(d: dict) -> Intrinsics:
    """Inverse of `intrinsics_to_dict`."""
    dist = d.get("distortion")
    return Intrinsics(
        float(d["fx"]),
        float(d["fy"]),
        float(d["cx"]),
        float(d["cy"]),
        int(d["width"]),
        int(d["height"]),
        None if dist is None else tuple(float(x) for x in dist),
    )


@dataclass
class FrameRecord:
    """One frame of a LABELS folder.

    `labelled`: the frame had labels in the training spec; `given`: its output labels are the user's, kept.
    `c2w`: (4, 4) OpenCV camera-to-world as nested lists; `intrinsics`: `intrinsics_to_dict` form.
    """

    name: str
    index: int
    labelled: bool
    given: bool
    c2w: list
    intrinsics: dict

    @staticmethod
    def from_frame(frame: Frame, index: int, labelled: bool, given: bool) -> FrameRecord:
        return FrameRecord(
            frame.name,
            int(index),
            bool(labelled),
            bool(given),
            np.asarray(frame.c2w, np.float64).tolist(),
            intrinsics_to_dict(frame.intrinsics),
        )

    def pose(self) -> np.ndarray:
        """(4, 4) float64 OpenCV camera-to-world."""
        return np.asarray(self.c2w, np.float64)

    def intr(self) -> Intrinsics:
        return intrinsics_from_dict(self.intrinsics)


def _overlay(image: np.ndarray, color: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """Blend class colours over the image where a label is set; void pixels show the image unchanged."""
    out = image.astype(np.float32)
    m = labels != 0
    out[m] = (1.0 - alpha) * out[m] + alpha * color[m].astype(np.float32)
    return out.round().clip(0, 255).astype(np.uint8)


PHOTO_PNG_LEVEL = 1
"""zlib level of the photograph-like PNGs (overlay, rgb): 5x less CPU than the default 6 for ~10 % more bytes."""


def write_frame(
    out_dir: str | Path,
    name: str,
    labels: np.ndarray,
    classes: ClassTable,
    *,
    image: np.ndarray | None = None,
    rgb: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    probs: np.ndarray | None = None,
    overlay_alpha: float = 0.5,
    overlay: bool = True,
) -> None:
    """Write one frame's outputs into the LABELS folder `out_dir`.

    Args:
        labels: (H, W) original class ids (0 = void).
        image: (H, W, 3) uint8 input frame for the overlay (falls back to `rgb`; no overlay without either,
            nor with overlay=False).
        rgb: (H, W, 3) uint8 rendered colour. depth: (H, W) float z-depth in metres (-> uint16 mm).
        confidence: (H, W) float in [0, 1] (-> 8-bit). probs: (H, W, C) float over training indices.
    """
    out = Path(out_dir)
    labels = np.asarray(labels)
    ids = labels.astype(np.uint16 if classes.max_id > 255 or labels.max(initial=0) > 255 else np.uint8)
    write_image(out / "labels" / f"{name}.png", ids)
    color = classes.colorize(labels)
    write_image(out / "labels_color" / f"{name}.png", color)
    base = image if image is not None else rgb
    if base is not None and overlay:
        overlay_img = _overlay(np.asarray(base), color, labels, overlay_alpha)
        write_image(out / "overlay" / f"{name}.png", overlay_img, compress_level=PHOTO_PNG_LEVEL)
    if rgb is not None:
        write_image(out / "rgb" / f"{name}.png", np.asarray(rgb, np.uint8), compress_level=PHOTO_PNG_LEVEL)
    if depth is not None:
        write_image(out / "depth" / f"{name}.png", depth_to_mm(depth))
    if confidence is not None:
        c8 = (np.nan_to_num(np.asarray(confidence, np.float64)).clip(0, 1) * 255).round().astype(np.uint8)
        write_image(out / "confidence" / f"{name}.png", c8)
    if probs is not None:
        path = out / "probs" / f"{name}.npz"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:  # a file object stops numpy from appending ".npz" to the temp name
                np.savez_compressed(f, probs=np.asarray(probs, np.float16), ids=np.asarray(classes.train_ids, np.int64))


def write_manifest(
    out_dir: str | Path,
    *,
    scene_path: str | Path | None,
    format: str,
    downscale: int | float,
    method: str,
    classes: ClassTable,
    frames: list[FrameRecord],
) -> None:
    """Write classes.json and frames.json (frames in sequence order)."""
    out = Path(out_dir)
    write_json(out / "classes.json", classes.to_json())
    write_json(
        out / "frames.json",
        {
            "scene": None if scene_path is None else str(scene_path),
            "format": format,
            "downscale": downscale,
            "method": method,
            "frames": [asdict(r) for r in frames],
        },
    )


@dataclass
class LabelSet:
    """A LABELS folder read back. `frames` in sequence order; loaders read one frame's file on demand."""

    root: Path
    classes: ClassTable
    frames: list[FrameRecord]
    method: str
    scene_path: str | None
    format: str
    downscale: int | float

    def __post_init__(self) -> None:
        self._by_name = {r.name: r for r in self.frames}

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.frames]

    def record(self, name: str) -> FrameRecord:
        if name not in self._by_name:
            raise LabelfieldError(f"no frame named {name!r} in frames.json", self.root / "frames.json")
        return self._by_name[name]

    def _path(self, kind: str, name: str, ext: str = "png") -> Path:
        return self.root / kind / f"{name}.{ext}"

    def load_labels(self, name: str) -> np.ndarray:
        """(H, W) int64 original class ids."""
        self.record(name)
        lab = read_image(self._path("labels", name))
        if lab.ndim == 3:
            lab = lab[..., 0]
        return lab.astype(np.int64)

    def class_masks(self, name: str) -> Iterator[tuple[int, np.ndarray]]:
        """(class id, (H, W) bool mask) for every non-void class present in frame `name` (exporters' unit)."""
        lab = self.load_labels(name)
        for cid in np.unique(lab).tolist():
            if cid == self.classes.void_id:
                continue
            if cid not in self.classes.ids:
                raise LabelfieldError(f"label id {cid} in frame {name} is not in the class table", self.root)
            yield cid, lab == cid

    def load_rgb(self, name: str) -> np.ndarray | None:
        """(H, W, 3) uint8 rendered colour, or None when the folder has no rgb/ for this frame."""
        p = self._path("rgb", name)
        return read_image(p)[..., :3] if p.is_file() else None

    def load_depth(self, name: str) -> np.ndarray | None:
        """(H, W) float32 z-depth in metres (0 = unknown), or None when absent."""
        p = self._path("depth", name)
        return mm_to_depth(read_image(p)) if p.is_file() else None

    def load_confidence(self, name: str) -> np.ndarray | None:
        """(H, W) float32 in [0, 1], or None when absent."""
        p = self._path("confidence", name)
        return read_image(p).astype(np.float32) / 255.0 if p.is_file() else None

    def load_probs(self, name: str) -> np.ndarray | None:
        """(H, W, C) float32 class probabilities over training indices, or None when absent."""
        p = self._path("probs", name, "npz")
        if not p.is_file():
            return None
        try:
            with np.load(p) as z:
                return z["probs"].astype(np.float32)
        except (OSError, ValueError, KeyError) as e:
            raise LabelfieldError(f"unreadable probabilities ({e})", p) from e

    def has(self, kind: str) -> bool:
        """True when the subfolder `kind` (e.g. "rgb", "depth") exists and is not empty."""
        d = self.root / kind
        return d.is_dir() and any(d.iterdir())


def read_labelset(path: str | Path) -> LabelSet:
    """Read a LABELS folder's manifest; raise a one-line LabelfieldError when it is not one."""
    root = Path(path)
    if not root.is_dir():
        raise LabelfieldError("labels folder not found", root)
    if not (root / "frames.json").is_file():
        raise LabelfieldError("not a labels folder (no frames.json)", root)
    if not (root / "classes.json").is_file():
        raise LabelfieldError("not a labels folder (no classes.json)", root)
    meta = read_json(root / "frames.json")
    try:
        classes = ClassTable.from_json(read_json(root / "classes.json"))
    except (KeyError, TypeError, ValueError) as e:
        raise LabelfieldError(f"malformed class table ({e})", root / "classes.json") from e
    try:
        frames = [
            FrameRecord(
                str(f["name"]), int(f["index"]), bool(f["labelled"]), bool(f["given"]), f["c2w"], f["intrinsics"]
            )
            for f in meta["frames"]
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise LabelfieldError(f"malformed frames.json (missing or bad {e})", root / "frames.json") from e
    if not frames:
        raise LabelfieldError("frames.json lists no frames", root / "frames.json")
    return LabelSet(
        root,
        classes,
        frames,
        str(meta.get("method", "")),
        meta.get("scene"),
        str(meta.get("format", "")),
        meta.get("downscale", 1),
    )
