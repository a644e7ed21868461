"""Record3D (iOS app) `.r3d` export: reader. The `.r3d` file is a zip; its unzipped folder reads the same.

    metadata           JSON: w, h (RGB size), K (3x3 of the RGB camera, *column-major*: fx = K[0], fy = K[4],
                       cx = K[6], cy = K[7]), dw, dh (depth size), fps, poses: one [qx, qy, qz, qw, tx, ty, tz]
                       per frame (ARKit camera-to-world, OpenGL camera axes; `cameras.record3d_to_opencv`),
                       optional perFrameIntrinsicCoeffs: one [fx, fy, cx, cy] per frame at the RGB size
    rgbd/{i}.jpg       (h, w, 3) colour, i = 0, 1, ...
    rgbd/{i}.depth     (dh, dw) float32 metres, row-major, LZFSE-compressed (optional per frame)
    rgbd/{i}.conf      (dh, dw) uint8 ARKit confidence 0/1/2, LZFSE-compressed (optional)

Depth is smaller than the RGB (LiDAR: 256x192): the frames resize it to the RGB size (nearest), so
`Frame.load_depth` matches the camera like every other reader. Pixels that are not finite, not positive, or
(when a .conf exists) below high confidence become 0, labelfield's "no depth". Principal points are read with
pixel centres at +0.5 (as viser's Record3D loader unprojects them). The scene has no labels: add them with
`labelfield labels import` after `labelfield convert SCENE OUT --to transforms`.

The layout and conventions come from public sources (Record3D's author in github.com/marek-simonik/record3d
issues #7, #33, #36, #81, #93; viser's and nerfstudio's Record3D loaders), not from a real device export.
LZFSE needs the `record3d` extra (`pip install labelfield[record3d]`).
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from labelfield.cameras import Intrinsics, record3d_to_opencv
from labelfield.errors import LabelfieldError
from labelfield.formats.common import arkit_confident, check_pose, scaled_intrinsics
from labelfield.scene import ClassTable, Frame, Scene, _resize

METADATA = "metadata"


def is_record3d(root: Path) -> bool:
    """A `.r3d` file, or a folder holding `metadata` and `rgbd/` (an unzipped .r3d)."""
    if root.is_file():
        return root.suffix.lower() == ".r3d"
    return (root / METADATA).is_file() and (root / "rgbd").is_dir()


def _lzfse_decompress():
    """The LZFSE decompressor: the `lzfse` package (the `record3d` extra), else `pyliblzfse`'s `liblzfse`."""
    try:
        import lzfse

        return lzfse.decompress
    except ImportError:
        pass
    try:
        import liblzfse

        return liblzfse.decompress
    except ImportError:
        raise LabelfieldError(
            "Record3D depth is LZFSE-compressed: install the record3d extra (pip install 'labelfield[record3d]')"
        ) from None


