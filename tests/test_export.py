"""Every exporter round-trips: export a LABELS folder, read the result back, get the same labels."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest

from labelfield.cameras import project
from labelfield.errors import LabelfieldError
from labelfield.export.coco import decode_mask, encode_mask, read_coco
from labelfield.export.command import ExportCommand
from labelfield.export.cvat import read_cvat
from labelfield.export.labelstudio import decode_rle, encode_rle, mask_to_rle, read_labelstudio, rle_to_mask
from labelfield.labelset import FrameRecord, read_labelset, write_frame, write_manifest
from labelfield.scene import ClassTable
from labelfield.synth.toy import toy_scene


def make_labels(root, scene, classes=None, scene_path=None):
    """A LABELS folder holding the toy scene's exact labels, images and depth."""
    classes = classes or scene.classes
    recs = []
    for i, f in enumerate(scene.frames):
        write_frame(
            root,
            f.name,
            f.load_labels(),
            classes,
            rgb=f.load_rgb(),
            depth=f.load_depth(),
            confidence=np.ones(f.load_labels().shape),
        )
        recs.append(FrameRecord.from_frame(f, i, i % 2 == 0, False))
    write_manifest(
        root, scene_path=scene_path, format=scene.format, downscale=1, method="gt", classes=classes, frames=recs
    )
    return read_labelset(root)


@pytest.fixture(scope="module")
def labelset(tmp_path_factory):
    scene = toy_scene(4, 32, 24)
    return scene, make_labels(tmp_path_factory.mktemp("L") / "LABELS", scene)


def _same(read: dict, scene) -> None:
    assert sorted(read) == sorted(scene.names)
    for f in scene.frames:
        np.testing.assert_array_equal(read[f.name], f.load_labels())


def test_cvat_round_trip(labelset, tmp_path):
    scene, ls = labelset
    ExportCommand(ls.root, "cvat", tmp_path / "cvat.zip").run()
    with zipfile.ZipFile(tmp_path / "cvat.zip") as z:
        names = set(z.namelist())
        assert {"labelmap.txt", "ImageSets/Segmentation/default.txt"} <= names
        assert "SegmentationClass/frame_001.png" in names
        assert z.read("labelmap.txt").decode().splitlines()[1].startswith("background:0,0,0")
    _same(read_cvat(tmp_path / "cvat.zip", scene.classes), scene)


def test_cvat_duplicate_colours_stay_distinct(tmp_path):
    scene = toy_scene(2, 16, 12)
    classes = ClassTable.from_names(scene.classes.names, [(0, 0, 0)] + [(10, 20, 30)] * 5)
    ls = make_labels(tmp_path / "L", scene, classes)
    ExportCommand(ls.root, "cvat", tmp_path / "c.zip").run()
    _same(read_cvat(tmp_path / "c.zip", classes), scene)


def test_labelstudio_rle_known_bytes_and_round_trip(labelset, tmp_path):
    # 4 values of 255: header (num=4, word 8, sizes 3,4,8,16) then one repeat block of count 4
    assert encode_rle(np.full(4, 255, np.uint8)) == [0, 0, 0, 4, 57, 27, 252, 127, 224]
    rng = np.random.default_rng(0)
    arr = np.repeat(rng.integers(0, 256, 300), rng.integers(1, 300, 300)).astype(np.uint8)
    arr = np.r_[arr, np.zeros(70000, np.uint8)]  # a run longer than one 16-bit block
    np.testing.assert_array_equal(decode_rle(encode_rle(arr)), arr)
    m = rng.random((24, 32)) > 0.7
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(m), 24, 32), m)
    scene, ls = labelset
    ExportCommand(ls.root, "labelstudio", tmp_path / "ls.json", image_prefix="/data/").run()
    tasks = json.loads((tmp_path / "ls.json").read_text())
    assert len(tasks) == 4 and tasks[0]["data"]["image"] == "/data/frame_000.png"
    r = tasks[0]["predictions"][0]["result"][0]
    assert r["type"] == "brushlabels" and r["original_width"] == 32 and r["original_height"] == 24
    assert r["value"]["format"] == "rle" and (tmp_path / "ls.xml").is_file()
    _same(read_labelstudio(tmp_path / "ls.json", scene.classes), scene)


