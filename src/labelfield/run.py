"""The run folder written by `labelfield fit` and `load_run`, which rebuilds a fitted model from it.

Layout:
    RUN/config.json                   resolved FitConfig (`FitConfig.load`)
    RUN/scene.json                    scene path, format, downscale, class table, frame names, labelled indices,
                                      label spec, scene bounds
    RUN/checkpoints/step_XXXXXXX.pt   model + optimizer + step + RNG states (atomic; see train/checkpoint.py)
    RUN/log.jsonl                     one JSON object per log interval

This module imports the models, formats and the config only — never the trainer — so annotate, export and
evaluation can load a run without pulling in training code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelfield.errors import LabelfieldError
from labelfield.io import read_json, write_json
from labelfield.scene import ClassTable, Scene
from labelfield.train.checkpoint import load_checkpoint
from labelfield.train.config import FitConfig

CONFIG_FILE = "config.json"
SCENE_FILE = "scene.json"
LOG_FILE = "log.jsonl"
CHECKPOINT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """RUN/checkpoints/step_XXXXXXX.pt for `step`."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:07d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in the run, by step."""
    d = Path(run_dir) / CHECKPOINT_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name)) and p.is_file()]
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """(step, path) of the last checkpoint, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def is_run_dir(path: str | Path) -> bool:
    """True when `path` holds a run's config.json."""
    return (Path(path) / CONFIG_FILE).is_file()


def write_scene_info(run_dir: str | Path, info: dict[str, Any]) -> None:
    """Write RUN/scene.json (atomic). See `scene_info` for the keys."""
    write_json(Path(run_dir) / SCENE_FILE, info)


def scene_info(
    scene: Scene,
    scene_path: str | Path | None,
    downscale: int,
    labelled: list[int],
    label_spec: dict[str, Any],
    aabb: Any,
    near: float | None,
) -> dict[str, Any]:
    """The content of RUN/scene.json."""
    return {
        "scene": None if scene_path is None else str(Path(scene_path).resolve()),
        "format": scene.format,
        "downscale": int(downscale),
        "classes": scene.classes.to_json(),
        "frames": scene.names,
        "labelled": [int(i) for i in labelled],
        "label_spec": label_spec,
        "aabb": np.asarray(aabb, np.float64).reshape(2, 3).tolist(),
        "near": None if near is None else float(near),
    }


@dataclass
class LoadedRun:
    """A fitted run, ready to render: `model` is in eval mode on the requested device."""

    model: torch.nn.Module
    scene: Scene
    classes: ClassTable
    config: FitConfig
    labelled: list[int]
    run_dir: Path
    step: int
    info: dict[str, Any]


def load_run(
    run_dir: str | Path,
    device: torch.device | str = "cpu",
    step: int | None = None,
    scene: Scene | str | Path | None = None,
) -> LoadedRun:
    """Rebuild the model of a run from its last checkpoint (or the one at `step`) and reload its scene.

    Args:
        run_dir: the folder `labelfield fit --out` wrote.
        device: where the model goes.
        step: a specific checkpoint step (default: the latest).
        scene: the scene (or another path to it) when it has moved since the fit; default: the path in scene.json.

    Raises LabelfieldError for a folder that is not a run, a run without checkpoints, or a scene whose frames
    no longer match the run.
    """
    from labelfield.models import build_model

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LabelfieldError("run folder not found", run_dir)
    if not is_run_dir(run_dir):
        raise LabelfieldError(f"not a run folder (no {CONFIG_FILE})", run_dir)
    config = FitConfig.load(run_dir / CONFIG_FILE)
    info = read_json(run_dir / SCENE_FILE)
    found = list_checkpoints(run_dir)
    if not found:
        raise LabelfieldError("run has no checkpoint (was the fit stopped before its first save?)", run_dir)
    if step is None:
        step, ckpt_path = found[-1]
    else:
        by_step = dict(found)
        if step not in by_step:
            raise LabelfieldError(f"no checkpoint at step {step} (have {sorted(by_step)})", run_dir)
        ckpt_path = by_step[step]

    if not isinstance(scene, Scene):
        scene = _load_scene(info, scene, run_dir)
    if scene.names != list(info["frames"]):
        raise LabelfieldError(
            f"scene frames differ from the run's ({len(scene.names)} vs {len(info['frames'])} frames)", scene.root
        )
    classes = ClassTable.from_json(info["classes"])

    state = load_checkpoint(ckpt_path, map_location="cpu")
    args = state["model_args"]
    model = build_model(
        args["name"],
        config.model_config,
        _aabb(args["aabb"]),
        int(args["num_classes"]),
        args["background_class_index"],
    )
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return LoadedRun(model, scene, classes, config, [int(i) for i in info["labelled"]], run_dir, int(step), info)


def _aabb(aabb: Any) -> np.ndarray:
    """Stored aabb (a list) -> the (2, 3) float64 array `scene_bounds` returns."""
    return np.asarray(aabb, np.float64).reshape(2, 3)


def _load_scene(info: dict[str, Any], override: str | Path | None, run_dir: Path) -> Scene:
    from labelfield.formats import load_scene

    path = override if override is not None else info.get("scene")
    if path is None:
        raise LabelfieldError("the run was fitted on an in-memory scene; pass the scene to load_run", run_dir)
    fmt = None if override is not None else info.get("format")
    return load_scene(Path(path), format=fmt, downscale=int(info.get("downscale", 1)))
