"""The run folder: its layout and every read and write of it (the only code that knows the paths).

Layout:
    RUN/config.json                   resolved FitConfig (`FitConfig.load`); see `read_model_config`
    RUN/scene.json                    RunManifest: scene path, format, downscale, class table, frame names,
                                      labelled indices, label spec, scene box and near distance
    RUN/sparse_labels.npz             the sparse labels the run trained on (frame_<index>: (H, W) original ids)
    RUN/checkpoints/step_XXXXXXX.pt   model + optimizer + step + RNG states (atomic; run/checkpoint.py)
    RUN/log.jsonl                     one JSON object per log interval
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np

from labelfield.errors import LabelfieldError
from labelfield.io import atomic_path, read_json, write_json
from labelfield.jsonconfig import from_dict
from labelfield.run.checkpoint import load_checkpoint, save_checkpoint

CONFIG_FILE = "config.json"
SCENE_FILE = "scene.json"
LOG_FILE = "log.jsonl"
SPARSE_FILE = "sparse_labels.npz"
STROKE_LABELS_DIR = "sparse_labels"  # `labelfield serve`: one label PNG per frame with strokes
CHECKPOINT_DIR = "checkpoints"
_CKPT_RE = re.compile(r"^step_(\d+)\.pt$")


@dataclass
class ModelSpec:
    """What building a run's model needs besides its config (stored in every checkpoint as "model_args")."""

    name: str
    """Model name ("ngp", "semantic-nerf")."""
    aabb: list[list[float]]
    """Scene box [[xmin, ymin, zmin], [xmax, ymax, zmax]] (metres)."""
    near: Optional[float]
    """The scene's near distance (metres), used unless the model config sets one."""
    num_classes: int
    """Training classes C."""
    background_class_index: Optional[int]
    """Training index of the class given to rays that hit nothing, or None."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def aabb_array(self) -> np.ndarray:
        """(2, 3) float64 box."""
        return np.asarray(self.aabb, np.float64).reshape(2, 3)


@dataclass
class RunManifest:
    """RUN/scene.json: what the run was fitted on."""

    scene: Optional[str]
    """Absolute scene path, or None for an in-memory scene."""
    format: str
    """Scene format (formats.detect_format)."""
    downscale: int
    """Image downscale factor the run used."""
    classes: dict[str, Any]
    """ClassTable.to_json()."""
    frames: list[str]
    """Frame names, in scene order."""
    labelled: list[int]
    """Indices of the frames with training labels."""
    label_spec: dict[str, Any] = field(default_factory=dict)
    """{"labelled", "density", "noise", "seed"}: how the sparse labels were made."""
    aabb: Optional[list[list[float]]] = None
    """Scene box (2, 3)."""
    near: Optional[float] = None
    """Scene near distance (metres)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str | Path | None = None) -> RunManifest:
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as e:
            raise LabelfieldError(f"bad {SCENE_FILE} ({e})", where) from e


