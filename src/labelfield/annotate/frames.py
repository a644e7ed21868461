"""Render frames and turn the renders into a LABELS folder (labels, colours, overlay, confidence, rgb, depth).

Notation: H, W image size; C = `classes.num_classes` (training indices 0..C-1 over the non-void ids).
`render_fn(intrinsics, c2w) -> dict` returns, like `labelfield.render.chunked.render_image`:
    rgb (H, W, 3) float in [0, 1], depth (H, W) z-depth in metres, opacity (H, W) in [0, 1],
    probs (H, W, C) class probabilities over training indices — torch tensors or numpy arrays.

Labels are the **original class ids** of the argmax class. Where the field has no surface (opacity below
`opacity_threshold`) a pixel is void (0), or the table's `background_class` when the scene declares one. The
commands' default threshold is `auto_opacity_threshold`: 0.5 where a ray can miss every surface, 0 in rooms.
A human annotation is never overwritten: on frames in `given` (with `keep_given`) every pixel the user
labelled (non-void) keeps the user's label, and only the rest is filled by the prediction.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from labelfield.cameras import Intrinsics
from labelfield.errors import LabelfieldError
from labelfield.labelset import FrameRecord, write_frame, write_manifest
from labelfield.progress import Progress, ProgressFn
from labelfield.scene import ClassTable, Scene

RenderFn = Callable[[Intrinsics, np.ndarray], dict[str, Any]]


def to_numpy(x: Any) -> np.ndarray:
    """Torch tensor (any device) or array-like -> numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


MISS_SHARE = 0.2
"""Share of a frame's pixels without depth above which `auto_opacity_threshold` takes its rays to be able to miss
every surface (sensor holes in rooms are a few per cent; an object on an empty background, most of the frame)."""


def auto_opacity_threshold(scene: Scene, classes: ClassTable, max_frames: int = 8) -> float:
    """annotate's `--opacity-threshold auto`: 0.5 where a ray can miss every surface, else 0. Missing a surface
    is possible with a background class in the table; with depth maps, where over `MISS_SHARE` of a frame's
    pixels (median of up to `max_frames` frames) have none (an object before an empty background); without
    depth, in an object capture (cameras looking inward, `render.bounds.inward_centre`).

    In a room every pixel sees a surface, and a ray the field has not made opaque yet (RGB only, a short fit)
    still carries the right label: on the captured room of tests/test_capture.py (320x240, 300 steps) a 0.5
    threshold made 37 % of the pixels void (walls, the bed) and gave mIoU 0.640 / accuracy 0.488, against
    0.770 / 0.953 without it."""
    from labelfield.render.bounds import inward_centre

    if classes.background_class is not None:
        return 0.5
    if scene.frames and all(f.has_depth() for f in scene.frames):
        pick = np.unique(np.linspace(0, len(scene.frames) - 1, min(max_frames, len(scene.frames))).round())
        miss = []
        for i in pick.astype(int):
            d = scene.frames[i].load_depth()
            miss.append(float(np.mean(~(np.isfinite(d) & (d > 0)))) if d is not None else 0.0)
        return 0.5 if float(np.median(miss)) > MISS_SHARE else 0.0
    return 0.5 if inward_centre(scene) is not None else 0.0


