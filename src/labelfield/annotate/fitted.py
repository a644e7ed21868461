"""Annotate with a fitted run: the run's model as `render_fn`, the user's labels it trained on kept."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labelfield.annotate.frames import annotate_frames, auto_opacity_threshold
from labelfield.labelset import FrameRecord
from labelfield.progress import ProgressFn
from labelfield.run import LoadedRun


def run_render_fn(loaded: LoadedRun, chunk: int | None = None) -> Callable[[Any, np.ndarray], dict[str, Any]]:
    """`render_fn(intrinsics, c2w)` rendering whole images (rgb, depth, opacity, probs) with the run's model."""
    from labelfield.render.chunked import render_image

    device = loaded.model.aabb.device  # the Model contract: aabb is a buffer on the model's device
    kw = {} if chunk is None else {"chunk": chunk}

    def render_fn(intr: Any, c2w: np.ndarray) -> dict[str, Any]:
        return render_image(loaded.model, intr, c2w, device=device, **kw)

    return render_fn


def run_labels_fn(
    loaded: LoadedRun, chunk: int | None = None, rgb: bool = True, depth: bool = True, probs: bool = False
) -> Callable[[Any, np.ndarray], dict[str, Any]]:
    """`render_fn(intrinsics, c2w)` for annotate: the inference-only path (labels + confidence; rgb, depth and
    probabilities only when asked), see `render.chunked.render_labels_image`."""
    from labelfield.render.chunked import render_labels_image

    device = loaded.model.aabb.device
    kw = {} if chunk is None else {"chunk": chunk}

    def render_fn(intr: Any, c2w: np.ndarray) -> dict[str, Any]:
        return render_labels_image(loaded.model, intr, c2w, rgb=rgb, depth=depth, probs=probs, device=device, **kw)

    return render_fn


def given_labels(loaded: LoadedRun, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """The user's labels (the sparse labels the run trained on) for the labelled frames among `indices`."""
    labelled = set(loaded.labelled)
    wanted = [i for i in indices if i in labelled]
    if not wanted:
        return {}
    sparse = loaded.sparse_labels()
    return {i: sparse[i] for i in wanted if i in sparse}


def annotate_run(
    loaded: LoadedRun,
    out_dir: str | Path,
    indices: Sequence[int] | None = None,
    *,
    keep_given: bool = True,
    opacity_threshold: float | None = None,
    save_probs: bool = False,
    chunk: int | None = None,
    scene_path: str | None = None,
    on_progress: ProgressFn | None = None,
    rgb: bool = True,
    depth: bool = True,
    overlay: bool = True,
    fuse: str = "auto",
    refine: bool = True,
    fill_unseen: bool = True,
) -> list[FrameRecord]:
    """Render frames `indices` (default: all) of a loaded run into `out_dir` (a temporary folder from
    `labelfield.io.atomic_dir`) as a LABELS folder; see `annotate_frames` (`opacity_threshold` None: auto,
    `annotate.frames.auto_opacity_threshold`). `scene_path` goes into frames.json (default: the scene the run
    was fitted on). rgb / depth / overlay: write those outputs too (each costs what it costs: rgb runs the
    colour head). fuse: "on" / "off" / "auto" (= on when every frame has depth): fuse the field with the user's
    labels reprojected through depth (`annotate.fuse.FusedRenderer`), then (`refine`) pull label boundaries
    onto depth edges (`annotate.refine`); `fill_unseen`: pixels nothing reprojects to also hear the nearest
    labelled 3D points (`baselines.nearest_point`)."""
    scene = loaded.scene
    if opacity_threshold is None:  # auto: void for "no surface" only where a ray can miss every surface
        opacity_threshold = auto_opacity_threshold(scene, loaded.classes)
    indices = list(range(len(scene))) if indices is None else list(indices)
    has_depth = len(scene.frames) > 0 and all(f.has_depth() for f in scene.frames)
    fusing = bool(loaded.labelled) and (fuse == "on" or (fuse == "auto" and has_depth))
    # Fusion needs the class probabilities, and the rendered depth where the scene has none.
    render_fn = run_labels_fn(
        loaded, chunk, rgb=rgb, depth=depth or (fusing and not has_depth), probs=save_probs or fusing
    )
    if fusing:
        from labelfield.annotate.fuse import FusedRenderer
        from labelfield.annotate.refine import DEFAULT_TOL

        render_fn = FusedRenderer(
            render_fn,
            scene,
            loaded.classes,
            loaded.sparse_labels(),
            refine=DEFAULT_TOL if refine else None,
            **({} if fill_unseen else {"unseen_k": 0}),
        )
    return annotate_frames(
        render_fn,
        scene,
        loaded.classes,
        out_dir,
        indices,
        set(loaded.labelled),
        given_labels(loaded, indices) if keep_given else {},
        keep_given=keep_given,
        opacity_threshold=opacity_threshold,
        save_probs=save_probs,
        on_progress=on_progress,
        scene_path=scene_path if scene_path is not None else loaded.manifest.scene,
        downscale=loaded.manifest.downscale,
        method=f"labelfield:{loaded.spec.name}",
        overlay=overlay,
    )
