"""COLMAP sparse model + images folder (+ optional labels folder): a small reader, text and binary.

    sparse/0/cameras.{txt,bin}, sparse/0/images.{txt,bin}   (or directly in sparse/)
    sparse/0/points3D.{txt,bin}      optional: the sparse points (Scene.points; they size the box without depth)
    images/NAME                      the image files named in images.txt
    labels/STEM.png (or semantics/)  optional class-id PNGs matched to images by name without extension
    classes.json (or labels/classes.json)   optional class table; else the ids found in the labels

COLMAP stores world-to-camera poses as quaternion (w, x, y, z) + translation with OpenCV axes
(`cameras.colmap_to_c2w` converts), and principal points with pixel centres at +0.5
(`Intrinsics.from_half_pixel` converts). Camera models: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV;
distortion is kept as OpenCV (k1, k2, p1, p2). Frames are ordered by image name (integer-aware).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelfield.cameras import Intrinsics, colmap_to_c2w
from labelfield.errors import LabelfieldError
from labelfield.formats.common import (
    FileLoader,
    check_pose,
    natural_key,
    scaled_intrinsics,
    table_from_label_files,
)
from labelfield.formats.replica import read_class_table
from labelfield.scene import Frame, Scene

# COLMAP model id -> (name, number of parameters); the binary format needs the counts even for unsupported models.
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
}
MODEL_IDS = {name: i for i, (name, _) in CAMERA_MODELS.items()}


@dataclass
class ColmapCamera:
    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass
class ColmapImage:
    name: str
    qvec: np.ndarray  # (4,) w, x, y, z of the world-to-camera rotation
    tvec: np.ndarray  # (3,) world-to-camera translation
    camera_id: int


def camera_intrinsics(cam: ColmapCamera, where: Path) -> Intrinsics:
    """A COLMAP camera -> internal Intrinsics (principal point shifted from +0.5 pixel centres)."""
    p = cam.params
    if cam.model == "SIMPLE_PINHOLE":
        fx = fy = p[0]
        cx, cy, dist = p[1], p[2], None
    elif cam.model == "PINHOLE":
        fx, fy, cx, cy, dist = p[0], p[1], p[2], p[3], None
    elif cam.model == "SIMPLE_RADIAL":
        fx = fy = p[0]
        cx, cy, dist = p[1], p[2], (p[3], 0.0, 0.0, 0.0)
    elif cam.model == "RADIAL":
        fx = fy = p[0]
        cx, cy, dist = p[1], p[2], (p[3], p[4], 0.0, 0.0)
    elif cam.model == "OPENCV":
        fx, fy, cx, cy, dist = p[0], p[1], p[2], p[3], tuple(p[4:8])
    else:
        raise LabelfieldError(f"camera model {cam.model} is not supported (use PINHOLE or OPENCV)", where)
    if dist is not None and not any(dist):
        dist = None
    return Intrinsics.from_half_pixel(fx, fy, cx, cy, cam.width, cam.height, dist)


# --- text ---------------------------------------------------------------------------------------------------
def _data_lines(path: Path) -> list[str]:
    try:
        return [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    except (OSError, UnicodeDecodeError) as e:
        raise LabelfieldError(f"unreadable ({e})", path) from e


def read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    cams = {}
    for ln in _data_lines(path):
        if not ln.strip():
            continue
        t = ln.split()
        try:
            cams[int(t[0])] = ColmapCamera(t[1], int(t[2]), int(t[3]), tuple(float(x) for x in t[4:]))
        except (IndexError, ValueError) as e:
            raise LabelfieldError(f"bad camera line {ln!r}", path) from e
    return cams


def read_images_text(path: Path) -> list[ColmapImage]:
    """images.txt: two lines per image (pose line, then a points line that may be empty)."""
    lines, images, k = _data_lines(path), [], 0
    while k < len(lines):
        if not lines[k].strip():
            k += 1
            continue
        t = lines[k].split(maxsplit=9)
        try:
            q = np.array([float(x) for x in t[1:5]])
            tv = np.array([float(x) for x in t[5:8]])
            images.append(ColmapImage(t[9], q, tv, int(t[8])))
        except (IndexError, ValueError) as e:
            raise LabelfieldError(f"bad image line {lines[k]!r}", path) from e
        k += 2
    return images


# --- binary (little-endian, as written by COLMAP) -----------------------------------------------------------
class _Reader:
    def __init__(self, path: Path) -> None:
        self.path, self.data, self.pos = path, path.read_bytes(), 0

    def read(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise LabelfieldError("truncated COLMAP binary file", self.path)
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise LabelfieldError("truncated COLMAP binary file", self.path)
        s = self.data[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return s


def read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    r = _Reader(path)
    cams = {}
    for _ in range(r.read("Q")[0]):
        cam_id, model_id, w, h = r.read("iiQQ")
        if model_id not in CAMERA_MODELS:
            raise LabelfieldError(f"unknown camera model id {model_id}", path)
        name, n = CAMERA_MODELS[model_id]
        cams[cam_id] = ColmapCamera(name, int(w), int(h), r.read("d" * n))
    return cams


def read_images_binary(path: Path) -> list[ColmapImage]:
    r = _Reader(path)
    images = []
    for _ in range(r.read("Q")[0]):
        vals = r.read("idddddddi")
        name = r.string()
        n_points = r.read("Q")[0]
        r.pos += 24 * n_points  # (x, y, point3D_id) per 2D point: not needed
        images.append(ColmapImage(name, np.array(vals[1:5]), np.array(vals[5:8]), vals[8]))
    return images


def read_points3d_binary(path: Path) -> np.ndarray:
    """points3D.bin: the x, y, z (M, 3) of every point (colours, errors and tracks skipped)."""
    r = _Reader(path)
    xyz = []
    for _ in range(r.read("Q")[0]):
        vals = r.read("QdddBBBdQ")  # id, x, y, z, r, g, b, error, track length
        xyz.append(vals[1:4])
        r.pos += 8 * vals[8]  # (image_id, point2D_idx) int32 pairs
    return np.array(xyz, np.float64).reshape(-1, 3)


def read_points3d_text(path: Path) -> np.ndarray:
    """points3D.txt: `POINT3D_ID X Y Z R G B ERROR TRACK...` a line."""
    try:
        xyz = [[float(x) for x in ln.split()[1:4]] for ln in _data_lines(path) if ln.strip()]
    except ValueError as e:
        raise LabelfieldError(f"bad point line: {e}", path) from None
    if any(len(p) != 3 for p in xyz):
        raise LabelfieldError("a point line has fewer than 4 fields", path)
    return np.array(xyz, np.float64).reshape(-1, 3)


def read_points3d(sparse: Path) -> np.ndarray | None:
    """The model's sparse points (M, 3) in its world (binary preferred), or None when it has no points3D file."""
    for ext, read in ((".bin", read_points3d_binary), (".txt", read_points3d_text)):
        if (sparse / f"points3D{ext}").is_file():
            return read(sparse / f"points3D{ext}")
    return None


