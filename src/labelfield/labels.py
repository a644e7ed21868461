"""Sparse-label specifications: which frames keep labels, how densely, and with how much noise.

`SparseLabels = dict[int, np.ndarray]`: frame index -> (H, W) original class ids, 0 (void) where nothing was
given. Built by `make_sparse_labels(scene, labelled, density, noise, seed)` from the scene's full labels.

Specs (all deterministic under `seed`; every frame draws from its own generator seeded by (seed, index)):
    labelled  every:K | count:N (evenly spaced) | fraction:F (evenly spaced, at least one) |
              random:N[:seed] | explicit list "0,40,80" | all
    density   full | clicks:N (N pixels per class per frame, inside the eroded region when possible) |
              scribbles (thin random-walk strokes kept inside each eroded class region) |
              percent:P (P % of the labelled pixels) | lowres:F (labels given at 1/F resolution, upsampled
              back nearest: label super-resolution)
    noise     None | none | pixel:P (fraction P of the kept pixels flipped to another class of the table)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from labelfield.errors import LabelfieldError
from labelfield.scene import Frame, Scene

SparseLabels = dict[int, np.ndarray]

_LABELLED_HELP = "every:K, count:N, fraction:F, random:N[:seed], all, or a list like 0,40,80"
_DENSITY_HELP = "full, clicks:N, scribbles, percent:P or lowres:F"


def _num(text: str, kind: type, spec: str, what: str, help_: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise LabelfieldError(f"malformed {what} spec {spec!r} (expected {help_})") from None


def parse_labelled(spec: str, n_frames: int, seed: int = 0) -> list[int]:
    """Frame indices (sorted, unique) selected by a `--labelled` spec over `n_frames` frames.

    Raises LabelfieldError for a malformed spec, an index out of range, or a spec that selects no frame.
    """
    s = str(spec).strip().lower()
    head, _, rest = s.partition(":")
    bad = LabelfieldError(f"malformed --labelled spec {spec!r} (expected {_LABELLED_HELP})")
    if s == "all":
        idx = list(range(n_frames))
    elif head == "every":
        k = _num(rest, int, spec, "--labelled", _LABELLED_HELP)
        if k < 1:
            raise bad
        idx = list(range(0, n_frames, k))
    elif head in ("count", "fraction"):
        if head == "count":
            n = _num(rest, int, spec, "--labelled", _LABELLED_HELP)
        else:
            f = _num(rest, float, spec, "--labelled", _LABELLED_HELP)
            if not 0.0 < f <= 1.0:
                raise LabelfieldError(f"--labelled spec {spec!r}: the fraction must be in (0, 1]")
            n = max(1, round(f * n_frames))
        if n < 0:
            raise bad
        n = min(n, n_frames)
        idx = sorted({int(round(x)) for x in np.linspace(0, n_frames - 1, n)}) if n > 0 else []
    elif head == "random":
        parts = rest.split(":")
        if len(parts) not in (1, 2):
            raise bad
        n = _num(parts[0], int, spec, "--labelled", _LABELLED_HELP)
        rseed = _num(parts[1], int, spec, "--labelled", _LABELLED_HELP) if len(parts) == 2 else seed
        if n < 0:
            raise bad
        idx = sorted(int(i) for i in np.random.default_rng(rseed).choice(n_frames, min(n, n_frames), replace=False))
    else:
        items = [t.strip() for t in s.split(",") if t.strip()]
        if not items or not all(t.isdigit() for t in items):
            raise bad
        idx = sorted({int(t) for t in items})
        out = [i for i in idx if i >= n_frames]
        if out:
            raise LabelfieldError(
                f"--labelled spec {spec!r}: frame index {out[0]} is out of range (the scene has {n_frames} frames)"
            )
    if not idx:
        raise LabelfieldError(f"--labelled spec {spec!r} selects no frame (the scene has {n_frames} frames)")
    return idx


def parse_density(spec: str) -> tuple[str, float]:
    """`--label-density` spec -> (kind, parameter); raises LabelfieldError when malformed."""
    s = str(spec).strip().lower()
    head, _, rest = s.partition(":")
    if s in ("full", "scribbles"):
        return s, 0.0
    if head == "clicks":
        n = _num(rest, int, spec, "--label-density", _DENSITY_HELP)
        if n >= 1:
            return head, float(n)
    elif head == "percent":
        p = _num(rest, float, spec, "--label-density", _DENSITY_HELP)
        if 0.0 < p <= 100.0:
            return head, p
    elif head == "lowres":
        f = _num(rest, int, spec, "--label-density", _DENSITY_HELP)
        if f >= 1:
            return head, float(f)
    raise LabelfieldError(f"malformed --label-density spec {spec!r} (expected {_DENSITY_HELP})")


def parse_noise(spec: str | None) -> float:
    """`--label-noise` spec -> flip fraction in [0, 1] (0 for None / "none")."""
    if spec is None or str(spec).strip().lower() in ("", "none"):
        return 0.0
    head, _, rest = str(spec).strip().lower().partition(":")
    if head == "pixel":
        p = _num(rest, float, spec, "--label-noise", "pixel:P with P in [0, 1]")
        if 0.0 <= p <= 1.0:
            return p
    raise LabelfieldError(f"malformed --label-noise spec {spec!r} (expected none or pixel:P with P in [0, 1])")


# --- density helpers --------------------------------------------------------------------------------
def erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion of (H, W) bool by a (2r+1)^2 square (outside the image counts as False)."""
    mask = np.asarray(mask, bool)
    if radius <= 0:
        return mask.copy()
    square = np.ones((2 * radius + 1,) * 2, bool)
    return ndimage.binary_erosion(mask, structure=square, border_value=0)


