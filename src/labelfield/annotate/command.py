"""`labelfield annotate RUN --out LABELS`: render a fitted run's frames (and optionally a camera path).

Frame selection (`--frames`): `all`, `unlabelled` (frames without labels in the training spec), `labelled`,
`none` (only with --trajectory), or a comma list of indices, ranges `a-b` (inclusive) and frame names.
With `--keep-given` (default) the user's labels on labelled frames are kept pixel for pixel; the rest of
those frames is filled by the field. The output folder is written atomically (`io.atomic_dir`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from labelfield.errors import LabelfieldError


def _inside(a: Path, b: Path) -> bool:
    """True when `a` is `b`, lies inside it, or contains it."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents or a in b.parents


def parse_frames(spec: str, names: list[str], labelled: set[int]) -> list[int]:
    """`--frames` spec -> sorted frame indices. Raises a one-line error naming the bad entry."""
    n = len(names)
    s = spec.strip().lower()
    if s == "all":
        return list(range(n))
    if s in ("unlabelled", "unlabeled"):
        return [i for i in range(n) if i not in labelled]
    if s in ("labelled", "labeled"):
        return sorted(labelled)
    if s == "none":
        return []
    by_name = {name: i for i, name in enumerate(names)}
    out: set[int] = set()
    for item in (t.strip() for t in spec.split(",")):
        if not item:
            continue
        if item in by_name:
            out.add(by_name[item])
            continue
        try:
            if "-" in item[1:]:
                a, b = item.split("-", 1)
                rng = range(int(a), int(b) + 1)
            else:
                rng = range(int(item), int(item) + 1)
        except ValueError:
            raise LabelfieldError(f"--frames: {item!r} is not an index, a range a-b or a frame name "
                                  "(or use all, unlabelled, labelled)") from None  # fmt: skip
        for i in rng:
            if not 0 <= i < n:
                raise LabelfieldError(f"--frames: index {i} out of range (the scene has {n} frames)")
            out.add(i)
    if not out:
        raise LabelfieldError(f"--frames {spec!r} selects no frame")
    return sorted(out)


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LabelfieldError(f"--device {device}: CUDA is not available on this machine")
    return device