def test_coco_rle_known_string_and_round_trip(labelset, tmp_path):
    m = np.zeros((4, 4), bool)
    m[1:3, 1:3] = True
    assert encode_mask(m) == {"size": [4, 4], "counts": "52203"}  # pycocotools.mask.encode gives b"52203"
    rng = np.random.default_rng(1)
    for p in (0.0, 0.02, 0.5, 1.0):
        m = rng.random((37, 53)) < p
        np.testing.assert_array_equal(decode_mask(encode_mask(m)), m)
    scene, ls = labelset
    ExportCommand(ls.root, "coco", tmp_path / "coco.json").run()
    doc = json.loads((tmp_path / "coco.json").read_text())
    assert [c["id"] for c in doc["categories"]] == [1, 2, 3, 4, 5]
    assert len(doc["images"]) == 4 and all(isinstance(a["segmentation"]["counts"], str) for a in doc["annotations"])
    _same(read_coco(tmp_path / "coco.json"), scene)


@pytest.mark.parametrize("fmt", ["replica", "transforms"])
def test_dataset_round_trip(fmt, tmp_path):
    from labelfield.export.dataset import export_dataset
    from labelfield.formats import load_scene, write_scene

    src = toy_scene(3, 32, 24)
    write_scene(src, tmp_path / "scene", "replica")
    scene = load_scene(tmp_path / "scene")
    new = toy_scene(3, 32, 24, binary=True)  # different labels than the scene's: they must win
    new.frames = [replace(g, name=s.name) for g, s in zip(new.frames, scene.frames)]
    ls = make_labels(tmp_path / "LABELS", new, new.classes, scene_path=tmp_path / "scene")
    ExportCommand(ls.root, fmt, tmp_path / "out").run()
    back = load_scene(tmp_path / "out")
    assert back.format == fmt and len(back) == 3
    for f, g, s in zip(back.frames, new.frames, scene.frames):
        np.testing.assert_array_equal(f.load_labels(), g.load_labels())
        np.testing.assert_array_equal(f.load_rgb(), s.load_rgb())
        np.testing.assert_allclose(f.c2w, s.c2w, atol=1e-6)
    assert back.classes.names == new.classes.names
    # without a scene: the renders stand in for the images
    export_dataset(ls, tmp_path / "out2", fmt, None)
    back = load_scene(tmp_path / "out2")
    np.testing.assert_array_equal(back.frames[1].load_labels(), new.frames[1].load_labels())


def test_ply_fields_and_labels(labelset, tmp_path):
    from plyfile import PlyData

    scene, ls = labelset
    ExportCommand(ls.root, "ply", tmp_path / "cloud.ply", voxel_size=0.02).run()
    v = PlyData.read(str(tmp_path / "cloud.ply"))["vertex"]
    assert [p.name for p in v.properties] == ["x", "y", "z", "red", "green", "blue", "label"]
    xyz = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    label = np.asarray(v["label"])
    assert 200 < len(xyz) < 4 * 32 * 24 and set(np.unique(label)) <= {1, 2, 3, 4, 5}
    # a fused point seen by frame 0 carries the label frame 0 has at its pixel (boundaries aside)
    f = scene.frames[0]
    uv, z = project(xyz, f.intrinsics, f.c2w)
    u, r = np.round(uv).astype(int).T
    ok = (z > 0) & (u >= 0) & (u < 32) & (r >= 0) & (r < 24)
    depth = f.load_depth()
    ok[ok] &= np.abs(depth[r[ok], u[ok]] - z[ok]) < 0.03
    assert ok.sum() > 100
    agree = (f.load_labels()[r[ok], u[ok]] == label[ok]).mean()
    assert agree > 0.9, agree


def test_bad_input(labelset, tmp_path):
    scene, ls = labelset
    with pytest.raises(LabelfieldError, match="choose one of: cvat, labelstudio, coco, replica, transforms, ply"):
        ExportCommand(ls.root, "pascal", tmp_path / "x.zip").run()
    with pytest.raises(LabelfieldError, match="inside"):
        ExportCommand(ls.root, "cvat", ls.root / "x.zip").run()
    with pytest.raises(LabelfieldError, match="must end in .zip"):
        ExportCommand(ls.root, "cvat", tmp_path / "x.json").run()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(LabelfieldError, match="not an empty folder"):
        ExportCommand(ls.root, "replica", tmp_path / "full").run()
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(LabelfieldError, match="no frames.json"):
        ExportCommand(tmp_path, "cvat", tmp_path / "y.zip").run()


def test_export_never_imports_the_trainer():
    import subprocess
    import sys

    code = (
        "import sys, labelfield.export.command, labelfield.export.cvat, labelfield.export.labelstudio, "
        "labelfield.export.coco, labelfield.export.dataset, labelfield.export.ply; "
        "print([m for m in sys.modules if m.startswith(('labelfield.train', 'labelfield.models'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
