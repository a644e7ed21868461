"""The Mitsuba room generator: CLI output, determinism, camera alignment and 3D-consistent labels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from labelfield.cameras import Intrinsics
from labelfield.errors import LabelfieldError
from labelfield.evaluate.consistency import ViewLabels, pair_agreement
from labelfield.formats import load_scene
from labelfield.scene import Scene

pytest.importorskip("mitsuba")

from labelfield.synth.command import SynthCommand  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
TINY = dict(seed=3, frames=16, width=64, height=48, spp=2, variant="scalar_rgb")


def consistency(scene: Scene, i: int, j: int, rel_tol: float = 0.01, strict: bool = True) -> tuple[float, int]:
    """Labels of frame i reprojected into frame j with the evaluator's `pair_agreement` (depth is stored in
    millimetres, hence the tight `rel_tol`). With strict=False, points whose four surrounding pixels in frame j
    carry different labels are not counted: within a pixel of a label boundary, rounding to the nearest pixel
    decides the label (two surfaces in contact, or a picture 1 cm proud of its wall, agree in depth), and at
    64x48 those pixels alone exceed 1%. Returns (fraction of co-visible pixels whose labels agree, count)."""
    a, b = ViewLabels.from_frame(scene.frames[i]), ViewLabels.from_frame(scene.frames[j])
    assert a is not None and b is not None
    agree, n = pair_agreement(a, b, rel_tol, skip_boundaries=not strict)
    return (agree / n if n else 0.0), n


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "room"
    assert SynthCommand(out=out, **TINY).run() == 0
    return out


def test_synth_writes_a_loadable_scene(tiny: Path) -> None:
    scene = load_scene(tiny)
    assert scene.format == "replica" and len(scene) == 16
    assert scene.classes.background_class is None
    assert {"floor", "wall", "ceiling", "chair", "plant"} <= set(scene.classes.names)
    seen: set[int] = set()
    for f in scene.frames:
        assert f.load_rgb().shape == (48, 64, 3)
        depth, labels, inst = f.load_depth(), f.load_labels(), f.load_instances()
        assert depth is not None and labels is not None and inst is not None
        assert (depth > 0.1).all() and depth.max() < 10.0  # every ray hits the closed room
        assert (labels > 0).all() and (inst > 0).all()
        # an instance belongs to exactly one class
        pairs = np.unique(np.stack([inst.ravel(), labels.ravel()]), axis=1)
        assert len(np.unique(pairs[0])) == pairs.shape[1]
        seen |= {int(c) for c in np.unique(labels)}
    assert len(seen) >= 5
    assert all(f.load_rgb().std() > 5 for f in scene.frames)  # lit and textured, not blank
    # Labels index the right pixels of the image: leaves are green, floor boards are brown.
    rgb = np.concatenate([f.load_rgb().reshape(-1, 3) for f in scene.frames]).astype(float)
    lab = np.concatenate([f.load_labels().reshape(-1) for f in scene.frames])
    plant, floor = rgb[lab == 10].mean(0), rgb[lab == 1].mean(0)
    assert plant[1] > plant[0] and plant[1] > plant[2] and floor[0] > floor[2] + 20


def test_synth_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    SynthCommand(out=again, **TINY).run()
    for rel in ["traj_w_c.txt", "rgb/rgb_5.png", "depth/depth_5.png", "semantic_class/semantic_class_5.png"]:
        assert (again / rel).read_bytes() == (tiny / rel).read_bytes(), rel
    other = tmp_path / "other"
    SynthCommand(out=other, **{**TINY, "seed": 4, "frames": 2}).run()
    assert (other / "traj_w_c.txt").read_text().splitlines()[0] != (tiny / "traj_w_c.txt").read_text().splitlines()[0]


def test_synth_transforms_format(tmp_path: Path) -> None:
    out = tmp_path / "t"
    SynthCommand(out=out, **{**TINY, "frames": 2, "format": "transforms"}).run()
    scene = load_scene(out)
    assert scene.format == "transforms" and len(scene) == 2 and scene.frames[1].has_labels()


def test_labels_are_3d_consistent(tiny: Path) -> None:
    scene = load_scene(tiny)
    total = 0
    for i in range(len(scene) - 3):
        frac, n = consistency(scene, i, i + 3, strict=False)
        assert frac > 0.99, (i, frac, n)
        total += n
    assert total > 3000  # the check saw plenty of co-visible pixels


def test_consistency_check_catches_misaligned_labels(tiny: Path) -> None:
    """Shifting one frame's labels by a pixel must break the check (so the check can fail)."""
    scene = load_scene(tiny)
    f = scene.frames[3]
    f.arrays["labels"] = np.roll(f.load_labels(), 2, axis=1)
    assert min(consistency(scene, 0, 3, strict=False)[0], consistency(scene, 3, 6, strict=False)[0]) < 0.99


def test_rgb_camera_rays_are_the_label_rays() -> None:
    """Mitsuba's sensor, sampled once at each pixel centre, hits exactly where our label rays hit."""
    from labelfield.synth import render as R
    from labelfield.synth.room import make_room
    from labelfield.synth.trajectory import room_trajectory

    mi = R.import_mitsuba("scalar_rgb")
    room = make_room(1)
    intr = Intrinsics.from_fov_x(np.deg2rad(80), 40, 30)
    mscene, _, _ = R.build_mitsuba_scene(mi, room)
    aov = mi.load_dict({"type": "aov", "aovs": "p:position"})
    for c2w in room_trajectory(8, room.free_zone, 1)[::3]:
        sensor = R.make_sensor(mi, intr, c2w, 1, sampler="pixel_centre")
        pos = np.array(mi.render(mscene, sensor=sensor, integrator=aov, spp=1))[..., -3:]
        origin, dirs, _ = R.pixel_rays(intr, c2w)
        t, _ = R.intersect(mi, mscene, origin, dirs)
        ours = (origin + t[:, None] * dirs).reshape(30, 40, 3)
        # A half-pixel shift would move hits by centimetres; float32 noise is about 1e-6 m.
        assert np.abs(pos - ours).max() < 1e-4


