"""The Model interface every radiance field implements (the configs live in models/configs.py).

A model maps rays to per-ray outputs (tensor vocabulary of docs/architecture.md):
    render_rays(rays_o (n, 3), rays_d (n, 3) unit, near=None, far=None, background=None) -> dict with
        rgb (n, 3) in [0, 1], composited over the background colour;
        depth (n,) expected termination distance along the ray, sum_i w_i t_i (NOT normalised by opacity);
        opacity (n,) accumulated opacity sum_i w_i in [0, 1];
        logits (n, C) semantic logits over training indices, ready for cross-entropy;
        log_probs (n, C) log class probabilities (what softmax(logits) gives, taken in log space);
        n_samples int, the number of samples that went through the network.
    Two-pass models also return rgb_coarse, logits_coarse.
    before_step(step) is called by the trainer before every optimisation step (occupancy grid refresh).
    param_groups(lr) gives optimizer parameter groups (per-group lr, eps and weight decay).
Fields never read files: aabb, class count and background class come from the caller (build_model).
"""

from __future__ import annotations

import torch
from torch import nn

from labelfield.render.semantic import semantic_outputs

DEFAULT_NEAR = 0.05
"""Near distance (metres) of a model built without a scene near or a configured one."""


class Model(nn.Module):
    """Base class of the radiance-field models (see the module docstring for the contract).

    Attributes: aabb (2, 3) buffer (world box), num_classes C, background_class_index (training index of
    the class given to rays that hit nothing, or None).
    """

    aabb: torch.Tensor

    def __init__(self, aabb: torch.Tensor, num_classes: int, background_class_index: int | None) -> None:
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone())
        self.num_classes = int(num_classes)
        self.background_class_index = None if background_class_index is None else int(background_class_index)
        self.near = DEFAULT_NEAR  # render_rays' near when given none; build_model sets the scene's
        if self.background_class_index is not None and not 0 <= self.background_class_index < self.num_classes:
            raise ValueError(f"background_class_index {background_class_index} is not in 0..{num_classes - 1}")

    def render_rays(
        self,
        rays_o: torch.Tensor,
        rays_d: torch.Tensor,
        near: float | torch.Tensor | None = None,
        far: float | torch.Tensor | None = None,
        background: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def before_step(self, step: int) -> None:
        """Called before each training step; the default does nothing."""

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups; the default is one group with every parameter."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]


# Kept for imports of the old name (the ngp config); the configs now live in models/configs.py.
from labelfield.models.configs import ModelConfig, NGPConfig  # noqa: E402

__all__ = ["DEFAULT_NEAR", "Model", "ModelConfig", "NGPConfig", "semantic_outputs"]
