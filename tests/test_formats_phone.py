"""Phone capture formats (Record3D .r3d, Polycam raw data): a known scene written in each app's convention
with the inverse converters, read back, compared; bad input; conversion to transforms.json.

The apps' layouts here follow public readers (see formats/record3d.py, formats/polycam.py); no real device
export was available to check them against.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelfield.cameras import (
    opencv_to_polycam,
    opencv_to_record3d,
    polycam_to_opencv,
    record3d_to_opencv,
)
from labelfield.errors import LabelfieldError
from labelfield.formats import detect_format, load_scene, write_scene
from labelfield.formats.common import arkit_confident
from labelfield.io import write_image
from labelfield.scene import Scene
from labelfield.synth.toy import toy_scene

W, H = 32, 24  # colour size; depth is half of it in both apps here
needs_lzfse = pytest.mark.skipif(
    importlib.util.find_spec("lzfse") is None, reason="Record3D depth needs the lzfse package (extra 'record3d')"
)


@pytest.fixture(scope="module")
def known() -> Scene:
    return toy_scene(4, W, H, seed=5)


def jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def low_res_depth(scene: Scene, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(H/2, W/2) depth (top-left pixel of each 2x2 block, with a NaN, a zero) and ARKit confidence 0/1/2."""
    d = scene.frames[k].load_depth()[::2, ::2].astype(np.float32).copy()
    d[0, 0] = np.nan
    d[0, 1] = 0.0
    conf = np.full(d.shape, 2, np.uint8)
    conf[3, 2:5] = 1  # medium
    conf[5, 7] = 0  # low
    return d, conf


def expected_depth(d: np.ndarray, conf: np.ndarray | None) -> np.ndarray:
    """What the reader should give: holes (0) where not finite / not positive / not high confidence, upsampled x2."""
    ok = np.isfinite(d) & (d > 0) & (True if conf is None else conf == 2)
    out = np.where(ok, d, 0.0)
    return np.repeat(np.repeat(out, 2, 0), 2, 1)


# --- converters ----------------------------------------------------------------------------------------------
def test_phone_converters_invert_and_follow_the_public_conventions(known: Scene) -> None:
    c2w = known.frames[1].c2w
    np.testing.assert_allclose(record3d_to_opencv(opencv_to_record3d(c2w)), c2w, atol=1e-12)
    np.testing.assert_allclose(polycam_to_opencv(opencv_to_polycam(c2w)), c2w, atol=1e-12)
    # Record3D: identity quaternion = an ARKit camera looking along world -z, y up -> OpenCV forward is -z
    m = record3d_to_opencv([0, 0, 0, 1, 1, 2, 3])
    np.testing.assert_allclose(m[:3, 2], [0, 0, -1])
    np.testing.assert_allclose(m[:3, 1], [0, -1, 0])
    np.testing.assert_allclose(m[:3, 3], [1, 2, 3])
    # quaternion is scalar-last: [qx, qy, qz, qw] = 90 degrees about y
    s = np.sqrt(0.5)
    np.testing.assert_allclose(record3d_to_opencv([0, s, 0, s, 0, 0, 0])[:3, 0], [0, 0, -1], atol=1e-12)
    # Polycam: nerfstudio's row order (z, x, y): ARKit's up (+y) becomes +z, the position (1, 2, 3) -> (3, 1, 2)
    t = np.hstack([np.eye(3), [[1], [2], [3]]])
    p = polycam_to_opencv(t)
    np.testing.assert_allclose(p[:3, 3], [3, 1, 2])
    np.testing.assert_allclose(p[:3, 1], [0, 0, -1])  # camera "down" (OpenCV +y) = -(ARKit up) = -z


def test_arkit_confidence_levels() -> None:
    assert arkit_confident(np.array([0, 1, 2])).tolist() == [False, False, True]
    assert arkit_confident(np.array([0, 54, 255])).tolist() == [False, False, True]  # 8-bit PNG levels


