"""Label Studio pre-annotations: one task per frame with a BrushLabels result per class, RLE-encoded.

Task JSON (a list, import it in Label Studio's "Import" dialog):
    {"data": {"image": <url>, "frame": <frame name>},
     "predictions": [{"model_version": "labelfield", "score": <mean confidence>, "result": [
        {"id", "type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": W,
         "original_height": H, "image_rotation": 0,
         "value": {"format": "rle", "rle": [bytes...], "brushlabels": [<class name>]}}, ...]}]}
Labelling config to use: `<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">
<Label value="<class name>"/>...</BrushLabels></View>` (`labeling_config` writes it). Void gets no result.

Brush RLE (Label Studio's, from thi.ng/rle-pack, as label-studio-converter's `brush.py` reads it): the mask is
an RGBA image (H, W, 4) flattened row-major, every channel 255 inside the mask, 0 outside; that byte array is
bit-packed MSB first as
    header: num values (32 bits), word size - 1 (5 bits), the 4 run-length field sizes - 1 (4 bits each);
    blocks: repeat flag (1 bit), size index t (2 bits), count - 1 (rle_sizes[t] bits), then one word
            (repeat) or count words (literal run).
We write every run as a repeat block (valid for the decoder; a mask's runs are >= 4 values long anyway).
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from labelfield.errors import LabelfieldError
from labelfield.io import atomic_path
from labelfield.labelset import LabelSet
from labelfield.scene import ClassTable

RLE_SIZES = (3, 4, 8, 16)
WORD_SIZE = 8


def _bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Concatenate the MSB-first binary of `values` (n,) in `widths` (n,) bits each -> (sum(widths),) uint8."""
    values = np.asarray(values, np.int64)
    widths = np.asarray(widths, np.int64)
    field = np.repeat(np.arange(len(values)), widths)
    start = np.repeat(np.cumsum(widths) - widths, widths)
    shift = widths[field] - 1 - (np.arange(int(widths.sum())) - start)
    return ((values[field] >> shift) & 1).astype(np.uint8)


def encode_rle(arr: np.ndarray, word_size: int = WORD_SIZE, rle_sizes: tuple[int, ...] = RLE_SIZES) -> list[int]:
    """Label Studio brush RLE of a flat array of words (uint8 by default) -> list of byte values."""
    arr = np.asarray(arr, np.int64).ravel()
    n = len(arr)
    header_v = [n, word_size - 1, *[s - 1 for s in rle_sizes]]
    header_w = [32, 5, 4, 4, 4, 4]
    if n:
        starts = np.flatnonzero(np.r_[True, arr[1:] != arr[:-1]])
        lengths = np.diff(np.r_[starts, n])
        vals = arr[starts]
        cap = 1 << rle_sizes[-1]  # longest run one block can hold
        pieces = -(-lengths // cap)
        vals = np.repeat(vals, pieces)
        last = np.cumsum(pieces) - 1
        counts = np.full(len(vals), cap, np.int64)
        counts[last] = lengths - (pieces - 1) * cap
        m = counts - 1
        t = np.zeros(len(m), np.int64)
        for k in range(len(rle_sizes) - 1, 0, -1):  # smallest size index whose field holds count - 1
            t = np.where(m < (1 << rle_sizes[k - 1]), t, np.maximum(t, k))
        sizes = np.asarray(rle_sizes, np.int64)[t]
        blk_v = np.stack([np.ones_like(m), t, m, vals], 1).ravel()
        blk_w = np.stack([np.ones_like(m), np.full_like(m, 2), sizes, np.full_like(m, word_size)], 1).ravel()
    else:
        blk_v = blk_w = np.zeros(0, np.int64)
    bits = np.concatenate([_bits(np.array(header_v), np.array(header_w)), _bits(blk_v, blk_w)])
    return np.packbits(bits).tolist()


def decode_rle(rle: list[int] | bytes) -> np.ndarray:
    """Inverse of `encode_rle` (reads both repeat and literal blocks) -> flat uint8 (or wider) array."""
    bits = np.unpackbits(np.asarray(list(rle), np.uint8))
    pos = 0

    def read(width: int) -> int:
        nonlocal pos
        if pos + width > len(bits):
            raise ValueError("truncated RLE")
        v = 0
        for b in bits[pos : pos + width]:
            v = (v << 1) | int(b)
        pos += width
        return v

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, np.uint8 if word <= 8 else np.uint32)
    i = 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if j > num:
            raise ValueError("RLE run past the end")
        if repeat:
            out[i:j] = read(word)
        else:
            for k in range(i, j):
                out[k] = read(word)
        i = j
    return out


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """(H, W) bool mask -> Label Studio brush RLE (RGBA, 255 inside)."""
    return encode_rle(np.repeat(np.asarray(mask, bool).ravel().astype(np.uint8) * 255, 4))


