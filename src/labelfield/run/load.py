"""`load_run`: rebuild a fitted model from its run folder, without any training code."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelfield.errors import LabelfieldError
from labelfield.run.folder import ModelSpec, RunFolder, RunManifest
from labelfield.scene import ClassTable, Scene


@dataclass
class LoadedRun:
    """A fitted run, ready to render: `model` is in eval mode on the requested device.

    `scene`'s frames carry the poses the run refined (`fit --pose-refine`), so annotate and eval render the
    training frames where their images are; `given_poses` (F, 4, 4) are the scene's own (novel views, exports
    of the input)."""

    model: torch.nn.Module
    scene: Scene
    classes: ClassTable
    model_config: Any
    """The model's config dataclass (NGPConfig, SemanticNeRFConfig, ...)."""
    labelled: list[int]
    run_dir: Path
    step: int
    manifest: RunManifest
    spec: ModelSpec
    given_poses: np.ndarray | None = None
    """The scene's poses (F, 4, 4) when the run refined them (then `scene` holds the refined ones), else None."""

    @property
    def poses_refined(self) -> bool:
        return self.given_poses is not None

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def info(self) -> dict[str, Any]:
        """RUN/scene.json as a dict (the manifest's fields)."""
        return self.manifest.to_json()

    def sparse_labels(self) -> dict[int, np.ndarray]:
        """The sparse labels the run trained on: saved in the run, or (runs written before they were saved)
        rebuilt from the label spec in the manifest."""
        folder = self.folder
        spec = self.manifest.label_spec or {}
        if spec.get("density") == "strokes":  # a `labelfield serve` run: the user's labels are its strokes
            return folder.read_stroke_labels({i: self.scene.names[i] for i in self.labelled})
        if folder.has_sparse_labels():
            return folder.read_sparse_labels()
        from labelfield.labels import make_sparse_labels

        return make_sparse_labels(
            self.scene,
            labelled=",".join(str(i) for i in sorted(self.labelled)),
            density=spec.get("density", "full"),
            noise=spec.get("noise"),
            seed=int(spec.get("seed", 0)),
        )


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

    folder = RunFolder(run_dir)
    folder.check_existing()
    model_config = folder.read_model_config()
    step, ckpt_path = folder.find_checkpoint(step)
    manifest = folder.read_manifest()

    if not isinstance(scene, Scene):
        scene = _load_scene(manifest, scene, folder.path)
    if scene.names != list(manifest.frames):
        raise LabelfieldError(
            f"scene frames differ from the run's ({len(scene.names)} vs {len(manifest.frames)} frames)", scene.root
        )
    classes = ClassTable.from_json(manifest.classes)

    from labelfield.run.checkpoint import load_checkpoint

    state = load_checkpoint(ckpt_path, map_location="cpu")
    spec = ModelSpec.from_dict(state["model_args"])
    model = build_model(
        spec.name, model_config, spec.aabb_array(), spec.num_classes, spec.background_class_index, spec.near
    )
    model.load_state_dict(state["model"])
    model.to(device).eval()
    labelled = [int(i) for i in manifest.labelled]
    given = None
    if state.get("poses") is not None:  # pose refinement: the training frames at their refined poses
        given = scene.poses()
        scene = with_poses(scene, np.asarray(state["poses"], np.float64), ckpt_path)
    return LoadedRun(model, scene, classes, model_config, labelled, folder.path, int(step), manifest, spec, given)


def with_poses(scene: Scene, poses: np.ndarray, where: Path | None = None) -> Scene:
    """A copy of `scene` whose frames have the OpenCV c2w `poses` (F, 4, 4) (the caller's scene is untouched)."""
    if poses.shape != (len(scene.frames), 4, 4):
        raise LabelfieldError(f"refined poses are {poses.shape}, the scene has {len(scene.frames)} frames", where)
    return replace(scene, frames=[replace(f, c2w=p) for f, p in zip(scene.frames, poses)])


def _load_scene(manifest: RunManifest, override: str | Path | None, run_dir: Path) -> Scene:
    from labelfield.formats import load_scene

    path = override if override is not None else manifest.scene
    if path is None:
        raise LabelfieldError("the run was fitted on an in-memory scene; pass the scene to load_run", run_dir)
    fmt = None if override is not None else manifest.format
    return load_scene(Path(path), format=fmt, downscale=int(manifest.downscale or 1))
