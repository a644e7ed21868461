"""Helpers shared by the format readers and writers.

Shapes: rgb (H, W, 3) uint8; depth (H, W) as stored (uint16 units, `Frame.depth_scale` per metre); labels
(H, W) original class ids; poses (4, 4) float64. `size` is always (W, H).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from labelfield.cameras import Intrinsics, is_valid_pose
from labelfield.errors import LabelfieldError
from labelfield.scene import ClassTable, Frame, _resize, read_frame_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded integers by value: "r_2" < "r_10"."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def indexed_files(folder: Path, prefix: str, suffixes: Iterable[str] = IMAGE_SUFFIXES) -> dict[int, Path]:
    """Files named `{prefix}{int}{suffix}` in `folder`, keyed by the integer (others, e.g. vis_*.png, ignored)."""
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)$")
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    for p in folder.iterdir():
        m = pattern.match(p.stem)
        if m and p.suffix in tuple(suffixes) and p.is_file():
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def image_size(path: Path) -> tuple[int, int]:
    """(W, H) of an image file from its header, without decoding the pixels."""
    if not path.is_file():
        raise LabelfieldError("image file not found", path)
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as e:
        raise LabelfieldError(f"unreadable image ({e})", path) from e


def check_pose(c2w: object, where: str | Path, what: str = "pose") -> np.ndarray:
    """Return `c2w` as a (4, 4) float64 array, or raise naming `where` when it is not a finite 4x4 matrix."""
    try:
        m = np.asarray(c2w, np.float64)
    except (TypeError, ValueError) as e:
        raise LabelfieldError(f"{what} is not a 4x4 matrix of numbers", where) from e
    if m.shape != (4, 4):
        raise LabelfieldError(f"{what} is not 4x4 (shape {m.shape})", where)
    if not np.all(np.isfinite(m)):
        raise LabelfieldError(f"{what} is not finite", where)
    if not is_valid_pose(m):  # every later inverse assumes R^-1 = R^T
        raise LabelfieldError(
            f"{what} is not a rigid transform (rotation not orthonormal or last row not 0 0 0 1)", where
        )
    return m


def check_downscale(downscale: int) -> float:
    """The resize factor for `--downscale N` (1/N)."""
    if int(downscale) != downscale or downscale < 1:
        raise LabelfieldError(f"--downscale must be a positive integer, got {downscale}")
    return 1.0 / int(downscale)


def apply_lut(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map stored ids through `lut` (ids outside it -> 0, void)."""
    labels = np.asarray(labels, np.int64)
    ok = (labels >= 0) & (labels < len(lut))
    return np.where(ok, lut[np.where(ok, labels, 0)], 0)


@dataclass
class FileLoader:
    """`Frame.loader` for images on disk: checks the stored size, converts, maps and checks labels, resizes.

    `source_size` (W, H) is the size every image of the frame must have as stored. `label_lut` maps stored ids
    to class ids (ScanNet ids -> NYU40). `resize_aux` lets depth/labels of another size be resized to the
    colour image (ScanNet's depth camera has its own resolution); otherwise a different size is an error.
    """

    source_size: tuple[int, int]
    classes: ClassTable | None = None
    label_lut: np.ndarray | None = None
    resize_aux: bool = False

    def __call__(self, frame: Frame, kind: str) -> np.ndarray | None:
        path = {
            "rgb": frame.rgb_path,
            "depth": frame.depth_path,
            "labels": frame.label_path,
            "instance": frame.instance_path,
        }.get(kind)
        if path is None:
            return None
        img = read_frame_image(path, kind, frame.background)
        h0, w0 = img.shape[:2]
        if (w0, h0) != tuple(self.source_size) and not (self.resize_aux and kind != "rgb"):
            W, H = self.source_size
            raise LabelfieldError(f"{kind} image is {w0}x{h0}, the frame's images are {W}x{H}", path)
        if kind == "labels":
            if self.label_lut is not None:
                img = apply_lut(img, self.label_lut)
            if self.classes is not None and _has_unknown_ids(img, self.classes):
                self.classes.check_labels(img, path)  # raises, naming the first unknown id
        return _resize(img, frame.size, nearest=kind != "rgb")