# --- Record3D ------------------------------------------------------------------------------------------------
def r3d_files(scene: Scene, depth: bool = True, conf: bool = True) -> dict[str, bytes]:
    """The members of a Record3D export of `scene` (depth at half size, K column-major, +0.5 pixel centres)."""
    import lzfse

    i0 = scene.frames[0].intrinsics
    cx, cy = i0.to_half_pixel()
    meta = {
        "w": W,
        "h": H,
        "K": [i0.fx, 0, 0, 0, i0.fy, 0, cx, cy, 1],
        "dw": W // 2,
        "dh": H // 2,
        "fps": 30,
        "initPose": [0, 0, 0, 1, 0, 0, 0],
        "poses": [opencv_to_record3d(f.c2w).tolist() for f in scene.frames],
    }
    files = {"metadata": json.dumps(meta).encode()}
    for k, f in enumerate(scene.frames):
        files[f"rgbd/{k}.jpg"] = jpeg(f.load_rgb())
        d, c = low_res_depth(scene, k)
        if depth:
            files[f"rgbd/{k}.depth"] = lzfse.compress(d.tobytes())
        if conf:
            files[f"rgbd/{k}.conf"] = lzfse.compress(c.tobytes())
    return files


def write_r3d(files: dict[str, bytes], path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def write_folder(files: dict[str, bytes], root: Path) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@needs_lzfse
@pytest.mark.parametrize("packed", ["r3d", "folder"])
def test_record3d_reads_back_the_known_scene(known: Scene, tmp_path: Path, packed: str) -> None:
    files = r3d_files(known)
    path = write_r3d(files, tmp_path / "cap.r3d") if packed == "r3d" else write_folder(files, tmp_path / "cap")
    assert detect_format(path) == "record3d"
    scene = load_scene(path)
    assert scene.format == "record3d" and scene.root == path and len(scene) == 4
    assert scene.names == ["0", "1", "2", "3"] and scene.labelled_indices() == [] and scene.classes.ids == [0]
    for k, (f, g) in enumerate(zip(known.frames, scene.frames)):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-6)
        a, b = f.intrinsics, g.intrinsics
        np.testing.assert_allclose([b.fx, b.fy, b.cx, b.cy], [a.fx, a.fy, a.cx, a.cy], atol=1e-9)
        assert (b.width, b.height) == (W, H)
        np.testing.assert_array_equal(g.load_rgb(), decoded(files[f"rgbd/{k}.jpg"]))
        d, c = low_res_depth(known, k)
        depth = g.load_depth()
        assert depth.dtype == np.float32 and depth.shape == (H, W)
        np.testing.assert_array_equal(depth, expected_depth(d, c))
    assert scene.frames[0].load_depth()[:2, :4].tolist() == [[0] * 4] * 2  # the NaN and the zero are holes


@needs_lzfse
def test_record3d_without_confidence_downscale_and_per_frame_intrinsics(known: Scene, tmp_path: Path) -> None:
    files = r3d_files(known, conf=False)
    meta = json.loads(files["metadata"])
    meta["perFrameIntrinsicCoeffs"] = [[30.0 + k, 31.0, 15.0, 12.0] for k in range(4)]
    del meta["dw"], meta["dh"]  # old exports: the depth size follows from the blob and the colour's aspect
    files["metadata"] = json.dumps(meta).encode()
    scene = load_scene(write_r3d(files, tmp_path / "c.r3d"))
    d, _ = low_res_depth(known, 2)
    np.testing.assert_array_equal(scene.frames[2].load_depth(), expected_depth(d, None))
    i = scene.frames[3].intrinsics
    assert (i.fx, i.fy, i.cx, i.cy) == (33.0, 31.0, 14.5, 11.5)
    small = load_scene(tmp_path / "c.r3d", downscale=2)  # the depth's own size: no resampling at all
    assert small.frames[1].load_rgb().shape == (H // 2, W // 2, 3)
    d, _ = low_res_depth(known, 1)
    np.testing.assert_array_equal(small.frames[1].load_depth(), expected_depth(d, None)[::2, ::2])


@needs_lzfse
def test_record3d_converts_to_transforms(known: Scene, tmp_path: Path) -> None:
    scene = load_scene(write_r3d(r3d_files(known), tmp_path / "c.r3d"))
    out = write_scene(scene, tmp_path / "t", "transforms")
    back = load_scene(out)
    assert back.format == "transforms" and back.names == scene.names and back.labelled_indices() == []
    for f, g in zip(scene.frames, back.frames):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-9)
        assert g.intrinsics == f.intrinsics
        np.testing.assert_array_equal(g.load_rgb(), f.load_rgb())
        np.testing.assert_allclose(g.load_depth(), f.load_depth(), atol=5.01e-4)


