"""`labelfield labels import SRC --scene SCENE` and `labelfield labels show SCENE`.

`import` reads labels made in an annotation tool (see readers.py for the formats), matches the tool's classes
to the scene's class table by name (unknown names are added, colour conflicts reported; merge.py), and
writes the labelled frames into the scene: `semantics/<frame>.png` (original class ids) with each frame's
`semantics_path` and the `"semantics"` class table in transforms.json. Frames the source does not label stay
unlabelled; then fit with `--labelled` set to the printed frame indices. Frames that already have labels
are refused unless --overwrite. Only transforms.json scenes are written (what `labelfield capture` makes;
`labelfield convert` turns other layouts into one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import tyro

from labelfield.errors import LabelfieldError


def match_frames(source_names: list[str], scene_names: list[str], src: Path) -> dict[str, int]:
    """Source frame name -> scene frame index: the same name, or the name after a tool's upload prefix
    (Label Studio stores uploads as "<8 hex>-<file>"). Raises for a name that matches no frame."""
    index = {n: i for i, n in enumerate(scene_names)}
    out = {}
    for name in source_names:
        cands = [name, re.sub(r"^[0-9a-f]{8}-", "", name), Path(name).name]
        hit = next((index[c] for c in cands if c in index), None)
        if hit is None:
            example = ", ".join(scene_names[:3])
            raise LabelfieldError(
                f"label frame {name!r} matches no frame of the scene (frames are named {example}, …)", src
            )
        out[name] = hit
    return out


def import_labels(src: Path, scene_dir: Path, format: Optional[str] = None, overwrite: bool = False) -> dict:
    """Import `src` into the transforms.json scene `scene_dir`; returns a summary dict (for the report/tests).

    Summary: format, frames {frame name: index}, matched/added [(name, id)], conflicts [str], classes (table).
    """
    from labelfield.formats import detect_format, load_scene
    from labelfield.formats.common import label_dtype
    from labelfield.formats.transforms import transforms_file
    from labelfield.io import read_json, write_image, write_json
    from labelfield.label_import.merge import merge_classes
    from labelfield.label_import.readers import read_source

    if detect_format(scene_dir) != "transforms":
        raise LabelfieldError(
            "labels import writes transforms.json scenes; convert this one first "
            "(labelfield convert SCENE OUT --to transforms)",
            scene_dir,
        )
    scene = load_scene(scene_dir)
    source = read_source(Path(src), format, dict(zip(scene.classes.ids, scene.classes.names)))
    if not source.frames:
        raise LabelfieldError("the source holds no labelled frame", src)
    where = match_frames(list(source.frames), scene.names, Path(src))
    merged = merge_classes(scene.classes, source.classes)
    json_path = transforms_file(Path(scene_dir))
    doc = read_json(json_path)
    base = json_path.parent
    dtype = label_dtype(merged.classes.max_id)
    pending = []
    for name, lab in source.frames.items():
        k = where[name]
        frame = scene.frames[k]
        W, H = frame.size
        if lab.shape != (H, W):
            raise LabelfieldError(
                f"labels of frame {name!r} are {lab.shape[1]}x{lab.shape[0]}, its image {W}x{H}", Path(src)
            )
        if frame.has_labels() and not overwrite:
            raise LabelfieldError(
                f"frame {frame.name!r} already has labels (pass --overwrite to replace them)", frame.label_path
            )
        pending.append((k, merged.lut[lab].astype(dtype)))
    stems = _file_stems(scene.names)
    for k, ids in pending:  # label files first, transforms.json last: an interruption leaves the scene as it was
        rel = f"semantics/{stems[k]}.png"
        write_image(base / rel, ids)
        doc["frames"][k]["semantics_path"] = rel
    doc["semantics"] = merged.classes.to_json()
    write_json(json_path, doc)
    return {
        "format": source.format,
        "frames": {scene.names[k]: k for k, _ in pending},
        "matched": merged.matched,
        "added": merged.added,
        "conflicts": merged.conflicts,
        "classes": merged.classes,
    }


def _file_stems(names: list[str]) -> list[str]:
    ok = len(set(names)) == len(names) and all(re.fullmatch(r"[A-Za-z0-9_.\-]+", n) for n in names)
    return names if ok else [f"frame_{i:05d}" for i in range(len(names))]


@dataclass
class ImportCommand:
    """Import labels from CVAT, Label Studio, COCO or label PNGs into a scene (classes matched by name)."""

    src: tyro.conf.Positional[Path]
    """The export: CVAT mask zip/folder, CVAT for images XML (or its zip), Label Studio JSON, COCO JSON, or a
    folder of label PNGs named like the frames."""
    scene: Path
    """The transforms.json scene to label (e.g. written by `labelfield capture`)."""
    format: Optional[Literal["cvat-mask", "cvat-xml", "labelstudio", "coco", "png"]] = None
    """Source format (default: detected from the path)."""
    overwrite: bool = False
    """Replace the labels of frames that already have some."""

    def run(self) -> int:
        from rich.console import Console
        from rich.table import Table

        summary = import_labels(self.src, self.scene, self.format, self.overwrite)
        con = Console()
        table = Table(title=f"classes of {self.scene}")
        for col in ("id", "name", "colour", "import"):
            table.add_column(col)
        matched = {i for _, i in summary["matched"]}
        added = {i for _, i in summary["added"]}
        cl = summary["classes"]
        for i, n, c in zip(cl.ids, cl.names, cl.colors):
            status = "matched" if i in matched else "added" if i in added else ""
            table.add_row(str(i), n, f"[rgb({c[0]},{c[1]},{c[2]})]■[/] {tuple(c)}", status)
        con.print(table)
        for line in summary["conflicts"]:
            con.print(f"[yellow]colour conflict[/]: {line}")
        idx = sorted(summary["frames"].values())
        con.print(
            f"imported {len(idx)} labelled frame(s) from {summary['format']}; fit with "
            f"--labelled {','.join(map(str, idx))}"
        )
        return 0


@dataclass
class ShowCommand:
    """Show a scene's class table and which frames carry labels."""

    scene: tyro.conf.Positional[Path]
    """Scene folder (any supported format)."""

    def run(self) -> int:
        from rich.console import Console

        from labelfield.formats import load_scene

        scene = load_scene(self.scene)
        con = Console()
        for i, n, c in zip(scene.classes.ids, scene.classes.names, scene.classes.colors):
            con.print(f"{i:4d}  [rgb({c[0]},{c[1]},{c[2]})]■[/] {n}")
        idx = scene.labelled_indices()
        con.print(f"{len(idx)} of {len(scene)} frames labelled: {','.join(map(str, idx)) or '-'}")
        return 0


@dataclass
class LabelsCommand:
    """Labels of a scene: import them from annotation tools, or show the class table."""

    action: tyro.conf.OmitSubcommandPrefixes[
        Union[
            Annotated[ImportCommand, tyro.conf.subcommand("import")],
            Annotated[ShowCommand, tyro.conf.subcommand("show")],
        ]  # noqa: UP007, E501
    ]
    """What to do."""

    def run(self) -> int:
        return self.action.run()
