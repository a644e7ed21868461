"""Radiance-field models and their registry.

`build_model(name, config, aabb, num_classes, background_class_index) -> Model`; `MODELS` lists the names.
`config` may be the model's config dataclass, a dict of its fields (e.g. read back from a run folder), or
None for the defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from labelfield.models.base import Model, ModelConfig


def _ngp() -> tuple[type, Callable[..., Model]]:
    from labelfield.models.ngp import NGPModel

    return ModelConfig, NGPModel


def _semantic_nerf() -> tuple[type, Callable[..., Model]]:
    from labelfield.models.semantic_nerf import SemanticNeRFConfig, SemanticNeRFModel

    return SemanticNeRFConfig, SemanticNeRFModel


_REGISTRY: dict[str, Callable[[], tuple[type, Callable[..., Model]]]] = {"ngp": _ngp, "semantic-nerf": _semantic_nerf}
MODELS = tuple(_REGISTRY)


def config_class(name: str) -> type:
    """The config dataclass of model `name`."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return _REGISTRY[name]()[0]


def build_model(
    name: str,
    config: Any,
    aabb: np.ndarray | torch.Tensor,
    num_classes: int,
    background_class_index: int | None = None,
) -> Model:
    """Build model `name` ("ngp", "semantic-nerf") over the box aabb (2, 3) with num_classes semantic classes.

    background_class_index: training index (0..C-1) of the class given to rays that hit nothing, or None.
    """
    cfg_cls = config_class(name)
    if config is None:
        config = cfg_cls()
    elif isinstance(config, dict):
        known = {f.name for f in dataclasses.fields(cfg_cls)}
        config = cfg_cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in known})
    elif not isinstance(config, cfg_cls):
        raise TypeError(f"model {name!r} takes a {cfg_cls.__name__}, got {type(config).__name__}")
    aabb_t = torch.as_tensor(np.asarray(aabb, dtype=np.float32))
    return _REGISTRY[name]()[1](config, aabb_t, num_classes, background_class_index)


__all__ = ["MODELS", "Model", "ModelConfig", "build_model", "config_class"]
