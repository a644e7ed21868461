"""Checkpoints: atomic save, load, pruning, and the RNG states that make resume == uninterrupted.

A checkpoint is one `torch.save`d dict (loadable with `weights_only=True`: tensors, numbers, strings, lists):
    version      int, CHECKPOINT_VERSION
    step         completed optimisation steps
    seconds      training seconds so far (over resumes)
    model        model.state_dict()
    model_args   run.folder.ModelSpec as a dict: what build_model needs besides the model config
    optimizer    optimizer.state_dict() (absent from "weights only" checkpoints)
    rng          {"torch", "sampler", "numpy", "python", "cuda"?}: global and batch-sampler RNG states
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelfield.errors import LabelfieldError
from labelfield.io import atomic_path

CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` to `path` atomically (a temporary sibling, then rename): an error or Ctrl-C in the middle
    leaves the previous file, never a partial one."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"version": CHECKPOINT_VERSION, **state}, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; LabelfieldError for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise LabelfieldError("checkpoint not found", path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise LabelfieldError(f"unreadable checkpoint ({type(e).__name__}: {e})".splitlines()[0], path) from e
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise LabelfieldError("not a labelfield checkpoint", path)
    if state.get("version", 0) > CHECKPOINT_VERSION:
        raise LabelfieldError(f"checkpoint version {state['version']} is newer than this labelfield", path)
    return state


def capture_rng(sampler: torch.Generator) -> dict[str, Any]:
    """Every RNG state a training step can consume: torch (CPU and CUDA), the batch sampler, numpy, random."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "sampler": sampler.get_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], sampler: torch.Generator) -> None:
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    sampler.set_state(state["sampler"].cpu())
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), *rest))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x
