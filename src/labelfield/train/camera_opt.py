"""Camera pose refinement during `fit` (`--pose-refine auto|on|off`): a learnt 6-DoF correction per frame.

Estimated poses (structure from motion, phone tracking) drift by degrees over a sweep, and a field fitted
through slightly wrong cameras blurs. As BARF (Lin et al. 2021) and nerfstudio's "SO3xR3" camera optimiser do,
each training frame f gets parameters a_f = (dt (3,), w (3,)) (zero at the start), optimised with the field by
the photometric and semantic losses (gradients reach the rays through the sample positions, the hash grid's
position gradient and the viewing direction):

    dR_f = exp([w]_x)  (SO(3) exponential map, axis-angle w in world axes)
    corrected camera: R' = dR_f R_f, centre t' = t_f + dt_f   (OpenCV c2w [R | t])
    i.e. a ray (o, d) of frame f becomes (o + dt_f, dR_f d): rotation about the camera centre.

The sample distances t along a ray come from the occupancy marcher and are constants; only positions
o + t d and directions carry the gradient. Coarse to fine (BARF): early on, the fine hash levels' position
gradient is noise (the field has not formed yet), so level l's share of it is weighted by
w_l = (1 - cos(pi clamp(alpha - l, 0, 1))) / 2, alpha = 1 + (L - 1) progress / `pose_coarse_to_fine` (level 0
always on; all levels from that fraction of the run on); the field's values and table gradients are
unchanged. The parameters have their own Adam group (`pose_lr`, the run's lr schedule: warm-up, then decay)
and a small L2 penalty (`pose_penalty` * mean_f |a_f|^2) that keeps the frames from drifting together (the
gauge is otherwise free).

Off by default: on the generated SfM room of tests/test_capture.py (320x240, 300 steps, two seeds) it cost
0.02 mIoU (0.883 / 0.898 -> 0.860 / 0.874; the captured poses already label as well as the true ones,
docs/capture-poses.md) at ~1/3 more time per step. Resolution of auto (`resolve_pose_refine`): on for scenes
whose poses were estimated — a `labelfield capture` output (capture.json beside the scene), COLMAP, Record3D
and Polycam scenes — off for scenes with exact poses (the generated rooms, the demo, Replica, in-memory scenes).
The refined poses (F, 4, 4) are saved in every checkpoint ("poses"), and `labelfield.run.load_run` gives
annotate, eval and export the training frames at them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from labelfield.errors import LabelfieldError
from labelfield.scene import Scene
from labelfield.train.supervision import normalise_mode

# Scene formats whose poses are estimated (not exact): SfM, and ARKit visual-inertial tracking.
ESTIMATED_POSE_FORMATS = {"colmap": "COLMAP poses", "record3d": "Record3D (ARKit) poses", "polycam": "Polycam poses"}
CAPTURE_FILE = "capture.json"  # written by `labelfield capture` beside the scene it makes


def estimated_poses(scene: Scene) -> str | None:
    """Why the scene's poses are estimates (a short phrase), or None when they are taken as exact."""
    if scene.root is not None and (Path(scene.root) / CAPTURE_FILE).is_file():
        return f"structure-from-motion poses ({CAPTURE_FILE})"
    return ESTIMATED_POSE_FORMATS.get(scene.format)


def resolve_pose_refine(mode: Any, scene: Scene) -> tuple[bool, str]:
    """(on, one-line message fit prints, "" when there is nothing to say) for --pose-refine auto|on|off."""
    mode = normalise_mode(mode, "pose_refine")
    why = estimated_poses(scene)
    on = why is not None if mode == "auto" else mode == "on"
    if on:
        reason = why if mode == "auto" else "--pose-refine on"
        return True, f"pose refinement: on ({reason}): a learnt 6-DoF correction per frame"
    if mode == "off" and why is not None:
        return False, f"pose refinement: off ({why}: --pose-refine on would refine them)"
    return False, ""  # exact poses, refinement not asked for: the default, not worth a line


