"""Scene formats: each reader on a small scene written in its layout, round trips, downscale, bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from labelfield.cameras import opencv_to_opengl
from labelfield.errors import LabelfieldError
from labelfield.formats import detect_format, load_scene, write_scene
from labelfield.io import read_image, write_image
from labelfield.scene import Scene
from labelfield.synth.toy import toy_scene

LEGO = Path(__file__).resolve().parents[2] / "shared" / "data" / "lego-200"


@pytest.fixture(scope="module")
def toy() -> Scene:
    return toy_scene(5, 32, 24, seed=3)


def assert_same_scene(a: Scene, b: Scene, depth: bool = True) -> None:
    """Poses to 1e-6, identical labels and rgb, depth to the millimetre, same class table and camera."""
    assert len(a) == len(b)
    assert a.classes.ids == b.classes.ids and a.classes.names == b.classes.names
    assert a.classes.background_class == b.classes.background_class
    for fa, fb in zip(a.frames, b.frames):
        np.testing.assert_allclose(fb.c2w, fa.c2w, atol=1e-6)
        ia, ib = fa.intrinsics, fb.intrinsics
        np.testing.assert_allclose([ib.fx, ib.fy, ib.cx, ib.cy], [ia.fx, ia.fy, ia.cx, ia.cy], atol=1e-9)
        assert (ib.width, ib.height) == (ia.width, ia.height)
        np.testing.assert_array_equal(fb.load_rgb(), fa.load_rgb())
        assert fa.has_labels() == fb.has_labels()
        if fa.has_labels():
            np.testing.assert_array_equal(fb.load_labels(), fa.load_labels())
        if depth:
            np.testing.assert_allclose(fb.load_depth(), fa.load_depth(), atol=5.01e-4)


@pytest.mark.parametrize("fmt", ["replica", "transforms"])
def test_writer_reader_round_trip(toy: Scene, tmp_path: Path, fmt: str) -> None:
    out = write_scene(toy, tmp_path / fmt, fmt)
    assert detect_format(out) == fmt
    back = load_scene(out)
    assert back.format == fmt and back.root == out
    assert_same_scene(toy, back)
    # and once more from disk to the other format: frames on disk write as well as frames in memory
    other = "transforms" if fmt == "replica" else "replica"
    again = load_scene(write_scene(back, tmp_path / "again", other))
    assert_same_scene(toy, again)


def test_replica_layout_files(toy: Scene, tmp_path: Path) -> None:
    out = write_scene(toy, tmp_path / "r", "replica")
    assert read_image(out / "depth" / "depth_0.png").dtype == np.uint16
    assert read_image(out / "semantic_class" / "semantic_class_0.png").dtype == np.uint8
    traj = np.loadtxt(out / "traj_w_c.txt")
    assert traj.shape == (5, 16)
    np.testing.assert_array_equal(traj[2].reshape(4, 4), toy.frames[2].c2w)  # full precision
    assert set(json.loads((out / "classes.json").read_text())) >= {"classes", "colors", "ids", "background_class"}
    assert set(json.loads((out / "intrinsics.json").read_text())) == {"fx", "fy", "cx", "cy", "w", "h"}


def test_transforms_layout_is_opengl_and_half_pixel(toy: Scene, tmp_path: Path) -> None:
    out = write_scene(toy, tmp_path / "t", "transforms")
    d = json.loads((out / "transforms.json").read_text())
    m = np.array(d["frames"][0]["transform_matrix"])
    # OpenGL: the camera looks along -z, so column 2 is minus the OpenCV forward axis
    np.testing.assert_allclose(m[:3, 2], -toy.frames[0].c2w[:3, 2])
    assert d["cx"] == pytest.approx(16.0) and d["w"] == 32  # centred principal point at +0.5 centres
    assert d["semantics"]["ignore_index"] == 0 and "background_class" in d["semantics"]
    assert d["frames"][0]["semantics_path"].startswith("semantics/")


def test_unlabelled_frames_and_sorting_by_integer(toy: Scene, tmp_path: Path) -> None:
    scene = toy_scene(12, 16, 12)
    for f in scene.frames[1:]:
        del f.arrays["labels"]
    out = write_scene(scene, tmp_path / "r", "replica")
    assert sorted(p.name for p in (out / "semantic_class").iterdir()) == ["semantic_class_0.png"]
    back = load_scene(out)
    assert back.labelled_indices() == [0]
    assert back.names[:3] == ["rgb_0", "rgb_1", "rgb_2"] and back.names[10] == "rgb_10"  # not "rgb_10" < "rgb_2"
    np.testing.assert_allclose(back.frames[10].c2w, scene.frames[10].c2w, atol=1e-12)
    t = load_scene(write_scene(back, tmp_path / "t", "transforms"))
    assert t.labelled_indices() == [0]


def test_replica_defaults_without_json(toy: Scene, tmp_path: Path) -> None:
    out = write_scene(toy, tmp_path / "r", "replica")
    (out / "intrinsics.json").unlink()
    (out / "classes.json").unlink()
    back = load_scene(out)
    i = back.frames[0].intrinsics
    assert (i.fx, i.fy, i.cx, i.cy) == (16.0, 16.0, 15.5, 11.5)  # Replica: 90 degree FOV, centred
    found = sorted({0} | set(np.unique(np.concatenate([f.load_labels().ravel() for f in toy.frames])).tolist()))
    assert back.classes.ids == found and back.classes.names[1] == f"class_{found[1]}"  # ids found in the labels


def test_replica_info_semantic(toy: Scene, tmp_path: Path) -> None:
    out = write_scene(toy, tmp_path / "r", "replica")
    (out / "classes.json").unlink()
    info = {"classes": [{"id": i, "name": n} for i, n in enumerate(["floor", "wall", "ceil", "ball", "cube", "x"], 1)]}
    (out / "info_semantic.json").write_text(json.dumps(info))
    back = load_scene(out)
    assert back.classes.name_of(4) == "ball" and back.classes.max_id == 6


@pytest.mark.parametrize("fmt", ["replica", "transforms"])
def test_downscale(fmt: str, tmp_path: Path) -> None:
    scene = toy_scene(3, 32, 24)
    out = write_scene(scene, tmp_path / fmt, fmt)
    small = load_scene(out, downscale=2)
    f = small.frames[1]
    assert f.intrinsics == scene.frames[1].intrinsics.scaled(0.5)
    assert f.load_rgb().shape == (12, 16, 3)
    assert f.load_labels().shape == (12, 16) and f.load_depth().shape == (12, 16)
    # nearest-neighbour labels keep only ids that exist
    assert set(np.unique(f.load_labels())) <= set(np.unique(scene.frames[1].load_labels()))
    with pytest.raises(LabelfieldError):
        load_scene(out, downscale=0)


def test_write_refuses_own_folder(toy: Scene, tmp_path: Path) -> None:
    out = write_scene(toy, tmp_path / "r", "replica")
    scene = load_scene(out)
    for target in (out, tmp_path):
        with pytest.raises(LabelfieldError, match="own folder"):
            write_scene(scene, target, "replica")
    assert load_scene(out).names == scene.names  # untouched
    with pytest.raises(LabelfieldError):
        write_scene(toy, tmp_path / "x", "colmap")


def test_uint16_labels_round_trip(tmp_path: Path) -> None:
    from labelfield.scene import ClassTable

    scene = toy_scene(2, 16, 12)
    scene.classes = ClassTable([1, 2, 3, 4, 300], ["a", "b", "c", "d", "e"], [(1, 1, 1)] * 5)
    for f in scene.frames:
        lab = f.arrays["labels"].astype(np.uint16)
        f.arrays["labels"] = np.where(lab == 5, 300, lab).astype(np.uint16)
    for fmt in ("replica", "transforms"):
        back = load_scene(write_scene(scene, tmp_path / fmt, fmt))
        assert back.classes.max_id == 300
        np.testing.assert_array_equal(back.frames[0].load_labels(), scene.frames[0].arrays["labels"])


def test_transforms_nerf_synthetic_style(tmp_path: Path) -> None:
    """camera_angle_x only, file paths without extension, RGBA over white, no semantics at all."""
    scene = toy_scene(2, 16, 12)
    root = tmp_path / "nerf"
    frames = []
    for i, f in enumerate(scene.frames):
        rgba = np.concatenate([f.load_rgb(), np.full((12, 16, 1), 255, np.uint8)], -1)
        rgba[:4, :, 3] = 0  # transparent top rows
        write_image(root / "train" / f"r_{i}.png", rgba)
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": opencv_to_opengl(f.c2w).tolist()})
    fov = 2 * np.arctan(0.5 * 16 / scene.frames[0].intrinsics.fx)
    (root / "transforms.json").write_text(json.dumps({"camera_angle_x": fov, "frames": frames}))
    back = load_scene(root)
    i = back.frames[0].intrinsics
    assert (i.width, i.height, i.cx, i.cy) == (16, 12, 7.5, 5.5)
    assert i.fx == pytest.approx(scene.frames[0].intrinsics.fx)
    rgb = back.frames[1].load_rgb()
    assert (rgb[:4] == 255).all()
    np.testing.assert_array_equal(rgb[4:], scene.frames[1].load_rgb()[4:])
    assert back.labelled_indices() == [] and back.classes.ids == [0]
    np.testing.assert_allclose(back.frames[1].c2w, scene.frames[1].c2w, atol=1e-12)
    assert load_scene(root / "transforms.json").names == ["r_0", "r_1"]  # the JSON file itself works too


def test_per_frame_intrinsics(tmp_path: Path) -> None:
    from dataclasses import replace

    scene = toy_scene(3, 16, 12)
    f = scene.frames[1]
    f.intrinsics = replace(f.intrinsics, fx=f.intrinsics.fx * 1.1, distortion=(0.1, -0.05, 0.0, 0.001, 0.0))
    out = write_scene(scene, tmp_path / "t", "transforms")
    d = json.loads((out / "transforms.json").read_text())
    assert "fl_x" not in d and d["frames"][1]["k1"] == 0.1
    back = load_scene(out)
    assert back.frames[1].intrinsics.distortion == (0.1, -0.05, 0.0, 0.001, 0.0)
    assert (
        back.frames[1].intrinsics.fx == pytest.approx(f.intrinsics.fx) and back.frames[0].intrinsics.distortion is None
    )
    with pytest.raises(LabelfieldError, match="one camera"):
        write_scene(scene, tmp_path / "r", "replica")
    assert not (tmp_path / "r").exists()  # nothing written


# --- detection and bad input ----------------------------------------------------------------------------------
def test_detect_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(LabelfieldError, match="not found") as e:
        detect_format(tmp_path / "missing")
    assert "missing" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelfieldError, match="empty") as e:
        load_scene(tmp_path / "empty")
    assert "empty" in str(e.value)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    with pytest.raises(LabelfieldError, match="not a scene folder"):
        detect_format(tmp_path / "junk")


def _replica(tmp_path: Path) -> Path:
    return write_scene(toy_scene(4, 16, 12), tmp_path / "r", "replica")


def _load_all(path: Path) -> None:
    for f in load_scene(path).frames:
        f.load_rgb(), f.load_depth(), f.load_labels()


def test_bad_missing_image(tmp_path: Path) -> None:
    out = _replica(tmp_path)
    (out / "rgb" / "rgb_2.png").unlink()
    with pytest.raises(LabelfieldError, match="traj_w_c.txt.*4 poses but 3 images"):
        load_scene(out)


def test_bad_unreadable_image(tmp_path: Path) -> None:
    out = _replica(tmp_path)
    (out / "rgb" / "rgb_2.png").write_bytes(b"not a png")
    with pytest.raises(LabelfieldError, match=r"rgb_2\.png.*unreadable"):
        _load_all(out)


@pytest.mark.parametrize(
    "line, match",
    [
        ("1 2 3", "line 2: pose has 3 numbers"),
        (" ".join(["nan"] * 16), "line 2: pose is not finite"),
        ("2 0 0 0 0 2 0 0 0 0 2 0 0 0 0 1", "line 2: pose is not a rigid transform"),
    ],
)
def test_bad_pose(tmp_path: Path, line: str, match: str) -> None:
    out = _replica(tmp_path)
    lines = (out / "traj_w_c.txt").read_text().splitlines()
    lines[1] = line
    (out / "traj_w_c.txt").write_text("\n".join(lines))
    with pytest.raises(LabelfieldError, match=f"traj_w_c.txt: {match}"):
        load_scene(out)


def test_bad_label_size(tmp_path: Path) -> None:
    out = _replica(tmp_path)
    write_image(out / "semantic_class" / "semantic_class_1.png", np.ones((24, 32), np.uint8))
    with pytest.raises(LabelfieldError, match=r"semantic_class_1\.png: labels image is 32x24"):
        _load_all(out)


def test_bad_label_id(tmp_path: Path) -> None:
    out = _replica(tmp_path)
    write_image(out / "semantic_class" / "semantic_class_3.png", np.full((12, 16), 9, np.uint8))
    with pytest.raises(LabelfieldError, match=r"semantic_class_3\.png: label id 9 is not in the class table"):
        _load_all(out)


def test_bad_transforms(tmp_path: Path) -> None:
    out = write_scene(toy_scene(3, 16, 12), tmp_path / "t", "transforms")
    doc = json.loads((out / "transforms.json").read_text())
    bad = json.loads(json.dumps(doc))
    bad["frames"][1]["transform_matrix"] = [[1, 0, 0], [0, 1, 0]]
    (out / "transforms.json").write_text(json.dumps(bad))
    with pytest.raises(LabelfieldError, match=r"transforms.json: frames\[1\].transform_matrix is not 4x4"):
        load_scene(out)
    bad = json.loads(json.dumps(doc))
    bad["frames"][2]["file_path"] = "images/nope.png"
    (out / "transforms.json").write_text(json.dumps(bad))
    with pytest.raises(LabelfieldError, match=r"nope\.png: image not found"):
        load_scene(out)
    bad = json.loads(json.dumps(doc))
    bad["frames"] = []
    (out / "transforms.json").write_text(json.dumps(bad))
    with pytest.raises(LabelfieldError, match="transforms.json: no frames"):
        load_scene(out)


# --- the real scene -------------------------------------------------------------------------------------------
def test_lego_200_loads(tmp_path: Path) -> None:
    if not (LEGO / "transforms.json").is_file():
        pytest.skip("../shared/data/lego-200 not present")
    scene = load_scene(LEGO)
    assert scene.format == "transforms" and len(scene) == 100
    assert len(scene.labelled_indices()) == 100
    assert scene.classes.names == ["void", "background", "lego"] and scene.classes.background_class == 1
    f = scene.frames[0]
    assert f.name == "r_0" and scene.frames[2].name == "r_2"
    assert (f.intrinsics.cx, f.intrinsics.width) == (99.5, 200)
    rgb, lab = f.load_rgb(), f.load_labels()
    assert rgb.shape == (200, 200, 3)
    bg = lab == 1
    assert bg.mean() > 0.3 and (lab == 2).mean() > 0.05
    assert rgb[bg].mean() > 245  # RGBA composited over white
    # cameras look at the object near the origin: it projects inside the image
    from labelfield.cameras import project

    uv, z = project(np.zeros((1, 3)), f.intrinsics, f.c2w)
    assert z[0] > 0 and 50 < uv[0, 0] < 150 and 50 < uv[0, 1] < 150
    small = load_scene(LEGO, downscale=4)
    assert small.frames[5].load_labels().shape == (50, 50)
    copy = tmp_path / "lego"
    shutil.copytree(LEGO, copy)
    back = load_scene(write_scene(load_scene(copy), tmp_path / "lego_r", "replica"))
    np.testing.assert_allclose(back.frames[7].c2w, scene.frames[7].c2w, atol=1e-6)
    np.testing.assert_array_equal(back.frames[7].load_labels(), scene.frames[7].load_labels())


# --- ScanNet ----------------------------------------------------------------------------------------------------
# toy ids (1 floor, 2 wall, 3 ceiling, 4 sphere, 5 box) stored as these ScanNet ids, mapped to these NYU40 ids
TOY_TO_RAW = {1: 2, 2: 1, 3: 41, 4: 300, 5: 7}
RAW_TO_NYU = {2: (2, "floor"), 1: (1, "wall"), 41: (22, "ceiling"), 300: (40, "otherprop"), 7: (29, "box")}


def write_scannet_fixture(scene: Scene, root: Path, tsv: bool = True, lost: tuple[int, ...] = ()) -> Path:
    """A ScanNet export of `scene` (PNG colour so it compares exactly); poses of `lost` frames are -inf."""
    i0 = scene.frames[0].intrinsics
    (root / "intrinsic").mkdir(parents=True)
    K = np.eye(4)
    K[:3, :3] = i0.K()
    np.savetxt(root / "intrinsic" / "intrinsic_color.txt", K)
    (root / "pose").mkdir()
    lut = np.zeros(6, np.uint16)
    for k, v in TOY_TO_RAW.items():
        lut[k] = v
    for i, f in enumerate(scene.frames):
        write_image(root / "color" / f"{i}.png", f.load_rgb())
        write_image(root / "depth" / f"{i}.png", np.round(f.load_depth() * 1000).astype(np.uint16))
        write_image(root / "label-filt" / f"{i}.png", lut[f.load_labels()])
        pose = np.full((4, 4), -np.inf) if i in lost else f.c2w
        np.savetxt(root / "pose" / f"{i}.txt", pose, fmt="%.17g")
    if tsv:
        rows = ["id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyu40class"]
        rows += [f"{raw}\tr{raw}\tc{raw}\t1\t{nyu}\t0\t{name}" for raw, (nyu, name) in RAW_TO_NYU.items()]
        (root / "scannetv2-labels.combined.tsv").write_text("\n".join(rows) + "\n")
    return root


def test_scannet_reader_maps_to_nyu40_and_skips_lost_poses(tmp_path: Path) -> None:
    scene = toy_scene(5, 16, 12)
    root = write_scannet_fixture(scene, tmp_path / "scene0000_00", lost=(2,))
    assert detect_format(root) == "scannet"
    with pytest.warns(UserWarning, match=r"pose.*skipped 1 frame"):
        back = load_scene(root)
    assert back.names == ["0", "1", "3", "4"] and back.classes.num_classes == 40
    assert back.classes.name_of(22) == "ceiling" and back.classes.colors[back.classes.ids.index(1)] == (174, 199, 232)
    keep = [scene.frames[i] for i in (0, 1, 3, 4)]
    toy_to_nyu = np.array([0] + [RAW_TO_NYU[TOY_TO_RAW[k]][0] for k in range(1, 6)])
    for a, b in zip(keep, back.frames):
        np.testing.assert_allclose(b.c2w, a.c2w, atol=1e-12)
        np.testing.assert_array_equal(b.load_rgb(), a.load_rgb())
        np.testing.assert_array_equal(b.load_labels(), toy_to_nyu[a.load_labels()])
        np.testing.assert_allclose(b.load_depth(), a.load_depth(), atol=5.01e-4)
    # an id missing from the .tsv is void; round trip through the writers keeps NYU40 ids
    write_image(root / "label-filt" / "0.png", np.full((12, 16), 999, np.uint16))
    with pytest.warns(UserWarning):
        again = load_scene(root)
    assert not again.frames[0].load_labels().any()
    t = load_scene(write_scene(again, tmp_path / "t", "transforms"))
    np.testing.assert_array_equal(t.frames[1].load_labels(), back.frames[1].load_labels())
    assert t.classes.name_of(22) == "ceiling"


def test_scannet_raw_ids_and_resized_depth(tmp_path: Path) -> None:
    scene = toy_scene(3, 16, 12)
    root = write_scannet_fixture(scene, tmp_path / "s", tsv=False)
    write_image(root / "depth" / "1.png", np.full((6, 8), 1500, np.uint16))  # depth camera at half resolution
    back = load_scene(root, downscale=2)
    assert set(back.classes.ids) <= {0, *TOY_TO_RAW.values()} and 300 in back.classes.ids
    assert back.frames[1].load_depth().shape == (6, 8) and back.frames[1].load_labels().shape == (6, 8)
    assert back.frames[0].intrinsics == scene.frames[0].intrinsics.scaled(0.5)
    (root / "pose" / "1.txt").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(LabelfieldError, match=r"1\.txt: pose is not 4x4"):
        load_scene(root)


# --- COLMAP ---------------------------------------------------------------------------------------------------
def _num(x: float) -> str:
    return repr(float(x))  # full precision, plain text (no "np.float64(...)")


def write_colmap_fixture(
    scene: Scene, root: Path, binary: bool, labelled: tuple[int, ...] = (0, 2), points: np.ndarray | None = None
) -> Path:
    """A COLMAP model of `scene` (one PINHOLE camera; text or binary), images/ and labels/ (stems match), and
    points3D with `points` (M, 3) when given (each with a track of two observations)."""
    import struct

    from labelfield.cameras import c2w_to_colmap

    i0 = scene.frames[0].intrinsics
    sparse = root / "sparse" / "0"
    sparse.mkdir(parents=True)
    cx, cy = i0.to_half_pixel()
    names = [f"img_{i}.png" for i in range(len(scene))]
    order = list(range(len(scene)))[::-1]  # COLMAP's order is not the sequence order
    if binary:
        cam = struct.pack("<QiiQQ", 1, 1, 1, i0.width, i0.height) + struct.pack("<4d", i0.fx, i0.fy, cx, cy)
        (sparse / "cameras.bin").write_bytes(cam)
        data = struct.pack("<Q", len(order))
        for k in order:
            q, t = c2w_to_colmap(scene.frames[k].c2w)
            data += struct.pack("<i7di", k + 1, *q, *t, 1) + names[k].encode() + b"\0"
            data += struct.pack("<Q", 1) + struct.pack("<ddq", 1.5, 2.5, -1)  # one 2D point, skipped
        (sparse / "images.bin").write_bytes(data)
    else:
        (sparse / "cameras.txt").write_text(
            f"# Camera list\n1 PINHOLE {i0.width} {i0.height} "
            + " ".join(_num(x) for x in (i0.fx, i0.fy, cx, cy))
            + "\n"
        )
        lines = ["# Image list with two lines of data per image:"]
        for k in order:
            q, t = c2w_to_colmap(scene.frames[k].c2w)
            lines += [" ".join([str(k + 1), *map(_num, q), *map(_num, t), "1", names[k]]), ""]
        (sparse / "images.txt").write_text("\n".join(lines) + "\n")
    if points is not None and binary:
        data = struct.pack("<Q", len(points))
        for k, xyz in enumerate(points):
            data += struct.pack("<QdddBBBdQ", k + 1, *xyz, 10, 20, 30, 0.5, 2) + struct.pack("<4i", 1, 0, 2, 0)
        (sparse / "points3D.bin").write_bytes(data)
    elif points is not None:
        rows = [" ".join([str(k + 1), *map(_num, xyz), "10 20 30 0.5 1 0 2 0"]) for k, xyz in enumerate(points)]
        (sparse / "points3D.txt").write_text("# 3D point list\n" + "\n".join(rows) + "\n")
    for k, f in enumerate(scene.frames):
        write_image(root / "images" / names[k], f.load_rgb())
        if k in labelled:
            write_image(root / "labels" / names[k], f.load_labels().astype(np.uint8))
    return root


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_reader(binary: bool, tmp_path: Path) -> None:
    scene = toy_scene(11, 16, 12)
    points = np.random.default_rng(0).normal(size=(7, 3))
    root = write_colmap_fixture(scene, tmp_path / "c", binary, points=points)
    assert detect_format(root) == "colmap"
    back = load_scene(root)
    np.testing.assert_allclose(back.points, points, atol=1e-12)  # the sparse points, in the poses' world
    assert back.names[:3] == ["img_0", "img_1", "img_2"] and back.names[-1] == "img_10"
    assert back.labelled_indices() == [0, 2]
    for a, b in zip(scene.frames, back.frames):
        np.testing.assert_allclose(b.c2w, a.c2w, atol=1e-9)
        np.testing.assert_allclose(b.intrinsics.cx, a.intrinsics.cx, atol=1e-12)
        np.testing.assert_array_equal(b.load_rgb(), a.load_rgb())
    np.testing.assert_array_equal(back.frames[2].load_labels(), scene.frames[2].load_labels())
    r = load_scene(write_scene(back, tmp_path / "r", "replica"))
    assert_same_scene(back, r, depth=False)


def test_transforms_sparse_points_round_trip(tmp_path: Path) -> None:
    """Scene.points travel as nerfstudio's sparse_pc.ply (`ply_file_path`); a named but missing PLY is a one-line
    error naming it; a model without points3D has none."""
    scene = toy_scene(3, 16, 12)
    assert load_scene(write_colmap_fixture(scene, tmp_path / "c", binary=False)).points is None
    points = np.random.default_rng(1).normal(size=(9, 3))
    root = write_scene(dataclasses.replace(scene, points=points), tmp_path / "t", "transforms")
    assert json.loads((root / "transforms.json").read_text())["ply_file_path"] == "sparse_pc.ply"
    np.testing.assert_allclose(load_scene(root).points, points, atol=1e-6)  # float32 in the PLY
    (root / "sparse_pc.ply").write_text("not a ply")
    with pytest.raises(LabelfieldError, match=r"sparse_pc\.ply: not a point cloud with vertex x, y, z"):
        load_scene(root)
    (root / "sparse_pc.ply").unlink()
    with pytest.raises(LabelfieldError, match=r"sparse_pc\.ply: ply_file_path not found"):
        load_scene(root)


def test_colmap_camera_models() -> None:
    from labelfield.formats.colmap import ColmapCamera, camera_intrinsics

    where = Path("cameras.txt")
    i = camera_intrinsics(ColmapCamera("SIMPLE_PINHOLE", 64, 48, (50.0, 32.0, 24.0)), where)
    assert (i.fx, i.fy, i.cx, i.cy, i.distortion) == (50.0, 50.0, 31.5, 23.5, None)
    i = camera_intrinsics(ColmapCamera("SIMPLE_RADIAL", 64, 48, (50.0, 32.0, 24.0, 0.1)), where)
    assert i.distortion == (0.1, 0.0, 0.0, 0.0)
    i = camera_intrinsics(ColmapCamera("OPENCV", 64, 48, (50, 51, 30, 20, 0.1, -0.2, 0.01, 0.02)), where)
    assert (i.fy, i.cx, i.distortion) == (51, 29.5, (0.1, -0.2, 0.01, 0.02))
    with pytest.raises(LabelfieldError, match=r"cameras.txt: camera model OPENCV_FISHEYE is not supported"):
        camera_intrinsics(ColmapCamera("OPENCV_FISHEYE", 64, 48, (50,) * 8), where)


def test_colmap_bad_input(tmp_path: Path) -> None:
    root = write_colmap_fixture(toy_scene(3, 16, 12), tmp_path / "c", binary=False)
    (root / "images" / "img_1.png").unlink()
    with pytest.raises(LabelfieldError, match=r"img_1\.png: image file not found"):
        load_scene(root)
    root = write_colmap_fixture(toy_scene(3, 16, 12), tmp_path / "d", binary=True)
    data = (root / "sparse" / "0" / "images.bin").read_bytes()
    (root / "sparse" / "0" / "images.bin").write_bytes(data[:40])
    with pytest.raises(LabelfieldError, match=r"images\.bin: truncated"):
        load_scene(root)


# --- commands -------------------------------------------------------------------------------------------------
def test_info_and_convert_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from labelfield.formats.command import ConvertCommand, InfoCommand

    src = write_scene(toy_scene(4, 16, 12), tmp_path / "r", "replica")
    assert InfoCommand(src).run() == 0
    out = capsys.readouterr().out
    assert "replica" in out and "16 x 12" in out and "4 of 4" in out and "sphere" in out
    assert ConvertCommand(src, tmp_path / "t", to="transforms", downscale=2).run() == 0
    conv = load_scene(tmp_path / "t")
    assert conv.format == "transforms" and conv.frames[0].load_rgb().shape == (6, 8, 3)
    with pytest.raises(LabelfieldError, match="own folder"):
        ConvertCommand(src, src).run()
