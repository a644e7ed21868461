"""`labelfield labels import`: export -> the tool's format -> import gives back the labels, for every format,
with the tools' own decoders where installed (pycocotools; Label Studio's brush decoder from label-studio-sdk)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelfield.cli import main
from labelfield.errors import LabelfieldError
from labelfield.export.command import ExportCommand
from labelfield.formats import load_scene, write_scene
from labelfield.label_import.command import import_labels
from labelfield.label_import.readers import detect_source
from labelfield.labelset import FrameRecord, write_frame, write_manifest
from labelfield.scene import ClassTable, Frame, Scene
from labelfield.synth.toy import toy_scene

# The scene to label knows floor and wall (wall in another colour than the tool's); the tool adds the rest.
SCENE_CLASSES = ClassTable.from_names(["void", "floor", "wall"], [(0, 0, 0), (152, 223, 138), (1, 2, 3)])


@pytest.fixture(scope="module")
def gt():
    return toy_scene(4, 32, 24)


@pytest.fixture(scope="module")
def labels_dir(gt, tmp_path_factory):
    """A LABELS folder with the toy scene's exact labels (what `labelfield annotate` writes)."""
    root = tmp_path_factory.mktemp("L") / "LABELS"
    recs = []
    for i, f in enumerate(gt.frames):
        write_frame(root, f.name, f.load_labels(), gt.classes, rgb=f.load_rgb())
        recs.append(FrameRecord.from_frame(f, i, False, False))
    write_manifest(root, scene_path=None, format="memory", downscale=1, method="gt", classes=gt.classes, frames=recs)
    return root


def unlabelled_scene(gt, out: Path) -> Path:
    frames = [Frame(f.name, f.intrinsics, f.c2w, arrays={"rgb": f.load_rgb()}) for f in gt.frames]
    return write_scene(Scene(frames, SCENE_CLASSES), out, "transforms")


def assert_same_by_name(scene_dir: Path, gt, frames=None) -> None:
    scene = load_scene(scene_dir)
    for f, g in zip(scene.frames, gt.frames):
        if frames is not None and f.name not in frames:
            assert not f.has_labels()
            continue
        got = np.array(scene.classes.names)[[scene.classes.ids.index(i) for i in f.load_labels().ravel()]]
        want = np.array(gt.classes.names)[g.load_labels().ravel()]
        np.testing.assert_array_equal(got, want)


def check_summary(summary: dict) -> None:
    assert dict(summary["matched"]) == {"floor": 1, "wall": 2}
    assert {n for n, _ in summary["added"]} == {"ceiling", "sphere", "box"}


def test_cvat_mask_round_trip(gt, labels_dir, tmp_path):
    ExportCommand(labels_dir, "cvat", tmp_path / "cvat.zip").run()
    scene = unlabelled_scene(gt, tmp_path / "scene")
    assert detect_source(tmp_path / "cvat.zip") == "cvat-mask"
    summary = import_labels(tmp_path / "cvat.zip", scene)
    check_summary(summary)
    assert any("'wall'" in c for c in summary["conflicts"])  # the tool's wall colour differs from the scene's
    assert_same_by_name(scene, gt)
    table = load_scene(scene).classes
    assert table.colors[table.ids.index(2)] == (1, 2, 3)  # the scene's colour is kept


