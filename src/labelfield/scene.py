"""The Scene: what every reader produces and every later stage consumes.

A `Scene` is a list of `Frame`s (intrinsics, OpenCV camera-to-world pose, lazily loaded images) plus a
`ClassTable`. Label maps always hold the scene's **original class ids**; id 0 (`ClassTable.void_id`) is
void/unlabelled and is never trained on. Training code works with contiguous class *indices*
0..num_classes-1 over the non-void ids (`ClassTable.to_index`), and -1 for void.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from labelfield.cameras import Intrinsics, is_valid_pose
from labelfield.errors import LabelfieldError
from labelfield.io import read_image

VOID_ID = 0

# A deterministic, distinguishable palette for tables that bring no colours (void stays black).
_BASE_COLORS = np.array(
    [
        [0, 0, 0],
        [174, 199, 232],
        [152, 223, 138],
        [31, 119, 180],
        [255, 187, 120],
        [188, 189, 34],
        [140, 86, 75],
        [255, 152, 150],
        [214, 39, 40],
        [197, 176, 213],
        [148, 103, 189],
        [196, 156, 148],
        [23, 190, 207],
        [247, 182, 210],
        [219, 219, 141],
        [255, 127, 14],
        [158, 218, 229],
        [44, 160, 44],
        [112, 128, 144],
        [227, 119, 194],
        [82, 84, 163],
    ],
    np.uint8,
)


def default_color(class_id: int) -> tuple[int, int, int]:
    """Colour for a class id without one: a fixed table, then a hash for larger ids."""
    if class_id < len(_BASE_COLORS):
        return tuple(int(c) for c in _BASE_COLORS[class_id])
    rng = np.random.default_rng(class_id)
    return tuple(int(c) for c in rng.integers(40, 256, 3))


@dataclass
class ClassTable:
    """Class ids (sparse ids allowed, e.g. NYU40 or ScanNet), names and RGB colours; id 0 is void.

    `background_class` is the id given to rays that hit no surface (sky, the backdrop of an object capture).
    """

    ids: list[int]
    names: list[str]
    colors: list[tuple[int, int, int]]
    background_class: int | None = None
    void_id: int = VOID_ID

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.names) == len(self.colors)):
            raise LabelfieldError("class table: ids, names and colours differ in length")
        if self.void_id not in self.ids:  # void is always part of the table, first
            self.ids = [self.void_id, *self.ids]
            self.names = ["void", *self.names]
            self.colors = [(0, 0, 0), *self.colors]
        if len(set(self.ids)) != len(self.ids):
            raise LabelfieldError("class table: duplicate class ids")
        if self.background_class is not None and self.background_class not in self.ids:
            raise LabelfieldError(f"class table: background_class {self.background_class} is not a class id")

    @staticmethod
    def from_names(names: list[str], colors: list | None = None, background_class: int | None = None):
        """Table whose ids are the positions in `names` (names[0] is void)."""
        ids = list(range(len(names)))
        cols = [tuple(int(x) for x in c) for c in colors] if colors else [default_color(i) for i in ids]
        return ClassTable(ids, list(names), cols, background_class)

    @staticmethod
    def from_ids(ids: list[int], background_class: int | None = None) -> ClassTable:
        """Table with generic names ("class_7") for the given ids."""
        ids = sorted(set(int(i) for i in ids) | {VOID_ID})
        names = ["void" if i == VOID_ID else f"class_{i}" for i in ids]
        return ClassTable(ids, names, [default_color(i) for i in ids], background_class)

    @property
    def train_ids(self) -> list[int]:
        """The non-void ids, in order; position = training class index."""
        return [i for i in self.ids if i != self.void_id]

    @property
    def num_classes(self) -> int:
        """Number of trainable (non-void) classes: the width of the semantic logits."""
        return len(self.ids) - 1

    @property
    def max_id(self) -> int:
        return max(self.ids)

    def name_of(self, class_id: int) -> str:
        return self.names[self.ids.index(class_id)]

    def _lut(self) -> np.ndarray:
        lut = np.full(self.max_id + 1, -1, np.int64)
        for k, i in enumerate(self.train_ids):
            lut[i] = k
        return lut

    def to_index(self, labels: np.ndarray) -> np.ndarray:
        """Original ids (any int array) -> training indices (int64), void and unknown ids -> -1."""
        lut = self._lut()
        labels = np.asarray(labels).astype(np.int64)
        out = np.full(labels.shape, -1, np.int64)
        ok = (labels >= 0) & (labels < len(lut))
        out[ok] = lut[labels[ok]]
        return out

    def to_ids(self, index: np.ndarray) -> np.ndarray:
        """Training indices -> original ids (uint8, or uint16 when an id exceeds 255); -1 -> void."""
        table = np.array([self.void_id, *self.train_ids], np.int64)
        out = table[np.asarray(index, np.int64) + 1]
        return out.astype(np.uint8 if self.max_id <= 255 else np.uint16)

    def palette(self) -> np.ndarray:
        """(max_id + 1, 3) uint8 colours indexed by original id (ids not in the table are black)."""
        pal = np.zeros((self.max_id + 1, 3), np.uint8)
        for i, c in zip(self.ids, self.colors):
            pal[i] = c
        return pal

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Original-id label map (H, W) -> RGB (H, W, 3) uint8."""
        pal = self.palette()
        return pal[np.clip(np.asarray(labels, np.int64), 0, len(pal) - 1)]

    def check_labels(self, labels: np.ndarray, path: str | Path) -> None:
        """Raise a one-line error when `labels` holds an id outside the table."""
        present = np.unique(labels)
        bad = [int(x) for x in present if int(x) not in set(self.ids)]
        if bad:
            raise LabelfieldError(
                f"label id {bad[0]} is not in the class table (ids {min(self.ids)}..{self.max_id})", path
            )

    def to_json(self) -> dict:
        return {
            "ids": self.ids,
            "classes": self.names,
            "colors": [list(c) for c in self.colors],
            "background_class": self.background_class,
            "ignore_index": self.void_id,
        }

    @staticmethod
    def from_json(d: dict) -> ClassTable:
        names = d["classes"]
        ids = d.get("ids", list(range(len(names))))
        colors = d.get("colors") or [default_color(i) for i in ids]
        return ClassTable(list(ids), list(names), [tuple(int(x) for x in c) for c in colors], d.get("background_class"))