def rle_to_mask(rle: list[int], height: int, width: int) -> np.ndarray:
    """Label Studio brush RLE -> (H, W) bool mask (the alpha channel > 0)."""
    flat = decode_rle(rle)
    if flat.size != height * width * 4:
        raise ValueError(f"RLE holds {flat.size} values, expected {height}x{width}x4")
    return flat.reshape(height, width, 4)[..., 3] > 0


def labeling_config(classes: ClassTable) -> str:
    """The Label Studio labelling config (XML) matching the exported results."""
    labels = "".join(
        f'    <Label value={quoteattr(n)} background="#{c[0]:02x}{c[1]:02x}{c[2]:02x}"/>\n'
        for i, n, c in zip(classes.ids, classes.names, classes.colors)
        if i != classes.void_id
    )
    return (
        f'<View>\n  <Image name="image" value="$image"/>\n  <BrushLabels name="tag" toName="image">\n'
        f"{labels}  </BrushLabels>\n</View>\n"
    )


def export_labelstudio(
    labelset: LabelSet,
    out: str | Path,
    image_urls: dict[str, str] | None = None,
    image_prefix: str = "",
) -> Path:
    """Write the task list JSON `out` and the labelling config beside it (`<out stem>.xml`), atomically.

    `image_urls` maps frame name -> the task's image URL; otherwise `image_prefix + name + ".png"`.
    Returns the path of the JSON.
    """
    out = Path(out)
    classes = labelset.classes
    tasks = []
    for name in labelset.names:
        results = []
        for cid, mask in labelset.class_masks(name):
            H, W = mask.shape
            results.append(
                {
                    "id": f"{name}_{cid}",
                    "type": "brushlabels",
                    "from_name": "tag",
                    "to_name": "image",
                    "original_width": W,
                    "original_height": H,
                    "image_rotation": 0,
                    "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [classes.name_of(cid)]},
                }
            )
        pred: dict = {"model_version": labelset.method or "labelfield", "result": results}
        conf = labelset.load_confidence(name)
        if conf is not None:
            pred["score"] = round(float(conf.mean()), 4)
        url = image_urls[name] if image_urls and name in image_urls else f"{image_prefix}{name}.png"
        tasks.append({"data": {"image": url, "frame": name}, "predictions": [pred]})
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(tasks))
    with atomic_path(out.with_suffix(".xml")) as tmp:
        tmp.write_text(labeling_config(classes))
    return out


def read_labelstudio(path: str | Path, classes: ClassTable) -> dict[str, np.ndarray]:
    """Read tasks back: frame name -> (H, W) original ids (void where no brush; later results win overlaps)."""
    path = Path(path)
    ids = {n: i for i, n in zip(classes.ids, classes.names)}
    try:
        tasks = json.loads(Path(path).read_text())
        out = {}
        for task in tasks:
            name = task["data"].get("frame") or Path(task["data"]["image"]).stem
            results = [r for key in ("annotations", "predictions") for a in task.get(key, []) for r in a["result"]]
            lab = None
            for r in results:
                if r.get("type") != "brushlabels":
                    continue
                H, W = int(r["original_height"]), int(r["original_width"])
                if lab is None:
                    lab = np.full((H, W), classes.void_id, np.int64)
                cname = r["value"]["brushlabels"][0]
                if cname not in ids:
                    raise LabelfieldError(f"brush label {cname!r} is not in the class table", path)
                lab[rle_to_mask(r["value"]["rle"], H, W)] = ids[cname]
            if lab is not None:
                out[name] = lab
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise LabelfieldError(f"not a Label Studio task list ({e})", path) from e
    return out
