"""nerfstudio / instant-ngp `transforms.json`: reader and writer.

Camera keys `fl_x, fl_y, cx, cy, w, h` (or `camera_angle_x`/`camera_angle_y`), `camera_model` and OpenCV
distortion `k1, k2, p1, p2, k3` sit at the top level or per frame (per-frame keys win). Principal points use
the +0.5 pixel-centre convention (cx = w/2 is centred); `Intrinsics.from_half_pixel` converts. Frames hold
`file_path`, `transform_matrix` (OpenGL camera-to-world; `cameras.opengl_to_opencv` converts), optional
`depth_file_path` (uint16; `depth_unit_scale_factor` metres per unit, default 0.001), `mask_path`, and our
extensions: `semantics_path` (index PNG of class ids; frames without it are unlabelled), `instance_path`, and
a top-level `"semantics": {"classes", "colors", "ids", "ignore_index": 0, "background_class"}`.
RGBA images are composited over white (`Frame.background`), as usual for the NeRF synthetic scenes.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from labelfield.cameras import Intrinsics, opencv_to_opengl, opengl_to_opencv
from labelfield.errors import LabelfieldError
from labelfield.formats.common import (
    FileLoader,
    check_pose,
    image_size,
    label_dtype,
    read_points_ply,
    safe_names,
    scaled_intrinsics,
    table_from_label_files,
    write_points_ply,
)
from labelfield.io import MM_PER_METRE, depth_to_mm, read_json, write_image, write_json
from labelfield.progress import Progress, ProgressFn
from labelfield.scene import ClassTable, Frame, Scene

_CAMERA_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y", "camera_model")
# (Frame attribute, per-frame key, what it is) for the optional per-frame files.
_FILE_KEYS = (
    ("depth_path", "depth_file_path", "depth image"),
    ("label_path", "semantics_path", "label image"),
    ("instance_path", "instance_path", "instance image"),
    ("mask_path", "mask_path", "mask image"),
)
_DIST_KEYS = ("k1", "k2", "p1", "p2", "k3")
# Models whose distortion (if any) is OpenCV's k1, k2, p1, p2, k3; fisheye models are not supported.
_PINHOLE_MODELS = {None, "OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"}


def transforms_file(root: Path) -> Path:
    return root if root.suffix == ".json" else root / "transforms.json"


def _resolve(base: Path, rel: str, json_path: Path, what: str) -> Path:
    """A frame's file path; a missing extension (as in the original NeRF synthetic files) tries .png/.jpg."""
    p = base / rel
    if not p.is_file() and not p.suffix:
        for suffix in (".png", ".jpg", ".jpeg"):
            if p.with_suffix(suffix).is_file():
                return p.with_suffix(suffix)
    if not p.is_file():
        raise LabelfieldError(f"{what} not found ({rel}, listed in {json_path.name})", p)
    return p


def camera_keys(top: dict[str, Any], frame: dict[str, Any] | None = None) -> dict[str, Any]:
    """The camera keys of a transforms.json document, a frame's own keys overriding the top level's."""
    keys = (*_CAMERA_KEYS, *_DIST_KEYS)
    return {k: v for d in (top, frame or {}) if isinstance(d, dict) for k, v in d.items() if k in keys}


def has_focal(cam: dict[str, Any]) -> bool:
    """Whether camera keys define a focal length (fl_x or camera_angle_x)."""
    return "fl_x" in cam or "camera_angle_x" in cam


def camera_intrinsics(cam: dict[str, Any], size: tuple[int, int], where: Path) -> Intrinsics:
    """Intrinsics from transforms.json camera keys (`camera_keys`); `size` (W, H) where w/h are absent.

    fl_x/fl_y or camera_angle_x/_y, cx/cy with pixel centres at +0.5 (default: the image centre), OpenCV
    distortion k1, k2, p1, p2, k3. Raises LabelfieldError naming `where` for bad or missing values.
    """
    try:
        if "w" in cam and "h" in cam:
            w, h = int(cam["w"]), int(cam["h"])
        else:
            w, h = size
        if "fl_x" in cam:
            fx = float(cam["fl_x"])
            fy = float(cam.get("fl_y", fx))
        elif "camera_angle_x" in cam:
            fx = 0.5 * w / math.tan(0.5 * float(cam["camera_angle_x"]))
            fy = 0.5 * h / math.tan(0.5 * float(cam["camera_angle_y"])) if "camera_angle_y" in cam else fx
        else:
            raise LabelfieldError("no focal length (fl_x or camera_angle_x)", where)
        model = cam.get("camera_model")
        if model not in _PINHOLE_MODELS:
            raise LabelfieldError(f"camera_model {model} is not supported (pinhole/OPENCV only)", where)
        dist = tuple(float(cam.get(k, 0.0)) for k in _DIST_KEYS)
        return Intrinsics.from_half_pixel(
            fx, fy, float(cam.get("cx", w / 2.0)), float(cam.get("cy", h / 2.0)), w, h, dist if any(dist) else None
        )
    except (TypeError, ValueError) as e:
        raise LabelfieldError(f"camera parameters are not numbers ({e})", where) from e


def _class_table(d: dict[str, Any], path: Path) -> ClassTable | None:
    sem = d.get("semantics")
    if sem is None:
        return None
    if not isinstance(sem, dict):
        raise LabelfieldError("semantics must be an object {classes, colors, ...}", path)
    if sem.get("ignore_index", 0) != 0:
        raise LabelfieldError(f"semantics.ignore_index must be 0 (void), got {sem['ignore_index']}", path)
    try:
        return ClassTable.from_json(sem)
    except (KeyError, TypeError, ValueError) as e:
        raise LabelfieldError(f"semantics block needs 'classes' (and 'colors') ({e})", path) from e


