"""Polycam raw-data export (iOS/Android app, "raw data" export with developer mode): reader.

    keyframes/images/{ts}.jpg              colour keyframes, named by timestamp
    keyframes/cameras/{ts}.json            fx, fy, cx, cy, width, height, blur_score and the 3x4 camera matrix
                                           t_00 .. t_23 (ARKit camera-to-world, OpenGL camera axes, world +y up;
                                           `cameras.polycam_to_opencv`)
    keyframes/corrected_images/, corrected_cameras/   the same after Polycam's own pose refinement: preferred
                                           when both are present, as nerfstudio does
    keyframes/depth/{ts}.png               uint16 millimetres, smaller than the images (resized to them, nearest)
    keyframes/confidence/{ts}.png          ARKit confidence per depth pixel (optional): below high -> depth 0

`root` is the export folder (or its keyframes/ folder). Principal points are read with pixel centres at +0.5,
as nerfstudio's polycam_utils passes them into its transforms.json unchanged. Frames keep Polycam's order
(by timestamp) and are named by it; blur_score is not used to drop frames. The scene has no labels: add them
with `labelfield labels import` after `labelfield convert SCENE OUT --to transforms`.

The layout and conventions come from public readers (nerfstudio's process_data/polycam_utils.py, gaustudio's
Polycam dataset), not from a real device export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labelfield.cameras import Intrinsics, polycam_to_opencv
from labelfield.errors import LabelfieldError
from labelfield.formats.common import (
    IMAGE_SUFFIXES,
    FileLoader,
    arkit_confident,
    check_pose,
    image_size,
    natural_key,
    scaled_intrinsics,
)
from labelfield.io import read_json
from labelfield.scene import ClassTable, Frame, Scene, _resize, read_frame_image

_MATRIX_KEYS = tuple(f"t_{r}{c}" for r in range(3) for c in range(4))


def keyframes_dir(root: Path) -> Path | None:
    """The keyframes/ folder of a Polycam export at `root` (the export or keyframes/ itself), or None."""
    for kf in (root / "keyframes", root):
        if (kf / "cameras").is_dir() or (kf / "corrected_cameras").is_dir():
            return kf
    return None


@dataclass
class PolycamLoader(FileLoader):
    """`FileLoader` that also drops depth pixels below ARKit's high confidence (`confidence`: name -> PNG)."""

    confidence: dict[str, Path] = field(default_factory=dict)

    def __call__(self, frame: Frame, kind: str) -> np.ndarray | None:
        out = super().__call__(frame, kind)
        conf_path = self.confidence.get(frame.name)
        if kind != "depth" or out is None or conf_path is None:
            return out
        conf = read_frame_image(conf_path, "mask")
        if conf.shape[1] * out.shape[0] != conf.shape[0] * out.shape[1]:
            raise LabelfieldError(
                f"confidence map is {conf.shape[1]}x{conf.shape[0]}, not the depth's aspect", conf_path
            )
        keep = _resize(arkit_confident(conf).astype(np.uint8), frame.size, nearest=True).astype(bool)
        return np.where(keep, out, 0).astype(out.dtype)


def _camera(path: Path) -> tuple[Intrinsics, np.ndarray]:
    """A keyframe camera JSON -> (intrinsics at its width x height, OpenCV c2w)."""
    d = read_json(path)
    if not isinstance(d, dict):
        raise LabelfieldError("camera file is not a JSON object", path)
    missing = [k for k in ("fx", "fy", "cx", "cy", "width", "height", *_MATRIX_KEYS) if k not in d]
    if missing:
        raise LabelfieldError(f"camera file has no {missing[0]!r}", path)
    try:
        intr = Intrinsics.from_half_pixel(
            float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]), int(d["width"]), int(d["height"])
        )
        t = np.array([float(d[k]) for k in _MATRIX_KEYS])
    except (TypeError, ValueError) as e:
        raise LabelfieldError(f"camera values are not numbers ({e})", path) from e
    if not np.all(np.isfinite(t)):
        raise LabelfieldError("camera matrix is not finite", path)
    return intr, check_pose(polycam_to_opencv(t.reshape(3, 4)), path, "camera matrix t_00..t_23")


def read_polycam(root: Path, downscale: int = 1) -> Scene:
    """Read a Polycam raw-data export (see the module docstring)."""
    kf = keyframes_dir(root)
    if kf is None:
        raise LabelfieldError("not a Polycam export: no keyframes/cameras/ folder", root)
    corrected = (kf / "corrected_images").is_dir() and (kf / "corrected_cameras").is_dir()
    img_dir, cam_dir = (
        (kf / "corrected_images", kf / "corrected_cameras") if corrected else (kf / "images", kf / "cameras")
    )
    images = sorted(
        (p for p in img_dir.iterdir() if p.is_file() and p.suffix in IMAGE_SUFFIXES) if img_dir.is_dir() else [],
        key=lambda p: natural_key(p.stem),
    )
    if not images:
        raise LabelfieldError("no keyframe images", img_dir)
    cams = [_camera(cam_dir / f"{p.stem}.json") for p in images]
    # Images stored at another size than the cameras' width x height (same aspect): follow the images.
    W0, H0 = image_size(images[0])
    factor = W0 / cams[0][0].width
    if round(cams[0][0].height * factor) != H0:
        raise LabelfieldError(
            f"image is {W0}x{H0}, its camera file says {cams[0][0].width}x{cams[0][0].height}",
            images[0],
        )

    frames = []
    loaders: dict[tuple[int, int], PolycamLoader] = {}
    confidence: dict[str, Path] = {}
    for p, (intr, c2w) in zip(images, cams):
        src = intr if factor == 1.0 else intr.scaled(factor)
        depth = kf / "depth" / f"{p.stem}.png"
        conf = kf / "confidence" / f"{p.stem}.png"
        if depth.is_file() and conf.is_file():
            confidence[p.stem] = conf
        size = (src.width, src.height)
        loader = loaders.setdefault(size, PolycamLoader(size, resize_aux=True, confidence=confidence))
        frames.append(
            Frame(
                name=p.stem,
                intrinsics=scaled_intrinsics(src, downscale),
                c2w=c2w,
                rgb_path=p,
                depth_path=depth if depth.is_file() else None,
                loader=loader,
            )
        )
    return Scene(frames, ClassTable.from_ids([]), root, "polycam")
