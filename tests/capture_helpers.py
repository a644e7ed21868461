"""Helpers of the capture tests: an SfM-friendly generated scene, a video of it, and THE fit adapter.

`fit_miou` is the only place these tests touch the trainer (train/trainer.py, run.py and the configs are
being refactored elsewhere): change it, not the tests, when their API moves.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from labelfield.cameras import Intrinsics
from labelfield.scene import Scene

FOV_DEG = 80.0


def render_capture_scene(out: Path, n_frames: int = 30, width: int = 160, height: int = 120, spp: int = 16) -> Path:
    """Render the `labelfield synth` room (seed 0) along a 60-degree stretch of its camera loop, as a
    transforms.json scene with exact poses and labels.

    The generator's plaster walls and ceiling are nearly uniform, which leaves SIFT almost nothing at
    160x120 (SfM then breaks into 3-frame models); like any real capture, SfM needs texture, so their
    textures are replaced by high-contrast multi-scale noise. Everything else is the generator's.
    """
    from labelfield.formats import write_scene
    from labelfield.synth.render import render_room
    from labelfield.synth.room import CLASS_ID, _fbm, _tint, make_room
    from labelfield.synth.trajectory import room_trajectory

    room = make_room(0)
    rng = np.random.default_rng(1)
    for part in room.parts:
        if part.class_id in (CLASS_ID["wall"], CLASS_ID["ceiling"]):
            color = part.texture.reshape(-1, 3).mean(0)
            part.texture = _tint(_fbm(rng, 512, (8, 16, 32, 64)), color, 1.6)
            part.uv_scale = (1.0, 1.0)
    poses = room_trajectory(6 * n_frames, room.free_zone, 0)[:n_frames]  # 1/6 of the loop: a 60-degree sweep
    intr = Intrinsics.from_fov_x(np.deg2rad(FOV_DEG), width, height)
    return write_scene(render_room(room, poses, intr, spp, 0), out, "transforms")


def encode_video(scene: Scene, path: Path, fps: int = 10) -> Path:
    """Encode the scene's frames as an H.264 mp4 (near-lossless, crf 12) with imageio-ffmpeg."""
    import imageio_ffmpeg

    W, H = scene.frames[0].size
    gen = imageio_ffmpeg.write_frames(
        str(path), (W, H), fps=fps, macro_block_size=8, ffmpeg_log_level="error", output_params=["-crf", "12"]
    )
    gen.send(None)
    for f in scene.frames:
        gen.send(np.ascontiguousarray(f.load_rgb()))
    gen.close()
    return path


def scene_size(scene: Scene, stride: int = 8) -> float:
    """Longest side of the box around the cameras and the (subsampled) depth points: the scene's extent,
    defined as capture's unit box is (there from sparse points)."""
    from labelfield.cameras import unproject_depth

    pts = [scene.poses()[:, :3, 3]]
    for f in scene.frames:
        d = f.load_depth()
        if d is not None:
            p = unproject_depth(d, f.intrinsics, f.c2w)[::stride, ::stride].reshape(-1, 3)
            pts.append(p[d[::stride, ::stride].reshape(-1) > 0])
    allp = np.concatenate(pts)
    return float(np.ptp(allp, axis=0).max())


def fit_miou(
    scene: Scene, out: Path, labelled: list[int], steps: int = 300, seed: int = 0, pose_refine: str = "off"
) -> float:
    """THE fit adapter: fit `scene` (RGB only) with labels on `labelled`, return mIoU on the other frames
    against their ground-truth labels (`gt_labels` in each frame's arrays, else its label file), rendered at
    the run's poses (refined when `pose_refine` is on, as annotate renders them).

    One thread: under a loaded CPU, OpenMP's spinning threads slow small fits twenty-fold."""
    from labelfield.evaluate.metrics import ConfusionMatrix
    from labelfield.render.chunked import render_image
    from labelfield.run import load_run
    from labelfield.train.config import FitConfig
    from labelfield.train.trainer import fit

    cfg = FitConfig(
        out=out,
        labelled=",".join(map(str, labelled)),
        steps=steps,
        batch_rays=1024,
        log_every=50,
        progress=False,
        seed=seed,
        threads=1,
        semantic_weight=1.0,
        labelled_ray_fraction=0.5,
        pose_refine=pose_refine,
    )
    small = dict(
        log2_table_size=16,
        n_levels=12,
        max_resolution=512,
        occupancy_resolution=32,
        hidden_dim=32,
        samples_per_diagonal=128,
        max_samples_per_ray=48,
    )
    cfg = dataclasses.replace(cfg, model_config=dataclasses.replace(cfg.model_config, **small))
    fit(cfg, scene=scene)
    run = load_run(out, scene=scene)
    cm = ConfusionMatrix(scene.classes)
    for i, f in enumerate(run.scene.frames):
        if i in labelled:
            continue
        probs = render_image(run.model, f.intrinsics, f.c2w)["probs"]
        pred = scene.classes.to_ids(probs.argmax(-1).numpy())
        cm.update(f.arrays["gt_labels"] if "gt_labels" in f.arrays else f.load_labels(), pred)
    return float(cm.compute()["miou"])
