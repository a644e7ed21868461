"""Training: config (FitConfig), dataset (ray batches), losses, trainer (prepare -> state -> loop), command.

Library entry point: `fit(config, scene=None, on_progress=None) -> FitResult` (prints nothing; progress as
`labelfield.progress.Progress` events). `labelfield.train.trainer.fit(config, scene, console, on_step)` is the
same with rich terminal output. The run folder and checkpoints belong to `labelfield.run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from labelfield.train.config import FitConfig

if TYPE_CHECKING:
    from labelfield.progress import ProgressFn
    from labelfield.scene import Scene
    from labelfield.train.trainer import FitResult


def fit(config: FitConfig, scene: Scene | None = None, on_progress: ProgressFn | None = None) -> FitResult:
    """Fit as `config` says and write the run folder; see `labelfield.train.trainer.run_fit`."""
    from labelfield.train.trainer import run_fit

    return run_fit(config, scene, on_progress)


__all__ = ["FitConfig", "fit"]