class Archive:
    """The files of a Record3D export: members of the `.r3d` zip, or files of its unzipped folder.

    Members are named by their path inside the export ("rgbd/0.jpg"); `path(name)` is `root / name`, a real
    file for a folder and a name under the .r3d file for a zip (used in messages and as `Frame` paths).
    The zip is opened once per process (threads share it: zipfile locks its reads).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.is_zip = root.is_file()
        self._zip: tuple[int, zipfile.ZipFile] | None = None

    def __getstate__(self) -> dict[str, Any]:  # frames may be pickled: the open zip stays behind
        return {**self.__dict__, "_zip": None}

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip[0] != os.getpid():
            try:
                self._zip = (os.getpid(), zipfile.ZipFile(self.root))
            except (zipfile.BadZipFile, OSError) as e:
                raise LabelfieldError(f"not a readable .r3d (zip) file ({e})", self.root) from e
        return self._zip[1]

    def path(self, name: str) -> Path:
        return self.root / name

    def names(self) -> list[str]:
        """Every member name ("metadata", "rgbd/0.jpg", ...)."""
        if self.is_zip:
            return [n for n in self._zipfile().namelist() if not n.endswith("/")]
        rgbd = self.root / "rgbd"
        inner = [f"rgbd/{p.name}" for p in rgbd.iterdir() if p.is_file()] if rgbd.is_dir() else []
        return [p.name for p in self.root.iterdir() if p.is_file()] + inner

    def read(self, name: str) -> bytes:
        """The bytes of member `name`; raises a LabelfieldError naming it when missing or unreadable."""
        try:
            if self.is_zip:
                return self._zipfile().read(name)
            return self.path(name).read_bytes()
        except KeyError:
            raise LabelfieldError("missing from the .r3d archive", self.path(name)) from None
        except FileNotFoundError:
            raise LabelfieldError("file not found", self.path(name)) from None
        except (zipfile.BadZipFile, OSError, EOFError) as e:  # a damaged member (CRC, truncation)
            raise LabelfieldError(f"unreadable ({e})", self.path(name)) from e


def _number_list(meta: dict[str, Any], key: str, n: int | None, where: Path) -> list[float]:
    v = meta.get(key)
    try:
        out = [float(x) for x in v]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise LabelfieldError(f"metadata {key!r} must be a list of numbers", where) from None
    if n is not None and len(out) != n:
        raise LabelfieldError(f"metadata {key!r} has {len(out)} numbers, expected {n}", where)
    return out


def _pose(v: Any, i: int, where: Path) -> np.ndarray:
    try:
        pose = np.asarray(v, np.float64)
    except (TypeError, ValueError):
        pose = np.zeros(0)
    if pose.shape != (7,) or not np.all(np.isfinite(pose)):
        raise LabelfieldError(f"poses[{i}] is not 7 finite numbers [qx, qy, qz, qw, tx, ty, tz]", where)
    if np.linalg.norm(pose[:4]) < 1e-6:
        raise LabelfieldError(f"poses[{i}] has a zero quaternion", where)
    return pose


def _size(meta: dict[str, Any], kw: str, kh: str, where: Path) -> tuple[int, int] | None:
    if kw not in meta and kh not in meta:
        return None
    try:
        w, h = int(meta[kw]), int(meta[kh])
    except (KeyError, TypeError, ValueError):
        raise LabelfieldError(f"metadata {kw!r} and {kh!r} must be integers", where) from None
    if w <= 0 or h <= 0:
        raise LabelfieldError(f"metadata {kw}/{kh} = {w}x{h} is not an image size", where)
    return w, h


def read_metadata(archive: Archive) -> dict[str, Any]:
    """The `metadata` JSON of the export, as a dict."""
    where = archive.path(METADATA)
    try:
        meta = json.loads(archive.read(METADATA).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LabelfieldError(f"metadata is not JSON ({e})", where) from e
    if not isinstance(meta, dict):
        raise LabelfieldError("metadata is not a JSON object", where)
    for key in ("w", "h", "K", "poses"):
        if key not in meta:
            raise LabelfieldError(f"metadata has no {key!r}", where)
    return meta


@dataclass
class Record3DLoader:
    """`Frame.loader` for a Record3D export: JPEG colour, LZFSE depth (+ confidence) resized to the frame.

    `rgb_size` (W, H) is the stored colour size, `depth_size` (W, H) the stored depth size (None: inferred
    from the blob with the colour's aspect ratio). Frames are named by their index i: rgbd/{i}.jpg ...
    """

    archive: Archive
    rgb_size: tuple[int, int]
    depth_size: tuple[int, int] | None
    _confs: set[str] | None = field(default=None, repr=False)  # the .conf members, listed on first use

    def __call__(self, frame: Frame, kind: str) -> np.ndarray | None:
        if kind == "rgb":
            return _resize(self.rgb(frame.name), frame.size, nearest=False)
        if kind == "depth" and frame.depth_path is not None:
            return _resize(self.depth(frame.name), frame.size, nearest=True)
        return None

    def rgb(self, name: str) -> np.ndarray:
        """(H, W, 3) uint8 colour of frame `name`, as stored."""
        member = f"rgbd/{name}.jpg"
        try:
            with Image.open(io.BytesIO(self.archive.read(member))) as im:
                rgb = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise LabelfieldError(f"unreadable image ({e})", self.archive.path(member)) from e
        if (rgb.shape[1], rgb.shape[0]) != self.rgb_size:
            W, H = self.rgb_size
            raise LabelfieldError(
                f"image is {rgb.shape[1]}x{rgb.shape[0]}, the first is {W}x{H}", self.archive.path(member)
            )
        return rgb

    def _blob(self, member: str, dtype: type) -> tuple[np.ndarray, tuple[int, int]]:
        """Decompress an LZFSE member into a (h, w) array of `dtype`."""
        raw = self.archive.read(member)
        where = self.archive.path(member)
        decompress = _lzfse_decompress()
        try:
            data = decompress(raw)
        except Exception as e:  # noqa: BLE001 - lzfse raises its own bare `lzfse.error`
            raise LabelfieldError(f"not an LZFSE-compressed blob ({type(e).__name__} {e})".strip(), where) from e
        arr = np.frombuffer(data, dtype)
        size = self.depth_size or _infer_size(arr.size, self.rgb_size)
        if size is None or arr.size != size[0] * size[1]:
            expected = f"{size[0]}x{size[1]}" if size else f"an image with the colour's {self.rgb_size} aspect"
            raise LabelfieldError(f"holds {arr.size} values of {np.dtype(dtype).name}, expected {expected}", where)
        return arr.reshape(size[1], size[0]), size

    def depth(self, name: str) -> np.ndarray:
        """(dh, dw) float32 metres of frame `name`, 0 where unknown or not confidently measured."""
        depth, size = self._blob(f"rgbd/{name}.depth", np.float32)
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
        conf_member = f"rgbd/{name}.conf"
        if conf_member in self._conf_members():
            conf, csize = self._blob(conf_member, np.uint8)
            if csize != size:
                raise LabelfieldError(
                    f"confidence is {csize[0]}x{csize[1]}, depth is {size[0]}x{size[1]}", self.archive.path(conf_member)
                )
            depth[~arkit_confident(conf)] = 0.0
        return depth

    def _conf_members(self) -> set[str]:
        if self._confs is None:
            self._confs = {n for n in self.archive.names() if n.endswith(".conf")}
        return self._confs


def _infer_size(n: int, rgb_size: tuple[int, int]) -> tuple[int, int] | None:
    """(w, h) of a depth map of n pixels with the colour's aspect ratio (old exports lack dw/dh)."""
    W, H = rgb_size
    w = round(math.sqrt(n * W / H))
    return (w, n // w) if w > 0 and n % w == 0 and abs((n // w) * W - w * H) <= max(W, H) else None


def _intrinsics(meta: dict[str, Any], n_frames: int, where: Path) -> list[Intrinsics]:
    """Per-frame intrinsics at the metadata's RGB size: perFrameIntrinsicCoeffs when it covers every frame,
    else K (the first frame's)."""
    w, h = _size(meta, "w", "h", where)  # type: ignore[misc]  # read_metadata checked the keys
    K = _number_list(meta, "K", 9, where)
    base = Intrinsics.from_half_pixel(K[0], K[4], K[6], K[7], w, h)
    coeffs = meta.get("perFrameIntrinsicCoeffs")
    if not isinstance(coeffs, list) or len(coeffs) < n_frames:
        return [base] * n_frames
    out = []
    for i, c in enumerate(coeffs[:n_frames]):
        try:
            fx, fy, cx, cy = (float(x) for x in c[:4])
        except (TypeError, ValueError):
            raise LabelfieldError(f"perFrameIntrinsicCoeffs[{i}] is not [fx, fy, cx, cy]", where) from None
        out.append(Intrinsics.from_half_pixel(fx, fy, cx, cy, w, h))
    return out


def read_record3d(root: Path, downscale: int = 1) -> Scene:
    """Read a Record3D export (`root` is the .r3d file or its unzipped folder; see the module docstring)."""
    archive = Archive(root)
    meta = read_metadata(archive)
    where = archive.path(METADATA)
    poses = meta["poses"]
    if not isinstance(poses, list):
        raise LabelfieldError("metadata 'poses' must be a list of [qx, qy, qz, qw, tx, ty, tz]", where)
    names = set(archive.names())
    indices = sorted(int(n[5:-4]) for n in names if n.startswith("rgbd/") and n.endswith(".jpg") and n[5:-4].isdigit())
    if not indices:
        raise LabelfieldError("no colour images rgbd/{i}.jpg", archive.path("rgbd"))
    if indices[-1] >= len(poses):
        raise LabelfieldError(f"metadata lists {len(poses)} poses, but there is an image rgbd/{indices[-1]}.jpg", where)

    intrs = _intrinsics(meta, indices[-1] + 1, where)
    meta_size = (intrs[0].width, intrs[0].height)
    loader = Record3DLoader(archive, meta_size, _size(meta, "dw", "dh", where))
    jpg_size = _jpeg_size(archive, f"rgbd/{indices[0]}.jpg")
    factor = 1.0
    if jpg_size != meta_size:  # images stored at another size than the metadata's w x h: follow the images
        factor = jpg_size[0] / meta_size[0]
        if round(meta_size[1] * factor) != jpg_size[1]:
            raise LabelfieldError(
                f"image is {jpg_size[0]}x{jpg_size[1]}, metadata says {meta_size[0]}x{meta_size[1]}",
                archive.path(f"rgbd/{indices[0]}.jpg"),
            )
        loader.rgb_size = jpg_size

    frames = []
    for i in indices:
        c2w = check_pose(record3d_to_opencv(_pose(poses[i], i, where)), where, f"poses[{i}]")
        intr = intrs[i] if factor == 1.0 else intrs[i].scaled(factor)
        depth_member = f"rgbd/{i}.depth"
        frames.append(
            Frame(
                name=str(i),
                intrinsics=scaled_intrinsics(intr, downscale),
                c2w=c2w,
                rgb_path=archive.path(f"rgbd/{i}.jpg"),
                depth_path=archive.path(depth_member) if depth_member in names else None,
                depth_scale=1.0,  # the loader returns metres
                loader=loader,
            )
        )
    return Scene(frames, ClassTable.from_ids([]), root, "record3d")


def _jpeg_size(archive: Archive, member: str) -> tuple[int, int]:
    """(W, H) of a JPEG member from its header."""
    try:
        with Image.open(io.BytesIO(archive.read(member))) as im:
            return im.size
    except (OSError, ValueError) as e:
        raise LabelfieldError(f"unreadable image ({e})", archive.path(member)) from e