# ARKit rates each depth pixel low (0), medium (1) or high (2). Like viser's Record3D loader we keep only the high
# ones: medium pixels cluster on edges and thin structures, where LiDAR depth smears between surfaces.
ARKIT_HIGH_CONFIDENCE = 2


def arkit_confident(conf: np.ndarray) -> np.ndarray:
    """Boolean mask of high-confidence pixels of an ARKit confidence map (H, W).

    Levels stored as 0/1/2 (Record3D) or spread over 0..255 in an 8-bit PNG (Polycam exports seen as 0/54/255
    in public code): a map whose maximum exceeds 2 is read as 8-bit, and only 255 counts as high there.
    """
    conf = np.asarray(conf)
    if conf.size and conf.max() > ARKIT_HIGH_CONFIDENCE:
        return conf >= 255
    return conf >= ARKIT_HIGH_CONFIDENCE


def _has_unknown_ids(labels: np.ndarray, classes: ClassTable) -> bool:
    """Fast check (bincount, not a sort) whether `labels` holds an id outside `classes`."""
    if labels.dtype.kind not in "ui" or labels.size == 0 or labels.min() < 0:
        return True  # let ClassTable.check_labels decide
    present = np.flatnonzero(np.bincount(labels.ravel()))
    return not set(present.tolist()) <= set(classes.ids)


def table_from_label_files(paths: list[Path], lut: np.ndarray | None = None) -> ClassTable:
    """Class table with generic names for every id found in the given label images (no table on disk)."""
    ids: set[int] = set()
    for p in paths:
        img = read_frame_image(p, "labels")
        if lut is not None:
            img = apply_lut(img, lut)
        ids.update(int(i) for i in np.unique(img))
    return ClassTable.from_ids(sorted(ids))


def scaled_intrinsics(intr: Intrinsics, downscale: int) -> Intrinsics:
    """Intrinsics for `--downscale N`."""
    factor = check_downscale(downscale)
    return intr if factor == 1.0 else intr.scaled(factor)


def label_dtype(max_id: int) -> type:
    """uint8 label PNGs, uint16 when an id exceeds 255."""
    if max_id > 65535:
        raise LabelfieldError(f"label id {max_id} does not fit a 16-bit PNG")
    return np.uint8 if max_id <= 255 else np.uint16


def safe_names(frames: list[Frame]) -> list[str]:
    """File stems for frames: their names when unique and file-safe, else frame_00000, frame_00001, ..."""
    names = [f.name for f in frames]
    ok = len(set(names)) == len(names) and all(re.fullmatch(r"[A-Za-z0-9_.\-]+", n) for n in names)
    return names if ok else [f"frame_{i:05d}" for i in range(len(frames))]


def warn(message: str, path: str | Path | None = None) -> None:
    """A non-fatal problem in the input (e.g. a skipped frame), reported as a Python warning."""
    warnings.warn(f"{path}: {message}" if path is not None else message, stacklevel=3)


def read_points_ply(path: Path) -> np.ndarray:
    """The x, y, z (M, 3) float64 of a PLY file's `vertex` element (a sparse SfM cloud: nerfstudio's
    `sparse_pc.ply`, labelfield capture's); other properties are ignored."""
    from plyfile import PlyData, PlyParseError

    try:
        v = PlyData.read(str(path))["vertex"]
        xyz = np.stack([np.asarray(v[k], np.float64) for k in ("x", "y", "z")], 1)
    except (OSError, ValueError, KeyError, PlyParseError) as e:
        raise LabelfieldError(f"not a point cloud with vertex x, y, z: {e}", path) from None
    return xyz[np.isfinite(xyz).all(1)]


def write_points_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray | None = None) -> None:
    """Write points (M, 3) (and colours (M, 3) uint8) as a binary PLY `vertex` element, nerfstudio's layout."""
    from plyfile import PlyData, PlyElement

    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    v = np.empty(len(xyz), fields)
    v["x"], v["y"], v["z"] = np.asarray(xyz).T
    if rgb is not None:
        v["red"], v["green"], v["blue"] = np.asarray(rgb).T
    PlyData([PlyElement.describe(v, "vertex")]).write(str(path))