def _resize(img: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """Resize (H, W[, C]) to size=(W, H): box filter for images, nearest for labels and depth."""
    if img.shape[1] == size[0] and img.shape[0] == size[1]:
        return img
    resample = Image.NEAREST if nearest else Image.BOX
    if img.dtype == np.uint8:
        return np.array(Image.fromarray(img).resize(size, resample))
    if img.ndim == 2:  # 16-bit / float single channel: resize as float
        out = np.array(Image.fromarray(img.astype(np.float32), mode="F").resize(size, resample))
        return out.astype(img.dtype)
    chans = [_resize(img[..., c], size, nearest) for c in range(img.shape[-1])]
    return np.stack(chans, -1)


@dataclass
class Frame:
    """One posed view. Images load lazily from paths, or come from arrays given in memory.

    Loaders return: rgb (H, W, 3) uint8; depth (H, W) float32 metres, 0 = unknown; labels (H, W) original ids.
    The size is always `intrinsics.width x intrinsics.height` (readers scale intrinsics for `--downscale`).
    """

    name: str
    intrinsics: Intrinsics
    c2w: np.ndarray
    rgb_path: Path | None = None
    depth_path: Path | None = None
    label_path: Path | None = None
    instance_path: Path | None = None
    mask_path: Path | None = None
    depth_scale: float = 1000.0  # stored units per metre (uint16 millimetres by default)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGBA images are composited over this
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # in-memory rgb/depth/labels/instance
    loader: Callable[[Frame, str], np.ndarray | None] | None = None  # format-specific override

    @property
    def size(self) -> tuple[int, int]:
        return self.intrinsics.width, self.intrinsics.height

    def has_labels(self) -> bool:
        return self.label_path is not None or "labels" in self.arrays

    def has_depth(self) -> bool:
        return self.depth_path is not None or "depth" in self.arrays

    def _load(self, kind: str, path: Path | None) -> np.ndarray | None:
        if kind in self.arrays:
            return self.arrays[kind]
        if self.loader is not None:
            out = self.loader(self, kind)
            if out is not None:
                return out
        if path is None:
            return None
        img = read_frame_image(path, kind, self.background)
        nearest = kind != "rgb"
        W, H = self.size
        if img.shape[:2] != (H, W):
            # Readers set intrinsics for the downscaled size; integer multiples are the only scaling we accept.
            h0, w0 = img.shape[:2]
            if h0 * W != w0 * H or h0 < H:
                raise LabelfieldError(f"image size {w0}x{h0} does not match the camera's {W}x{H}", path)
            img = _resize(img, (W, H), nearest)
        return img

    def load_rgb(self) -> np.ndarray:
        img = self._load("rgb", self.rgb_path)
        if img is None:
            raise LabelfieldError(f"frame {self.name} has no image")
        return img

    def load_depth(self) -> np.ndarray | None:
        d = self._load("depth", self.depth_path)
        if d is None:
            return None
        if "depth" in self.arrays:
            return d.astype(np.float32)
        return d.astype(np.float32) / float(self.depth_scale)

    def load_labels(self) -> np.ndarray | None:
        lab = self._load("labels", self.label_path)
        return None if lab is None else lab.astype(np.int64 if lab.dtype.kind == "i" else lab.dtype)

    def load_instances(self) -> np.ndarray | None:
        return self._load("instance", self.instance_path)

    def validate(self) -> None:
        """Raise for a pose that is not a finite 4x4 rigid transform."""
        if not is_valid_pose(self.c2w):
            where = self.rgb_path if self.rgb_path is not None else self.name
            raise LabelfieldError("camera pose is not a finite 4x4 rigid transform", where)


def read_frame_image(path: Path, kind: str, background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """One stored image of a frame, as stored size: "rgb" -> (H, W, 3) uint8 (alpha composited over
    `background`); "depth", "labels", "instance", "mask" -> (H, W), the first channel of a multi-channel file."""
    img = read_image(path)
    if kind == "rgb":
        return _to_rgb8(img, background, path)
    return img[..., 0] if img.ndim == 3 else img


def _to_rgb8(img: np.ndarray, background: tuple[float, float, float], path: Path) -> np.ndarray:
    """Any 8/16-bit grey, RGB or RGBA image -> (H, W, 3) uint8; alpha composited over `background`."""
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, -1)
    if img.shape[-1] == 4:
        a = img[..., 3:4].astype(np.float32) / 255.0
        bg = np.asarray(background, np.float32) * 255.0
        img = (img[..., :3].astype(np.float32) * a + bg * (1.0 - a)).round().astype(np.uint8)
    elif img.shape[-1] != 3:
        raise LabelfieldError(f"image has {img.shape[-1]} channels, expected 1, 3 or 4", path)
    return np.ascontiguousarray(img)


@dataclass
class Scene:
    """Frames (in sequence order) and the class table. `root` is the folder it was read from, if any."""

    frames: list[Frame]
    classes: ClassTable
    root: Path | None = None
    format: str = "memory"
    points: np.ndarray | None = None
    """Sparse 3D points (M, 3) float64 in world coordinates from structure from motion (transforms.json's
    `ply_file_path`, COLMAP's points3D), or None. Without depth they size the scene box (render/bounds.py)."""

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.frames]

    def labelled_indices(self) -> list[int]:
        """Indices of frames that carry a label map (ground truth before any `--labelled` spec)."""
        return [i for i, f in enumerate(self.frames) if f.has_labels()]

    def poses(self) -> np.ndarray:
        """(N, 4, 4) OpenCV camera-to-world."""
        return np.stack([f.c2w for f in self.frames])

    def validate(self) -> None:
        """Check poses, and that the scene is not empty; raise a one-line LabelfieldError otherwise."""
        if not self.frames:
            raise LabelfieldError("scene has no frames", self.root)
        for f in self.frames:
            f.validate()
