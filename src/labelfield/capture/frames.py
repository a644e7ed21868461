"""Input frames for `labelfield capture`: sample a video evenly, drop blurry frames, or list an image folder.

Sharpness is the variance of the 4-neighbour Laplacian of the grey image (the usual focus measure: blur
removes high frequencies, so the Laplacian's spread drops). A frame is dropped when its score is below
`blur_ratio` times the median score of its `blur_window` nearest sampled neighbours (a local median, so a
video whose content changes from busy to plain does not lose its plain half).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelfield.errors import LabelfieldError
from labelfield.io import read_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")


@dataclass
class SampledFrame:
    """One input frame: its name (file stem, or `frame_<video index>`), (H, W, 3) uint8 image and score."""

    name: str
    rgb: np.ndarray
    source_index: int
    sharpness: float
    path: Path | None = None  # the image file, for a folder input


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image (H, W[, 3]) in [0, 255] units; higher = sharper."""
    g = np.asarray(rgb, np.float32)
    if g.ndim == 3:
        g = g[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def drop_blurry(scores: np.ndarray, ratio: float, window: int = 9) -> np.ndarray:
    """Keep mask (N,) for sharpness `scores` (N,): False where a score < ratio x its local median.

    `window` neighbours (the frame itself included) give the median; ratio <= 0 keeps everything.
    """
    scores = np.asarray(scores, np.float64)
    n = len(scores)
    if ratio <= 0 or n == 0:
        return np.ones(n, bool)
    half = max(window, 1) // 2
    med = np.array([np.median(scores[max(0, i - half) : i + half + 1]) for i in range(n)])
    return scores >= ratio * med


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise LabelfieldError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder", folder)
    return files


def read_folder(folder: Path, blur_ratio: float = 0.0) -> tuple[list[SampledFrame], int]:
    """Every image of `folder` (names = file stems), optionally without the blurry ones; and the count before."""
    out = []
    for k, p in enumerate(list_images(folder)):
        img = read_image(p)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        if img.dtype != np.uint8:
            img = (img / 257.0).round().astype(np.uint8)
        out.append(SampledFrame(p.stem, np.ascontiguousarray(img[..., :3]), k, 0.0, p))
    sizes = {f.rgb.shape[:2] for f in out}
    if len(sizes) > 1:
        raise LabelfieldError(f"images differ in size ({len(sizes)} sizes); resize them to one size first", folder)
    return _filter(out, blur_ratio), len(out)


def _filter(frames: list[SampledFrame], blur_ratio: float) -> list[SampledFrame]:
    if blur_ratio <= 0:
        return frames
    for f in frames:
        f.sharpness = sharpness(f.rgb)
    keep = drop_blurry(np.array([f.sharpness for f in frames]), blur_ratio)
    return [f for f, k in zip(frames, keep) if k]


def video_info(path: Path) -> tuple[int, float]:
    """(number of frames, frames per second) of a video, read by ffmpeg (imageio-ffmpeg)."""
    ffmpeg = _imageio_ffmpeg()
    try:
        n, secs = ffmpeg.count_frames_and_secs(str(path))
        meta = next(ffmpeg.read_frames(str(path)))
    except (RuntimeError, OSError, StopIteration) as e:
        raise LabelfieldError(f"cannot read the video ({str(e).splitlines()[0] if str(e) else e})", path) from e
    fps = float(meta.get("fps") or (n / secs if secs else 0.0))
    return int(n), fps


def sample_indices(n_total: int, fps: float, frames: int | None, every_fps: float | None) -> list[int]:
    """Evenly spaced frame indices: `frames` N over the whole video, or `every_fps` F frames per second."""
    if n_total <= 0:
        return []
    if frames is not None:
        n = min(max(frames, 1), n_total)
        return sorted({int(round(x)) for x in np.linspace(0, n_total - 1, n)})
    if every_fps is not None:
        if every_fps <= 0 or fps <= 0:
            raise LabelfieldError(f"--fps must be positive and the video's frame rate known (got {every_fps}, {fps})")
        step = max(fps / every_fps, 1.0)
        return sorted({int(round(x)) for x in np.arange(0, n_total, step)} & set(range(n_total)))
    return list(range(n_total))


def read_video(
    path: Path, frames: int | None = None, every_fps: float | None = None, blur_ratio: float = 0.5
) -> tuple[list[SampledFrame], int]:
    """Sample a video evenly (`frames` N, or `every_fps` F per second, or all) and drop blurry frames.

    Frames are named `frame_<index in the video, 5 digits>`. Decoding streams the video once. Returns the kept
    frames and the number sampled before the blur filter.
    """
    ffmpeg = _imageio_ffmpeg()
    n_total, fps = video_info(path)
    wanted = set(sample_indices(n_total, fps, frames, every_fps))
    out = []
    gen = ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    for i, raw in enumerate(gen):
        if i in wanted:
            rgb = np.frombuffer(raw, np.uint8).reshape(h, w, 3).copy()
            out.append(SampledFrame(f"frame_{i:05d}", rgb, i, 0.0))
    gen.close()
    if not out:
        raise LabelfieldError("the video has no frames", path)
    return _filter(out, blur_ratio), len(out)


def _imageio_ffmpeg():
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise LabelfieldError("reading videos needs imageio-ffmpeg: pip install 'labelfield[video]'") from e
    return imageio_ffmpeg