def coarse_to_fine_weights(progress: float, n_levels: int, ramp_end: float) -> torch.Tensor:
    """(L,) float32 level weights of the position gradient at `progress` in [0, 1] (module docstring);
    ramp_end <= 0: all ones."""
    if ramp_end <= 0:
        return torch.ones(n_levels)
    alpha = 1.0 + (n_levels - 1) * min(max(progress / ramp_end, 0.0), 1.0)
    t = (alpha - torch.arange(n_levels, dtype=torch.float64)).clamp(0.0, 1.0)
    return ((1.0 - torch.cos(math.pi * t)) / 2.0).float()


def set_position_grad_weights(model: nn.Module, progress: float, ramp_end: float) -> None:
    """Set the coarse-to-fine weights on every hash grid of `model` (other encodings are left alone)."""
    from labelfield.field.hashgrid import HashGrid

    for m in model.modules():
        if isinstance(m, HashGrid):
            m.position_grad_weights = None if ramp_end <= 0 else coarse_to_fine_weights(progress, m.n_levels, ramp_end)


def so3_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (k, 3, 3) of axis-angle vectors w (k, 3) (exp of the skew matrix; differentiable)."""
    x, y, z = w.unbind(-1)
    o = torch.zeros_like(x)
    skew = torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*w.shape[:-1], 3, 3)
    return torch.linalg.matrix_exp(skew)


class CameraOptimizer(nn.Module):
    """Per-frame pose corrections `adjustment` (F, 6) = (dt, w), zero-initialised (the module docstring)."""

    def __init__(self, n_frames: int) -> None:
        super().__init__()
        if n_frames < 1:
            raise LabelfieldError("pose refinement needs at least one frame")
        self.adjustment = nn.Parameter(torch.zeros(n_frames, 6))

    @property
    def n_frames(self) -> int:
        return int(self.adjustment.shape[0])

    def corrections(self, frames: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(dR (k, 3, 3), dt (k, 3)) of `frames` (k,) int64 (None: all frames)."""
        a = self.adjustment if frames is None else self.adjustment[frames]
        return so3_exp(a[:, 3:]), a[:, :3]

    def apply(
        self, rays_o: torch.Tensor, rays_d: torch.Tensor, frame: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Corrected rays: (o + dt_f, dR_f d) for rays (n, 3) of frames `frame` (n,) int64. Differentiable in
        the corrections. Rotations are computed once per frame in the batch, then gathered per ray."""
        uniq, inv = torch.unique(frame, return_inverse=True)
        rot, dt = self.corrections(uniq.to(self.adjustment.device))
        rot, dt = rot.to(rays_d.dtype)[inv], dt.to(rays_o.dtype)[inv]
        return rays_o + dt, torch.einsum("nij,nj->ni", rot, rays_d)

    def penalty(self) -> torch.Tensor:
        """mean_f |a_f|^2: the L2 prior that keeps corrections small (and the gauge fixed)."""
        return self.adjustment.square().sum(-1).mean()

    @torch.no_grad()
    def refined_poses(self, c2w: np.ndarray) -> np.ndarray:
        """The corrected OpenCV c2w (F, 4, 4) float64 of the given poses c2w (F, 4, 4) (float64 maths)."""
        c2w = np.asarray(c2w, np.float64)
        a = self.adjustment.detach().to("cpu", torch.float64)
        rot = so3_exp(a[:, 3:]).numpy()
        out = c2w.copy()
        out[:, :3, :3] = rot @ c2w[:, :3, :3]
        out[:, :3, 3] = c2w[:, :3, 3] + a[:, :3].numpy()
        return out

    def param_group(self, lr: float) -> dict[str, Any]:
        """Its own Adam group: no weight decay (the penalty is in the loss), eps small against tiny gradients."""
        return {"params": [self.adjustment], "lr": lr, "eps": 1e-15, "weight_decay": 0.0, "name": "camera"}
