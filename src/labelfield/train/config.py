"""`FitConfig`: every option of a fit, saved as RUN/config.json and reloadable with `FitConfig.load`.

The attribute docstrings are the `labelfield fit --help` text (tyro). Nested dataclasses (the model's
`ModelConfig`) serialise as nested JSON objects; paths as strings; tuples as lists.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import tyro

from labelfield.errors import LabelfieldError
from labelfield.io import write_json
from labelfield.models.base import ModelConfig


@dataclass
class FitConfig:
    """Options of `labelfield fit`: data, labels, model, optimisation, logging."""

    scene: tyro.conf.Positional[Optional[Path]] = None
    """Scene folder (any supported format). Not needed with --resume."""
    labelled: str = "every:10"
    """Frames whose labels are used for training: every:N, count:N, fraction:F, random:N:SEED or 0,40,80."""
    label_density: str = "full"
    """How much of each labelled frame is kept: full, clicks:N, scribbles or percent:P."""
    label_noise: Optional[str] = None
    """Label noise for experiments, e.g. pixel:0.3 (random class flips)."""
    seed: int = 0
    """Seed of everything random (label spec, initialisation, ray sampling): same seed, same result on CPU."""
    out: Optional[Path] = None
    """Run folder to write (must be empty or absent)."""
    resume: Optional[Path] = None
    """Continue the run in this folder from its last checkpoint (its config.json is used)."""
    steps: int = 3000
    """Number of optimisation steps (training stops at --steps or --time-budget, whichever comes first)."""
    time_budget: Optional[float] = None
    """Stop after this many seconds of training, over resumes too (the lr decay then ends at whichever comes first)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device: auto picks cuda when available."""
    threads: int = 0
    """CPU threads for PyTorch (0 = $OMP_NUM_THREADS when set, else every core this process may use)."""
    model: str = "ngp"
    """Model name from the model registry."""
    model_config: ModelConfig = field(default_factory=ModelConfig)
    """Model options (hash grid, heads, sampling) of ngp; other models use their own config's defaults."""
    batch_rays: int = 4096
    """Rays per optimisation step."""
    labelled_ray_fraction: float = 0.25
    """Share of each batch drawn from labelled pixels (the rest: any frame's pixels): label gradient every step."""
    lr: float = 1e-2
    """Peak learning rate (Adam; groups the model scales keep their ratio)."""
    lr_warmup_steps: int = 100
    """Linear warm-up steps from lr/100 to lr."""
    lr_schedule: Literal["exponential", "cosine", "constant"] = "cosine"
    """Decay after warm-up, down to lr * lr_final_ratio at the last step (cosine: it beat exponential on short runs)."""
    lr_final_ratio: float = 0.03
    """Learning rate at the end, as a fraction of --lr."""
    adam_eps: float = 1e-15
    """Adam epsilon (tiny, as in Instant-NGP: hash entries get rare, small gradients)."""
    semantic_weight: float = 0.1
    """lambda in L = MSE(rgb) + lambda * CE(labels), void ignored (0.04 and 0.1 tied in short runs; see trainer)."""
    depth_loss: Literal["auto", "on", "off"] = "auto"
    """L1 loss on z-depth where the scene has depth (> 0): auto = on exactly when every frame has a depth map
    (old configs' true/false load as on/off)."""
    depth_weight: float = 0.05
    """Weight of the depth loss (metres, L1) when --depth-loss is on."""
    checkpoint_every: int = 1000
    """Write a checkpoint every N steps (and always at the end and on Ctrl-C)."""
    keep_checkpoints: int = 3
    """How many of the most recent checkpoints to keep (0 = all)."""
    log_every: int = 50
    """Append a line to RUN/log.jsonl every N steps."""
    downscale: int = 1
    """Load the scene's images downscaled by this integer factor."""
    progress: bool = True
    """Show a progress bar."""
    class_balance: float = 0.5
    """Share of the labelled rays drawn class by class, so every class in the labelled frames is in every batch
    (small objects get rays); the rest uniformly over labelled pixels. 0 = the old uniform sampling."""
    depth_noise: Optional[str] = None
    """Experiments: corrupt the scene's depth like a sensor before anything uses it, e.g.
    holes=0.1,rel=0.01,abs=0.005,edges=1 (see labelfield.train.depth_noise); deterministic by --seed."""
    pseudo_labels: Literal["auto", "on", "off"] = "auto"
    """Also train on the user's labels reprojected through depth into the unlabelled frames, weighted by their
    confidence (agreement of the nearest labelled frames): auto = on when the depth loss is on."""
    pseudo_fraction: float = 0.25
    """Share of each batch drawn from pseudo-labelled pixels (when there are pseudo-labels)."""
    pseudo_min_confidence: float = 0.3
    """Pseudo-labels below this confidence are not trained on."""
    pseudo_sources: int = 4
    """Labelled frames (nearest in sequence order) reprojected into each unlabelled frame."""

    def __post_init__(self) -> None:
        from labelfield.train.supervision import normalise_mode

        self.depth_loss = normalise_mode(self.depth_loss)  # type: ignore[assignment]
        self.pseudo_labels = normalise_mode(self.pseudo_labels, "pseudo_labels")  # type: ignore[assignment]
        # `model_config` is typed as the ngp config (that is what tyro shows); another registered model with
        # the ngp defaults untouched gets its own config class's defaults instead.
        if self.model != "ngp" and type(self.model_config) is ModelConfig and self.model_config == ModelConfig():
            from labelfield.models import MODELS, config_class

            if self.model in MODELS:
                self.model_config = config_class(self.model)()

    # ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (paths as strings, nested configs as objects)."""
        return _to_jsonable(self)

    def save(self, path: str | Path) -> None:
        """Write as JSON atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | Path | None = None) -> FitConfig:
        """Inverse of `to_dict`; raises LabelfieldError naming `where` for an unknown key or a bad value."""
        name, mc = d.get("model", "ngp"), d.get("model_config")
        if name != "ngp" and isinstance(mc, dict):  # another model's config: read with that model's class
            from labelfield.models import MODELS, config_class

            if name not in MODELS:
                raise LabelfieldError(f"unknown model {name!r}", where)
            d = {**d, "model_config": _from_dict(config_class(name), mc, where, prefix="model_config.")}
        return _from_dict(cls, d, where)

    @classmethod
    def load(cls, path: str | Path) -> FitConfig:
        """Read a config.json written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise LabelfieldError("config file not found", path)
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LabelfieldError(f"not valid JSON ({e})", path) from e
        if not isinstance(d, dict):
            raise LabelfieldError("expected a JSON object", path)
        return cls.from_dict(d, path)


def _to_jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _to_jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (list, tuple)):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _to_jsonable(v) for k, v in x.items()}
    return x


def _strip(hint: Any) -> Any:
    """Remove Annotated[...] wrappers (tyro markers) from a type hint."""
    while typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    return hint


def _convert(hint: Any, value: Any, where: str | Path | None, name: str) -> Any:
    """JSON value -> the field's type: nested dataclasses, Path, tuples; other values are kept."""
    hint = _strip(hint)
    if value is None or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        return value
    origin = typing.get_origin(hint)
    args = [_strip(a) for a in typing.get_args(hint)]
    if origin in (typing.Union, getattr(types, "UnionType", typing.Union)):
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value, where, name) if len(non_none) == 1 else value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise LabelfieldError(f"config key {name!r} must be an object", where)
        return _from_dict(hint, value, where, prefix=f"{name}.")
    if hint is Path:
        return Path(value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def _from_dict(cls: type, d: dict[str, Any], where: str | Path | None, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(d) - names)
    if unknown:
        raise LabelfieldError(f"unknown config key {prefix}{unknown[0]!r}", where)
    kwargs = {k: _convert(hints[k], v, where, prefix + k) for k, v in d.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise LabelfieldError(f"bad config ({e})", where) from e
