"""Model configs: one dataclass per model, each naming its model (`name`) and building it (`setup`).

The attribute docstrings are the `labelfield fit MODEL --help` text (tyro). To add a model: write its config
here (a `name`, the options, the optimiser settings lr_scale / adam_eps / weight_decay, `setup`), its Model in
models/<name>.py, and add the config to `MODEL_CONFIGS`. Kept free of the model code (imported in `setup`),
so configs load without building anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import numpy as np
import torch

if TYPE_CHECKING:
    from labelfield.models.base import Model


def _aabb(aabb: Any) -> torch.Tensor:
    """(2, 3) box as float32 tensor."""
    return torch.as_tensor(np.asarray(aabb, dtype=np.float32)).reshape(2, 3)


@dataclass
class NGPConfig:
    """The semantic hash-grid model (Instant-NGP field + semantic head): `labelfield fit ngp`."""

    name: ClassVar[str] = "ngp"

    n_levels: int = 16
    """Hash grid levels L."""
    n_features: int = 2
    """Features per level F."""
    log2_table_size: int = 19
    """log2 of the hash table size T per level."""
    base_resolution: int = 16
    """Coarsest grid resolution."""
    max_resolution: int = 2048
    """Finest grid resolution over the scene box (the levels grow geometrically between the two)."""
    hash_backend: str = "auto"
    """Hash encoding backend: auto, kernel (C++ CPU), torch (reference) or tcnn (CUDA)."""
    hidden_dim: int = 64
    """Width of the density and colour MLPs."""
    density_layers: int = 1
    """Hidden layers of the density MLP (encoding -> sigma + geometry features)."""
    color_layers: int = 1
    """Hidden layers of the colour MLP (geometry features + direction encoding -> rgb). Instant-NGP uses 2; one
    is cheaper and enough for labels, which do not need fine view-dependent colour."""
    geo_feat_dim: int = 15
    """Geometry features passed from the density MLP to the colour and semantic heads."""
    sh_degree: int = 4
    """Spherical-harmonics degree of the direction encoding (degree^2 values)."""
    semantic_head: str = "per_ray"
    """"per_ray": one linear head on the composited geometry features (exactly equal to compositing per-sample
    linear logits, ~n_samples/n_rays times cheaper); "per_sample": an MLP per sample, logits composited."""
    semantic_hidden_dim: int = 64
    """Hidden width of the per-sample semantic MLP (semantic_head="per_sample" only)."""
    occupancy_resolution: int = 64
    """Occupancy grid cells per axis (64 or 128; a full refresh evaluates res^3 points)."""
    occupancy_threshold: float = 0.01
    """A cell is occupied when one marching step through it would be this opaque: sigma > -ln(1 - thr) / step."""
    occupancy_update_interval: int = 8
    """Refresh the occupancy grid every N training steps (a full refresh evaluates res^3 points)."""
    occupancy_warmup_steps: int = 256
    """During the first N steps every cell is refreshed; later a random half."""
    occupancy_decay: float = 0.7
    """Decay of the per-cell density estimate per refresh. Instant-NGP's 0.95 suits runs of tens of thousands
    of steps; short CPU runs need empty space cleared sooner, and 0.7 clears it within about 100 steps."""
    step_size: Optional[float] = None
    """Marching step in metres; None = the scene box diagonal / samples_per_diagonal."""
    samples_per_diagonal: int = 256
    """Marching steps along the scene box diagonal when step_size is None."""
    max_samples_per_ray: Optional[int] = 32
    """Bound on the samples per ray after empty-space skipping (longer rays are sampled more coarsely)."""
    early_stop_eps: Optional[float] = 1e-4
    """Stop a ray once its transmittance under the occupancy grid's density estimate (capped at 3 optical
    depths per cell) falls below this; None marches through (slower: samples behind surfaces)."""
    near: Optional[float] = None
    """Near distance in metres when render_rays gets none; None = the scene's (from its camera-to-box
    distances, saved in the run)."""
    background_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour of the remaining transmittance (1 - opacity), unless render_rays is given a background."""
    random_background: Optional[bool] = False
    """Training only, when render_rays gets no background: a random colour per ray for the remaining
    transmittance; None = random exactly when the scene has no background class. Off by default: with
    inward-looking cameras it can drive the field into opaque fog in front of each camera that paints that
    camera's view. For RGBA data the trainer can pass its own random colours to render_rays and composite
    the target over them."""
    near_grad_radius: float = 0.0
    """Training only: scale the gradient of each sample's density and features by min(1, (t / r)^2), t its
    distance from the camera, r this radius in metres (samples near a camera are seen by few rays and get
    outsized gradients, "Floaters No More"); 0 = off."""
    lr_scale: float = 1.0
    """This model's learning rate is --lr x lr_scale."""
    adam_eps: float = 1e-15
    """Adam epsilon (tiny, as in Instant-NGP: hash entries get rare, small gradients)."""
    weight_decay: float = 1e-6
    """L2 weight decay of the MLPs (the hash table has none)."""

    def setup(self, aabb: Any, num_classes: int, background_class_index: Optional[int] = None) -> Model:
        """Build the model over the box aabb (2, 3) with num_classes semantic classes."""
        from labelfield.models.ngp import NGPModel

        return NGPModel(self, _aabb(aabb), num_classes, background_class_index)


@dataclass
class SemanticNeRFConfig:
    """The Semantic-NeRF baseline (coarse + fine MLPs, the paper's defaults): `labelfield fit semantic-nerf`."""

    name: ClassVar[str] = "semantic-nerf"

    pos_freqs: int = 10
    """Frequencies of the position encoding."""
    dir_freqs: int = 4
    """Frequencies of the direction encoding."""
    depth: int = 8
    """Layers of the trunk MLP."""
    width: int = 256
    """Width of the trunk MLP."""
    skip_layer: int = 4
    """The encoded position is concatenated again to the input of layer skip_layer + 1 (0-based)."""
    head_width: int = 128
    """Hidden width of the colour and semantic heads."""
    n_coarse: int = 64
    """Stratified samples per ray for the coarse network."""
    n_importance: int = 128
    """Importance samples per ray for the fine network (0 = coarse network only)."""
    raw_noise_std: float = 0.0
    """Std of the noise added to the raw density in training (NeRF's regulariser; 0 = off)."""
    lr_scale: float = 0.05
    """This model's learning rate is --lr x lr_scale (the paper's 5e-4 at the default --lr 1e-2)."""
    adam_eps: float = 1e-8
    """Adam epsilon for this model (PyTorch's default; the hash grid's 1e-15 is not needed here)."""
    weight_decay: float = 0.0
    """L2 weight decay (the paper's optimiser has none)."""
    net_chunk: int = 65536
    """Samples per network call when rendering without gradients (bounds the memory of whole-frame renders)."""
    near: Optional[float] = None
    """Near distance in metres; None = the scene's (the scene box also bounds every ray)."""
    background_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour of the remaining transmittance (1 - opacity)."""

    def setup(self, aabb: Any, num_classes: int, background_class_index: Optional[int] = None) -> Model:
        """Build the model over the box aabb (2, 3) with num_classes semantic classes."""
        from labelfield.models.semantic_nerf import SemanticNeRFModel

        return SemanticNeRFModel(self, _aabb(aabb), num_classes, background_class_index)


ModelConfig = NGPConfig
"""The old name of the ngp config."""

MODEL_CONFIGS: dict[str, type] = {c.name: c for c in (NGPConfig, SemanticNeRFConfig)}
"""Model name -> config class, in `labelfield fit MODEL` order (the first is the default)."""
