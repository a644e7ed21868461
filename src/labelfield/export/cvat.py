"""CVAT "Segmentation mask 1.1" (Pascal VOC style) zip, importable as annotations into a CVAT task.

Archive layout:
    labelmap.txt                        `# label:color_rgb:parts:actions`, one line per class
    ImageSets/Segmentation/default.txt  frame names, one per line (no extension)
    SegmentationClass/<frame>.png       (H, W, 3) uint8 class colours; black (0, 0, 0) = "background"

CVAT identifies classes by colour, so colours must be unique: void becomes CVAT's "background" (black),
and a class whose colour repeats (or is black) gets a nearby unused colour, written in labelmap.txt.
Masks are matched to the task's images by file name without extension.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from labelfield.errors import LabelfieldError
from labelfield.io import atomic_path
from labelfield.labelset import LabelSet
from labelfield.scene import ClassTable

BACKGROUND = "background"


def _label_name(name: str) -> str:
    """CVAT label names cannot hold ':' (the labelmap separator) or line breaks."""
    return name.replace(":", "_").replace("\n", " ").strip() or "unnamed"


def unique_colors(classes: ClassTable) -> dict[int, tuple[int, int, int]]:
    """Class id -> a colour unique in the table; void is black and no other class is."""
    used: set[tuple[int, int, int]] = {(0, 0, 0)}
    out: dict[int, tuple[int, int, int]] = {classes.void_id: (0, 0, 0)}
    for cid, col in zip(classes.ids, classes.colors):
        if cid == classes.void_id:
            continue
        c = tuple(int(x) for x in col)
        rng = np.random.default_rng(cid)
        while c in used:  # deterministic nudge to a free colour
            c = tuple(int(x) for x in rng.integers(16, 256, 3))
        used.add(c)
        out[cid] = c
    return out


def labelmap_lines(classes: ClassTable) -> list[tuple[str, tuple[int, int, int], int]]:
    """(CVAT label name, colour, original id) per class, void first as "background"."""
    colors = unique_colors(classes)
    lines = [(BACKGROUND, (0, 0, 0), classes.void_id)]
    seen = {BACKGROUND}
    for cid, name in zip(classes.ids, classes.names):
        if cid == classes.void_id:
            continue
        n = _label_name(name)
        if n in seen:  # CVAT needs unique names
            n = f"{n}_{cid}"
        seen.add(n)
        lines.append((n, colors[cid], cid))
    return lines


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def export_cvat(labelset: LabelSet, out: str | Path) -> Path:
    """Write the CVAT zip `out` (atomically). Returns its path."""
    out = Path(out)
    lines = labelmap_lines(labelset.classes)
    lut = np.zeros((labelset.classes.max_id + 1, 3), np.uint8)
    for _, col, cid in lines:
        lut[cid] = col
    text = "# label:color_rgb:parts:actions\n" + "".join(f"{n}:{c[0]},{c[1]},{c[2]}::\n" for n, c, _ in lines)
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("labelmap.txt", text)
        z.writestr("ImageSets/Segmentation/default.txt", "".join(f"{n}\n" for n in labelset.names))
        for name in labelset.names:
            lab = labelset.load_labels(name)
            if lab.max(initial=0) > labelset.classes.max_id:
                raise LabelfieldError(f"label id {int(lab.max())} is not in the class table", labelset.root)
            z.writestr(f"SegmentationClass/{name}.png", _png_bytes(lut[lab]))
    return out


def _parse_labelmap(text: str) -> list[tuple[str, tuple[int, int, int]]]:
    """labelmap.txt -> (name, colour) per line, in order."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, color = line.split(":")[:2]
        out.append((name, tuple(int(x) for x in color.split(","))))
    return out


def parse_cvat_masks(path: str | Path) -> tuple[list[tuple[str, tuple[int, int, int]]], dict[str, np.ndarray]]:
    """Decode a CVAT "Segmentation mask 1.1" export (the zip, or its extracted folder).

    Returns the label map [(name, rgb)] in labelmap.txt order and frame name -> (H, W) int64 index into it.
    Frames are the names in ImageSets/Segmentation/default.txt (all of SegmentationClass/ when absent).
    Raises LabelfieldError for a missing part or a mask colour that is not in the label map.
    """
    path = Path(path)

    def reader():
        if path.is_dir():
            files = {p.relative_to(path).as_posix(): p for p in path.rglob("*") if p.is_file()}
            return files, lambda k: files[k].read_bytes()
        z = zipfile.ZipFile(path)
        return {n: n for n in z.namelist()}, z.read

    try:
        files, read = reader()
        labelmap = _parse_labelmap(read("labelmap.txt").decode())
        key_of = {((r << 16) | (g << 8) | b): k for k, (_, (r, g, b)) in enumerate(labelmap)}
        if "ImageSets/Segmentation/default.txt" in files:
            names = [n for n in read("ImageSets/Segmentation/default.txt").decode().splitlines() if n.strip()]
        else:
            names = sorted(Path(f).stem for f in files if f.startswith("SegmentationClass/") and f.endswith(".png"))
        out = {}
        for n in names:
            img = np.array(Image.open(io.BytesIO(read(f"SegmentationClass/{n}.png"))).convert("RGB"))
            key = (img[..., 0].astype(np.int64) << 16) | (img[..., 1].astype(np.int64) << 8) | img[..., 2]
            uniq, inv = np.unique(key, return_inverse=True)
            missing = [int(u) for u in uniq if int(u) not in key_of]
            if missing:
                c = missing[0]
                raise LabelfieldError(
                    f"mask {n}.png has colour {(c >> 16, (c >> 8) & 255, c & 255)} that is not in labelmap.txt", path
                )
            out[n] = np.array([key_of[int(u)] for u in uniq], np.int64)[inv.reshape(key.shape)]
    except (KeyError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise LabelfieldError(f"not a CVAT segmentation mask export ({e})", path) from e
    return labelmap, out


def read_cvat(path: str | Path, classes: ClassTable) -> dict[str, np.ndarray]:
    """Read a CVAT mask zip back: frame name -> (H, W) original ids, classes matched by label name.

    Label names not in `classes` (after CVAT's name cleaning) raise; "background" maps to void.
    """
    path = Path(path)
    by_name = {_label_name(n): cid for cid, n in zip(classes.ids, classes.names)}
    by_name[BACKGROUND] = classes.void_id
    labelmap, masks = parse_cvat_masks(path)
    lut = []
    for name, _ in labelmap:
        if name not in by_name:
            tail = name.rsplit("_", 1)
            if len(tail) == 2 and tail[1].isdigit() and int(tail[1]) in classes.ids:
                by_name[name] = int(tail[1])  # a renamed duplicate
            else:
                raise LabelfieldError(f"label {name!r} is not in the class table", path)
        lut.append(by_name[name])
    lut_a = np.array(lut, np.int64)
    return {n: lut_a[m] for n, m in masks.items()}
