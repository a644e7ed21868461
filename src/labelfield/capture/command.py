"""`labelfield capture INPUT --out SCENE`: a video or a folder of photos -> a posed transforms.json scene.

INPUT is a video (sampled evenly with --frames N or --fps F, blurry frames dropped) or a folder of images
(all of one size, names kept as frame names). SfM runs with pycolmap (`pip install 'labelfield[capture]'`),
the poses are normalised (gravity up = +z, scene in a unit box; see normalize.py) and SCENE gets:
    transforms.json        nerfstudio layout, OpenGL poses, pinhole intrinsics, an empty class table
                           (`labelfield labels import` adds labels), "ply_file_path": "sparse_pc.ply"
    images/<frame>.png     the frames (undistorted when the camera model has distortion)
    sparse_pc.ply          triangulated SfM points, normalised frame: x y z red green blue (as nerfstudio)
    sparse_points.npz      xyz (P, 3), rgb (P, 3), error (P,) px; per observation obs_point (M,),
                           obs_frame (M,) (index into transforms.json's frames), obs_uv (M, 2) pixel
                           coordinates (integer pixel centres); frame_names (N,)
    capture.json           input, sampled/dropped frames with sharpness, SfM statistics, the similarity
                           that normalised the scene, the camera model
    colmap/                the chosen COLMAP model before normalisation (cameras/images/points3D .bin)
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import tyro

from labelfield.capture.frames import SampledFrame, is_video, read_folder, read_video
from labelfield.capture.normalize import Similarity, normalising_similarity
from labelfield.capture.sfm import SfmOptions, SfmResult, import_pycolmap, run_sfm
from labelfield.errors import LabelfieldError


@dataclass
class CaptureCommand:
    """Poses from a phone video or a folder of photos (structure-from-motion) -> a transforms.json scene."""

    input: tyro.conf.Positional[Path]
    """A video file (.mp4, .mov, ...) or a folder of images."""
    out: Path
    """Scene folder to write (replaced atomically when everything is written)."""
    frames: Optional[int] = None
    """Video: sample this many frames evenly over the whole video (default: 100, unless --fps is given)."""
    fps: Optional[float] = None
    """Video: sample this many frames per second instead of --frames."""
    blur_ratio: float = 0.5
    """Drop a frame whose sharpness (variance of the Laplacian) is below this fraction of its neighbours' median
    (0 keeps every frame; folders are only filtered when --filter-folder)."""
    filter_folder: bool = False
    """Apply the blur filter to a folder of images too."""
    max_size: int = 960
    """Resize frames so the longer side is at most this many pixels (0 = keep the size)."""
    sfm: SfmOptions = field(default_factory=SfmOptions)
    """Structure-from-motion options."""
    verbose: bool = False
    """Show COLMAP's own log."""
    progress: bool = True
    """Show the progress of each stage."""

    def run(self) -> int:
        from rich.console import Console

        src = Path(self.input)
        if not src.exists():
            raise LabelfieldError("input not found", src)
        if self.out.exists() and not self.out.is_dir():
            raise LabelfieldError("output exists and is not a folder", self.out)
        if src.is_dir() and _overlaps(src, self.out):
            raise LabelfieldError("refusing to write the scene into (or over) the input folder", self.out)
        result, sim, meta = capture(self, src)
        stats = result.stats
        Console().print(
            f"wrote {self.out}: {len(result.names)} of {stats['n_frames']} frames registered "
            f"({stats['n_models']} model(s), sizes {stats['model_sizes'][:5]}), {len(result.xyz)} sparse points, "
            f"scene scaled by {sim.scale:.4g} into a unit box"
        )
        return 0


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def load_frames(cmd: CaptureCommand, src: Path) -> tuple[list[SampledFrame], bool, int]:
    """Sampled frames, whether they come from a video, and how many were candidates before the blur filter."""
    if src.is_dir():
        frames, candidates = read_folder(src, cmd.blur_ratio if cmd.filter_folder else 0.0)
        return frames, False, candidates
    if not is_video(src):
        raise LabelfieldError("expected a video file (.mp4, .mov, ...) or a folder of images", src)
    if cmd.frames is not None and cmd.fps is not None:
        raise LabelfieldError("give --frames or --fps, not both")
    n = cmd.frames if (cmd.frames is not None or cmd.fps is not None) else 100
    frames, candidates = read_video(src, n, cmd.fps, cmd.blur_ratio)
    return frames, True, candidates


def _resize(rgb: np.ndarray, max_size: int) -> np.ndarray:
    from PIL import Image

    h, w = rgb.shape[:2]
    if max_size <= 0 or max(h, w) <= max_size:
        return rgb
    s = max_size / max(h, w)
    return np.array(Image.fromarray(rgb).resize((round(w * s), round(h * s)), Image.LANCZOS))