def test_record3d_bad_input_names_the_file(known: Scene, tmp_path: Path) -> None:
    bad = tmp_path / "bad.r3d"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("rgbd/0.jpg", jpeg(known.frames[0].load_rgb()))
    assert detect_format(bad) == "record3d"
    with pytest.raises(LabelfieldError, match="missing from the .r3d archive") as e:
        load_scene(bad)
    assert str(bad / "metadata") in str(e.value)
    (tmp_path / "junk.r3d").write_bytes(b"not a zip")
    with pytest.raises(LabelfieldError, match="not a readable .r3d"):
        load_scene(tmp_path / "junk.r3d")
    folder = tmp_path / "unzipped"
    (folder / "rgbd").mkdir(parents=True)
    (folder / "metadata").write_text('{"w": 32, "h": 24, "K": [1, 2, 3]')
    (folder / "rgbd" / "0.jpg").write_bytes(jpeg(known.frames[0].load_rgb()))
    with pytest.raises(LabelfieldError, match="not JSON") as e:
        load_scene(folder)
    assert str(folder / "metadata") in str(e.value)
    (folder / "metadata").write_text(json.dumps({"w": 32, "h": 24, "K": [1] * 9, "poses": [[0, 0, 0, 1, 0, 0]]}))
    with pytest.raises(LabelfieldError, match=r"poses\[0\] is not 7"):
        load_scene(folder)


