"""`labelfield baseline SCENE --method nearest|reproject --labelled SPEC --out LABELS`: no-learning baselines.

Writes a LABELS folder (same layout as `annotate`, method name in frames.json) that `labelfield eval` scores.
Frames selected by --labelled keep their (sparse) labels; the others get the baseline's propagation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from labelfield.baselines.reproject import REL_TOL
from labelfield.errors import LabelfieldError
from labelfield.io import paths_overlap


@dataclass
class BaselineCommand:
    """Propagate sparse labels without learning: copy the nearest labelled frame, or reproject with depth."""

    scene: tyro.conf.Positional[Path]
    """Scene folder with ground-truth labels (any supported format); depth is needed for reproject."""
    out: Path
    """Output LABELS folder (replaced atomically)."""
    method: Literal["nearest", "reproject"] = "reproject"
    """nearest: copy the nearest labelled frame; reproject: depth + pose warping, z-buffered (holes void)."""
    labelled: str = "every:10"
    """Frames that keep labels: every:K, count:N, fraction:F, random:N[:seed], or a list 0,40,80."""
    label_density: str = "full"
    """full, clicks:N, scribbles, percent:P or lowres:F."""
    label_noise: str | None = None
    """pixel:P flips a fraction P of the given labels (denoising experiments)."""
    seed: int = 0
    """Seed for the label specs."""
    format: str | None = None
    """Scene format (auto-detected when omitted)."""
    downscale: int = 1
    """Read the scene at 1/downscale resolution."""
    sources: int = 4
    """reproject: how many nearest labelled frames to warp from."""
    depth_tol: float = REL_TOL
    """reproject: a warped label counts where its depth is within this fraction of the target's depth (the
    z-test; labelfield.baselines.reproject.REL_TOL)."""

    def run(self) -> int:
        from rich.console import Console

        from labelfield.baselines.nearest import nearest_labels
        from labelfield.baselines.reproject import reproject_labels
        from labelfield.console import RichProgress
        from labelfield.formats import load_scene
        from labelfield.io import atomic_dir
        from labelfield.labels import make_sparse_labels
        from labelfield.labelset import FrameRecord, write_frame, write_manifest
        from labelfield.progress import Progress

        if self.downscale < 1 or self.sources < 1:
            raise LabelfieldError("--downscale and --sources must be >= 1")
        if not 0 < self.depth_tol < 1:
            raise LabelfieldError(f"--depth-tol must be in (0, 1), not {self.depth_tol}")
        if paths_overlap(self.out, self.scene):
            raise LabelfieldError("output folder is inside the input scene (or contains it)", self.out)
        scene = load_scene(self.scene, self.format, downscale=self.downscale)
        sparse = make_sparse_labels(scene, self.labelled, self.label_density, self.label_noise, self.seed)
        n = len(scene.frames)
        show = RichProgress()
        try:
            if self.method == "nearest":
                dense = nearest_labels(sparse, n)
            else:
                dense = reproject_labels(scene, sparse, self.sources, self.depth_tol, on_progress=show)
            with atomic_dir(self.out) as tmp:
                records = []
                for i, f in enumerate(scene.frames):
                    rgb = f.load_rgb() if f.rgb_path is not None or "rgb" in f.arrays else None
                    write_frame(tmp, f.name, dense[i], scene.classes, image=rgb)
                    records.append(FrameRecord.from_frame(f, i, labelled=i in sparse, given=i in sparse))
                    show(Progress("write", i + 1, n, "frames"))
                write_manifest(
                    tmp,
                    scene_path=Path(self.scene).resolve(),
                    format=scene.format,
                    downscale=self.downscale,
                    method=self.method,
                    classes=scene.classes,
                    frames=records,
                )
        finally:
            show.close()
        Console().print(f"{self.method}: {len(sparse)} labelled of {n} frames -> {self.out}")
        return 0
