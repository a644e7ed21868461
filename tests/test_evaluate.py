"""Evaluation: metrics vs brute force, GT-vs-GT scores, consistency, JSON layout, report, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labelfield import formats
from labelfield.errors import LabelfieldError
from labelfield.evaluate.consistency import ViewLabels, consistency
from labelfield.evaluate.core import evaluate
from labelfield.evaluate.metrics import ConfusionMatrix, psnr
from labelfield.evaluate.report import write_report
from labelfield.labelset import FrameRecord, read_labelset, write_frame, write_manifest
from labelfield.scene import ClassTable
from labelfield.synth.toy import toy_scene


@pytest.fixture(scope="module")
def scene():
    return toy_scene(16, 48, 36)


def write_labels(out, scene, preds: dict, labelled=(0, 8), rgb=None, method="test"):
    """A LABELS folder with preds[name] (default: GT) for every scene frame."""
    recs = []
    for i, f in enumerate(scene.frames):
        lab = preds.get(f.name, f.load_labels())
        write_frame(out, f.name, lab, scene.classes, image=f.load_rgb(), rgb=None if rgb is None else rgb(f))
        recs.append(FrameRecord.from_frame(f, i, i in labelled, i in labelled))
    write_manifest(
        out, scene_path=None, format="memory", downscale=1, method=method, classes=scene.classes, frames=recs
    )
    return read_labelset(out)


def brute(gt, pred, ids):
    ious, recalls = {}, []
    valid = gt != 0
    for c in ids:
        if c == 0:
            continue
        g, p = (gt == c) & valid, (pred == c) & valid
        if g.sum() + p.sum() == 0:
            continue
        ious[c] = (g & p).sum() / (g | p).sum()
        if g.sum():
            recalls.append((g & p).sum() / g.sum())
    acc = (pred[valid] == gt[valid]).mean()
    return np.mean(list(ious.values())), acc, np.mean(recalls), ious


def test_metrics_match_brute_force():
    rng = np.random.default_rng(0)
    classes = ClassTable.from_ids([1, 2, 5, 7, 9])
    cm = ConfusionMatrix(classes)
    gts, preds = [], []
    for _ in range(3):
        gt = rng.choice([0, 1, 2, 5, 7], (9, 11))  # 9 never appears in GT
        pred = rng.choice([0, 1, 2, 5, 9, 3], (9, 11))  # 3 is not in the table: counts as a miss
        cm.update(gt, pred)
        gts.append(gt)
        preds.append(pred)
    gt, pred = np.concatenate(gts), np.concatenate(preds)
    miou, acc, cacc, ious = brute(gt, pred, classes.ids)
    d = cm.compute()
    assert d["miou"] == pytest.approx(miou)
    assert d["accuracy"] == pytest.approx(acc)
    assert d["class_avg_accuracy"] == pytest.approx(cacc)
    assert set(d["per_class_iou"]) == {classes.name_of(c) for c in ious}
    assert "class_9" in d["per_class_iou"] and d["per_class_iou"]["class_9"] == 0.0  # predicted-only class
    for c, v in ious.items():
        assert d["per_class_iou"][classes.name_of(c)] == pytest.approx(v)


def test_metrics_edge_cases():
    classes = ClassTable.from_names(["void", "a", "b"])
    cm = ConfusionMatrix(classes)
    cm.update(np.zeros((2, 2), int), np.ones((2, 2), int))  # all-void GT: nothing counted
    assert cm.compute() == {
        "miou": None,
        "miou_gt_classes": None,
        "accuracy": None,
        "class_avg_accuracy": None,
        "per_class_iou": {},
    }
    cm.update(np.array([[1, 1]]), np.array([[1, 0]]))
    d = cm.compute()
    assert d["miou"] == 0.5 and d["accuracy"] == 0.5 and d["per_class_iou"] == {"a": 0.5}
    # a class predicted on one stray pixel of a frame where it is absent: IoU 0 in mIoU, left out of the other
    cm.update(np.array([[1, 1]]), np.array([[1, 2]]))
    d = cm.compute()
    assert d["per_class_iou"] == {"a": 0.5, "b": 0.0} and d["miou"] == 0.25 and d["miou_gt_classes"] == 0.5
    img = np.full((4, 4, 3), 100, np.uint8)
    assert psnr(img, img) == float("inf")
    assert psnr(img, img + 1) == pytest.approx(20 * np.log10(255), abs=1e-6)


def test_gt_is_perfect_and_consistent(scene, tmp_path):
    ls = write_labels(tmp_path / "L", scene, {})
    r = evaluate(ls, scene)
    for key in ("unlabelled", "all"):
        assert r.summary[key]["miou"] == 1.0 and r.summary[key]["accuracy"] == 1.0
        assert r.summary[key]["class_avg_accuracy"] == 1.0
        assert r.summary[key]["consistency"] > 0.97
    assert r.summary["psnr"] is None
    assert r.n_unlabelled == 14 and len(r.samples) == 4


def test_consistency_drops_for_corrupted_labels(scene, tmp_path):
    views = [ViewLabels(f.load_labels(), f.load_depth(), f.intrinsics, f.c2w) for f in scene.frames]
    good = consistency(views, k=1)
    rng = np.random.default_rng(0)
    bad_views = []
    for v in views:  # shift each frame's labels by a different amount: flicker / drift
        lab = np.roll(v.labels, tuple(rng.integers(-4, 5, 2)), (0, 1))
        bad_views.append(ViewLabels(lab, v.depth, v.intrinsics, v.c2w))
    bad = consistency(bad_views, k=1)
    assert good > 0.97 and bad < good - 0.03
    # the same through evaluate(), on the unlabelled frames
    preds = {f.name: v.labels for f, v in zip(scene.frames, bad_views)}
    r = evaluate(write_labels(tmp_path / "L", scene, preds), scene)
    assert r.summary["unlabelled"]["consistency"] < good - 0.03
    assert r.summary["unlabelled"]["miou"] < 1.0


def test_psnr_and_rgb(scene, tmp_path):
    ls = write_labels(tmp_path / "L", scene, {}, rgb=lambda f: (f.load_rgb() // 2) * 2)
    r = evaluate(ls, scene)
    assert 40 < r.summary["psnr"] < 100


def test_mismatched_frames(scene, tmp_path):
    ls = write_labels(tmp_path / "L", scene, {})
    other = toy_scene(4, 48, 36)
    other.frames[2].name = "something_else"
    with pytest.raises(LabelfieldError, match="GT scene frames don't match"):
        evaluate(ls, other)
    small = toy_scene(16, 24, 18)
    with pytest.raises(LabelfieldError, match="downscale"):
        evaluate(ls, small)


def test_report_and_json(scene, tmp_path):
    preds = {f.name: np.where(f.load_labels() == 4, 5, f.load_labels()) for f in scene.frames[1:]}
    ls = write_labels(tmp_path / "L", scene, preds, method="nearest")
    r = evaluate(ls, scene)
    assert set(r.summary) == {"unlabelled", "all", "psnr"}
    for key in ("unlabelled", "all"):
        assert set(r.summary[key]) == {
            "miou",
            "miou_gt_classes",
            "accuracy",
            "class_avg_accuracy",
            "per_class_iou",
            "consistency",
        }
    assert r.summary["unlabelled"]["per_class_iou"]["sphere"] == 0.0
    json.dumps(r.summary, allow_nan=False)
    path = write_report(r, tmp_path / "report.html")
    text = path.read_text()
    assert text.count("data:image/png;base64,") == 3 and "nearest" in text and "mIoU" in text


def test_eval_command(scene, tmp_path):
    from labelfield.evaluate.command import EvalCommand

    gt_dir = formats.write_scene(scene, tmp_path / "gt", "replica")
    gt = formats.load_scene(gt_dir)
    write_labels(tmp_path / "L", gt, {})
    cmd = EvalCommand(tmp_path / "L", gt=gt_dir, json=tmp_path / "m.json")
    assert cmd.run() == 0
    d = json.loads((tmp_path / "m.json").read_text())
    assert d["all"]["miou"] == 1.0 and d["psnr"] is None
    assert (tmp_path / "L" / "report.html").is_file()
    with pytest.raises(LabelfieldError, match="no frames.json"):
        EvalCommand(tmp_path, gt=gt_dir).run()


def test_consistency_counts_holes(scene):
    views = [ViewLabels(f.load_labels(), f.load_depth(), f.intrinsics, f.c2w) for f in scene.frames]
    holed = []
    for i, v in enumerate(views):  # every other frame loses its left half: labels meet holes
        lab = v.labels.copy()
        if i % 2:
            lab[:, : lab.shape[1] // 2] = 0
        holed.append(ViewLabels(lab, v.depth, v.intrinsics, v.c2w))
    assert consistency(holed) < consistency(views) - 0.1
    void = [ViewLabels(np.zeros_like(v.labels), v.depth, v.intrinsics, v.c2w) for v in views]
    assert consistency(void) is None  # nothing labelled: nothing to score