def test_record3d_without_lzfse_names_the_extra(known: Scene, tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "cap"
    (root / "rgbd").mkdir(parents=True)
    i0 = known.frames[0].intrinsics
    meta = {
        "w": W,
        "h": H,
        "K": [i0.fx, 0, 0, 0, i0.fy, 0, 16, 12, 1],
        "dw": 16,
        "dh": 12,
        "poses": [[0, 0, 0, 1, 0, 0, 0]],
    }
    (root / "metadata").write_text(json.dumps(meta))
    (root / "rgbd" / "0.jpg").write_bytes(jpeg(known.frames[0].load_rgb()))
    (root / "rgbd" / "0.depth").write_bytes(b"\x00" * 16)
    monkeypatch.setitem(sys.modules, "lzfse", None)  # import fails
    monkeypatch.setitem(sys.modules, "liblzfse", None)
    scene = load_scene(root)
    assert scene.frames[0].load_rgb().shape == (H, W, 3)  # colour needs no LZFSE
    with pytest.raises(LabelfieldError, match=r"labelfield\[record3d\]"):
        scene.frames[0].load_depth()


@needs_lzfse
def test_record3d_corrupt_depth_blob_names_the_file(known: Scene, tmp_path: Path) -> None:
    import lzfse

    files = r3d_files(known)
    files["rgbd/1.depth"] = b"\x12\x34 definitely not lzfse"
    files["rgbd/2.depth"] = lzfse.compress(np.zeros(7, np.float32).tobytes())  # decodes, wrong size
    scene = load_scene(write_r3d(files, tmp_path / "c.r3d"))
    scene.frames[0].load_depth()  # the others still load
    with pytest.raises(LabelfieldError, match="not an LZFSE-compressed blob") as e:
        scene.frames[1].load_depth()
    assert str(tmp_path / "c.r3d" / "rgbd" / "1.depth") in str(e.value)
    with pytest.raises(LabelfieldError, match="holds 7 values of float32, expected 16x12") as e:
        scene.frames[2].load_depth()
    assert "rgbd/2.depth" in str(e.value)


# --- Polycam -------------------------------------------------------------------------------------------------
def write_polycam(scene: Scene, root: Path, images: str = "images", cameras: str = "cameras", conf_levels=(0, 1, 2)):
    """A Polycam raw export of `scene`: per-keyframe camera JSON (Polycam axes), uint16 mm depth at half size."""
    kf = root / "keyframes"
    for k, f in enumerate(scene.frames):
        ts = str(1_000_000 + 37 * k)
        write_image(kf / images / f"{ts}.jpg", f.load_rgb())
        i = f.intrinsics
        cx, cy = i.to_half_pixel()
        t = opencv_to_polycam(f.c2w)
        cam = {"fx": i.fx, "fy": i.fy, "cx": cx, "cy": cy, "width": i.width, "height": i.height, "blur_score": 1.0}
        cam.update({f"t_{r}{c}": float(t[r, c]) for r in range(3) for c in range(4)})
        (kf / cameras).mkdir(parents=True, exist_ok=True)
        (kf / cameras / f"{ts}.json").write_text(json.dumps(cam))
        d, conf = low_res_depth(scene, k)
        mm = np.where(np.isfinite(d), np.round(d * 1000), 0).astype(np.uint16)
        write_image(kf / "depth" / f"{ts}.png", mm)
        write_image(kf / "confidence" / f"{ts}.png", np.asarray(conf_levels, np.uint8)[conf])
    return root


@pytest.mark.parametrize("levels", [(0, 1, 2), (0, 54, 255)])
def test_polycam_reads_back_the_known_scene(known: Scene, tmp_path: Path, levels) -> None:
    root = write_polycam(known, tmp_path / "poly", conf_levels=levels)
    assert detect_format(root) == "polycam" and detect_format(root / "keyframes") == "polycam"
    scene = load_scene(root)
    assert scene.format == "polycam" and len(scene) == 4 and scene.labelled_indices() == []
    assert scene.names == [str(1_000_000 + 37 * k) for k in range(4)]
    for k, (f, g) in enumerate(zip(known.frames, scene.frames)):
        np.testing.assert_allclose(g.c2w, f.c2w, atol=1e-6)
        a, b = f.intrinsics, g.intrinsics
        np.testing.assert_allclose([b.fx, b.fy, b.cx, b.cy], [a.fx, a.fy, a.cx, a.cy], atol=1e-9)
        d, c = low_res_depth(known, k)
        np.testing.assert_allclose(g.load_depth(), expected_depth(d, c), atol=5.01e-4)
        assert (g.load_depth() == 0).sum() == (expected_depth(d, c) == 0).sum()


def test_polycam_prefers_corrected_cameras_and_converts(known: Scene, tmp_path: Path) -> None:
    root = write_polycam(known, tmp_path / "poly")
    moved = toy_scene(4, W, H, seed=5)
    for f in moved.frames:
        f.c2w = f.c2w.copy()
        f.c2w[:3, 3] += [0.1, -0.2, 0.05]
    write_polycam(moved, root, images="corrected_images", cameras="corrected_cameras")
    scene = load_scene(root)
    assert scene.frames[0].rgb_path.parent.name == "corrected_images"
    np.testing.assert_allclose(scene.frames[2].c2w, moved.frames[2].c2w, atol=1e-6)
    out = write_scene(scene, tmp_path / "t", "transforms")
    back = load_scene(out)
    assert back.names == scene.names and back.labelled_indices() == []
    np.testing.assert_allclose(back.frames[3].c2w, scene.frames[3].c2w, atol=1e-9)
    np.testing.assert_allclose(back.frames[3].load_depth(), scene.frames[3].load_depth(), atol=5.01e-4)
    # nerfstudio's `ns-process-data polycam` writes transform_matrix rows (t_2*, t_0*, t_1*): ours match
    d = json.loads((out / "transforms.json").read_text())
    cam = json.loads(next((root / "keyframes" / "corrected_cameras").glob(f"{scene.names[1]}.json")).read_text())
    ns = [[cam[f"t_{r}{c}"] for c in range(4)] for r in (2, 0, 1)]
    np.testing.assert_allclose(np.array(d["frames"][1]["transform_matrix"])[:3], ns, atol=1e-9)


def test_polycam_bad_input_names_the_file(known: Scene, tmp_path: Path) -> None:
    root = write_polycam(known, tmp_path / "poly")
    cams = sorted((root / "keyframes" / "cameras").iterdir())
    cams[1].unlink()
    with pytest.raises(LabelfieldError) as e:
        load_scene(root)
    assert str(cams[1]) in str(e.value)
    cam = json.loads(cams[2].read_text())
    del cam["t_13"]
    cams[2].write_text(json.dumps(cam))
    cams[1].write_text(cams[0].read_text())
    with pytest.raises(LabelfieldError, match="no 't_13'") as e:
        load_scene(root)
    assert str(cams[2]) in str(e.value)


def test_cli_info_and_convert_on_a_polycam_export(known: Scene, tmp_path: Path, capsys) -> None:
    from labelfield.cli import main

    root = write_polycam(known, tmp_path / "poly")
    assert main(["info", str(root)]) == 0
    assert "polycam" in capsys.readouterr().out
    assert main(["convert", str(root), str(tmp_path / "t"), "--to", "transforms"]) == 0
    assert detect_format(tmp_path / "t") == "transforms" and len(load_scene(tmp_path / "t")) == 4


def test_fit_on_an_unlabelled_phone_scene_says_how_to_get_labels(known: Scene, tmp_path: Path) -> None:
    from labelfield.labels import make_sparse_labels

    scene = load_scene(write_polycam(known, tmp_path / "poly"))
    with pytest.raises(LabelfieldError, match="no label maps.*labels import.*--to transforms") as e:
        make_sparse_labels(scene, "every:10")
    assert str(tmp_path / "poly") in str(e.value)