def _frame_names(rels: list[str]) -> list[str]:
    stems = [Path(r).stem for r in rels]
    if len(set(stems)) == len(stems):
        return stems
    return [re.sub(r"[^A-Za-z0-9_.\-]+", "_", str(Path(r).with_suffix("")).lstrip("./")) for r in rels]


def read_transforms(root: Path, downscale: int = 1) -> Scene:
    """Read a transforms.json scene (`root` is its folder or the JSON file itself)."""
    path = transforms_file(root)
    d = read_json(path)
    base = path.parent
    raw = d.get("frames") if isinstance(d, dict) else None
    if not raw:
        raise LabelfieldError("no frames", path)
    for k, f in enumerate(raw):
        if not isinstance(f, dict) or not f.get("file_path"):
            raise LabelfieldError(f"frames[{k}] has no file_path", path)
    top = camera_keys(d)
    unit = d.get("depth_unit_scale_factor", 1.0 / MM_PER_METRE)  # metres per stored depth unit
    if not isinstance(unit, (int, float)) or unit <= 0:
        raise LabelfieldError(f"depth_unit_scale_factor must be a positive number, got {unit!r}", path)
    rels = [str(f["file_path"]) for f in raw]
    rgb_paths = [_resolve(base, r, path, "image") for r in rels]
    default_size = None if ("w" in top and "h" in top) else image_size(rgb_paths[0])
    intr_cache: dict[tuple, tuple[Intrinsics, Intrinsics]] = {}
    specs = []
    for k, (f, rgb) in enumerate(zip(raw, rgb_paths)):
        cam = camera_keys(top, f)
        cam_key = tuple(sorted((a, str(b)) for a, b in cam.items()))
        if cam_key not in intr_cache:
            src = camera_intrinsics(cam, default_size or image_size(rgb), path)
            intr_cache[cam_key] = (src, scaled_intrinsics(src, downscale))
        c2w_gl = check_pose(f.get("transform_matrix"), path, f"frames[{k}].transform_matrix")
        extra = {attr: _resolve(base, f[key], path, what) if f.get(key) else None for attr, key, what in _FILE_KEYS}
        specs.append((intr_cache[cam_key], opengl_to_opencv(c2w_gl), rgb, extra))
    classes = _class_table(d, path) or table_from_label_files([s[3]["label_path"] for s in specs if s[3]["label_path"]])
    loaders: dict[tuple[int, int], FileLoader] = {}
    frames = []
    for name, ((src, intr), c2w, rgb, extra) in zip(_frame_names(rels), specs):
        size = (src.width, src.height)
        loader = loaders.setdefault(size, FileLoader(size, classes))
        frames.append(Frame(name, intr, c2w, rgb_path=rgb, depth_scale=1.0 / unit, loader=loader, **extra))
    points = None
    if d.get("ply_file_path"):  # nerfstudio's sparse SfM cloud, in the poses' world (ns-process-data, capture)
        points = read_points_ply(_resolve(base, str(d["ply_file_path"]), path, "ply_file_path"))
    return Scene(frames, classes, base, "transforms", points=points)


def _camera_dict(intr: Intrinsics) -> dict[str, Any]:
    cx, cy = intr.to_half_pixel()
    d: dict[str, Any] = {
        "camera_model": "OPENCV",
        "fl_x": intr.fx,
        "fl_y": intr.fy,
        "cx": cx,
        "cy": cy,
        "w": intr.width,
        "h": intr.height,
        "camera_angle_x": 2.0 * math.atan(0.5 * intr.width / intr.fx),
    }
    if intr.distortion:
        d.update({k: float(v) for k, v in zip(_DIST_KEYS, intr.distortion)})
    return d


def write_transforms(scene: Scene, out: Path, on_progress: ProgressFn | None = None) -> None:
    """Write `scene` into the (empty, temporary) folder `out` as transforms.json + images/ depth/ semantics/."""
    shared = all(f.intrinsics == scene.frames[0].intrinsics for f in scene.frames)
    lab_dtype = label_dtype(scene.classes.max_id)
    doc: dict[str, Any] = _camera_dict(scene.frames[0].intrinsics) if shared else {}
    any_depth = False
    frames_json = []
    for k, (name, f) in enumerate(zip(safe_names(scene.frames), scene.frames)):
        if on_progress is not None:
            on_progress(Progress("write", k + 1, len(scene.frames), "frames"))  # frame k + 1 of n under way
        entry: dict[str, Any] = {} if shared else _camera_dict(f.intrinsics)
        entry["file_path"] = f"images/{name}.png"
        write_image(out / entry["file_path"], f.load_rgb())
        entry["transform_matrix"] = opencv_to_opengl(f.c2w).tolist()
        depth = f.load_depth()
        if depth is not None:
            any_depth = True
            entry["depth_file_path"] = f"depth/{name}.png"
            write_image(out / entry["depth_file_path"], depth_to_mm(depth))
        lab = f.load_labels()
        if lab is not None:
            scene.classes.check_labels(lab, f.label_path or f.name)
            entry["semantics_path"] = f"semantics/{name}.png"
            write_image(out / entry["semantics_path"], lab.astype(lab_dtype))
        ins = f.load_instances()
        if ins is not None:
            entry["instance_path"] = f"instances/{name}.png"
            write_image(out / entry["instance_path"], ins.astype(label_dtype(int(ins.max()))))
        frames_json.append(entry)
    if any_depth:
        doc["depth_unit_scale_factor"] = 1.0 / MM_PER_METRE
    if scene.points is not None:
        write_points_ply(out / "sparse_pc.ply", scene.points)
        doc["ply_file_path"] = "sparse_pc.ply"
    doc["semantics"] = scene.classes.to_json()
    doc["frames"] = frames_json
    write_json(out / "transforms.json", doc)
