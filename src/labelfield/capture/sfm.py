"""Structure-from-motion with pycolmap (optional extra `capture`): SIFT, matching, incremental mapping, undistortion.

Stages (each one a line of the progress display): SIFT extraction on the CPU into a COLMAP database,
matching (sequential with quadratic overlap for videos, exhaustive for photo sets up to
`EXHAUSTIVE_MAX` images), incremental mapping, then the model with the most registered images is kept.
A camera model with distortion is undistorted by COLMAP into a pinhole camera (new images, possibly another
size); a pinhole model (SIMPLE_PINHOLE / PINHOLE) keeps the input images as they are.

Everything leaving this module is in the internal conventions of `labelfield.cameras` (OpenCV c2w,
integer pixel centres); pycolmap is imported lazily so the rest of labelfield works without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from labelfield.cameras import Intrinsics, from_half_pixel_uv, w2c_to_c2w
from labelfield.errors import LabelfieldError

EXHAUSTIVE_MAX = 150  # photo sets up to this size are matched exhaustively (n^2 / 2 pairs)
PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
Stage = Callable[[str, int | None], Callable[[int], None]]  # (stage name, total) -> advance(n)


@dataclass
class SfmOptions:
    """Options of the SfM stages (attribute docstrings are `labelfield capture --help`)."""

    matcher: Literal["auto", "sequential", "exhaustive"] = "auto"
    """Pairs to match: auto = sequential for a video, exhaustive for a folder of up to 150 images."""
    camera_model: Literal["SIMPLE_RADIAL", "RADIAL", "OPENCV", "SIMPLE_PINHOLE", "PINHOLE"] = "SIMPLE_RADIAL"
    """COLMAP camera model shared by all frames; models with distortion are undistorted to pinhole images."""
    fov: float | None = None
    """Horizontal field of view hint in degrees: the initial focal length (phones: about 65-75; default: COLMAP's
    guess from EXIF, else 1.2 x the image size)."""
    fix_intrinsics: bool = False
    """Keep the --fov focal length (and zero distortion) fixed instead of refining it in bundle adjustment."""
    max_features: int = 8192
    """SIFT features per image at most."""
    peak_threshold: float = 0.004
    """SIFT peak threshold (COLMAP's default is 0.0067; lower finds more features on plain, small images)."""
    overlap: int = 10
    """Sequential matching: each frame is matched with this many following frames (plus quadratic jumps)."""
    min_registered: float = 0.5
    """Fail when SfM registers fewer than this fraction of the frames (at least 3 frames are always needed)."""
    threads: int = 0
    """CPU threads for COLMAP (0 = all cores)."""
    seed: int = 0
    """Seed of COLMAP's random number generator (RANSAC, mapping order)."""


@dataclass
class SfmResult:
    """The registered frames and sparse points of the largest model, in labelfield conventions.

    `names`: registered frame names in input order; `c2w[k]` (4, 4) OpenCV camera-to-world and
    `intrinsics[k]` (pinhole, undistorted) belong to `names[k]`; `images[k]` the image to use (the input
    or its undistorted copy). Points: `xyz` (P, 3) float64, `rgb` (P, 3) uint8, `error` (P,) mean
    reprojection error in pixels; observations `obs_point` (M,) index into the points, `obs_frame` (M,)
    index into `names`, `obs_uv` (M, 2) pixel coordinates (integer pixel centres).
    """

    names: list[str]
    c2w: list[np.ndarray]
    intrinsics: list[Intrinsics]
    images: list[Path]
    xyz: np.ndarray
    rgb: np.ndarray
    error: np.ndarray
    obs_point: np.ndarray
    obs_frame: np.ndarray
    obs_uv: np.ndarray
    stats: dict = field(default_factory=dict)
    colmap_model: Path | None = None


def import_pycolmap():
    try:
        import pycolmap
    except ImportError as e:
        raise LabelfieldError("capture needs pycolmap: pip install 'labelfield[capture]'") from e
    return pycolmap


def _no_progress(name: str, total: int | None) -> Callable[[int], None]:
    return lambda n: None


def _match_stats(pycolmap, db_path: Path, n: int) -> dict:
    """Mean SIFT features per image and how many image pairs were geometrically verified (>= 15 inliers)."""
    db = pycolmap.Database.open(str(db_path))
    try:
        kps = [db.num_keypoints_for_image(i) for i in range(1, n + 1) if db.exists_image(i)]
        pairs = db.read_two_view_geometries()
        n_ok = sum(1 for g in pairs[1] if g.inlier_matches.shape[0] >= 15)
    finally:
        db.close()
    return {"mean_features": float(np.mean(kps)) if kps else 0.0, "verified_pairs": int(n_ok)}


def run_sfm(
    image_dir: Path,
    names: list[str],
    files: list[str],
    work: Path,
    options: SfmOptions,
    sequential: bool,
    stage: Stage | None = None,
) -> SfmResult:
    """SfM over `files` (file names in `image_dir`, frame `names` in the same order); temporary files in `work`.

    Raises a one-line LabelfieldError when fewer than max(3, min_registered * n) frames register.
    """
    pycolmap = import_pycolmap()
    stage = stage or _no_progress
    work.mkdir(parents=True, exist_ok=True)
    db = work / "database.db"
    if db.exists():
        db.unlink()
    threads = options.threads or (os.cpu_count() or 1)
    pycolmap.set_random_seed(options.seed)
    n = len(files)
    if n < 3:
        raise LabelfieldError(f"SfM needs at least 3 frames, got {n}", image_dir)
    width, height = _size(image_dir / files[0])

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = options.camera_model
    if options.fov is not None:
        if not 10.0 <= options.fov <= 170.0:
            raise LabelfieldError(f"--fov must be between 10 and 170 degrees, got {options.fov}")
        f = 0.5 * width / np.tan(np.deg2rad(options.fov) / 2)
        reader.camera_params = _initial_params(options.camera_model, f, width, height)
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = threads
    extraction.sift.max_num_features = options.max_features
    extraction.sift.peak_threshold = options.peak_threshold
    advance = stage("extracting SIFT features", None)
    pycolmap.extract_features(
        db,
        image_dir,
        image_names=files,
        camera_mode=pycolmap.CameraMode.SINGLE,
        reader_options=reader,
        extraction_options=extraction,
        device=pycolmap.Device.cpu,
    )
    advance(1)

    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = threads
    use_sequential = options.matcher == "sequential" or (
        options.matcher == "auto" and (sequential or n > EXHAUSTIVE_MAX)
    )
    advance = stage(f"matching ({'sequential' if use_sequential else 'exhaustive'})", None)
    if use_sequential:
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = options.overlap
        pycolmap.match_sequential(db, matching_options=matching, pairing_options=pairing, device=pycolmap.Device.cpu)
    else:
        pycolmap.match_exhaustive(db, matching_options=matching, device=pycolmap.Device.cpu)
    advance(1)
    stats = {**_match_stats(pycolmap, db, n), "matcher": "sequential" if use_sequential else "exhaustive"}

    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = threads
    mapping.random_seed = options.seed
    # Small, low-texture frames: fewer inliers are enough to start and to register (COLMAP: 100 / 30).
    mapping.mapper.init_min_num_inliers = 50
    mapping.mapper.abs_pose_min_num_inliers = 20
    mapping.mapper.init_min_tri_angle = 8.0
    if options.fix_intrinsics:
        mapping.ba_refine_focal_length = False
        mapping.ba_refine_extra_params = False
        mapping.mapper.abs_pose_refine_focal_length = False
        mapping.mapper.abs_pose_refine_extra_params = False
    advance = stage("mapping (registered frames)", n)
    models = pycolmap.incremental_mapping(
        db, image_dir, work / "sparse", options=mapping, next_image_callback=lambda: advance(1)
    )
    sizes = sorted((m.num_reg_images() for m in models.values()), reverse=True)
    stats.update(n_frames=n, n_models=len(models), model_sizes=sizes)
    best = max(models.values(), key=lambda m: m.num_reg_images()) if models else None
    registered = best.num_reg_images() if best is not None else 0
    need = max(3, int(np.ceil(options.min_registered * n)))
    if registered < need:
        why = (
            f"{stats['verified_pairs']} image pairs matched with >= 15 inliers, "
            f"{stats['mean_features']:.0f} SIFT features per frame on average"
        )
        raise LabelfieldError(
            f"SfM registered only {registered} of {n} frames (largest of {len(models)} models, need {need}): "
            f"{why}; too little texture, overlap or sharpness (try more frames, a --fov hint or a sharper input)",
            image_dir,
        )
    stats["registered"] = registered
    model_dir = work / "model"
    model_dir.mkdir(exist_ok=True)
    best.write(str(model_dir))

    image_root = image_dir
    if best.cameras[next(iter(best.cameras))].model_name not in PINHOLE_MODELS or len(best.cameras) > 1:
        advance = stage("undistorting", None)
        undist = work / "undistorted"
        pycolmap.undistort_images(str(undist), str(model_dir), str(image_dir), num_threads=threads)
        best = pycolmap.Reconstruction(str(undist / "sparse"))
        image_root = undist / "images"
        advance(1)
    return _result(best, names, files, image_root, stats, model_dir)


def _initial_params(model: str, f: float, width: int, height: int) -> str:
    cx, cy = width / 2.0, height / 2.0  # COLMAP pixel centres are at +0.5: the image centre is W/2
    extra = {"SIMPLE_PINHOLE": [], "PINHOLE": None, "SIMPLE_RADIAL": [0.0], "RADIAL": [0.0, 0.0], "OPENCV": None}[model]
    if model == "PINHOLE":
        vals = [f, f, cx, cy]
    elif model == "OPENCV":
        vals = [f, f, cx, cy, 0.0, 0.0, 0.0, 0.0]
    else:
        vals = [f, cx, cy, *extra]
    return ",".join(f"{v:.6f}" for v in vals)


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def _result(rec, names: list[str], files: list[str], image_root: Path, stats: dict, model_dir: Path) -> SfmResult:
    by_file = {im.name: im for im in rec.images.values() if im.has_pose}
    order = [k for k, f in enumerate(files) if f in by_file]
    frame_of_image = {}
    c2ws, intrs, imgs, out_names = [], [], [], []
    for j, k in enumerate(order):
        im = by_file[files[k]]
        frame_of_image[im.image_id] = j
        w2c = np.eye(4)
        w2c[:3, :4] = im.cam_from_world().matrix()
        c2ws.append(w2c_to_c2w(w2c))
        cam = rec.cameras[im.camera_id]
        K = cam.calibration_matrix()
        intrs.append(Intrinsics.from_half_pixel(K[0, 0], K[1, 1], K[0, 2], K[1, 2], cam.width, cam.height))
        imgs.append(image_root / im.name)
        out_names.append(names[k])
    ids = sorted(rec.points3D)
    xyz = np.array([rec.points3D[i].xyz for i in ids], np.float64).reshape(-1, 3)
    rgb = np.array([rec.points3D[i].color for i in ids], np.uint8).reshape(-1, 3)
    err = np.array([rec.points3D[i].error for i in ids], np.float32)
    op, of, ouv = [], [], []
    for p, pid in enumerate(ids):
        for el in rec.points3D[pid].track.elements:
            j = frame_of_image.get(el.image_id)
            if j is None:
                continue
            op.append(p)
            of.append(j)
            ouv.append(rec.images[el.image_id].points2D[el.point2D_idx].xy)
    uv = from_half_pixel_uv(np.array(ouv, np.float64).reshape(-1, 2))
    return SfmResult(
        out_names,
        c2ws,
        intrs,
        imgs,
        xyz,
        rgb,
        err,
        np.array(op, np.int32),
        np.array(of, np.int32),
        uv.astype(np.float32),
        stats,
        model_dir,
    )
