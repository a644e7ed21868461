"""Small file helpers shared by every stage: atomic writes, image I/O, depth PNG units, path overlap.

Every file labelfield writes goes through `atomic_path` (write to a temporary sibling, then `os.replace`),
so a crash or Ctrl-C never leaves a half-written output and never destroys the previous version.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from labelfield.errors import LabelfieldError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically.

    Example:
        >>> with atomic_path("out.png") as tmp:
        ...     Image.fromarray(img).save(tmp, format="PNG")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` (old contents removed last)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise LabelfieldError("file not found", path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LabelfieldError(f"not valid JSON ({e})", path) from e


def read_image(path: str | Path) -> np.ndarray:
    """Read any image Pillow understands as a numpy array, exactly as stored (uint8/uint16, 1-4 channels)."""
    path = Path(path)
    if not path.is_file():
        raise LabelfieldError("image file not found", path)
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L"):
                return np.array(im, dtype=np.uint16)
            if im.mode == "P":
                return np.array(im)  # palette PNG: the indices are the labels
            if im.mode == "I":
                return np.array(im).astype(np.int64)
            return np.array(im)
    except (OSError, ValueError) as e:
        raise LabelfieldError(f"unreadable image ({e})", path) from e


def write_image(
    path: str | Path, array: np.ndarray, palette: np.ndarray | None = None, compress_level: int | None = None
) -> None:
    """Write an image atomically. uint16 single-channel stays 16-bit; `palette` (K,3) makes an indexed PNG.

    compress_level: PNG zlib level 0-9 (None: Pillow's default, 6). Photographs (rgb, overlay) at 1 encode ~5x
    faster for ~10 % more bytes (320x240: 8 instead of 42 CPU-ms), which matters on the annotate path."""
    array = np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        im = Image.fromarray(array)
    else:
        im = Image.fromarray(array.astype(np.uint8) if array.dtype != np.uint8 else array)
    if palette is not None:
        # putpalette on an 'L' image turns it into 'P' and keeps the indices as they are.
        pal = np.zeros((256, 3), np.uint8)
        pal[: len(palette)] = np.asarray(palette, np.uint8)[:256]
        im.putpalette(pal.reshape(-1).tolist())
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower(), "PNG")
    opts = {"compress_level": compress_level} if compress_level is not None and fmt == "PNG" else {}
    with atomic_path(path) as tmp:
        im.save(tmp, format=fmt, **opts)


def paths_overlap(a: str | Path, b: str | Path) -> bool:
    """True when `a` is `b`, lies inside it, or contains it (after resolving links): writing one would touch
    the other. Commands use it to refuse an output folder that overlaps an input."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or b in a.parents or a in b.parents


MM_PER_METRE = 1000.0
"""Depth PNGs store uint16 millimetres (0 = unknown)."""


def depth_to_mm(depth: np.ndarray) -> np.ndarray:
    """Depth in metres (H, W) -> uint16 millimetres (0 = unknown: NaN, inf, <= 0; clipped at 65.535 m)."""
    d = np.nan_to_num(np.asarray(depth, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.round(d * MM_PER_METRE), 0, 65535).astype(np.uint16)


def mm_to_depth(mm: np.ndarray) -> np.ndarray:
    """uint16 millimetres (H, W) -> float32 metres (0 stays 0, unknown)."""
    return np.asarray(mm).astype(np.float32) / np.float32(MM_PER_METRE)
