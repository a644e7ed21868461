"""annotate_frames with a fake render_fn built from the toy scene's exact GT; the annotate command's bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from tiny import TINY_NGP

from labelfield.annotate import annotate_frames
from labelfield.annotate.frames import auto_opacity_threshold
from labelfield.errors import LabelfieldError
from labelfield.io import atomic_dir, read_image
from labelfield.labelset import read_labelset
from labelfield.run import RunFolder
from labelfield.scene import Scene
from labelfield.synth.toy import look_at, toy_scene


def gt_render_fn(scene: Scene, hole: tuple[slice, slice] | None = None):
    """render_fn returning GT: one-hot probs of the GT class, opacity 1 on surfaces, 0 on misses (and `hole`)."""
    poses = scene.poses()

    def render(intr, c2w):
        i = int(np.argmin(np.abs(poses - np.asarray(c2w)[None]).sum((1, 2))))
        f = scene.frames[i]
        lab, depth = f.load_labels(), f.load_depth()
        idx = scene.classes.to_index(lab)
        probs = np.zeros((*lab.shape, scene.classes.num_classes), np.float32)
        probs[np.arange(lab.shape[0])[:, None], np.arange(lab.shape[1])[None], idx.clip(0)] = 1.0
        opacity = (depth > 0).astype(np.float32)
        if hole is not None:
            opacity[hole] = 0.1
        # misses: a confident wrong class, so only the opacity rule can make them background/void
        probs[opacity < 0.5] = np.eye(scene.classes.num_classes)[-1]
        return {"rgb": f.load_rgb() / 255.0, "depth": depth, "opacity": opacity, "probs": probs}

    return render


def test_labels_equal_gt_and_void_where_empty(tmp_path):
    scene = toy_scene(6, 32, 24)
    hole = (slice(0, 5), slice(0, 7))
    out = tmp_path / "LABELS"
    with atomic_dir(out) as tmp:
        events = []
        recs = annotate_frames(
            gt_render_fn(scene, hole), scene, scene.classes, tmp, range(6), {0, 3}, on_progress=events.append
        )
    assert [r.index for r in recs] == list(range(6))
    assert [(e.stage, e.done, e.total, e.unit) for e in events] == [("annotate", k, 6, "frames") for k in range(1, 7)]
    ls = read_labelset(out)
    assert ls.names == scene.names and ls.classes.ids == scene.classes.ids
    for f in scene.frames:
        lab = ls.load_labels(f.name)
        gt = f.load_labels().copy()
        gt[hole] = 0
        np.testing.assert_array_equal(lab, gt)
        conf = ls.load_confidence(f.name)
        assert conf[hole].max() == 0 and conf[5:, 7:].min() == 1.0
        np.testing.assert_allclose(ls.load_depth(f.name), f.load_depth(), atol=6e-4)
        np.testing.assert_array_equal(ls.load_rgb(f.name), f.load_rgb())
    assert [r.labelled for r in ls.frames] == [True, False, False, True, False, False]
    assert not any(r.given for r in ls.frames)
    for sub in ("labels", "labels_color", "overlay", "confidence", "rgb", "depth"):
        assert len(list((out / sub).glob("*.png"))) == 6, sub
    assert not (out / "probs").exists()
    meta = json.loads((out / "frames.json").read_text())
    assert meta["format"] == "memory" and meta["method"] == "labelfield" and len(meta["frames"]) == 6


def test_background_class_where_empty_and_probs(tmp_path):
    scene = toy_scene(3, 24, 16, room=False)  # misses are class 1, the declared background_class
    annotate_frames(gt_render_fn(scene), scene, scene.classes, tmp_path, [1, 2], set(), save_probs=True)
    ls = read_labelset(tmp_path)
    assert ls.names == scene.names[1:]
    for name in ls.names:
        f = scene.frames[scene.names.index(name)]
        gt = f.load_labels()
        assert (gt == 1).any() and (gt != 1).any()
        np.testing.assert_array_equal(ls.load_labels(name), gt)
        assert ls.load_probs(name).shape == (16, 24, 5)


def test_auto_opacity_threshold_voids_misses_only_where_rays_can_miss(tmp_path):
    """auto: 0.5 with a background class, with depth missing on most of a frame (an object before nothing),
    or with cameras looking inward and no depth; 0 in a room with depth and for level cameras sweeping a room.
    With 0, a semi-transparent room keeps its argmax labels instead of turning void."""
    room = toy_scene(6, 32, 24)
    assert auto_opacity_threshold(room, room.classes) == 0.0  # depth everywhere: every ray meets a surface
    obj = toy_scene(6, 32, 24, room=False)
    assert obj.classes.background_class is not None and auto_opacity_threshold(obj, obj.classes) == 0.5
    no_bg = dataclasses.replace(obj.classes, background_class=None)
    assert auto_opacity_threshold(obj, no_bg) == 0.5  # 89 % of each frame has no depth
    bare = lambda sc: Scene(  # noqa: E731
        [dataclasses.replace(f, arrays={"rgb": f.load_rgb()}, depth_path=None) for f in sc.frames], sc.classes
    )
    assert auto_opacity_threshold(bare(obj), no_bg) == 0.5  # cameras around the object, looking in
    level = [
        dataclasses.replace(f, c2w=look_at(np.array([0.3 * k, 0.0, 1.5]), np.array([0.3 * k, 2.0, 1.5])))
        for k, f in enumerate(bare(room).frames)
    ]
    assert auto_opacity_threshold(Scene(level, room.classes), room.classes) == 0.0  # a sweep along a wall
    render = gt_render_fn(room, hole=(slice(0, 5), slice(0, 7)))  # a patch the field has left semi-transparent
    annotate_frames(render, room, room.classes, tmp_path, [1], set(), opacity_threshold=0.0, overlay=False)
    lab = read_labelset(tmp_path).load_labels(room.names[1])
    assert (lab[0:5, 0:7] != 0).all()  # labelled (the render's argmax), not void


def test_keep_given_never_overwrites_human_pixels(tmp_path):
    scene = toy_scene(4, 32, 24)
    user = np.zeros((24, 32), np.int64)
    user[10:20, 5:15] = 3  # the user says "ceiling" where the field sees other classes
    user[0, 0] = 5
    given = {2: user}
    annotate_frames(gt_render_fn(scene), scene, scene.classes, tmp_path / "a", range(4), {2}, given)
    ls = read_labelset(tmp_path / "a")
    lab = ls.load_labels("frame_002")
    gt = scene.frames[2].load_labels()
    np.testing.assert_array_equal(lab[user != 0], user[user != 0])
    np.testing.assert_array_equal(lab[user == 0], gt[user == 0])
    assert [r.given for r in ls.frames] == [False, False, True, False]
    assert ls.load_confidence("frame_002")[10:20, 5:15].min() == 1.0
    # --no-keep-given: the prediction everywhere, not recorded as given
    annotate_frames(gt_render_fn(scene), scene, scene.classes, tmp_path / "b", [2], {2}, given, keep_given=False)
    ls = read_labelset(tmp_path / "b")
    np.testing.assert_array_equal(ls.load_labels("frame_002"), gt)
    assert not ls.frames[0].given and ls.frames[0].labelled


def test_uint16_ids_and_bad_index(tmp_path):
    from labelfield.scene import ClassTable

    scene = toy_scene(2, 16, 12)
    big = ClassTable([1, 2, 3, 4, 300], ["floor", "wall", "ceiling", "sphere", "box"], [(9, 9, 9)] * 5)
    annotate_frames(gt_render_fn(scene), scene, big, tmp_path, [0], set())
    img = read_image(tmp_path / "labels" / "frame_000.png")
    gt = scene.frames[0].load_labels()
    assert img.dtype == np.uint16
    np.testing.assert_array_equal(img[gt == 5], 300)
    with pytest.raises(LabelfieldError, match="out of range"):
        annotate_frames(gt_render_fn(scene), scene, scene.classes, tmp_path, [7], set())


def test_frames_spec():
    from labelfield.annotate.command import parse_frames

    names = [f"frame_{i:03d}" for i in range(12)]
    assert parse_frames("all", names, {0, 5}) == list(range(12))
    assert parse_frames("unlabelled", names, {0, 5}) == [i for i in range(12) if i not in (0, 5)]
    assert parse_frames("3,1-2,frame_010", names, set()) == [1, 2, 3, 10]
    with pytest.raises(LabelfieldError, match="out of range"):
        parse_frames("4,40", names, set())
    with pytest.raises(LabelfieldError, match="not an index"):
        parse_frames("bogus", names, set())


def test_command_bad_input(tmp_path):
    from labelfield.annotate.command import AnnotateCommand

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(LabelfieldError, match="no checkpoint"):
        AnnotateCommand(run, tmp_path / "L").run()
    with pytest.raises(LabelfieldError, match="run folder not found"):
        AnnotateCommand(tmp_path / "nope", tmp_path / "L").run()
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "step_0000010.pt").write_bytes(b"")
    for bad in (run, tmp_path, run / "checkpoints" / "L"):
        with pytest.raises(LabelfieldError, match="run folder"):
            AnnotateCommand(run, bad).run()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(LabelfieldError, match="not a LABELS folder"):
        AnnotateCommand(run, mine).run()
    assert (mine / "notes.txt").read_text() == "keep"


def test_trajectory_video_and_pngs(tmp_path):
    from labelfield.annotate.trajectory import read_camera_path, render_trajectory
    from labelfield.cameras import opencv_to_opengl

    scene = toy_scene(5, 32, 24)
    intr = scene.frames[0].intrinsics
    lines = [" ".join(repr(float(x)) for x in f.c2w.ravel()) for f in scene.frames]
    (tmp_path / "traj_w_c.txt").write_text("\n".join(lines))
    cams = read_camera_path(tmp_path / "traj_w_c.txt", intr)
    doc = {
        "fl_x": intr.fx,
        "fl_y": intr.fy,
        "w": 32,
        "h": 24,
        "frames": [{"transform_matrix": opencv_to_opengl(f.c2w).tolist()} for f in scene.frames],
    }
    (tmp_path / "transforms.json").write_text(json.dumps(doc))
    cams2 = read_camera_path(tmp_path / "transforms.json", intr)
    assert len(cams) == len(cams2) == 5
    for (_, p1), (i2, p2), f in zip(cams, cams2, scene.frames):
        np.testing.assert_allclose(p1, f.c2w, atol=1e-9)
        np.testing.assert_allclose(p2, f.c2w, atol=1e-9)
        assert abs(i2.cx - intr.cx) < 1e-9 and i2.width == 32
    render = gt_render_fn(scene)
    folder = render_trajectory(render, cams, scene.classes, tmp_path / "t.mp4", video=False)
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 5
    img = read_image(pngs[2])
    assert img.shape == (24, 64, 3)
    np.testing.assert_array_equal(img[:, :32], scene.frames[2].load_rgb())
    np.testing.assert_array_equal(img[:, 32:], scene.classes.colorize(scene.frames[2].load_labels()))
    pytest.importorskip("imageio_ffmpeg")
    events = []
    video = render_trajectory(render, cams, scene.classes, tmp_path / "t.mp4", on_progress=events.append)
    assert [(e.stage, e.done, e.total) for e in events][-1] == ("trajectory", 5, 5)
    import imageio.v2 as imageio

    frames = imageio.mimread(video)
    assert len(frames) == 5 and frames[0].shape == (24, 64, 3)


def test_command_end_to_end_on_a_tiny_fit(tmp_path):
    """fit 2 steps of a tiny model on disk, then `annotate`: atomic output, given clicks kept, errors."""
    import dataclasses

    from labelfield.annotate.command import AnnotateCommand
    from labelfield.formats import load_scene, write_scene
    from labelfield.labels import make_sparse_labels
    from labelfield.train.config import FitConfig
    from labelfield.train.trainer import fit

    write_scene(toy_scene(6, 32, 24, binary=True, room=False), tmp_path / "scene", "replica")
    cfg = FitConfig(
        scene=tmp_path / "scene",
        out=tmp_path / "run",
        labelled="every:3",
        label_density="clicks:5",
        steps=2,
        batch_rays=128,
        log_every=1,
        progress=False,
        device="cpu",
    )
    fit(dataclasses.replace(cfg, model_config=dataclasses.replace(cfg.model_config, **TINY_NGP)))
    with pytest.raises(LabelfieldError, match="inside"):
        AnnotateCommand(tmp_path / "run", tmp_path / "scene" / "L", progress=False, device="cpu").run()
    assert not (tmp_path / "scene" / "L").exists()
    # annotate keeps the labels the run trained on, read from the run (not regenerated from the spec): mark
    # a block of frame 3 with a class no click spec would place there and check it comes back
    run = RunFolder(tmp_path / "run")
    clicks = run.read_sparse_labels()
    scene = load_scene(tmp_path / "scene")
    assert sorted(clicks) == [0, 3]
    regenerated = make_sparse_labels(scene, "every:3", "clicks:5", seed=0)
    assert all(np.array_equal(clicks[i], regenerated[i]) for i in clicks)  # fit saved what the spec makes
    clicks[3][2:6, 2:6] = 2
    run.save_sparse_labels(clicks)
    AnnotateCommand(tmp_path / "run", tmp_path / "L", progress=False, device="cpu").run()
    ls = read_labelset(tmp_path / "L")
    assert ls.names == scene.names and [r.given for r in ls.frames] == [i % 3 == 0 for i in range(6)]
    assert (ls.load_labels(scene.names[3])[2:6, 2:6] == 2).all()
    for i, user in clicks.items():
        lab = ls.load_labels(scene.names[i])
        assert (user != 0).sum() > 0
        np.testing.assert_array_equal(lab[user != 0], user[user != 0])
    AnnotateCommand(tmp_path / "run", tmp_path / "L", frames="unlabelled", progress=False, device="cpu").run()
    assert [r.index for r in read_labelset(tmp_path / "L").frames] == [1, 2, 4, 5]
    assert not list(tmp_path.glob(".L.*"))  # no temporary folders left behind
