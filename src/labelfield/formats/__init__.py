"""Scene formats: detect a folder's layout, read it into a `Scene`, write a `Scene` in a layout.

Readers: "replica" (Semantic-NeRF / Replica), "transforms" (nerfstudio / instant-ngp transforms.json),
"scannet" (ScanNet export), "colmap" (COLMAP sparse model + images), "record3d" (Record3D .r3d file or its
unzipped folder), "polycam" (Polycam raw-data export). Writers: "replica", "transforms".
Every reader returns OpenCV camera-to-world poses and integer-pixel-centre intrinsics (see cameras.py) and
loads images lazily through `Frame` paths.

Example:
    >>> scene = load_scene("data/room", downscale=2)
    >>> write_scene(scene, "out/room_ngp", format="transforms")
"""

from __future__ import annotations

import importlib
from pathlib import Path

from labelfield.errors import LabelfieldError
from labelfield.io import atomic_dir, paths_overlap
from labelfield.progress import ProgressFn
from labelfield.scene import Scene

FORMATS = ("replica", "transforms", "scannet", "colmap", "record3d", "polycam")
WRITABLE = ("replica", "transforms")


def _is_colmap(root: Path) -> bool:
    for d in (root / "sparse" / "0", root / "sparse"):
        if any((d / f"cameras{s}").is_file() for s in (".txt", ".bin")):
            return True
    return False


def detect_format(path: str | Path) -> str:
    """The layout of the scene folder `path`: one of FORMATS. Raises a LabelfieldError naming the folder.

    Files: a transforms.json, or a Record3D .r3d archive.
    """
    from labelfield.formats.polycam import keyframes_dir
    from labelfield.formats.record3d import is_record3d

    root = Path(path)
    if not root.exists():
        raise LabelfieldError("scene folder not found", root)
    if root.is_file():
        if root.suffix == ".json":
            return "transforms"
        if is_record3d(root):
            return "record3d"
        raise LabelfieldError("expected a scene folder (or a transforms.json or Record3D .r3d file)", root)
    if not any(root.iterdir()):
        raise LabelfieldError("scene folder is empty", root)
    if (root / "transforms.json").is_file():
        return "transforms"
    # one marker is enough: the reader then names whatever else is missing
    if (root / "traj_w_c.txt").is_file() or (root / "rgb").is_dir():
        return "replica"
    if (root / "color").is_dir() or (root / "pose").is_dir():
        return "scannet"
    if _is_colmap(root):
        return "colmap"
    if is_record3d(root):
        return "record3d"
    if keyframes_dir(root) is not None:
        return "polycam"
    raise LabelfieldError(
        "not a scene folder: expected transforms.json, rgb/ + traj_w_c.txt (Replica), color/ + pose/ (ScanNet), "
        "sparse/0/cameras.{txt,bin} (COLMAP), metadata + rgbd/ (unzipped Record3D .r3d) "
        "or keyframes/cameras/ (Polycam)",
        root,
    )


def load_scene(path: str | Path, format: str | None = None, downscale: int = 1) -> Scene:
    """Read the scene at `path` (format auto-detected unless given); images load lazily.

    `downscale` N divides the image size by N: intrinsics are scaled and frames resize images as they load.
    """
    root = Path(path)
    fmt = format or detect_format(root)
    if fmt not in FORMATS:
        raise LabelfieldError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not root.exists():
        raise LabelfieldError("scene folder not found", root)
    module = importlib.import_module(f"labelfield.formats.{fmt}")
    scene = getattr(module, f"read_{fmt}")(root, downscale=downscale)
    if not scene.frames:
        raise LabelfieldError("scene has no frames", root)
    return scene


def write_scene(scene: Scene, out: str | Path, format: str = "replica", on_progress: ProgressFn | None = None) -> Path:
    """Write `scene` to the folder `out` in `format` ("replica" or "transforms"), atomically; returns `out`.

    Works for frames held in memory (`Frame.arrays`) and for frames on disk. An existing `out` is replaced only
    once everything is written. Refuses to write into (or over) the scene's own folder.
    """
    out = Path(out)
    if format not in WRITABLE:
        raise LabelfieldError(f"cannot write format {format!r}; expected one of {', '.join(WRITABLE)}")
    if not scene.frames:
        raise LabelfieldError("scene has no frames to write", scene.root)
    if scene.root is not None and paths_overlap(out, scene.root):
        raise LabelfieldError(f"refusing to write into the scene's own folder {scene.root}", out)
    if out.exists() and not out.is_dir():
        raise LabelfieldError("output exists and is not a folder", out)
    module = importlib.import_module(f"labelfield.formats.{format}")
    with atomic_dir(out) as tmp:
        getattr(module, f"write_{format}")(scene, tmp, on_progress=on_progress)
    return out