@dataclass
class AnnotateCommand:
    """Render dense labels (and rgb, depth, confidence) for the frames of a fitted run into a LABELS folder."""

    run_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")]
    """The run folder written by `labelfield fit`."""
    out: Path
    """The LABELS folder to write (replaced atomically; may be RUN/labels, must not be inside the scene)."""
    frames: str = "all"
    """Frames to annotate: all, unlabelled, labelled, none, or a list like 0,5,10-20,frame_007."""
    trajectory: Path | None = None
    """Camera path (transforms.json, nerfstudio camera_path.json or traj_w_c.txt): also writes
    LABELS/trajectory.mp4 of RGB | labels (PNG frames in LABELS/trajectory/ without imageio-ffmpeg)."""
    keep_given: bool = True
    """Keep the user's labels on labelled frames (pixels the user labelled are never overwritten)."""
    save_probs: bool = False
    """Also save the class probabilities as LABELS/probs/<frame>.npz (float16)."""
    opacity_threshold: float = 0.5
    """Pixels whose accumulated opacity is below this are void (or the scene's background class)."""
    chunk: int = 16384
    """Rays per render call: memory grows with it."""
    device: str = "auto"
    """auto, cpu or cuda."""
    step: int | None = None
    """Checkpoint step to use (default: the latest)."""
    scene: Path | None = None
    """The scene folder, when it has moved since the fit (default: the path saved in the run)."""
    fps: float = 24.0
    """Frame rate of the trajectory video."""
    progress: bool = True
    """Show progress bars."""
    fuse: Literal["auto", "on", "off"] = "auto"
    """Fuse the field's prediction with the user's labels reprojected through depth (the scene's, else the
    field's rendered depth) where they agree across labelled frames: auto = on when the scene has depth."""

    def _check_paths(self) -> None:
        run, out = self.run_dir, self.out
        if not run.is_dir():
            raise LabelfieldError("run folder not found", run)
        ckpts = sorted((run / "checkpoints").glob("step_*.pt")) if (run / "checkpoints").is_dir() else []
        if not ckpts:
            raise LabelfieldError("run folder has no checkpoint (checkpoints/step_*.pt): run `labelfield fit` "
                                  "first, or wait for its first save", run)  # fmt: skip
        # LABELS may live in the run folder (runs/room/labels), but must not replace it or its checkpoints.
        if _inside(out, run) and (out.resolve() == run.resolve() or out.resolve() in run.resolve().parents
                                  or _inside(out, run / "checkpoints")):  # fmt: skip
            raise LabelfieldError(f"output must not be (or contain) the run folder {run} or its checkpoints", out)
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "frames.json").is_file())):
            raise LabelfieldError("output exists and is not a LABELS folder; choose a new path", out)

    def _check_scene(self, scene_root: Path | None) -> None:
        if scene_root is not None and Path(scene_root).exists() and _inside(self.out, Path(scene_root)):
            raise LabelfieldError(f"output must not be inside (or contain) the input scene {scene_root}", self.out)

    def run(self) -> int:
        from labelfield.annotate.frames import annotate_frames
        from labelfield.io import atomic_dir, read_json
        from labelfield.render.chunked import render_image
        from labelfield.run import load_run

        self._check_paths()
        info_path = self.run_dir / "scene.json"
        saved = read_json(info_path).get("scene") if info_path.is_file() else None
        self._check_scene(self.scene if self.scene is not None else (Path(saved) if saved else None))
        if self.chunk < 1:
            raise LabelfieldError(f"--chunk must be positive, got {self.chunk}")
        device = _pick_device(self.device)
        loaded = load_run(self.run_dir, device=device, step=self.step, scene=self.scene)
        scene = loaded.scene
        self._check_scene(scene.root)
        labelled = set(loaded.labelled)
        indices = parse_frames(self.frames, scene.names, labelled)
        if not indices and self.trajectory is None:
            raise LabelfieldError("--frames none renders nothing without --trajectory")
        given = self._given(loaded, [i for i in indices if i in labelled]) if self.keep_given else {}
        cams = None
        if self.trajectory is not None:  # read before rendering anything: a bad file fails fast
            from labelfield.annotate.trajectory import read_camera_path, render_trajectory

            cams = read_camera_path(self.trajectory, scene.frames[0].intrinsics)
        scene_path = str(self.scene.resolve()) if self.scene is not None else loaded.info.get("scene")

        def render_fn(intr, c2w):
            return render_image(loaded.model, intr, c2w, chunk=self.chunk, device=device)

        render_fn = self._fused(render_fn, loaded, scene)
        t0 = time.perf_counter()
        with atomic_dir(self.out) as tmp:
            records = []
            if indices:
                records = annotate_frames(
                    render_fn, scene, loaded.classes, tmp, indices, labelled, given, keep_given=self.keep_given,
                    opacity_threshold=self.opacity_threshold, save_probs=self.save_probs, progress=self.progress,
                    scene_path=scene_path, downscale=loaded.info.get("downscale", 1),
                    method=f"labelfield:{getattr(loaded.config, 'model', 'model')}",
                )  # fmt: skip
            dt = time.perf_counter() - t0
            video = None
            if cams is not None:
                video = render_trajectory(render_fn, cams, loaded.classes, tmp / "trajectory.mp4", fps=self.fps,
                                          opacity_threshold=self.opacity_threshold, progress=self.progress)  # fmt: skip
        n_given = sum(r.given for r in records)
        msg = f"annotate: {len(records)} frames ({n_given} with the user's labels kept) -> {self.out}"
        if records:
            msg += f" in {dt:.1f} s ({dt / len(records):.2f} s/frame, step {loaded.step})"
        if video is not None:
            msg += f"; trajectory ({len(cams)} views) -> {self.out / video.name}"
        print(msg)
        return 0

    def _fused(self, render_fn, loaded, scene):
        """render_fn fused with the reprojected user labels (labelfield.annotate.fuse), or as it is."""
        has_depth = len(scene.frames) > 0 and all(f.has_depth() for f in scene.frames)
        if self.fuse == "off" or (self.fuse == "auto" and not has_depth) or not loaded.labelled:
            return render_fn
        from labelfield.annotate.fuse import FusedRenderer

        return FusedRenderer(render_fn, scene, loaded.classes, self._given(loaded, sorted(loaded.labelled)))

    def _given(self, loaded, indices: list[int]) -> dict:
        """The user's labels (as the run was trained on them) for the labelled frames among `indices`."""
        if not indices:
            return {}
        from labelfield.labels import make_sparse_labels

        spec = loaded.info.get("label_spec") or {}
        sparse = make_sparse_labels(
            loaded.scene,
            labelled=",".join(str(i) for i in sorted(loaded.labelled)),
            density=spec.get("density", "full"),
            noise=spec.get("noise"),
            seed=int(spec.get("seed", 0)),
        )
        return {i: sparse[i] for i in indices if i in sparse}
