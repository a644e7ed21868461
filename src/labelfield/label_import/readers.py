"""Readers of label exports from annotation tools: each returns the same `SourceLabels`.

Formats (`detect_source` picks one from the path):
    cvat-mask    CVAT "Segmentation mask 1.1" zip or folder (labelmap.txt + SegmentationClass/*.png colours);
                 decoded by `labelfield.export.cvat.parse_cvat_masks`. CVAT's "background" is void.
    cvat-xml     CVAT "CVAT for images 1.1" annotations.xml (or a zip holding it): polygons (drawn in z_order)
                 and masks (`rle` = run lengths over the mask's box, row-major, starting with a run of 0s).
    labelstudio  Label Studio JSON export (a list of tasks): `brushlabels` results (brush RLE, decoded by
                 `labelfield.export.labelstudio.rle_to_mask`) and `polygonlabels` (points in % of the size);
                 annotations and predictions, later results win. Colours from a labelling config `<stem>.xml`
                 beside the JSON when present.
    coco         COCO JSON: segmentations as RLE (compressed or not; `labelfield.export.coco.decode_mask`,
                 bit-compatible with pycocotools) or polygons; category names and optional `color`.
    png          a folder of label PNGs named like the frames: palette ("P") or grey images hold class ids
                 (the palette gives colours); RGB images hold class colours. Class names from `classes.json`
                 (ClassTable JSON, a list of names or {"id": name}) or `labelmap.txt` in the folder, else the
                 scene's names for known ids.
Frame names come from the export's image names (file stem; a Label Studio upload prefix "<hash>-" is
matched too, see `match_frames`).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from labelfield.errors import LabelfieldError

FORMATS = ("cvat-mask", "cvat-xml", "labelstudio", "coco", "png")
VOID_NAMES = ("void", "background", "__background__", "unlabeled", "unlabelled", "_background_")


@dataclass
class SourceClass:
    """A class as the tool names it; `color` (r, g, b) when the export gives one; `id` a numeric id if any."""

    name: str
    color: tuple[int, int, int] | None = None
    id: int | None = None


@dataclass
class SourceLabels:
    """What a reader found: `classes[0]` is void; `frames` maps a frame name to (H, W) int64 indices into
    `classes` (0 = void / unlabelled)."""

    format: str
    classes: list[SourceClass]
    frames: dict[str, np.ndarray] = field(default_factory=dict)


def _hex(c: str | None) -> tuple[int, int, int] | None:
    if not c or not isinstance(c, str) or not re.fullmatch(r"#?[0-9a-fA-F]{6}", c.strip()):
        return None
    c = c.strip().lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _stem(name: str) -> str:
    return Path(str(name).split("?")[-1].split("=")[-1]).stem


class _Classes:
    """Collects source classes by name; index 0 is void."""

    def __init__(self) -> None:
        self.items: list[SourceClass] = [SourceClass("void")]
        self.index: dict[str, int] = {}

    def get(self, name: str, color=None, id: int | None = None) -> int:
        if name.strip().lower() in VOID_NAMES and (color is None or tuple(color) == (0, 0, 0)):
            return 0
        if name not in self.index:
            self.index[name] = len(self.items)
            self.items.append(SourceClass(name, None if color is None else tuple(int(x) for x in color), id))
        elif color is not None and self.items[self.index[name]].color is None:
            self.items[self.index[name]].color = tuple(int(x) for x in color)
        return self.index[name]


# --- detection ---------------------------------------------------------------------------------------------
def detect_source(path: Path) -> str:
    """The export format of `path` (one of FORMATS); raises a LabelfieldError naming the path otherwise."""
    if not path.exists():
        raise LabelfieldError("label source not found", path)
    if path.is_dir():
        if (path / "labelmap.txt").is_file() and (path / "SegmentationClass").is_dir():
            return "cvat-mask"
        if (path / "annotations.xml").is_file():
            return "cvat-xml"
        if any(p.suffix.lower() == ".png" for p in path.iterdir()):
            return "png"
        raise LabelfieldError("folder holds neither a CVAT export nor label PNGs", path)
    suffix = path.suffix.lower()
    if suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
        except zipfile.BadZipFile as e:
            raise LabelfieldError("not a zip file", path) from e
        if "labelmap.txt" in names:
            return "cvat-mask"
        if "annotations.xml" in names:
            return "cvat-xml"
        raise LabelfieldError("zip holds neither labelmap.txt (CVAT masks) nor annotations.xml (CVAT for images)", path)
    if suffix == ".xml":
        return "cvat-xml"
    if suffix == ".json":
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise LabelfieldError(f"unreadable JSON ({e})", path) from e
        if isinstance(doc, dict) and "annotations" in doc and "images" in doc:
            return "coco"
        if isinstance(doc, list):
            return "labelstudio"
        raise LabelfieldError("JSON is neither a COCO file (images, annotations) nor a Label Studio task list", path)
    raise LabelfieldError("unknown label source: expected a .zip, .xml, .json or a folder of PNGs", path)


def read_source(path: Path, format: str | None = None, known: dict[int, str] | None = None) -> SourceLabels:
    """Read any supported export. `known`: the scene's id -> name, used to name bare ids of plain PNGs."""
    fmt = format or detect_source(path)
    readers = {
        "cvat-mask": read_cvat_mask,
        "cvat-xml": read_cvat_xml,
        "labelstudio": read_labelstudio_export,
        "coco": read_coco_file,
    }
    if fmt == "png":
        return read_png_folder(path, known or {})
    if fmt not in readers:
        raise LabelfieldError(f"unknown label format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return readers[fmt](path)


# --- CVAT --------------------------------------------------------------------------------------------------
def read_cvat_mask(path: Path) -> SourceLabels:
    from labelfield.export.cvat import parse_cvat_masks

    labelmap, masks = parse_cvat_masks(path)
    cl = _Classes()
    lut = np.array([cl.get(name, color) for name, color in labelmap], np.int64)
    return SourceLabels("cvat-mask", cl.items, {_stem(n): lut[m] for n, m in masks.items()})


def _cvat_mask_rle(rle: str, width: int, height: int) -> np.ndarray:
    """CVAT XML mask `rle` -> (height, width) bool: alternating run lengths over the box, row-major, 0s first."""
    counts = [int(x) for x in rle.replace(" ", "").split(",") if x]
    if sum(counts) != width * height:
        raise ValueError(f"mask rle covers {sum(counts)} pixels, its box {width}x{height}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(height, width)


def read_cvat_xml(path: Path) -> SourceLabels:
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as z:
                root = ET.fromstring(z.read("annotations.xml"))
        else:
            root = ET.parse(path if path.is_file() else path / "annotations.xml").getroot()
        cl = _Classes()
        for lab in root.iter("label"):
            name = lab.findtext("name")
            if name:
                cl.get(name, _hex(lab.findtext("color")))
        frames = {}
        for im in root.iter("image"):
            W, H = int(im.get("width")), int(im.get("height"))
            shapes = sorted(
                (s for s in im if s.tag in ("polygon", "mask")), key=lambda s: int(s.get("z_order", 0) or 0)
            )
            lab_img = np.zeros((H, W), np.int64)
            for s in shapes:
                k = cl.get(s.get("label"))
                if s.tag == "polygon":
                    pts = [tuple(float(v) for v in p.split(",")) for p in s.get("points").split(";") if p]
                    lab_img[_polygon_mask(pts, W, H)] = k
                else:
                    left, top = int(float(s.get("left"))), int(float(s.get("top")))
                    w, h = int(float(s.get("width"))), int(float(s.get("height")))
                    m = _cvat_mask_rle(s.get("rle"), w, h)
                    box = lab_img[top : top + h, left : left + w]
                    box[m[: box.shape[0], : box.shape[1]]] = k
            frames[_stem(im.get("name"))] = lab_img
    except (ET.ParseError, KeyError, TypeError, ValueError, AttributeError, zipfile.BadZipFile) as e:
        raise LabelfieldError(f"not a CVAT for images 1.1 XML export ({e})", path) from e
    return SourceLabels("cvat-xml", cl.items, frames)


def _polygon_mask(points: list[tuple[float, float]], width: int, height: int) -> np.ndarray:
    """Polygon with vertices (x, y) in pixel-edge coordinates (pixel u spans [u, u+1), as the tools draw)
    -> (H, W) bool: the pixels whose centre (u + 0.5, v + 0.5) lies inside (even-odd rule)."""
    from matplotlib.path import Path as PolyPath

    if len(points) < 3:
        return np.zeros((height, width), bool)
    v, u = np.mgrid[0:height, 0:width]
    centres = np.stack([u.ravel() + 0.5, v.ravel() + 0.5], 1)
    return PolyPath(np.asarray(points, np.float64)).contains_points(centres).reshape(height, width)


# --- Label Studio ------------------------------------------------------------------------------------------
def _labelstudio_config(json_path: Path) -> dict[str, tuple[int, int, int] | None]:
    """Label name -> colour (or None) from the labelling config `<stem>.xml` beside the JSON, in its order."""
    cfg = json_path.with_suffix(".xml")
    if not cfg.is_file():
        return {}
    try:
        root = ET.parse(cfg).getroot()
    except ET.ParseError:
        return {}
    return {el.get("value"): _hex(el.get("background")) for el in root.iter("Label") if el.get("value")}


def read_labelstudio_export(path: Path) -> SourceLabels:
    from labelfield.export.labelstudio import rle_to_mask

    colors = _labelstudio_config(path)
    cl = _Classes()
    for name, color in colors.items():  # every class of the config, even those no frame shows
        cl.get(name, color)
    frames = {}
    try:
        tasks = json.loads(path.read_text())
        for task in tasks:
            data = task.get("data", {})
            name = data.get("frame") or _stem(str(data.get("image", "")))
            results = [r for key in ("annotations", "predictions") for a in task.get(key, []) for r in a["result"]]
            lab = None
            for r in results:
                kind = r.get("type")
                if kind not in ("brushlabels", "polygonlabels"):
                    continue
                H, W = int(r["original_height"]), int(r["original_width"])
                if lab is None:
                    lab = np.zeros((H, W), np.int64)
                cname = r["value"][kind][0]
                k = cl.get(cname, colors.get(cname))
                if kind == "brushlabels":
                    mask = rle_to_mask(r["value"]["rle"], H, W)
                else:
                    pts = [(x * W / 100.0, y * H / 100.0) for x, y in r["value"]["points"]]
                    mask = _polygon_mask(pts, W, H)
                lab[mask] = k
            if lab is not None:
                frames[name] = lab
    except (OSError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise LabelfieldError(f"not a Label Studio JSON export ({e})", path) from e
    return SourceLabels("labelstudio", cl.items, frames)


# --- COCO --------------------------------------------------------------------------------------------------
def read_coco_file(path: Path) -> SourceLabels:
    from labelfield.export.coco import decode_mask

    cl = _Classes()
    frames: dict[str, np.ndarray] = {}
    try:
        doc = json.loads(path.read_text())
        cat_index = {}
        for c in doc.get("categories", []):
            col = c.get("color")
            col = _hex(col) if isinstance(col, str) else (tuple(col)[:3] if col else None)
            cat_index[c["id"]] = cl.get(str(c["name"]), col, int(c["id"]))
        images = {}
        for im in doc["images"]:
            images[im["id"]] = (im.get("frame") or _stem(im["file_name"]), int(im["height"]), int(im["width"]))
            frames[images[im["id"]][0]] = np.zeros((int(im["height"]), int(im["width"])), np.int64)
        for a in sorted(doc["annotations"], key=lambda a: -int(a.get("area", 0) or 0)):  # small ones on top
            name, H, W = images[a["image_id"]]
            seg = a["segmentation"]
            if isinstance(seg, dict):
                mask = decode_mask(seg)
            else:
                mask = np.zeros((H, W), bool)
                for poly in seg:
                    mask |= _polygon_mask(list(zip(poly[0::2], poly[1::2])), W, H)
            frames[name][mask] = cat_index[a["category_id"]]
    except (OSError, KeyError, TypeError, ValueError, IndexError) as e:
        raise LabelfieldError(f"not a COCO segmentation file ({e})", path) from e
    return SourceLabels("coco", cl.items, frames)


# --- plain PNGs --------------------------------------------------------------------------------------------
def _names_file(folder: Path) -> tuple[dict[int, str], dict[int, tuple[int, int, int]], dict[tuple, str]]:
    """(id -> name, id -> colour, colour -> name) from classes.json or labelmap.txt in `folder`."""
    names: dict[int, str] = {}
    colors: dict[int, tuple[int, int, int]] = {}
    by_color: dict[tuple, str] = {}
    cj, lm = folder / "classes.json", folder / "labelmap.txt"
    if cj.is_file():
        d = json.loads(cj.read_text())
        if isinstance(d, list):
            names = dict(enumerate(str(n) for n in d))
        elif isinstance(d, dict) and "classes" in d:
            ids = d.get("ids", list(range(len(d["classes"]))))
            names = {int(i): str(n) for i, n in zip(ids, d["classes"])}
            colors = {int(i): tuple(int(x) for x in c) for i, c in zip(ids, d.get("colors") or [])}
        elif isinstance(d, dict):
            names = {int(k): str(v) for k, v in d.items()}
    elif lm.is_file():
        from labelfield.export.cvat import _parse_labelmap

        for k, (n, c) in enumerate(_parse_labelmap(lm.read_text())):
            names[k], colors[k] = n, c
    by_color = {c: names[i] for i, c in colors.items() if i in names}
    return names, colors, by_color


def read_png_folder(folder: Path, known: dict[int, str]) -> SourceLabels:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise LabelfieldError("no .png label images in the folder", folder)
    try:
        names, colors, by_color = _names_file(folder)
    except (OSError, ValueError, TypeError) as e:
        raise LabelfieldError(f"unreadable class names ({e})", folder) from e
    cl = _Classes()
    for i in sorted(names):  # every class the names file lists, even those no image shows
        if i != 0:
            cl.get(names[i], colors.get(i), i)
    frames = {}
    for p in files:
        with Image.open(p) as im:
            mode, palette = im.mode, im.getpalette()
            arr = np.array(im)
        if mode in ("RGB", "RGBA"):
            key = [tuple(int(x) for x in c) for c in np.unique(arr[..., :3].reshape(-1, 3), axis=0)]
            lab = np.zeros(arr.shape[:2], np.int64)
            for c in key:
                if c == (0, 0, 0):
                    continue
                if c not in by_color:
                    raise LabelfieldError(
                        f"colour {c} has no class; add classes.json (ids, classes, colors) or labelmap.txt", p
                    )
                lab[(arr[..., :3] == c).all(-1)] = cl.get(by_color[c], c)
        else:
            ids = arr.astype(np.int64)
            lab = np.zeros(ids.shape, np.int64)
            for i in np.unique(ids):
                if i == 0:
                    continue
                col = colors.get(int(i))
                if col is None and mode == "P" and palette is not None and 3 * i + 2 < len(palette):
                    col = tuple(palette[3 * i : 3 * i + 3])
                name = names.get(int(i)) or known.get(int(i)) or f"class_{int(i)}"
                lab[ids == i] = cl.get(name, col, int(i))
        frames[p.stem] = lab
    return SourceLabels("png", cl.items, frames)