class RunFolder:
    """One run folder (`labelfield fit --out RUN`): paths, manifest, config, sparse labels, checkpoints, log."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # --- the folder -------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self.path / LOG_FILE

    def exists(self) -> bool:
        """True when the folder holds a run's config.json."""
        return self.config_path.is_file()

    def check_new(self) -> None:
        """A new run needs an absent or empty folder: never mix two runs' checkpoints."""
        p = self.path
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            raise LabelfieldError(
                "run folder exists and is not empty; use --resume to continue it, or another --out", p
            )

    def check_existing(self, what: str = "not a run folder") -> None:
        """LabelfieldError unless this is a run folder."""
        if not self.path.is_dir():
            raise LabelfieldError("run folder not found", self.path)
        if not self.exists():
            raise LabelfieldError(f"{what} (no {CONFIG_FILE})", self.path)

    def contains(self, other: str | Path) -> bool:
        """True when `other` is the run folder, one of its parents, or its checkpoints folder (or inside it):
        writing `other` would replace the run or its checkpoints."""
        run, o = self.path.resolve(), Path(other).resolve()
        ckpts = run / CHECKPOINT_DIR
        return o == run or o in run.parents or o == ckpts or ckpts in o.parents

    # --- config and manifest ----------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        """Write RUN/config.json (a FitConfig's `to_dict()`)."""
        write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any]:
        """RUN/config.json as a dict (FitConfig.load gives the typed config)."""
        try:
            d = json.loads(self.config_path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LabelfieldError(f"unreadable {CONFIG_FILE} ({e})", self.config_path) from e
        if not isinstance(d, dict):
            raise LabelfieldError("expected a JSON object", self.config_path)
        return d

    def read_model_config(self) -> Any:
        """The model's config dataclass (NGPConfig, SemanticNeRFConfig, ...) from RUN/config.json."""
        from labelfield.models import MODELS, config_class

        d = self.read_config()
        name, mc = d.get("model", "ngp"), d.get("model_config") or {}
        if name not in MODELS:
            raise LabelfieldError(f"unknown model {name!r} (choose from {', '.join(MODELS)})", self.config_path)
        return from_dict(config_class(name), mc, self.config_path, prefix="model_config.")

    def write_manifest(self, manifest: RunManifest) -> None:
        write_json(self.path / SCENE_FILE, manifest.to_json())

    def read_manifest(self) -> RunManifest:
        path = self.path / SCENE_FILE
        if not path.is_file():
            raise LabelfieldError(f"run folder has no {SCENE_FILE}", self.path)
        return RunManifest.from_json(read_json(path), path)

    # --- sparse labels ----------------------------------------------------------------------------------
    def save_sparse_labels(self, sparse: dict[int, np.ndarray]) -> None:
        """Write the sparse labels the run trains on (frame index -> (H, W) original ids), atomically."""
        with atomic_path(self.path / SPARSE_FILE) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **{f"frame_{i}": np.asarray(a) for i, a in sorted(sparse.items())})

    def read_stroke_labels(self, names: dict[int, str]) -> dict[int, np.ndarray]:
        """Label PNGs of a `labelfield serve` run (RUN/sparse_labels/<frame>.png) for frames {index: name}."""
        from labelfield.io import read_image

        d = self.path / STROKE_LABELS_DIR
        return {i: read_image(d / f"{n}.png") for i, n in names.items() if (d / f"{n}.png").is_file()}

    def has_sparse_labels(self) -> bool:
        return (self.path / SPARSE_FILE).is_file()

    def read_sparse_labels(self) -> dict[int, np.ndarray]:
        """The sparse labels saved by `save_sparse_labels` (LabelfieldError when absent or unreadable)."""
        path = self.path / SPARSE_FILE
        if not path.is_file():
            raise LabelfieldError("run folder has no saved sparse labels", path)
        try:
            with np.load(path) as z:
                return {int(k.split("_", 1)[1]): z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise LabelfieldError(f"unreadable sparse labels ({e})", path) from e

    # --- checkpoints ------------------------------------------------------------------------------------
    def checkpoint_path(self, step: int) -> Path:
        """RUN/checkpoints/step_XXXXXXX.pt for `step`."""
        return self.path / CHECKPOINT_DIR / f"step_{step:07d}.pt"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every checkpoint in the run, by step."""
        d = self.path / CHECKPOINT_DIR
        if not d.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name)) and p.is_file()]
        return sorted(found)

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        """(step, path) of the last checkpoint, or None."""
        found = self.checkpoints()
        return found[-1] if found else None

    def find_checkpoint(self, step: int | None = None) -> tuple[int, Path]:
        """(step, path) of the checkpoint at `step` (default: the latest); LabelfieldError when there is none."""
        found = self.checkpoints()
        if not found:
            raise LabelfieldError("run has no checkpoint (was the fit stopped before its first save?)", self.path)
        if step is None:
            return found[-1]
        by_step = dict(found)
        if step not in by_step:
            raise LabelfieldError(f"no checkpoint at step {step} (have {sorted(by_step)})", self.path)
        return step, by_step[step]

    def save_checkpoint(self, step: int, state: dict[str, Any], keep: int = 0) -> Path:
        """Write the checkpoint of `step` atomically, then delete all but the `keep` latest (0 = keep all)."""
        path = save_checkpoint(self.checkpoint_path(step), {"step": step, **state})
        if keep > 0:
            for _, old in self.checkpoints()[:-keep]:
                old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, step: int | None = None) -> dict[str, Any]:
        return load_checkpoint(self.find_checkpoint(step)[1], map_location="cpu")

    # --- log --------------------------------------------------------------------------------------------
    def append_log(self, row: dict[str, Any]) -> None:
        """Append one JSON line to RUN/log.jsonl."""
        with open(self.log_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_log(self, step: int) -> None:
        """Drop log lines past `step` (written after the checkpoint a resume starts from)."""
        path = self.log_path
        if not path.is_file():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue
        with atomic_path(path) as tmp:
            tmp.write_text("".join(s + "\n" for s in keep))

    def read_log(self) -> list[dict[str, Any]]:
        """The rows of RUN/log.jsonl (unreadable lines skipped)."""
        if not self.log_path.is_file():
            return []
        rows = []
        for line in self.log_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows


# Function forms of the common look-ups.
def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """RUN/checkpoints/step_XXXXXXX.pt for `step`."""
    return RunFolder(run_dir).checkpoint_path(step)


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in the run, by step."""
    return RunFolder(run_dir).checkpoints()


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """(step, path) of the last checkpoint, or None."""
    return RunFolder(run_dir).latest_checkpoint()


def is_run_dir(path: str | Path) -> bool:
    """True when `path` holds a run's config.json."""
    return RunFolder(path).exists()