def test_variant_override(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelfield.synth.render import import_mitsuba

    monkeypatch.setenv("LABELFIELD_MITSUBA_VARIANT", "scalar_rgb")
    assert import_mitsuba("auto").variant() == "scalar_rgb"
    with pytest.raises(LabelfieldError, match="unknown Mitsuba variant"):
        import_mitsuba("cuda_rgb")


def test_missing_mitsuba_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelfield.synth.render import import_mitsuba

    monkeypatch.setitem(sys.modules, "mitsuba", None)  # makes `import mitsuba` raise ImportError
    with pytest.raises(LabelfieldError, match=r"pip install 'labelfield\[synth\]'"):
        import_mitsuba("scalar_rgb")


@pytest.mark.parametrize("bad", [{"frames": 0}, {"spp": 0}, {"width": 4}, {"fov": 179.0}])
def test_bad_options(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(LabelfieldError):
        SynthCommand(out=tmp_path / "x", **{**TINY, **bad}).run()
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not DEMO.is_dir(), reason="demo scene not generated")
def test_demo_scene_is_small_and_3d_consistent() -> None:
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size < 15e6
    scene = load_scene(DEMO)
    assert len(scene) >= 60 and scene.frames[0].intrinsics.width == 320
    for i in (0, 25, 50):
        frac, n = consistency(scene, i, i + 3)
        assert frac > 0.99 and n > 20000, (i, frac, n)


def test_rich_room_has_small_and_thin_classes(tmp_path: Path) -> None:
    """objects="rich": at least 20 classes incl. the small ones, in the class table and in a tiny render."""
    from labelfield.synth.room import SMALL_CLASSES, make_room

    room = make_room(5, objects="rich", walls="random")
    names = room.classes.names
    in_room = {names[p.class_id] for p in room.parts}
    assert len(in_room) >= 20 and set(SMALL_CLASSES) <= in_room
    assert {"book", "mug", "bottle", "ball", "toy", "lamp", "stool", "shelf", "picture"} <= in_room
    # The basic room keeps the demo's 11-class table; the rich one only appends classes (ids unchanged).
    assert make_room(5).classes.names == names[: len(make_room(5).classes.names)]
    out = tmp_path / "rich"
    SynthCommand(
        out=out,
        **{
            **TINY,
            "frames": 3,
            "width": 32,
            "height": 24,
            "spp": 1,
            "objects": "rich",
            "walls": "plain",
            "path": "walk",
            "max_depth": 2,
        },
    ).run()
    scene = load_scene(out)
    assert len(scene) == 3 and len(scene.classes.names) >= 21  # void + 20 or more
    seen = {int(c) for f in scene.frames for c in np.unique(f.load_labels())}
    assert len(seen) >= 4 and (np.concatenate([f.load_labels().ravel() for f in scene.frames]) > 0).all()


def test_wall_styles_differ() -> None:
    """plain walls are one flat colour; plaster and wallpaper are textured."""
    from labelfield.synth.room import CLASS_ID, make_room

    def wall_std(style: str) -> float:
        room = make_room(2, walls=style)
        return max(float(p.texture.std(axis=(0, 1)).max()) for p in room.parts if p.class_id == CLASS_ID["wall"])

    assert wall_std("plain") < 1e-6 and wall_std("plaster") > 0.01 and wall_std("wallpaper") > 0.05
    with pytest.raises(LabelfieldError):
        make_room(2, walls="brick")


@pytest.mark.parametrize("kind", ["loop", "walk", "orbit"])
def test_camera_paths_are_valid_poses_inside_the_room(kind: str) -> None:
    from labelfield.synth.room import make_room
    from labelfield.synth.trajectory import make_trajectory

    room = make_room(7, objects="rich")
    poses = make_trajectory(kind, 60, room.free_zone, 7)
    assert poses.shape == (60, 4, 4) and np.isfinite(poses).all()
    R = poses[:, :3, :3]
    assert np.allclose(R.transpose(0, 2, 1) @ R, np.eye(3), atol=1e-9) and np.allclose(np.linalg.det(R), 1.0)
    assert np.allclose(poses[:, 3], [0, 0, 0, 1])
    eye = poses[:, :3, 3]
    hx, hy = room.free_zone
    assert (np.abs(eye[:, 0]) < hx).all() and (np.abs(eye[:, 1]) < hy).all()
    assert (eye[:, 2] > 0.5).all() and (eye[:, 2] < room.size[2] - 0.3).all()
    assert np.linalg.norm(np.diff(eye, axis=0), axis=1).max() < 0.3  # smooth: no jumps between frames
    # The camera looks round the whole room: optical axes (third column) span every direction in the plane.
    yaw = np.arctan2(R[:, 1, 2], R[:, 0, 2])
    assert np.histogram(yaw, bins=4, range=(-np.pi, np.pi))[0].min() > 0
    assert not np.allclose(make_trajectory(kind, 5, room.free_zone, 8), make_trajectory(kind, 5, room.free_zone, 7))


def test_unknown_path_kind() -> None:
    from labelfield.synth.trajectory import make_trajectory

    with pytest.raises(ValueError):
        make_trajectory("spiral", 4, (1.0, 1.0))
