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
from labelfield.io import paths_overlap


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
            raise LabelfieldError(
                f"--frames: {item!r} is not an index, a range a-b or a frame name (or use all, unlabelled, labelled)"
            ) from None
        for i in rng:
            if not 0 <= i < n:
                raise LabelfieldError(f"--frames: index {i} out of range (the scene has {n} frames)")
            out.add(i)
    if not out:
        raise LabelfieldError(f"--frames {spec!r} selects no frame")
    return sorted(out)


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
    opacity_threshold: float | None = None
    """Pixels whose accumulated opacity is below this are void (or the scene's background class). Default (auto):
    0.5 for scenes with a background class and object captures (cameras looking inward), 0 otherwise (in a room
    every pixel sees a surface, and a field that is still semi-transparent has the right labels there)."""
    chunk: int = 65536
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
    rgb: bool = True
    """Write LABELS/rgb/ (rendered colour: runs the colour head; --no-rgb skips it)."""
    depth: bool = True
    """Write LABELS/depth/ (rendered z-depth, uint16 mm)."""
    overlay: bool = True
    """Write LABELS/overlay/ (labels blended over the input image)."""
    fuse: Literal["auto", "on", "off"] = "auto"
    """Fuse the field's prediction with the user's labels reprojected through depth (the scene's, else the
    field's rendered depth) where they agree across labelled frames: auto = on when the scene has depth."""
    refine: bool = True
    """With fusion: pull label boundaries onto the depth edges of each frame (a 3x3 vote among neighbours on
    the same surface, see labelfield.annotate.refine); --no-refine keeps the fused labels as they are."""
    fill_unseen: bool = True
    """With fusion: pixels that no labelled frame sees (disocclusions) also hear the labels of the nearest
    labelled 3D points, beside the field (labelfield.baselines.nearest_point); --no-fill-unseen leaves them
    to the field alone."""

    def _check_paths(self) -> None:
        from labelfield.run import RunFolder

        run, out = RunFolder(self.run_dir), self.out
        run.check_existing()
        run.find_checkpoint(self.step)  # fails fast, before the scene loads
        # LABELS may live in the run folder (runs/room/labels), but must not replace it or its checkpoints.
        if run.contains(out):
            raise LabelfieldError(f"output must not be (or contain) the run folder {run.path} or its checkpoints", out)
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "frames.json").is_file())):
            raise LabelfieldError("output exists and is not a LABELS folder; choose a new path", out)

    def _check_scene(self, scene_root: Path | None) -> None:
        if scene_root is not None and Path(scene_root).exists() and paths_overlap(self.out, scene_root):
            raise LabelfieldError(f"output must not be inside (or contain) the input scene {scene_root}", self.out)

    def run(self) -> int:
        from labelfield.annotate.fitted import annotate_run, run_render_fn
        from labelfield.console import RichProgress
        from labelfield.devices import resolve_device
        from labelfield.io import atomic_dir
        from labelfield.run import RunFolder, load_run

        self._check_paths()
        saved = RunFolder(self.run_dir).read_manifest().scene
        self._check_scene(self.scene if self.scene is not None else (Path(saved) if saved else None))
        if self.chunk < 1:
            raise LabelfieldError(f"--chunk must be positive, got {self.chunk}")
        loaded = load_run(self.run_dir, device=resolve_device(self.device), step=self.step, scene=self.scene)
        scene = loaded.scene
        self._check_scene(scene.root)
        labelled = set(loaded.labelled)
        indices = parse_frames(self.frames, scene.names, labelled)
        if not indices and self.trajectory is None:
            raise LabelfieldError("--frames none renders nothing without --trajectory")
        cams = None
        if self.trajectory is not None:  # read before rendering anything: a bad file fails fast
            from labelfield.annotate.trajectory import read_camera_path, render_trajectory

            cams = read_camera_path(self.trajectory, scene.frames[0].intrinsics)
        scene_path = str(self.scene.resolve()) if self.scene is not None else loaded.manifest.scene
        threshold = self.opacity_threshold
        if threshold is None:
            from labelfield.annotate.frames import auto_opacity_threshold

            threshold = auto_opacity_threshold(scene, loaded.classes)
        t0 = time.perf_counter()
        with atomic_dir(self.out) as tmp, RichProgress(bars=self.progress) as show:
            records = []
            if indices:
                records = annotate_run(
                    loaded,
                    tmp,
                    indices,
                    keep_given=self.keep_given,
                    opacity_threshold=threshold,
                    save_probs=self.save_probs,
                    chunk=self.chunk,
                    scene_path=scene_path,
                    on_progress=show,
                    rgb=self.rgb,
                    depth=self.depth,
                    overlay=self.overlay,
                    fuse=self.fuse,
                    refine=self.refine,
                    fill_unseen=self.fill_unseen,
                )
            dt = time.perf_counter() - t0
            video = None
            if cams is not None:
                video = render_trajectory(
                    run_render_fn(loaded, min(self.chunk, 16384)),  # full render: rgb and probabilities
                    cams,
                    loaded.classes,
                    tmp / "trajectory.mp4",
                    fps=self.fps,
                    opacity_threshold=threshold,
                    on_progress=show,
                )
        n_given = sum(r.given for r in records)
        msg = f"annotate: {len(records)} frames ({n_given} with the user's labels kept) -> {self.out}"
        if records:
            msg += f" in {dt:.1f} s ({dt / len(records):.2f} s/frame, step {loaded.step})"
        if video is not None:
            msg += f"; trajectory ({len(cams)} views) -> {self.out / video.name}"
        print(msg)
        return 0
