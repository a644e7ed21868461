"""formats/colmap.py against a model written by pycolmap itself (text and binary): poses, intrinsics
(pinhole and OpenCV distortion, pixel-centre convention), images with 2D points and a 3D point track."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labelfield.formats import detect_format, load_scene
from labelfield.io import write_image
from labelfield.synth.toy import toy_scene

pycolmap = pytest.importorskip("pycolmap")  # an optional extra (labelfield[colmap])

CAMERAS = {
    1: ("PINHOLE", [30.0, 31.0, 16.25, 11.75]),
    2: ("OPENCV", [29.0, 29.5, 15.5, 12.5, 0.05, -0.02, 0.001, -0.002]),
}


def write_with_pycolmap(root: Path, binary: bool) -> tuple[list, dict[str, int]]:
    """The toy scene's poses as a pycolmap Reconstruction (images alternate between two cameras)."""
    scene = toy_scene(5, 32, 24)
    rec = pycolmap.Reconstruction()
    for cam_id, (model, params) in CAMERAS.items():
        cam = pycolmap.Camera(model=model, width=32, height=24, params=params, camera_id=cam_id)
        rec.add_camera_with_trivial_rig(cam)
    camera_of = {}
    for k, f in enumerate(reversed(scene.frames)):  # COLMAP's order is not the sequence order
        w2c = np.linalg.inv(f.c2w)
        cam_id = 1 + k % 2
        image = pycolmap.Image(
            name=f"{f.name}.png", keypoints=np.array([[1.5, 2.5], [10.0, 7.0]]), camera_id=cam_id, image_id=k + 1
        )
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(w2c[:3, :4]))
        camera_of[f.name] = cam_id
        write_image(root / "images" / f"{f.name}.png", f.load_rgb())
    track = pycolmap.Track()
    track.add_element(1, 0)
    track.add_element(2, 1)
    rec.add_point3D(np.array([0.1, 0.2, 0.3]), track)
    sparse = root / "sparse" / "0"
    sparse.mkdir(parents=True)
    (rec.write_binary if binary else rec.write_text)(str(sparse))
    assert (sparse / ("images.bin" if binary else "images.txt")).is_file()
    return scene.frames, camera_of


@pytest.mark.parametrize("binary", [False, True])
def test_reader_matches_pycolmap_model(binary: bool, tmp_path: Path) -> None:
    frames, camera_of = write_with_pycolmap(tmp_path / "c", binary)
    assert detect_format(tmp_path / "c") == "colmap"
    back = load_scene(tmp_path / "c")
    assert back.names == [f.name for f in frames]  # sorted by name, not COLMAP's order
    for a, b in zip(frames, back.frames):
        np.testing.assert_allclose(b.c2w, a.c2w, atol=1e-9)
        model, p = CAMERAS[camera_of[a.name]]
        i = b.intrinsics
        assert (i.width, i.height, i.fx, i.fy) == (32, 24, p[0], p[1])
        assert (i.cx, i.cy) == (p[2] - 0.5, p[3] - 0.5)  # COLMAP's pixel centres are at +0.5
        assert i.distortion == (None if model == "PINHOLE" else tuple(p[4:8]))
        np.testing.assert_array_equal(b.load_rgb(), a.load_rgb())