def _ls_brush_decoder():
    """Label Studio's own brush RLE decoder (label_studio_sdk/converter/brush.py: numpy + PIL only), loaded
    from the file so that the SDK's heavy client imports are not needed (`pip install --no-deps label-studio-sdk`)."""
    spec = importlib.util.find_spec("label_studio_sdk")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("label-studio-sdk not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "converter" / "brush.py"
    mod_spec = importlib.util.spec_from_file_location("_ls_brush", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.decode_rle


def test_labelstudio_round_trip_and_their_decoder(gt, labels_dir, tmp_path):
    out = tmp_path / "ls.json"
    ExportCommand(labels_dir, "labelstudio", out).run()
    scene = unlabelled_scene(gt, tmp_path / "scene")
    check_summary(import_labels(out, scene))
    assert_same_by_name(scene, gt)
    # Label Studio's decoder reads our RLE as the same RGBA mask our decoder does
    from labelfield.export.labelstudio import rle_to_mask

    decode = _ls_brush_decoder()
    for task in json.loads(out.read_text()):
        for r in task["predictions"][0]["result"]:
            H, W = r["original_height"], r["original_width"]
            theirs = np.reshape(decode(r["value"]["rle"]), (H, W, 4))[..., 3] > 0
            np.testing.assert_array_equal(theirs, rle_to_mask(r["value"]["rle"], H, W))


def test_labelstudio_upload_names_and_polygons(gt, tmp_path):
    scene = unlabelled_scene(gt, tmp_path / "scene")
    task = {
        "data": {"image": "/data/upload/3/0a1b2c3d-frame_002.png"},
        "annotations": [
            {
                "result": [
                    {
                        "type": "polygonlabels",
                        "original_width": 32,
                        "original_height": 24,
                        "value": {"points": [[25, 25], [75, 25], [75, 75], [25, 75]], "polygonlabels": ["Sofa"]},
                    }
                ]
            }
        ],
    }
    (tmp_path / "ls.json").write_text(json.dumps([task]))
    summary = import_labels(tmp_path / "ls.json", scene)
    assert summary["frames"] == {"frame_002": 2} and [n for n, _ in summary["added"]] == ["Sofa"]
    lab = load_scene(scene).frames[2].load_labels()
    assert (lab == 3).sum() == 16 * 12 and lab[6:18, 8:24].min() == 3  # pixels 8..23 x 6..17


def test_coco_round_trip_with_pycocotools(gt, labels_dir, tmp_path):
    mask_api = pytest.importorskip("pycocotools.mask")
    out = tmp_path / "coco.json"
    ExportCommand(labels_dir, "coco", out).run()
    scene = unlabelled_scene(gt, tmp_path / "scene")
    summary = import_labels(out, scene)
    check_summary(summary)
    assert dict(summary["added"]) == {"ceiling": 3, "sphere": 4, "box": 5}  # COCO category ids kept when free
    assert_same_by_name(scene, gt)
    from labelfield.export.coco import decode_mask

    for a in json.loads(out.read_text())["annotations"]:
        rle = dict(a["segmentation"], counts=a["segmentation"]["counts"].encode())
        np.testing.assert_array_equal(mask_api.decode(rle).astype(bool), decode_mask(a["segmentation"]))


def test_coco_polygons_match_pycocotools(gt, tmp_path):
    mask_api = pytest.importorskip("pycocotools.mask")
    poly = [3.0, 2.0, 27.5, 4.0, 20.0, 21.0, 5.0, 15.0]
    doc = {
        "images": [{"id": 7, "file_name": "images/frame_001.jpg", "width": 32, "height": 24}],
        "categories": [{"id": 9, "name": "floor"}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 9, "segmentation": [poly], "area": 30}],
    }
    (tmp_path / "c.json").write_text(json.dumps(doc))
    scene = unlabelled_scene(gt, tmp_path / "scene")
    import_labels(tmp_path / "c.json", scene)
    ours = load_scene(scene).frames[1].load_labels() == 1
    theirs = mask_api.decode(mask_api.merge(mask_api.frPyObjects([poly], 24, 32))).astype(bool)
    iou = (ours & theirs).sum() / (ours | theirs).sum()
    assert iou > 0.9, iou  # rasterisers differ only on boundary pixels


def test_cvat_xml_polygons_and_masks(gt, tmp_path):
    xml = """<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version><meta><task><labels>
  <label><name>floor</name><color>#98df8a</color></label><label><name>lamp</name><color>#ffdd00</color></label>
</labels></task></meta>
<image id="0" name="frame_003.png" width="32" height="24">
  <polygon label="floor" source="manual" occluded="0" points="0,12;32,12;32,24;0,24" z_order="0"/>
  <mask label="lamp" source="manual" occluded="0" rle="1, 2, 2, 1" left="4" top="14" width="3" height="2" z_order="1"/>
</image></annotations>"""
    (tmp_path / "annotations.xml").write_text(xml)
    scene = unlabelled_scene(gt, tmp_path / "scene")
    summary = import_labels(tmp_path / "annotations.xml", scene)
    assert summary["frames"] == {"frame_003": 3} and summary["conflicts"] == []
    lab = load_scene(scene).frames[3].load_labels()
    lamp = dict(summary["added"])["lamp"]
    want = np.zeros((24, 32), np.int64)
    want[12:, :] = 1
    box = want[14:16, 4:7]  # runs over the 3x2 box, row-major: 1 off, 2 on, 2 off, 1 on
    box.flat[[1, 2, 5]] = lamp
    assert box.flat[0] == 1
    np.testing.assert_array_equal(lab, want)


def test_png_folders_palette_and_colour(gt, tmp_path):
    src = tmp_path / "pngs"
    src.mkdir()
    lab = gt.frames[0].load_labels().astype(np.uint8)
    img = Image.fromarray(lab, mode="P")
    img.putpalette(sum((list(c) for c in gt.classes.colors), []) + [0] * (768 - 3 * len(gt.classes.colors)))
    img.save(src / "frame_000.png")
    (src / "classes.json").write_text(json.dumps(gt.classes.names))
    scene = unlabelled_scene(gt, tmp_path / "scene")
    check_summary(import_labels(src, scene))
    assert_same_by_name(scene, gt, frames={"frame_000"})

    rgb = tmp_path / "rgb"  # colour PNGs + CVAT-style labelmap.txt naming the colours
    rgb.mkdir()
    Image.fromarray(gt.classes.colorize(gt.frames[1].load_labels())).save(rgb / "frame_001.png")
    (rgb / "labelmap.txt").write_text(
        "".join(f"{n}:{c[0]},{c[1]},{c[2]}::\n" for n, c in zip(gt.classes.names, gt.classes.colors))
    )
    scene2 = unlabelled_scene(gt, tmp_path / "scene2")
    check_summary(import_labels(rgb, scene2))
    assert_same_by_name(scene2, gt, frames={"frame_001"})


def test_import_errors_and_cli(gt, labels_dir, tmp_path, capsys):
    ExportCommand(labels_dir, "coco", tmp_path / "coco.json").run()
    scene = unlabelled_scene(gt, tmp_path / "scene")
    before = (scene / "transforms.json").read_text()
    bad = json.loads((tmp_path / "coco.json").read_text())
    bad["images"][0]["frame"] = "nope"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(LabelfieldError, match="'nope' matches no frame"):
        import_labels(tmp_path / "bad.json", scene)
    assert (scene / "transforms.json").read_text() == before  # nothing written
    assert main(["labels", "import", str(tmp_path / "coco.json"), "--scene", str(scene)]) == 0
    assert "--labelled 0,1,2,3" in capsys.readouterr().out
    assert main(["labels", "import", str(tmp_path / "coco.json"), "--scene", str(scene)]) == 2  # labelled already
    assert "already has labels" in capsys.readouterr().err
    assert main(["labels", "import", str(tmp_path / "coco.json"), "--scene", str(scene), "--overwrite"]) == 0
    assert main(["labels", "show", str(scene)]) == 0
    assert "4 of 4 frames labelled" in capsys.readouterr().out
