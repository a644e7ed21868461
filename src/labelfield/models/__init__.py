"""Radiance-field models and their configs.

Each model has a config dataclass in `models/configs.py` that names it and builds it:
`NGPConfig().setup(aabb, num_classes, background_class_index) -> Model`. `MODELS` lists the names;
`build_model(name, config, aabb, num_classes, background_class_index, near)` is the by-name entry point (a
run folder stores the name and the config's fields).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from labelfield.models.base import DEFAULT_NEAR, Model
from labelfield.models.configs import MODEL_CONFIGS, ModelConfig, NGPConfig, SemanticNeRFConfig

MODELS = tuple(MODEL_CONFIGS)


def config_class(name: str) -> type:
    """The config dataclass of model `name` (ValueError naming the choices for an unknown one)."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODEL_CONFIGS[name]


def build_model(
    name: str,
    config: Any,
    aabb: np.ndarray | torch.Tensor,
    num_classes: int,
    background_class_index: int | None = None,
    near: float | None = None,
) -> Model:
    """Build model `name` ("ngp", "semantic-nerf") over the box aabb (2, 3) with num_classes semantic classes.

    config: the model's config, a dict of its fields (e.g. read back from a run folder), or None (defaults).
    background_class_index: training index (0..C-1) of the class given to rays that hit nothing, or None.
    near: the scene's near distance, used when the config leaves `near` unset (None: DEFAULT_NEAR).
    """
    cfg_cls = config_class(name)
    if config is None:
        config = cfg_cls()
    elif isinstance(config, dict):
        known = {f.name for f in dataclasses.fields(cfg_cls)}
        config = cfg_cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in known})
    elif not isinstance(config, cfg_cls):
        raise TypeError(f"model {name!r} takes a {cfg_cls.__name__}, got {type(config).__name__}")
    model = config.setup(aabb, num_classes, background_class_index)
    if config.near is None and near is not None:
        model.near = float(near)
    return model


__all__ = [
    "DEFAULT_NEAR",
    "MODELS",
    "MODEL_CONFIGS",
    "Model",
    "ModelConfig",
    "NGPConfig",
    "SemanticNeRFConfig",
    "build_model",
    "config_class",
]
