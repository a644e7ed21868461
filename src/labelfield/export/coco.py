"""COCO-style semantic segmentation JSON: categories, images, and one RLE annotation per (image, class).

Chosen form: **compressed RLE** (the COCO-Stuff convention), encoded and decoded by pycocotools itself
(column-major run lengths starting with a run of 0s, as a compressed `counts` string).
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


def encode_mask(mask: np.ndarray) -> dict:
    """(H, W) bool -> {"size": [H, W], "counts": compressed string} (pycocotools' encoder)."""
    from pycocotools import mask as mask_api

    rle = mask_api.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return {"size": [int(x) for x in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: dict) -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list counts) -> (H, W) bool (pycocotools' decoder)."""
    from pycocotools import mask as mask_api

    H, W = (int(x) for x in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        if sum(int(c) for c in counts) != H * W:
            raise ValueError(f"RLE counts sum to {sum(int(c) for c in counts)}, expected {H}x{W}")
        compressed = mask_api.frPyObjects({"size": [H, W], "counts": [int(c) for c in counts]}, H, W)
    else:
        compressed = {"size": [H, W], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_api.decode(compressed).astype(bool)


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
