"""Novel views along a camera path, written as a video of RGB | labels side by side.

Camera paths (all poses end up OpenCV camera-to-world via `labelfield.cameras`):
    *.json with "frames": transforms.json style; `transform_matrix` is OpenGL c2w (`opengl_to_opencv`), camera
        keys fl_x/fl_y/cx/cy/w/h or camera_angle_x at the top level or per frame (+0.5 pixel-centre
        convention, `Intrinsics.from_half_pixel`); frames without camera keys use the scene's camera.
    *.json with "camera_path": nerfstudio's camera_path.json; `camera_to_world` is a flattened OpenGL 4x4,
        `fov` the vertical field of view in degrees, size from render_width/render_height.
    any other file: a traj_w_c.txt-style text file, one row-major 4x4 OpenCV c2w per line (the scene's camera).
Output: `<out>.mp4` (H.264 via imageio-ffmpeg, the `video` extra) or, without ffmpeg, PNG frames in a folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from labelfield.annotate.frames import labels_from_render, rgb_to_uint8
from labelfield.cameras import Intrinsics, opengl_to_opencv
from labelfield.errors import LabelfieldError
from labelfield.formats.transforms import camera_intrinsics, camera_keys, has_focal
from labelfield.io import write_image
from labelfield.progress import Progress, ProgressFn, message
from labelfield.scene import ClassTable

Camera = tuple[Intrinsics, np.ndarray]


def _pose(m: Any, path: Path, what: str) -> np.ndarray:
    try:
        a = np.asarray(m, np.float64).reshape(4, 4)
    except (TypeError, ValueError) as e:
        raise LabelfieldError(f"{what} is not a 4x4 matrix", path) from e
    if not np.all(np.isfinite(a)):
        raise LabelfieldError(f"{what} is not finite", path)
    return a


def read_camera_path(path: str | Path, default: Intrinsics) -> list[Camera]:
    """Read a camera path file (see the module header) -> [(intrinsics, OpenCV c2w (4, 4))]."""
    path = Path(path)
    if not path.is_file():
        raise LabelfieldError("trajectory file not found", path)
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LabelfieldError(f"not valid JSON ({e})", path) from e
        try:
            if isinstance(doc, dict) and "frames" in doc:
                size = (default.width, default.height)
                cams = []
                for i, f in enumerate(doc["frames"]):
                    cam = camera_keys(doc, f)  # the scene's camera where the file names none
                    intr = camera_intrinsics(cam, size, path) if has_focal(cam) else default
                    c2w_gl = _pose(f["transform_matrix"], path, f"frames[{i}].transform_matrix")
                    cams.append((intr, opengl_to_opencv(c2w_gl)))
                return cams
            if isinstance(doc, dict) and "camera_path" in doc:
                w = int(doc.get("render_width", default.width))
                h = int(doc.get("render_height", default.height))
                cams = []
                for i, c in enumerate(doc["camera_path"]):
                    fy = 0.5 * h / math.tan(0.5 * math.radians(float(c["fov"])))
                    intr = Intrinsics(fy, fy, (w - 1) / 2, (h - 1) / 2, w, h)
                    cams.append((intr, opengl_to_opencv(_pose(c["camera_to_world"], path, f"camera_path[{i}]"))))
                return cams
        except (KeyError, TypeError, ValueError) as e:
            raise LabelfieldError(f"malformed camera path ({e})", path) from e
        raise LabelfieldError("expected a transforms.json ('frames') or nerfstudio camera_path.json", path)
    from labelfield.formats.replica import read_trajectory

    return [(default, c2w) for c2w in read_trajectory(path)]


def side_by_side(rgb: np.ndarray, color: np.ndarray) -> np.ndarray:
    """(H, W, 3) + (H, W, 3) -> (H', 2W', 3) uint8, padded to even sizes (H.264 with yuv420p needs them)."""
    img = np.concatenate([rgb, color], 1)
    H, W = img.shape[:2]
    return np.pad(img, ((0, H % 2), (0, W % 2), (0, 0)))


def _video_writer(path: Path, fps: float):
    """An imageio ffmpeg writer, or None when imageio-ffmpeg is not installed."""
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return None
    return imageio.get_writer(
        path, format="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=1, pixelformat="yuv420p"
    )


def render_trajectory(
    render_fn: Callable[[Intrinsics, np.ndarray], dict[str, Any]],
    cameras: list[Camera],
    classes: ClassTable,
    out: str | Path,
    fps: float = 24.0,
    opacity_threshold: float = 0.5,
    video: bool = True,
    on_progress: ProgressFn | None = None,
) -> Path:
    """Render `cameras` and write `out` (.mp4), or PNG frames in the folder `out` without its suffix.

    Returns the path written (the .mp4 file, or the folder of PNGs). Frames stream to disk one at a time.
    `on_progress` receives Progress("trajectory", done, total, "views"), and a warning when PNGs replace the
    video (no imageio-ffmpeg).
    """
    out = Path(out)
    if not cameras:
        raise LabelfieldError("camera path has no cameras")
    writer = _video_writer(out, fps) if video else None
    target = out if writer is not None else out.with_suffix("")
    if writer is None and video:
        message(
            on_progress,
            f"imageio-ffmpeg not installed (pip install 'labelfield[video]'): writing PNG frames to {target}/",
            "warning",
        )
    try:
        for k, (intr, c2w) in enumerate(cameras):
            r = render_fn(intr, c2w)
            labels, _ = labels_from_render(r, classes, opacity_threshold)
            frame = side_by_side(rgb_to_uint8(r["rgb"]), classes.colorize(labels))
            if writer is not None:
                writer.append_data(frame)
            else:
                write_image(target / f"{k:05d}.png", frame)
            if on_progress is not None:
                on_progress(Progress("trajectory", k + 1, len(cameras), "views"))
    finally:
        if writer is not None:
            writer.close()
    return target
