"""COCO-style semantic segmentation JSON: categories, images, and one RLE annotation per (image, class).

Chosen form: **compressed RLE** (the COCO-Stuff convention), implemented here in numpy/Python with no
pycocotools dependency, bit-compatible with `pycocotools.mask.encode/decode`:
    mask (H, W) -> flattened column-major (Fortran order) -> run lengths alternating 0s, 1s, starting with
    the count of 0s (possibly 0) -> `counts` string: each count minus the count two before (for i > 2), in
    LEB128-like groups of 5 bits, sign-extended, as characters 48..111.
Categories use the **original class ids** (void, id 0, has no category and no annotation); each annotation
has `segmentation {"size": [H, W], "counts": str}`, `area`, `bbox [x, y, w, h]` and `iscrowd 0`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from labelfield.errors import LabelfieldError
from labelfield.io import atomic_path
from labelfield.labelset import LabelSet
from labelfield.scene import ClassTable


def rle_counts(mask: np.ndarray) -> list[int]:
    """(H, W) bool -> COCO run lengths over the column-major flattening, starting with a run of 0s."""
    flat = np.asarray(mask, bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.r_[0, change, flat.size]
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return counts


def counts_to_string(counts: list[int]) -> str:
    """COCO compressed RLE string of run lengths (pycocotools' rleToString)."""
    out = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # arithmetic shift: negative deltas stay negative
            more = x != -1 if ch & 0x10 else x != 0
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def string_to_counts(s: str) -> list[int]:
    """Inverse of `counts_to_string` (pycocotools' rleFrString)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_mask(mask: np.ndarray) -> dict:
    """(H, W) bool -> {"size": [H, W], "counts": compressed string}."""
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(rle_counts(mask))}


def decode_mask(rle: dict) -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list counts) -> (H, W) bool."""
    H, W = (int(x) for x in rle["size"])
    counts = rle["counts"]
    counts = string_to_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if sum(counts) != H * W:
        raise ValueError(f"RLE counts sum to {sum(counts)}, expected {H}x{W}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((W, H)).T


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def categories(classes: ClassTable) -> list[dict]:
    return [
        {"id": int(i), "name": n, "supercategory": "", "color": [int(x) for x in c], "isthing": 0}
        for i, n, c in zip(classes.ids, classes.names, classes.colors)
        if i != classes.void_id
    ]


def export_coco(labelset: LabelSet, out: str | Path, file_names: dict[str, str] | None = None) -> Path:
    """Write the COCO JSON `out` atomically. `file_names`: frame name -> image file name (default name.png)."""
    out = Path(out)
    classes = labelset.classes
    images, anns = [], []
    for image_id, name in enumerate(labelset.names, start=1):
        W, H = labelset.record(name).intr().width, labelset.record(name).intr().height
        fname = file_names[name] if file_names and name in file_names else f"{name}.png"
        images.append({"id": image_id, "file_name": fname, "width": W, "height": H, "frame": name})
        for cid, m in labelset.class_masks(name):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cid,
                    "segmentation": encode_mask(m),
                    "area": int(m.sum()),
                    "bbox": _bbox(m),
                    "iscrowd": 0,
                }
            )
    doc = {
        "info": {"description": f"labelfield semantic labels ({labelset.method or 'labelfield'})", "version": "1"},
        "licenses": [],
        "images": images,
        "categories": categories(classes),
        "annotations": anns,
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(doc))
    return out


def read_coco(path: str | Path, void_id: int = 0) -> dict[str, np.ndarray]:
    """Read the JSON back: frame name (or file stem) -> (H, W) category ids, `void_id` where no annotation."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        labels: dict[int, np.ndarray] = {}
        names: dict[int, str] = {}
        for im in doc["images"]:
            labels[im["id"]] = np.full((im["height"], im["width"]), void_id, np.int64)
            names[im["id"]] = im.get("frame") or Path(im["file_name"]).stem
        for a in doc["annotations"]:
            labels[a["image_id"]][decode_mask(a["segmentation"])] = a["category_id"]
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise LabelfieldError(f"not a COCO segmentation file ({e})", path) from e
    return {names[k]: v for k, v in labels.items()}
