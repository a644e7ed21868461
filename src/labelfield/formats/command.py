"""`labelfield info SCENE` and `labelfield convert SCENE OUT --to replica|transforms`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

import tyro

from labelfield.formats import load_scene, write_scene
from labelfield.scene import Scene

SceneArg = Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SCENE")]
OutArg = Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="OUT")]
FormatName = Literal["replica", "transforms", "scannet", "colmap", "record3d", "polycam"]


def _summary(scene: Scene):
    """A rich renderable: scene facts, then the class table."""
    from rich.console import Group
    from rich.table import Table

    f0 = scene.frames[0]
    i = f0.intrinsics
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("scene", str(scene.root))
    facts.add_row("format", scene.format)
    facts.add_row("frames", str(len(scene)))
    facts.add_row("size", f"{i.width} x {i.height}")
    intr = f"fx {i.fx:.3f}  fy {i.fy:.3f}  cx {i.cx:.3f}  cy {i.cy:.3f}"
    if i.distortion:
        intr += "  distortion " + " ".join(f"{d:.4g}" for d in i.distortion)
    if any(f.intrinsics != i for f in scene.frames):
        intr += "  (first frame; frames differ)"
    facts.add_row("intrinsics", intr)
    labelled = scene.labelled_indices()
    facts.add_row("labelled frames", f"{len(labelled)} of {len(scene)}")
    facts.add_row("depth", f"{sum(f.has_depth() for f in scene.frames)} frames")
    centres = scene.poses()[:, :3, 3]
    facts.add_row("camera extent", " ".join(f"{x:.2f}" for x in centres.max(0) - centres.min(0)))

    ct = scene.classes
    table = Table(title=f"{ct.num_classes} classes (+ void)")
    for col in ("id", "name", "colour", "note"):
        table.add_column(col)
    for cid, name, col in zip(ct.ids, ct.names, ct.colors):
        note = "void" if cid == ct.void_id else ("background" if cid == ct.background_class else "")
        swatch = f"[rgb({col[0]},{col[1]},{col[2]})]██[/] {col[0]},{col[1]},{col[2]}"
        table.add_row(str(cid), name, swatch, note)
    return Group(facts, table)


@dataclass
class InfoCommand:
    """Print a scene's format, frame count, image size, intrinsics, labelled frames and class table."""

    scene: SceneArg
    """Scene folder (Replica, transforms.json, ScanNet, COLMAP, Polycam) or Record3D .r3d file."""
    format: Optional[FormatName] = None
    """Force the input format instead of detecting it."""
    downscale: int = 1
    """Divide the image size by this factor."""

    def run(self) -> int:
        from rich.console import Console

        scene = load_scene(self.scene, self.format, self.downscale)
        Console().print(_summary(scene))
        return 0


@dataclass
class ConvertCommand:
    """Convert a scene to the Replica layout or to transforms.json (images, depth and labels included)."""

    scene: SceneArg
    """Scene folder to read (any supported format)."""
    out: OutArg
    """Output folder (replaced atomically when everything is written)."""
    to: Literal["replica", "transforms"] = "replica"
    """Output layout."""
    format: Optional[FormatName] = None
    """Force the input format instead of detecting it."""
    downscale: int = 1
    """Divide the image size by this factor before writing."""

    def run(self) -> int:
        from rich.console import Console

        from labelfield.console import RichProgress

        scene = load_scene(self.scene, self.format, self.downscale)
        with RichProgress() as show:
            out = write_scene(scene, self.out, self.to, on_progress=show)
        i = scene.frames[0].intrinsics
        Console().print(
            f"wrote {len(scene)} frames ({i.width}x{i.height}, {len(scene.labelled_indices())} labelled) "
            f"as {self.to} to {out}"
        )
        return 0
