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


def read_cvat(path: str | Path, classes: ClassTable) -> dict[str, np.ndarray]:
    """Read a CVAT mask zip back: frame name -> (H, W) original ids, classes matched by label name.

    Label names not in `classes` (after CVAT's name cleaning) raise; "background" maps to void.
    """
    path = Path(path)
    by_name = {_label_name(n): cid for cid, n in zip(classes.ids, classes.names)}
    by_name[BACKGROUND] = classes.void_id
    try:
        with zipfile.ZipFile(path) as z:
            color_to_id: dict[tuple[int, int, int], int] = {}
            for line in z.read("labelmap.txt").decode().splitlines():
                if not line.strip() or line.startswith("#"):
                    continue
                name, color = line.split(":")[:2]
                rgb = tuple(int(x) for x in color.split(","))
                if name not in by_name:
                    tail = name.rsplit("_", 1)
                    if len(tail) == 2 and tail[1].isdigit() and int(tail[1]) in classes.ids:
                        by_name[name] = int(tail[1])  # a renamed duplicate
                    else:
                        raise LabelfieldError(f"label {name!r} is not in the class table", path)
                color_to_id[rgb] = by_name[name]
            names = [n for n in z.read("ImageSets/Segmentation/default.txt").decode().splitlines() if n]
            out = {}
            for n in names:
                img = np.array(Image.open(io.BytesIO(z.read(f"SegmentationClass/{n}.png"))).convert("RGB"))
                key = (img[..., 0].astype(np.int64) << 16) | (img[..., 1].astype(np.int64) << 8) | img[..., 2]
                lab = np.zeros(img.shape[:2], np.int64)
                known = np.zeros(img.shape[:2], bool)
                for (r, g, b), cid in color_to_id.items():
                    m = key == ((r << 16) | (g << 8) | b)
                    lab[m], known[m] = cid, True
                if not known.all():
                    raise LabelfieldError(f"mask {n}.png has colours not in labelmap.txt", path)
                out[n] = lab
    except (KeyError, zipfile.BadZipFile, ValueError) as e:
        raise LabelfieldError(f"not a CVAT segmentation mask archive ({e})", path) from e
    return out
