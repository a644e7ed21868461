"""What a fit is supervised with: depth (`--depth-loss auto|on|off`, `--depth-noise`) and pseudo-labels.

`plan_supervision` is the one hook the trainer calls before building its `RayDataset`: it decides whether the
depth loss is on (auto = on exactly when the scene's frames have depth), builds the depth loader (with the
experiment's sensor noise), computes pseudo-labels when asked, and returns the one line `fit` prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from labelfield.baselines.pseudo_labels import PseudoLabels, coverage, make_pseudo_labels
from labelfield.errors import LabelfieldError
from labelfield.labels import SparseLabels
from labelfield.scene import Scene
from labelfield.train.depth_noise import DepthNoise, depth_loader

DEPTH_MODES = ("auto", "on", "off")


def normalise_mode(value: Any, name: str = "depth_loss") -> str:
    """auto|on|off from the new spelling or the old bool (config.json of earlier runs: true/false)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    v = str(value).strip().lower()
    v = {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}.get(v, v)
    if v not in DEPTH_MODES:
        raise LabelfieldError(f"{name} must be auto, on or off, got {value!r}")
    return v


def scene_has_depth(scene: Scene) -> bool:
    """True when every frame has a depth map (the depth loss and pseudo-labels need them all)."""
    return len(scene.frames) > 0 and all(f.has_depth() for f in scene.frames)


def resolve_depth_loss(mode: Any, scene: Scene) -> bool:
    """auto -> on exactly when the scene has depth; on without depth is an error naming the scene."""
    mode = normalise_mode(mode)
    has = scene_has_depth(scene)
    if mode == "on" and not has:
        raise LabelfieldError("--depth-loss on, but the scene's frames have no depth maps", scene.root)
    return has if mode == "auto" else mode == "on"


@dataclass
class Supervision:
    """What the trainer uses: depth loss on/off, the depth loader, pseudo-labels, and a one-line summary."""

    depth: bool
    depth_fn: Callable[[int], np.ndarray | None] | None
    pseudo: PseudoLabels
    message: str


def plan_supervision(config: Any, scene: Scene, sparse: SparseLabels) -> Supervision:
    """Resolve `config.depth_loss`, `depth_noise`, `pseudo_labels` for `scene` (a FitConfig; fields read with
    defaults so older configs work)."""
    depth = resolve_depth_loss(getattr(config, "depth_loss", "auto"), scene)
    noise_spec = getattr(config, "depth_noise", None)
    noise = DepthNoise.parse(noise_spec)
    seed = int(getattr(config, "seed", 0))
    depth_fn = depth_loader(scene, noise, seed) if scene_has_depth(scene) else None
    mode = normalise_mode(getattr(config, "pseudo_labels", "off"), "pseudo_labels")
    use_pseudo = depth if mode == "auto" else mode == "on"
    if use_pseudo and depth_fn is None:
        raise LabelfieldError("--pseudo-labels on needs depth maps; this scene has none", scene.root)
    tol = float(getattr(config, "pseudo_depth_tol", 0.05))
    if not 0 < tol < 1:
        raise LabelfieldError(f"--pseudo-depth-tol must be in (0, 1), not {tol}")
    pseudo: PseudoLabels = {}
    if use_pseudo:
        pseudo = make_pseudo_labels(
            scene,
            sparse,
            depth_fn,
            n_sources=int(getattr(config, "pseudo_sources", 4)),
            rel_tol=tol,
        )
    parts = ["RGB", "labels"]
    if depth:
        parts.append("depth" + (f" (noise {noise_spec})" if noise is not None else ""))
    if pseudo:
        cov = coverage(pseudo, float(getattr(config, "pseudo_min_confidence", 0.0)))
        parts.append(f"pseudo-labels on {len(pseudo)} frames ({100 * cov:.0f} % of their pixels)")
    why = ""
    if not depth and depth_fn is not None:
        why = " (the scene has depth: --depth-loss auto or on would use it)"
    elif not depth:
        why = " (no depth in the scene)"
    balance = float(getattr(config, "class_balance", 0.0))
    msg = f"supervision: {' + '.join(parts)}{why}; class-balanced labelled rays {100 * balance:.0f} %"
    return Supervision(depth, depth_fn if depth else None, pseudo, msg)