# --- scene ----------------------------------------------------------------------------------------------------
def sparse_dir(root: Path) -> Path:
    for d in (root / "sparse" / "0", root / "sparse"):
        if any((d / f"cameras{s}").is_file() for s in (".bin", ".txt")):
            return d
    raise LabelfieldError("no COLMAP model (sparse/0/cameras.txt or .bin)", root)


def read_model(sparse: Path) -> tuple[dict[int, ColmapCamera], list[ColmapImage], Path, Path]:
    """Cameras and images of a sparse model (binary preferred when both exist) and the files read."""
    readers = ((".bin", read_cameras_binary, read_images_binary), (".txt", read_cameras_text, read_images_text))
    for ext, read_c, read_i in readers:
        cp, ip = sparse / f"cameras{ext}", sparse / f"images{ext}"
        if cp.is_file():
            if not ip.is_file():
                raise LabelfieldError(f"images{ext} not found beside cameras{ext}", ip)
            return read_c(cp), read_i(ip), cp, ip
    raise LabelfieldError("no cameras.txt or cameras.bin", sparse)


def _label_file(labels_dir: Path | None, name: str) -> Path | None:
    if labels_dir is None:
        return None
    for p in (labels_dir / Path(name).with_suffix(".png"), labels_dir / (Path(name).stem + ".png")):
        if p.is_file():
            return p
    return None


def read_colmap(root: Path, downscale: int = 1) -> Scene:
    """Read a COLMAP model with its images (see the module docstring)."""
    sparse = sparse_dir(root)
    cams, images, cam_path, img_path = read_model(sparse)
    if not images:
        raise LabelfieldError("no registered images", img_path)
    image_dir = root / "images"
    labels_dir = next((d for d in (root / "labels", root / "semantics") if d.is_dir()), None)
    intr_cache: dict[int, tuple[Intrinsics, Intrinsics]] = {}
    specs = []
    for im in sorted(images, key=lambda im: natural_key(im.name)):
        if im.camera_id not in cams:
            raise LabelfieldError(
                f"image {im.name} uses camera {im.camera_id}, which is not in {cam_path.name}", img_path
            )
        if im.camera_id not in intr_cache:
            src = camera_intrinsics(cams[im.camera_id], cam_path)
            intr_cache[im.camera_id] = (src, scaled_intrinsics(src, downscale))
        rgb = image_dir / im.name
        if not rgb.is_file():
            raise LabelfieldError(f"image file not found (listed in {img_path.name})", rgb)
        if not (np.all(np.isfinite(im.qvec)) and np.linalg.norm(im.qvec) > 0):
            raise LabelfieldError(f"image {im.name}: pose quaternion is not finite", img_path)
        c2w = check_pose(colmap_to_c2w(im.qvec, im.tvec), img_path, f"image {im.name}: pose")
        specs.append((im.name, intr_cache[im.camera_id], c2w, rgb, _label_file(labels_dir, im.name)))
    table = read_class_table(root) or (read_class_table(labels_dir) if labels_dir is not None else None)
    classes = table or table_from_label_files([s[4] for s in specs if s[4] is not None])
    stems = [Path(s[0]).stem for s in specs]
    if len(set(stems)) != len(stems):  # same stem in two subfolders: keep the folder in the name
        stems = [str(Path(s[0]).with_suffix("")).replace("/", "_") for s in specs]
    loaders: dict[tuple[int, int], FileLoader] = {}
    frames = []
    for name, (_, (src, intr), c2w, rgb, lab) in zip(stems, specs):
        loader = loaders.setdefault((src.width, src.height), FileLoader((src.width, src.height), classes))
        frames.append(Frame(name, intr, c2w, rgb_path=rgb, label_path=lab, loader=loader))
    return Scene(frames, classes, root, "colmap", points=read_points3d(sparse))
