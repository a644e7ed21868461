"""The run folder (`labelfield fit --out RUN`): the only code that knows its layout.

`RunFolder(path)` reads and writes everything in it (config, `RunManifest`, sparse labels, checkpoints, log);
`load_run(path)` rebuilds the fitted model for rendering. Imports nothing from `labelfield.train`, so annotate,
export and evaluation load runs without training code.
"""

from labelfield.run.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from labelfield.run.folder import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOG_FILE,
    SCENE_FILE,
    SPARSE_FILE,
    ModelSpec,
    RunFolder,
    RunManifest,
    checkpoint_path,
    is_run_dir,
    latest_checkpoint,
    list_checkpoints,
)
from labelfield.run.load import LoadedRun, load_run

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "LOG_FILE",
    "SCENE_FILE",
    "SPARSE_FILE",
    "LoadedRun",
    "ModelSpec",
    "RunFolder",
    "RunManifest",
    "capture_rng",
    "checkpoint_path",
    "is_run_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_run",
    "restore_rng",
    "save_checkpoint",
]