def _eroded_interior(mask: np.ndarray, radius: int) -> np.ndarray:
    """The mask eroded by up to `radius`, backing off until something is left (the mask itself at worst)."""
    for r in range(radius, 0, -1):
        e = erode(mask, r)
        if e.any():
            return e
    return mask


def downsample_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    """Labels as given at 1/factor resolution (nearest: each block's centre pixel), upsampled back nearest.

    (H, W) -> (H, W), same dtype. factor 1 returns a copy.
    """
    labels = np.asarray(labels)
    f = int(factor)
    if f <= 1:
        return labels.copy()
    H, W = labels.shape
    rows = np.minimum(np.arange(0, H, f) + f // 2, H - 1)
    cols = np.minimum(np.arange(0, W, f) + f // 2, W - 1)
    small = labels[np.ix_(rows, cols)]
    return np.repeat(np.repeat(small, f, 0), f, 1)[:H, :W].copy()


def _clicks(labels: np.ndarray, n: int, rng: np.random.Generator, radius: int) -> np.ndarray:
    """N pixels per present class, picked inside the class's eroded region (a person clicks inside objects)."""
    out = np.zeros_like(labels)
    for c in np.unique(labels):
        if c == 0:
            continue
        ys, xs = np.nonzero(_eroded_interior(labels == c, radius))
        pick = rng.choice(len(ys), min(n, len(ys)), replace=False)
        out[ys[pick], xs[pick]] = c
    return out


def _walk(region: np.ndarray, start: tuple[int, int], length: int, rng: np.random.Generator) -> list:
    """A smooth random walk of up to `length` 1-px steps that never leaves `region` (H, W) bool."""
    H, W = region.shape
    y, x = float(start[0]), float(start[1])
    theta = rng.uniform(0, 2 * np.pi)
    pts = [start]
    for _ in range(length):
        for _attempt in range(8):  # turn until the next step stays inside; give up after 8 tries
            ny, nx = y + np.sin(theta), x + np.cos(theta)
            iy, ix = int(round(ny)), int(round(nx))
            if 0 <= iy < H and 0 <= ix < W and region[iy, ix]:
                break
            theta = rng.uniform(0, 2 * np.pi)
        else:
            break
        y, x = ny, nx
        pts.append((iy, ix))
        theta += rng.normal(0.0, 0.25)
    return pts


def _scribbles(labels: np.ndarray, rng: np.random.Generator, radius: int) -> np.ndarray:
    """Thin strokes inside each class region: random walks confined to the eroded region.

    Strokes per class grow with its area (about one per 1/6 of the image), so large or split regions get
    several; each stroke is about 1.5 x sqrt(area) steps long. Strokes are 1 px wide, 3 px on images >= 200 px.
    """
    H, W = labels.shape
    out = np.zeros_like(labels)
    thick = min(H, W) >= 200
    for c in np.unique(labels):
        if c == 0:
            continue
        mask = labels == c
        area = int(mask.sum())
        inner = _eroded_interior(mask, radius + (1 if thick else 0))
        ys, xs = np.nonzero(inner)
        n_strokes = 1 + area * 6 // (H * W)
        length = max(5, int(1.5 * np.sqrt(area)))
        stroke = np.zeros((H, W), bool)
        for k in rng.choice(len(ys), min(n_strokes, len(ys)), replace=False):
            for py, px in _walk(inner, (int(ys[k]), int(xs[k])), length, rng):
                stroke[py, px] = True
        if thick:  # widen to 3 px (a 4-connected dilation), but never past the class region
            stroke = ndimage.binary_dilation(stroke, structure=ndimage.generate_binary_structure(2, 1)) & mask
        out[stroke] = c
    return out


def _percent(labels: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Keep round(p % of the labelled pixels), chosen uniformly."""
    out = np.zeros_like(labels)
    ys, xs = np.nonzero(labels)
    pick = rng.choice(len(ys), int(round(len(ys) * p / 100.0)), replace=False)
    out[ys[pick], xs[pick]] = labels[ys[pick], xs[pick]]
    return out


def apply_density(labels: np.ndarray, density: str, rng: np.random.Generator) -> np.ndarray:
    """Thin one (H, W) label map by a density spec (see the module docstring); returns a new array."""
    kind, param = parse_density(density)
    radius = max(1, round(min(labels.shape) / 60))  # stay a few pixels off boundaries, more on big images
    if kind == "full":
        return labels.copy()
    if kind == "clicks":
        return _clicks(labels, int(param), rng, radius)
    if kind == "scribbles":
        return _scribbles(labels, rng, radius)
    if kind == "percent":
        return _percent(labels, param, rng)
    out = downsample_labels(labels, int(param))
    return out


def apply_noise(labels: np.ndarray, p: float, class_ids: list[int], rng: np.random.Generator) -> np.ndarray:
    """Flip round(p x labelled pixels) pixels, chosen uniformly, to a different class among `class_ids`."""
    out = labels.copy()
    ids = np.asarray(class_ids, np.int64)
    if p <= 0 or len(ids) < 2:
        return out
    ys, xs = np.nonzero(labels)
    pick = rng.choice(len(ys), int(round(len(ys) * p)), replace=False)
    cur = labels[ys[pick], xs[pick]].astype(np.int64)
    # draw among the other len(ids)-1 classes: an offset 1..K-1 from the current class's position
    pos = np.searchsorted(ids, cur)
    pos = np.where((pos < len(ids)) & (ids[np.minimum(pos, len(ids) - 1)] == cur), pos, 0)
    new = ids[(pos + rng.integers(1, len(ids), len(pick))) % len(ids)]
    out[ys[pick], xs[pick]] = new
    return out


def _frame_file(frame: Frame) -> str | Path:
    return frame.label_path or frame.rgb_path or frame.name


def make_sparse_labels(
    scene: Scene,
    labelled: str = "every:10",
    density: str = "full",
    noise: str | None = None,
    seed: int = 0,
) -> SparseLabels:
    """Sparse labels for the frames a spec selects, from the scene's full labels.

    Returns {frame index: (H, W) original ids (uint8, uint16 when an id > 255), 0 where nothing was given}.
    Raises LabelfieldError (one line, naming the file) for malformed specs, a spec selecting no frame, a
    selected frame without labels, a label id not in the class table, or nothing left after thinning.

    Example:
        >>> sparse = make_sparse_labels(toy_scene(20), "every:10", "clicks:5", seed=1)
        >>> sorted(sparse)
        [0, 10]
    """
    parse_density(density)  # fail on a bad spec before loading anything
    p_noise = parse_noise(noise)
    idx = parse_labelled(labelled, len(scene.frames), seed)
    if not any(f.has_labels() for f in scene.frames):  # e.g. a phone capture (Record3D, Polycam) as exported
        raise LabelfieldError(
            "the scene has no label maps: paint some with `labelfield serve`, or import an annotation tool's "
            "export with `labelfield labels import SRC --scene SCENE` (into a transforms.json scene: "
            "`labelfield convert SCENE OUT --to transforms` makes one)",
            scene.root,
        )
    classes = scene.classes
    dtype = np.uint8 if classes.max_id <= 255 else np.uint16
    out: SparseLabels = {}
    for i in idx:
        frame = scene.frames[i]
        lab = frame.load_labels() if frame.has_labels() else None
        if lab is None:
            raise LabelfieldError(
                f"frame {frame.name} was selected by --labelled {labelled!r} but has no label file", _frame_file(frame)
            )
        classes.check_labels(lab, _frame_file(frame))
        lab = lab.astype(dtype)
        sparse = apply_density(lab, density, np.random.default_rng([seed, i, 1]))
        if p_noise > 0:
            sparse = apply_noise(sparse, p_noise, classes.train_ids, np.random.default_rng([seed, i, 2]))
        out[i] = sparse
    if not any(m.any() for m in out.values()):
        raise LabelfieldError(
            f"no labelled pixel left: --labelled {labelled!r} with --label-density {density!r} gives an empty label set"
        )
    return out


def count_labelled_pixels(sparse: SparseLabels) -> int:
    """Total non-void pixels over all frames."""
    return int(sum(int((m != 0).sum()) for m in sparse.values()))