@contextmanager
def _stages(show: bool):
    """A `stage(name, total) -> advance(n)` callback drawing one rich progress line per SfM stage."""
    if not show:
        yield lambda name, total: lambda k: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    cols = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols) as bar:
        current: list = []

        def stage(name: str, total: int | None):
            if current:  # the previous stage is done
                t = bar.tasks[current[-1]]
                bar.update(current[-1], total=t.completed or 1, completed=t.completed or 1)
            current.append(bar.add_task(name, total=total if total is not None else 1))
            return lambda k: bar.advance(current[-1], k)

        yield stage
        if current:
            t = bar.tasks[current[-1]]
            bar.update(current[-1], total=t.completed or 1, completed=t.completed or 1)


def capture(cmd: CaptureCommand, src: Path) -> tuple[SfmResult, Similarity, dict]:
    """Run every stage and write the scene; returns the SfM result, the normalising similarity and capture.json."""
    from labelfield.io import write_image

    pycolmap = import_pycolmap()
    if not cmd.verbose:
        pycolmap.logging.minloglevel = 2  # errors only; our progress lines say what is happening
    frames, from_video, candidates = load_frames(cmd, src)
    with tempfile.TemporaryDirectory(prefix="labelfield-capture-") as tmp:
        work = Path(tmp)
        h, w = frames[0].rgb.shape[:2]
        if all(f.path is not None for f in frames) and (cmd.max_size <= 0 or max(h, w) <= cmd.max_size):
            image_dir, files = src, [f.path.name for f in frames]  # the originals: COLMAP reads their EXIF focal
        else:
            image_dir, files = work / "input", []
            for f in frames:
                files.append(f"{f.name}.png")
                write_image(image_dir / files[-1], _resize(f.rgb, cmd.max_size))
        with _stages(cmd.progress) as stage:
            result = run_sfm(image_dir, [f.name for f in frames], files, work, cmd.sfm, from_video, stage)
            stage("writing the scene", None)
            sim = normalising_similarity(np.stack(result.c2w), result.xyz)
            meta = {
                "input": str(src.resolve()),
                "kind": "video" if from_video else "images",
                "candidates": candidates,
                "frames": [
                    {
                        "name": f.name,
                        "source_index": f.source_index,
                        "sharpness": round(f.sharpness, 3),
                        "registered": f.name in set(result.names),
                    }
                    for f in frames
                ],
                "sfm": {
                    **result.stats,
                    "camera_model": cmd.sfm.camera_model,
                    "fov_hint": cmd.sfm.fov,
                    "fix_intrinsics": cmd.sfm.fix_intrinsics,
                    "undistorted": cmd.sfm.camera_model not in ("SIMPLE_PINHOLE", "PINHOLE"),
                },
                "normalisation": {
                    **sim.to_json(),
                    "how": "x' = scale * rotation @ x + translation; rotation takes the mean camera up (-y) to +z; "
                    "the box of camera centres and 1-99 % point percentiles becomes a cube of side 1 at 0",
                },
            }
            write_capture(result, sim, cmd.out, meta)
    return result, sim, meta


def write_capture(result: SfmResult, sim: Similarity, out: Path, meta: dict) -> Path:
    """Write the normalised scene (transforms.json + images), the sparse points and capture.json, atomically."""
    from labelfield.formats.common import write_points_ply
    from labelfield.formats.transforms import write_transforms
    from labelfield.io import atomic_dir, read_json, write_json
    from labelfield.scene import ClassTable, Frame, Scene

    frames = [
        Frame(name, intr, sim.pose(c2w), rgb_path=img)
        for name, intr, c2w, img in zip(result.names, result.intrinsics, result.c2w, result.images)
    ]
    scene = Scene(frames, ClassTable.from_names(["void"]), None, "memory")
    xyz = sim.points(result.xyz)
    with atomic_dir(out) as tmp:
        write_transforms(scene, tmp)
        doc = read_json(tmp / "transforms.json")
        doc["ply_file_path"] = "sparse_pc.ply"
        write_json(tmp / "transforms.json", doc)
        write_points_ply(tmp / "sparse_pc.ply", xyz, result.rgb)
        np.savez_compressed(
            tmp / "sparse_points.npz",
            xyz=xyz.astype(np.float32),
            rgb=result.rgb,
            error=result.error,
            obs_point=result.obs_point,
            obs_frame=result.obs_frame,
            obs_uv=result.obs_uv,
            frame_names=np.array(result.names),
        )
        write_json(tmp / "capture.json", meta)
        if result.colmap_model is not None:
            shutil.copytree(result.colmap_model, tmp / "colmap")
    return out