def labels_from_render(
    out: dict[str, Any], classes: ClassTable, opacity_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Render dict -> (labels (H, W) original ids, confidence (H, W) float32 max probability in [0, 1]).

    `out` holds probs (H, W, C), or (from `render.chunked.render_labels_image`) label (H, W) training
    indices and confidence (H, W). Pixels without a surface (opacity < threshold) get void with confidence 0,
    or the background class (confidence 1 - opacity: how surely the ray missed) when `classes.background_class`
    is set.
    """
    if out.get("label") is not None and out.get("confidence") is not None:  # argmax already done by the renderer
        index = to_numpy(out["label"]).astype(np.int64)
        if index.size and (index.min() < 0 or index.max() >= classes.num_classes):
            raise LabelfieldError(f"render gave label indices outside 0..{classes.num_classes - 1}")
        labels = classes.to_ids(index)
        confidence = to_numpy(out["confidence"]).astype(np.float32).clip(0.0, 1.0)
    else:
        probs = to_numpy(out["probs"]).astype(np.float32)
        if probs.ndim != 3 or probs.shape[-1] != classes.num_classes:
            raise LabelfieldError(
                f"render gave probs of shape {probs.shape}, expected (H, W, {classes.num_classes}) for the class table"
            )
        labels = classes.to_ids(probs.argmax(-1))
        confidence = probs.max(-1).clip(0.0, 1.0)
    if "opacity" in out and out["opacity"] is not None:
        opacity = to_numpy(out["opacity"]).astype(np.float32).reshape(labels.shape)
        empty = opacity < opacity_threshold
        if classes.background_class is not None:
            labels[empty] = classes.background_class
            confidence[empty] = (1.0 - opacity[empty]).clip(0.0, 1.0)
        else:
            labels[empty] = classes.void_id
            confidence[empty] = 0.0
    return labels, confidence


def merge_given(labels: np.ndarray, confidence: np.ndarray, user: np.ndarray, void_id: int = 0) -> None:
    """In place: pixels the user labelled (user != void) take the user's label with confidence 1."""
    user = np.asarray(user)
    if user.shape != labels.shape:
        raise LabelfieldError(
            f"given labels are {user.shape[1]}x{user.shape[0]}, renders {labels.shape[1]}x{labels.shape[0]}"
        )
    mask = user != void_id
    labels[mask] = user[mask].astype(labels.dtype)
    confidence[mask] = 1.0


def rgb_to_uint8(rgb: Any) -> np.ndarray:
    """(H, W, 3) float in [0, 1] (or uint8) -> uint8."""
    a = to_numpy(rgb)
    if a.dtype == np.uint8:
        return a
    return (np.nan_to_num(a.astype(np.float32)).clip(0.0, 1.0) * 255.0).round().astype(np.uint8)


def _input_image(scene: Scene, index: int) -> np.ndarray | None:
    """The scene's own image for the overlay, or None when it cannot be read (overlay falls back to the render)."""
    try:
        img = scene.frames[index].load_rgb()
    except LabelfieldError:
        return None
    W, H = scene.frames[index].size
    return img if img.shape[:2] == (H, W) else None


def _write(
    out_dir: str | Path,
    name: str,
    labels: np.ndarray,
    classes: ClassTable,
    scene: Scene,
    image_index: int | None,
    **outputs: Any,
) -> None:
    """write_frame, reading the scene's image for the overlay here (in the writer thread)."""
    image = _input_image(scene, image_index) if image_index is not None else None
    write_frame(out_dir, name, labels, classes, image=image, **outputs)


def annotate_frames(
    render_fn: RenderFn,
    scene: Scene,
    classes: ClassTable,
    out_dir: str | Path,
    indices: Iterable[int],
    labelled: set[int],
    given: dict[int, np.ndarray] | None = None,
    keep_given: bool = True,
    opacity_threshold: float = 0.5,
    save_probs: bool = False,
    on_progress: ProgressFn | None = None,
    *,
    scene_path: str | Path | None = None,
    downscale: int | float = 1,
    method: str = "labelfield",
    write_manifest_file: bool = True,
    overlay: bool = True,
    writer_thread: bool = True,
) -> list[FrameRecord]:
    """Render frames `indices` of `scene` and write their LABELS files (and classes.json/frames.json) to `out_dir`.

    Args:
        render_fn: `(intrinsics, c2w) -> dict` of rgb, depth, opacity, probs (see the module header).
        labelled: indices that had labels in the training spec (recorded as `labelled`).
        given: frame index -> (H, W) the user's labels (original ids, 0 = not labelled). With `keep_given`,
            those pixels are kept as given and the frame is recorded `given=True`.
        scene_path, downscale, method: written into frames.json (`scene_path` defaults to `scene.root`).
        on_progress: receives Progress("annotate", done, total, "frames") after each frame.
        overlay: write LABELS/overlay/ (needs the scene's image, read per frame).
        writer_thread: write each frame's images in a background thread while the next frame renders.

    Returns the frame records in the order rendered. `out_dir` should be a temporary folder from
    `labelfield.io.atomic_dir`; this function writes files one by one.
    """
    indices = [int(i) for i in indices]
    for i in indices:
        if not 0 <= i < len(scene):
            raise LabelfieldError(f"frame index {i} out of range (scene has {len(scene)} frames)")
    given = given or {}
    records: list[FrameRecord] = []
    # PNG encoding (zlib releases the GIL) runs in one writer thread while the next frame renders; at most
    # two frames wait, so memory stays bounded. A writer error is raised here, on the next submit or at the end.
    pending: deque[Future] = deque()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="annotate-writer") if writer_thread else None
    try:
        for i in indices:
            frame = scene.frames[i]
            out = render_fn(frame.intrinsics, frame.c2w)
            labels, confidence = labels_from_render(out, classes, opacity_threshold)
            is_given = keep_given and i in given
            if is_given:
                merge_given(labels, confidence, given[i], classes.void_id)
            depth = to_numpy(out["depth"]).astype(np.float32) if out.get("depth") is not None else None
            rgb = rgb_to_uint8(out["rgb"]) if out.get("rgb") is not None else None
            probs = to_numpy(out["probs"]).astype(np.float32) if save_probs else None
            job = partial(
                _write,
                out_dir,
                frame.name,
                labels,
                classes,
                scene,
                i if overlay else None,
                rgb=rgb,
                depth=depth,
                confidence=confidence,
                probs=probs,
                overlay=overlay,
            )
            if pool is None:
                job()
            else:
                pending.append(pool.submit(job))
                while len(pending) > 2:
                    pending.popleft().result()
            records.append(FrameRecord.from_frame(frame, i, i in labelled, is_given))
            if on_progress is not None:
                on_progress(Progress("annotate", len(records), len(indices), "frames"))
        while pending:
            pending.popleft().result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if write_manifest_file:
        write_manifest(
            out_dir,
            scene_path=scene_path if scene_path is not None else scene.root,
            format=scene.format,
            downscale=downscale,
            method=method,
            classes=classes,
            frames=sorted(records, key=lambda r: r.index),
        )
    return records
