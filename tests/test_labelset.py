"""LABELS folder round trip: write_frame + write_manifest -> read_labelset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labelfield.errors import LabelfieldError
from labelfield.io import atomic_dir
from labelfield.labelset import FrameRecord, read_labelset, write_frame, write_manifest
from labelfield.scene import ClassTable
from labelfield.synth.toy import toy_scene


def test_round_trip(tmp_path):
    scene = toy_scene(3, 16, 12)
    out = tmp_path / "LABELS"
    with atomic_dir(out) as tmp:
        recs = []
        for i, f in enumerate(scene.frames):
            probs = np.random.default_rng(i).random((12, 16, scene.classes.num_classes))
            write_frame(
                tmp,
                f.name,
                f.load_labels(),
                scene.classes,
                image=f.load_rgb(),
                rgb=f.load_rgb(),
                depth=f.load_depth(),
                confidence=np.full((12, 16), 0.5),
                probs=probs,
            )
            recs.append(FrameRecord.from_frame(f, i, labelled=i == 0, given=i == 0))
        write_manifest(
            tmp, scene_path="x", format="memory", downscale=1, method="test", classes=scene.classes, frames=recs
        )
    ls = read_labelset(out)
    assert ls.names == scene.names and ls.method == "test" and ls.classes.ids == scene.classes.ids
    f = scene.frames[1]
    np.testing.assert_array_equal(ls.load_labels(f.name), f.load_labels())
    np.testing.assert_array_equal(ls.load_rgb(f.name), f.load_rgb())
    np.testing.assert_allclose(ls.load_depth(f.name), f.load_depth(), atol=6e-4)
    assert ls.load_probs(f.name).shape == (12, 16, 5)
    assert abs(float(ls.load_confidence(f.name).mean()) - 0.5) < 0.01
    np.testing.assert_allclose(ls.record(f.name).pose(), f.c2w)
    assert ls.record(f.name).intr() == f.intrinsics
    assert ls.record(scene.names[0]).labelled and not ls.record(f.name).labelled
    for sub in ("labels", "labels_color", "overlay", "confidence", "probs", "rgb", "depth"):
        assert (out / sub).is_dir()


def test_uint16_ids(tmp_path):
    classes = ClassTable.from_ids([1, 300])
    lab = np.array([[0, 1], [300, 300]])
    write_frame(tmp_path, "a", lab, classes)
    from labelfield.io import read_image

    img = read_image(tmp_path / "labels" / "a.png")
    assert img.dtype == np.uint16 and img[1, 0] == 300


def test_errors(tmp_path):
    with pytest.raises(LabelfieldError, match="labels folder not found"):
        read_labelset(tmp_path / "nope")
    with pytest.raises(LabelfieldError, match="no frames.json"):
        read_labelset(tmp_path)
    (tmp_path / "frames.json").write_text(json.dumps({"frames": [{"name": "a"}]}))
    (tmp_path / "classes.json").write_text(json.dumps(ClassTable.from_names(["void", "a"]).to_json()))
    with pytest.raises(LabelfieldError, match="malformed frames.json"):
        read_labelset(tmp_path)
