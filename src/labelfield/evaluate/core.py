"""Evaluate a LABELS folder against a ground-truth Scene: the numbers `labelfield eval` prints and saves.

Frames are matched by name. "unlabelled" = frames whose record has `labelled == False` (the propagation
result); "all" = every frame of the LABELS folder. Consistency pairs frame i with i + k (i - k at the end),
scored for source frames i in each subset, using the LABELS folder's depth/ when present, else GT depth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from labelfield.errors import LabelfieldError
from labelfield.evaluate.consistency import ViewLabels, frame_agreement
from labelfield.evaluate.metrics import ConfusionMatrix, psnr
from labelfield.labelset import LabelSet
from labelfield.progress import Progress, ProgressFn
from labelfield.scene import ClassTable, Frame, Scene

_PSNR_CAP = 100.0  # identical images give inf; JSON has no inf


@dataclass
class EvalResult:
    """`summary` is the JSON document; the rest feeds the report."""

    summary: dict
    classes: ClassTable
    confusion_all: ConfusionMatrix
    confusion_unlabelled: ConfusionMatrix
    method: str = ""
    n_frames: int = 0
    n_unlabelled: int = 0
    samples: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)  # (name, gt, pred)


def match_frames(labelset: LabelSet, scene: Scene) -> list[Frame]:
    """GT frame for each LABELS frame, by name; one-line LabelfieldError when they don't match."""
    by_name = {f.name: f for f in scene.frames}
    missing = [n for n in labelset.names if n not in by_name]
    if missing:
        where = scene.root if scene.root is not None else labelset.root
        raise LabelfieldError(
            f"GT scene frames don't match the labels: {len(missing)} of {len(labelset.names)} labelled frames "
            f"are not in the GT scene (first: {missing[0]!r})",
            where,
        )
    return [by_name[n] for n in labelset.names]


def _sample_names(names: list[str], unlabelled: list[str], n: int = 4) -> set[str]:
    pool = unlabelled or names
    pick = np.unique(np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int))
    return {pool[i] for i in pick}


def evaluate(
    labelset: LabelSet,
    scene: Scene,
    k: int = 1,
    rel_tol: float = 0.05,
    n_samples: int = 4,
    on_progress: ProgressFn | None = None,
) -> EvalResult:
    """Metrics, consistency and PSNR of `labelset` against `scene`'s full labels.

    `on_progress` receives Progress("evaluate", done, total, "frames") after each frame.
    """
    gt_frames = match_frames(labelset, scene)
    classes = scene.classes
    names = labelset.names
    unl = {r.name for r in labelset.frames if not r.labelled}
    samples = _sample_names(names, [n for n in names if n in unl], n_samples)
    cm_all, cm_unl = ConfusionMatrix(classes), ConfusionMatrix(classes)
    psnrs: list[float] = []
    out_samples = []
    n = len(names)
    kk = max(1, min(k, n - 1)) if n > 1 else 0
    cache: dict[int, ViewLabels | None] = {}

    def view(i: int) -> ViewLabels | None:
        if i not in cache:
            rec, f = labelset.record(names[i]), gt_frames[i]
            depth = labelset.load_depth(names[i])
            if depth is None:
                depth = f.load_depth()
            lab = labelset.load_labels(names[i])
            cache[i] = None if depth is None else ViewLabels(lab, depth, rec.intr(), rec.pose())
        return cache[i]

    cons = {"all": [0, 0], "unlabelled": [0, 0]}
    for i, name in enumerate(names):
        f = gt_frames[i]
        gt = f.load_labels()
        if gt is None:
            raise LabelfieldError(f"GT frame {name} has no labels to evaluate against", f.label_path or scene.root)
        pred = labelset.load_labels(name)
        if pred.shape != gt.shape:
            raise LabelfieldError(
                f"label map is {pred.shape[1]}x{pred.shape[0]} but the GT frame is {gt.shape[1]}x{gt.shape[0]} "
                "(evaluate at the same --downscale)",
                labelset.root / "labels" / f"{name}.png",
            )
        cm_all.update(gt, pred)
        if name in unl:
            cm_unl.update(gt, pred)
        if name in samples:
            out_samples.append((name, gt, pred))
        rgb = labelset.load_rgb(name)
        if rgb is not None:
            psnrs.append(min(psnr(rgb, f.load_rgb()), _PSNR_CAP))
        if kk:
            agree, total = frame_agreement(view, i, n, kk, rel_tol)
            for key in ("all", "unlabelled") if name in unl else ("all",):
                cons[key][0] += agree
                cons[key][1] += total
            for old in [c for c in cache if c < i - kk]:  # keep only the window pairs still need
                del cache[old]
        if on_progress is not None:
            on_progress(Progress("evaluate", i + 1, n, "frames"))

    def block(cm: ConfusionMatrix, key: str) -> dict:
        d = cm.compute()
        agree, total = cons[key]
        d["consistency"] = agree / total if total else None
        return d

    summary = {
        "unlabelled": block(cm_unl, "unlabelled"),
        "all": block(cm_all, "all"),
        "psnr": float(np.mean(psnrs)) if psnrs else None,
    }
    return EvalResult(summary, classes, cm_all, cm_unl, labelset.method, n, len(unl), out_samples)
