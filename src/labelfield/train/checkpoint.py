"""Moved to `labelfield.run.checkpoint` (the run folder owns its checkpoints); kept for old imports."""

from labelfield.run.checkpoint import CHECKPOINT_VERSION, capture_rng, load_checkpoint, restore_rng, save_checkpoint

__all__ = ["CHECKPOINT_VERSION", "capture_rng", "load_checkpoint", "restore_rng", "save_checkpoint"]
