"""`labelfield export LABELS --format F --out PATH`: a LABELS folder in the formats other tools read.

Formats (see each module's header): cvat (.zip), labelstudio (.json + .xml config), coco (.json),
replica / transforms (a scene folder: images from the source scene, the new labels), ply (.ply point cloud).
Outputs are written atomically; an output inside the LABELS folder or the source scene is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from labelfield.errors import LabelfieldError
from labelfield.export import FORMATS
from labelfield.io import paths_overlap

_SUFFIX = {"cvat": ".zip", "labelstudio": ".json", "coco": ".json", "ply": ".ply"}


def _image_names(scene) -> dict[str, str]:
    """Frame name -> the image's path relative to the scene folder (its file name when not under it)."""
    out = {}
    for f in scene.frames:
        if f.rgb_path is None:
            continue
        p = Path(f.rgb_path)
        try:
            out[f.name] = p.resolve().relative_to(Path(scene.root).resolve()).as_posix()
        except (ValueError, TypeError):
            out[f.name] = p.name
    return out


@dataclass
class ExportCommand:
    """Export a LABELS folder (from `labelfield annotate`) to CVAT, Label Studio, COCO, a scene layout or a PLY."""

    labels: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="LABELS")]
    """The LABELS folder written by `labelfield annotate`."""
    format: str
    """One of: cvat, labelstudio, coco, replica, transforms, ply."""
    out: Path
    """Output: a .zip (cvat), .json (labelstudio, coco), .ply (ply) or a new folder (replica, transforms)."""
    scene: Path | None = None
    """Source scene for the images (replica/transforms; image names for labelstudio/coco). Default: the scene in
    LABELS/frames.json if it still exists, else the renders in LABELS/rgb."""
    image_prefix: str = ""
    """labelstudio: prefix of each task's image URL (e.g. /data/local-files/?d=room/rgb/)."""
    voxel_size: float | None = None
    """ply: voxel edge in metres (default: 1/256 of the first frame's extent)."""

    def _check_out(self, labels_root: Path, scene_root: Path | None) -> None:
        out = self.out
        if paths_overlap(out, labels_root):
            raise LabelfieldError("output must not be inside (or contain) the LABELS folder", out)
        if scene_root is not None and Path(scene_root).exists() and paths_overlap(out, scene_root):
            raise LabelfieldError(f"output must not be inside (or contain) the input scene {scene_root}", out)
        if self.format in _SUFFIX:
            if out.suffix.lower() != _SUFFIX[self.format]:
                raise LabelfieldError(f"--out for format {self.format} must end in {_SUFFIX[self.format]}", out)
            if out.is_dir():
                raise LabelfieldError("output is an existing folder; expected a file path", out)
        elif out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise LabelfieldError("output exists and is not an empty folder; choose a new path", out)

    def _scene(self, ls, required: bool):
        """The source scene (lazy images) or None when there is none to be had."""
        from labelfield.formats import load_scene

        if self.scene is not None:
            return load_scene(self.scene, downscale=int(ls.downscale))
        if ls.scene_path and Path(ls.scene_path).exists():
            fmt = ls.format if ls.format not in ("", "memory") else None
            return load_scene(ls.scene_path, format=fmt, downscale=int(ls.downscale))
        if required:
            print(
                f"export: source scene {ls.scene_path or '(in memory)'} not found: using the rendered images "
                "in LABELS/rgb (pass --scene to use the originals)"
            )
        return None

    def run(self) -> int:
        from labelfield.labelset import read_labelset

        if self.format not in FORMATS:
            raise LabelfieldError(f"unknown export format {self.format!r}; choose one of: {', '.join(FORMATS)}")
        ls = read_labelset(self.labels)
        scene_root = self.scene if self.scene is not None else (Path(ls.scene_path) if ls.scene_path else None)
        self._check_out(ls.root, scene_root)
        fmt = self.format
        if fmt == "cvat":
            from labelfield.export.cvat import export_cvat

            export_cvat(ls, self.out)
        elif fmt == "labelstudio":
            from labelfield.export.labelstudio import export_labelstudio

            scene = self._scene(ls, required=False) if self.scene is not None else None
            urls = {k: self.image_prefix + v for k, v in _image_names(scene).items()} if scene else None
            export_labelstudio(ls, self.out, image_urls=urls, image_prefix=self.image_prefix)
        elif fmt == "coco":
            from labelfield.export.coco import export_coco

            scene = self._scene(ls, required=False) if self.scene is not None else None
            export_coco(ls, self.out, file_names=_image_names(scene) if scene else None)
        elif fmt in ("replica", "transforms"):
            from labelfield.export.dataset import export_dataset

            export_dataset(ls, self.out, fmt, self._scene(ls, required=True))
        else:
            from labelfield.console import RichProgress
            from labelfield.export.ply import export_ply

            with RichProgress() as show:
                export_ply(ls, self.out, self.voxel_size, on_progress=show)
        print(f"export: {len(ls.names)} frames -> {self.out} ({fmt})")
        return 0
