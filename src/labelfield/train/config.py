"""`FitConfig`: every option of a fit, saved as RUN/config.json and reloadable with `FitConfig.load`.

The attribute docstrings are the `labelfield fit --help` text (tyro). The model is a subcommand:
`labelfield fit [ngp|semantic-nerf] SCENE ...` picks `model_config`'s class (models/configs.py), whose
options are `--model.*`. In config.json the model is stored as `"model": NAME, "model_config": {...}` (the
layout of earlier versions, which therefore still load); paths as strings, tuples as lists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import tyro

from labelfield.errors import LabelfieldError
from labelfield.io import write_json
from labelfield.jsonconfig import from_dict, to_jsonable
from labelfield.models.configs import MODEL_CONFIGS, NGPConfig, SemanticNeRFConfig

ModelChoice = Union[  # noqa: UP007 - tyro reads the Annotated members
    Annotated[NGPConfig, tyro.conf.subcommand("ngp", prefix_name=False)],
    Annotated[SemanticNeRFConfig, tyro.conf.subcommand("semantic-nerf", prefix_name=False)],
]
"""The models `labelfield fit` offers (one subcommand each); add a model's config here and to MODEL_CONFIGS."""


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
    model_config: Annotated[ModelChoice, tyro.conf.arg(name="model")] = field(default_factory=NGPConfig)
    """The model and its options (`--model.*`): ngp (default) or semantic-nerf."""
    batch_rays: int = 4096
    """Rays per optimisation step."""
    labelled_ray_fraction: float = 0.25
    """Share of each batch drawn from labelled pixels (the rest: any frame's pixels): label gradient every step."""
    lr: float = 1e-2
    """Peak learning rate (Adam; groups the model scales keep their ratio)."""
    lr_warmup_steps: int = 100
    """Linear warm-up steps from lr/100 to lr."""
    lr_schedule: Literal["exponential", "cosine", "constant"] = "cosine"
    """Decay after warm-up, down to lr * lr_final_ratio at the last step (cosine stays near the peak longer)."""
    lr_final_ratio: float = 0.03
    """Learning rate at the end, as a fraction of --lr."""
    adam_eps: Optional[float] = None
    """Adam epsilon of every parameter group; None = the model's own (--model.adam-eps)."""
    semantic_weight: float = 0.1
    """lambda in L = MSE(rgb) + lambda * CE(labels), void ignored."""
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
    # --- geometry priors for RGB-only scenes (train/geometry_priors.py) ---
    keypoint_depth: Literal["auto", "on", "off"] = "auto"
    """Triangulate matched keypoints with the known poses (cached in RUN/sparse_depth.npz) and pull the weights
    of rays through them to the point's depth (DS-NeRF). auto: on when the depth loss is off and OpenCV (extra
    `geometry`) is installed."""
    keypoint_ray_fraction: float = 0.125
    """Share of each batch drawn from keypoint rays when --keypoint-depth is on."""
    keypoint_weight: float = 0.05
    """Weight of the ray-termination loss."""
    keypoint_sigma_start: float = 0.2
    """Gaussian sigma of the ray-termination target at the start, as a fraction of the point's depth."""
    keypoint_sigma_end: float = 0.02
    """... annealed geometrically to this by the middle of the run."""
    keypoint_min_points: int = 50
    """Fewer triangulated points than this: one warning, and training goes on without them."""
    distortion_weight: float = 0.0
    """Weight of Mip-NeRF 360's distortion loss (distances over the scene diagonal); 0 = off. Off by default: at
    0.01 without depth (1000 steps, 10 % labelled) the tune rooms gained 0.015 on average (one room +0.035, two lost
    a little) and the held-out rooms lost 0.017 (0.774 / 0.815 / 0.752 / 0.846 vs 0.809 / 0.822 / 0.740 / 0.884)."""
    opacity_entropy_weight: float = 0.0
    """Weight of a binary-entropy prior on every ray's opacity (opaque or empty, not in between); 0 = off."""
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
    pseudo_depth_tol: float = 0.05
    """z-test of the pseudo-labels: a reprojected label counts where its depth is within this fraction of the
    target's (annotate's fusion and the reproject baseline use 0.03)."""
    # --- camera pose refinement (train/camera_opt.py) ---
    pose_refine: Literal["auto", "on", "off"] = "off"
    """Learn a 6-DoF correction of every training camera with the field (BARF / nerfstudio's SO3xR3): on; auto =
    on for scenes whose poses were estimated (labelfield capture, COLMAP, Record3D, Polycam). The refined poses
    are saved in the checkpoints; annotate and eval render the training frames at them. Off by default: on the
    SfM test room it cost 0.02 mIoU (0.88-0.90 without) at ~1/3 more time a step."""
    pose_lr: float = 1e-4
    """Peak learning rate of the pose corrections (radians and scene units; the run's warm-up and decay)."""
    pose_penalty: float = 1e-2
    """Weight of the L2 prior mean_f |correction_f|^2 that keeps the corrections small."""
    pose_coarse_to_fine: float = 0.0
    """Fraction of the run over which the hash levels' position gradients are let in, coarse to fine (BARF);
    0 = all levels from the start."""

    def __post_init__(self) -> None:
        from labelfield.train.supervision import normalise_mode

        self.depth_loss = normalise_mode(self.depth_loss)  # type: ignore[assignment]
        self.pseudo_labels = normalise_mode(self.pseudo_labels, "pseudo_labels")  # type: ignore[assignment]
        self.pose_refine = normalise_mode(self.pose_refine, "pose_refine")  # type: ignore[assignment]

    @property
    def model(self) -> str:
        """The model's name ("ngp", "semantic-nerf")."""
        return self.model_config.name

    # ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (paths as strings; the model as "model": NAME, "model_config": {...})."""
        d = to_jsonable(self)
        return {"model": self.model, **d}

    def save(self, path: str | Path) -> None:
        """Write as JSON atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | Path | None = None) -> FitConfig:
        """Inverse of `to_dict`; raises LabelfieldError naming `where` for an unknown key or a bad value."""
        d = dict(d)
        name = d.pop("model", "ngp")
        if d.get("adam_eps") == 1e-15:  # earlier versions' unused default: each model's own eps applied
            d["adam_eps"] = None
        if name not in MODEL_CONFIGS:
            raise LabelfieldError(f"unknown model {name!r} (choose from {', '.join(MODEL_CONFIGS)})", where)
        mc = d.get("model_config")
        if isinstance(mc, dict) or mc is None:
            d["model_config"] = from_dict(MODEL_CONFIGS[name], mc or {}, where, prefix="model_config.")
        return from_dict(cls, d, where)

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
