"""Fitting: `prepare` (validate, load, sparse labels, ray cache) -> `initial_state` (new or resumed model,
optimizer, RNGs) -> `write_run` (config, manifest, sparse labels) -> `train_loop` (steps, log, checkpoints).

`run_fit(config, scene=None, on_progress=None) -> FitResult` does all four and never prints: progress goes
to `on_progress` as `labelfield.progress.Progress` events ("load" frames, "fit" steps or seconds, "message").
`fit(config, scene, console, on_step)` is the same with rich output (the command layer's view of it).

One step (`step` counts completed steps; a checkpoint at step s holds the state after s steps):
    lr <- LRSchedule (LambdaLR)  ->  model.before_step(step)  ->  batch = dataset.sample(batch_rays, sampler)
    ->  [pose refinement: rays of frame f moved by its learnt correction (train/camera_opt.py)]
    ->  pred = model.render_rays(rays_o, rays_d)  ->  L = MSE + lambda CE (+ depth) (+ pose prior)  ->  Adam step.

Reproducibility: the model is initialised after `torch.manual_seed(seed)`; batches come from a dedicated CPU
`torch.Generator` seeded with `seed`; checkpoints hold the model, optimizer, sampler and global RNG states, so a
run resumed from step s reaches the same parameters as one that never stopped (CPU, same thread count). The
schedule depends on the step only — unless `time_budget` binds first, in which case the decay follows elapsed
time (whichever of steps or time runs out first), and such a run is not bit-reproducible.

Defaults: cosine decay (exponential spends most of a short run at a small lr), semantic weight 0.04, depth
loss off (it needs depth maps); benchmarks/ holds the measurements behind them.

Ctrl-C: the first SIGINT only sets a flag; the loop finishes the step it is in, saves a checkpoint and returns
with `interrupted=True`. A second Ctrl-C raises KeyboardInterrupt at once (nothing saved).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from labelfield.allocator import keep_large_blocks
from labelfield.devices import resolve_device
from labelfield.errors import LabelfieldError
from labelfield.progress import Progress, ProgressFn, message
from labelfield.run import ModelSpec, RunFolder, RunManifest, capture_rng, restore_rng
from labelfield.scene import Scene
from labelfield.train.camera_opt import CameraOptimizer, resolve_pose_refine, set_position_grad_weights
from labelfield.train.config import FitConfig
from labelfield.train.dataset import RayDataset
from labelfield.train.losses import compute_losses, psnr_from_mse
from labelfield.train.supervision import plan_supervision

if TYPE_CHECKING:
    from rich.console import Console


@dataclass
class FitResult:
    """What a fit did. `steps_run`, `seconds`, rates: this invocation; `step`, `total_seconds`: the whole run."""

    run_dir: Path
    step: int
    steps_run: int
    seconds: float
    total_seconds: float
    steps_per_s: float
    rays_per_s: float
    psnr: float
    loss: float
    interrupted: bool
    checkpoint: Path | None


# --- set-up helpers --------------------------------------------------------------------------------


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """torch intra-op threads: `threads`, else $OMP_NUM_THREADS, else every usable core. Returns the count."""
    n = threads
    if n <= 0:
        env = os.environ.get("OMP_NUM_THREADS", "")
        n = int(env) if env.isdigit() and int(env) > 0 else usable_cores()
    torch.set_num_threads(n)
    keep_large_blocks()  # no page faults on the per-step gradient buffers (labelfield.allocator)
    return n


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def lr_factor(step: int, progress: float, config: FitConfig) -> float:
    """Learning-rate multiplier: linear warm-up from 1/100 over `lr_warmup_steps`, then decay to
    `lr_final_ratio` as progress (fraction of the run done, in [0, 1]) goes from 0 to 1."""
    warm = 1.0
    if config.lr_warmup_steps > 0 and step < config.lr_warmup_steps:
        warm = 0.01 + 0.99 * step / config.lr_warmup_steps
    p = min(max(progress, 0.0), 1.0)
    r = config.lr_final_ratio
    if config.lr_schedule == "exponential":
        decay = r**p
    elif config.lr_schedule == "cosine":
        decay = r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p))
    else:
        decay = 1.0
    return warm * decay


def lr_progress(step: int, seconds: float, config: FitConfig) -> float:
    """Fraction of the run done at `step` after `seconds` of training: steps done / steps, or elapsed /
    time budget when that is further along (the schedule then follows whichever limit ends the run)."""
    p = step / config.steps
    if config.time_budget is not None:
        p = max(p, seconds / config.time_budget)
    return p


class LRSchedule:
    """`lr_factor` as a `torch.optim.lr_scheduler.LambdaLR` over each group's peak lr (`initial_lr`).

    The factor also depends on the run's progress (time-budget runs), so `advance(progress)` sets the
    progress of the next step before stepping the scheduler. Built at `step` (a resumed run's step), it sets
    the lrs of that step at once; nothing of it needs saving (step and progress determine it).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: FitConfig, step: int, progress: float) -> None:
        self.config = config
        self.progress = progress
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor, last_epoch=step - 1)

    def factor(self, step: int) -> float:
        return lr_factor(step, self.progress, self.config)

    def advance(self, progress: float) -> None:
        """After an optimizer step: the lrs of the next step, at `progress`."""
        self.progress = progress
        self.scheduler.step()


def make_optimizer(param_groups: list[dict[str, Any]], config: FitConfig) -> torch.optim.Optimizer:
    """Adam (fused where this PyTorch has it for the device, else foreach); each group remembers its peak lr.
    The groups carry the model's lr, eps and weight decay; `config.adam_eps`, when set, replaces every eps."""
    for g in param_groups:
        g.setdefault("lr", config.lr)
        g["initial_lr"] = g["lr"]
        if config.adam_eps is not None:
            g["eps"] = config.adam_eps
    eps = config.adam_eps if config.adam_eps is not None else config.model_config.adam_eps
    kw = dict(lr=config.lr, betas=(0.9, 0.99), eps=eps)
    try:
        return torch.optim.Adam(param_groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(param_groups, foreach=True, **kw)


@contextlib.contextmanager
def sigint_flag() -> Iterator[dict[str, bool]]:
    """While active, the first Ctrl-C sets flag["stop"] instead of raising; the second raises as usual."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# --- prepare -> state -> loop ----------------------------------------------------------------------
@dataclass
class Prepared:
    """Everything a fit needs before the model exists; nothing written yet."""

    config: FitConfig
    folder: RunFolder
    resuming: bool
    device: torch.device
    threads: int
    scene: Scene
    sparse: dict[int, np.ndarray]
    spec: ModelSpec
    checkpoint: dict[str, Any] | None
    """The checkpoint a resume starts from (CPU tensors), or None."""
    dataset: RayDataset
    pose_refine: bool = False
    """Learn per-frame camera corrections (`--pose-refine`, resolved for this scene)."""


@dataclass
class TrainState:
    """The state a training step changes (saved in every checkpoint)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    sampler: torch.Generator
    schedule: LRSchedule | None = None
    """The lr schedule (built by `initial_state` once the optimizer holds its resumed state)."""
    step: int = 0
    """Completed optimisation steps."""
    seconds: float = 0.0
    """Training seconds before this invocation (over resumes)."""
    priors: Any = None
    """`train.geometry_priors.GeometryPriors` when an RGB-only geometry prior is on (keypoint depth,
    distortion, opacity), else None and the step runs unchanged."""
    camera_opt: CameraOptimizer | None = None
    """Per-frame pose corrections when pose refinement is on (its own optimizer group), else None."""


def validate(config: FitConfig) -> tuple[RunFolder, bool]:
    """Check the options that need no data: the run folder, the counts. Returns (folder, resuming)."""
    resuming = config.resume is not None
    if not resuming and config.out is None:
        raise LabelfieldError("no run folder: pass --out RUN (or --resume RUN)")
    folder = RunFolder(Path(config.resume if resuming else config.out).expanduser())  # type: ignore[arg-type]
    if resuming and not folder.exists():
        raise LabelfieldError("cannot resume: not a run folder (no config.json)", folder.path)
    if not resuming:
        folder.check_new()
    if config.steps < 1 or config.batch_rays < 1:
        raise LabelfieldError("--steps and --batch-rays must be at least 1")
    if config.model not in _model_names():
        raise LabelfieldError(f"unknown model {config.model!r} (choose from {', '.join(_model_names())})")
    return folder, resuming


def _model_names() -> tuple[str, ...]:
    from labelfield.models import MODELS

    return MODELS


def prepare(config: FitConfig, scene: Scene | None = None, on_progress: ProgressFn | None = None) -> Prepared:
    """Validate `config`, load the scene (unless given), make the sparse labels, read the checkpoint a resume
    starts from, and cache the rays. Raises LabelfieldError for bad input; writes nothing."""
    from labelfield.labels import make_sparse_labels
    from labelfield.render.bounds import scene_bounds

    folder, resuming = validate(config)
    device = resolve_device(config.device)
    n_threads = set_threads(config.threads) if device.type == "cpu" else torch.get_num_threads()
    seed_everything(config.seed)

    if scene is None:
        if config.scene is None:
            raise LabelfieldError("no scene given (labelfield fit SCENE --out RUN)")
        from labelfield.formats import load_scene

        scene = load_scene(config.scene, downscale=config.downscale)
    scene.validate()
    sparse = make_sparse_labels(scene, config.labelled, config.label_density, config.label_noise, config.seed)
    # Depth auto|on|off, sensor noise, pseudo-labels (labelfield.train.supervision).
    supervision = plan_supervision(config, scene, sparse)
    message(on_progress, supervision.message)
    classes = scene.classes

    ckpt = None
    if resuming and (found := folder.latest_checkpoint()) is not None:
        from labelfield.run import load_checkpoint

        ckpt = load_checkpoint(found[1], map_location="cpu")
    if ckpt is not None:
        spec = ModelSpec.from_dict(ckpt["model_args"])
    else:
        bg_index = None
        if classes.background_class is not None:
            bg_index = int(classes.to_index(np.array([classes.background_class]))[0])
        aabb, near = scene_bounds(scene)
        spec = ModelSpec(
            name=config.model,
            aabb=np.asarray(aabb, np.float64).reshape(2, 3).tolist(),
            near=float(near),
            num_classes=classes.num_classes,
            background_class_index=bg_index,
        )
    if spec.num_classes != classes.num_classes:
        raise LabelfieldError("the scene's class table differs from the run's", folder.path)
    pose_refine, pose_msg = resolve_pose_refine(getattr(config, "pose_refine", "off"), scene)
    if pose_refine and ckpt is not None and "camera_opt" not in ckpt:  # a run started before pose refinement
        pose_refine, pose_msg = False, "pose refinement: off (the run being resumed was fitted without it)"
    if pose_msg:
        message(on_progress, pose_msg)

    n = len(scene.frames)

    def on_frame(i: int) -> None:
        if on_progress is not None:
            on_progress(Progress("load", i + 1, n, "frames", final=i + 1 == n))

    dataset = RayDataset(
        scene,
        sparse,
        supervision.depth,
        config.labelled_ray_fraction,
        on_frame=on_frame,
        class_balance=config.class_balance,
        depth_fn=supervision.depth_fn,
        pseudo=supervision.pseudo,
        pseudo_fraction=config.pseudo_fraction,
        pseudo_min_confidence=config.pseudo_min_confidence,
    )
    return Prepared(config, folder, resuming, device, n_threads, scene, sparse, spec, ckpt, dataset, pose_refine)


def initial_state(prep: Prepared) -> TrainState:
    """A new model (initialised under the seed) or the resumed one, its optimizer and the batch sampler."""
    from labelfield.models import build_model

    config, spec = prep.config, prep.spec
    model = build_model(
        spec.name, config.model_config, spec.aabb_array(), spec.num_classes, spec.background_class_index, spec.near
    ).to(prep.device)
    groups = model.param_groups(config.lr)
    camera_opt = None
    if prep.pose_refine:
        camera_opt = CameraOptimizer(len(prep.scene.frames)).to(prep.device)
        groups.append(camera_opt.param_group(config.pose_lr))
    optimizer = make_optimizer(groups, config)
    sampler = torch.Generator().manual_seed(config.seed)
    state = TrainState(model, optimizer, sampler, camera_opt=camera_opt)
    if prep.checkpoint is not None:
        ckpt = prep.checkpoint
        model.load_state_dict(ckpt["model"])
        if camera_opt is not None:
            camera_opt.load_state_dict(ckpt["camera_opt"])
        optimizer.load_state_dict(ckpt["optimizer"])
        restore_rng(ckpt["rng"], sampler)
        state.step, state.seconds = int(ckpt["step"]), float(ckpt.get("seconds", 0.0))
        prep.checkpoint = None  # the tensors are in the model now
    progress = lr_progress(state.step, state.seconds, config)
    state.schedule = LRSchedule(optimizer, config, state.step, progress)
    return state


def write_run(prep: Prepared, state: TrainState) -> None:
    """Write config.json, scene.json and the sparse labels; drop log lines past the resumed step."""
    config, folder = prep.config, prep.folder
    folder.path.mkdir(parents=True, exist_ok=True)
    saved = replace(config, out=folder.path.resolve(), resume=None)
    if saved.scene is not None:
        saved = replace(saved, scene=Path(saved.scene).resolve())
    folder.write_config(saved.to_dict())
    label_spec = {
        "labelled": config.labelled,
        "density": config.label_density,
        "noise": config.label_noise,
        "seed": config.seed,
    }
    scene = prep.scene
    folder.write_manifest(
        RunManifest(
            scene=None if config.scene is None else str(Path(config.scene).resolve()),
            format=scene.format,
            downscale=int(config.downscale),
            classes=scene.classes.to_json(),
            frames=scene.names,
            labelled=[int(i) for i in sorted(prep.sparse)],
            label_spec=label_spec,
            aabb=prep.spec.aabb,
            near=prep.spec.near,
        )
    )
    if not folder.has_sparse_labels():
        folder.save_sparse_labels(prep.sparse)
    folder.truncate_log(state.step)


def train_step(
    state: TrainState, config: FitConfig, dataset: RayDataset, device: torch.device, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step at `step` (at the lrs `state.schedule` set). Returns (loss, mse) tensors on the
    device (no sync)."""
    state.model.before_step(step)
    priors = state.priors
    if priors is None:
        batch = dataset.sample(config.batch_rays, state.sampler).to(device)
    else:
        batch = priors.sample(dataset, config.batch_rays, state.sampler).to(device)
    rays_o, rays_d = batch.rays_o, batch.rays_d
    progress = state.schedule.progress if state.schedule is not None else step / max(config.steps, 1)
    if state.camera_opt is not None:  # the rays where the corrected cameras put them (differentiable)
        set_position_grad_weights(state.model, progress, config.pose_coarse_to_fine)
        rays_o, rays_d = state.camera_opt.apply(rays_o, rays_d, batch.frame)
    # near: the model's (the scene's unless set)
    pred = state.model.render_rays(rays_o, rays_d, **(priors.render_kwargs if priors is not None else {}))
    losses = compute_losses(
        pred,
        batch.rgb,
        batch.labels,
        config.semantic_weight,
        batch.depth,
        batch.z_scale,
        config.depth_weight,
        label_weight=batch.label_weight,
    )
    total = losses.total
    if priors is not None:
        total = total + priors.loss(pred, len(batch), progress)
    if state.camera_opt is not None and config.pose_penalty > 0:
        total = total + config.pose_penalty * state.camera_opt.penalty()
    state.optimizer.zero_grad(set_to_none=True)
    total.backward()
    state.optimizer.step()
    return total.detach(), losses.mse


def save_state(prep: Prepared, state: TrainState, step: int, seconds: float) -> Path:
    """Checkpoint `state` at `step` (pruning to `keep_checkpoints`)."""
    ckpt = {
        "seconds": seconds,
        "model": state.model.state_dict(),
        "model_args": prep.spec.to_dict(),
        "optimizer": state.optimizer.state_dict(),
        "rng": capture_rng(state.sampler),
    }
    if state.camera_opt is not None:  # corrections (resume) and the refined poses (load_run: annotate, eval)
        ckpt["camera_opt"] = state.camera_opt.state_dict()
        ckpt["poses"] = torch.from_numpy(state.camera_opt.refined_poses(prep.scene.poses()))
    return prep.folder.save_checkpoint(step, ckpt, keep=prep.config.keep_checkpoints)


class _Window:
    """Loss and MSE tensors since the last log line (kept on the device: no sync per step)."""

    def __init__(self, step: int) -> None:
        self.reset(step, time.perf_counter())

    def reset(self, step: int, t: float) -> None:
        self.loss: list[torch.Tensor] = []
        self.mse: list[torch.Tensor] = []
        self.step, self.t = step, t

    def add(self, loss: torch.Tensor, mse: torch.Tensor) -> None:
        self.loss.append(loss)
        self.mse.append(mse)

    def means(self) -> tuple[float, float, float] | None:
        """(loss, mse, psnr) means, or None when empty."""
        if not self.loss:
            return None
        mse = float(torch.stack(self.mse).mean())
        return float(torch.stack(self.loss).mean()), mse, psnr_from_mse(mse)


def train_loop(prep: Prepared, state: TrainState, on_progress: ProgressFn | None = None) -> FitResult:
    """Train from `state.step` to `config.steps` (or the time budget), logging, checkpointing, and stopping
    cleanly at the first Ctrl-C (checkpoint saved, `interrupted=True`)."""
    cfg, folder = prep.config, prep.folder
    start_step, seconds_before = state.step, state.seconds
    state.model.train()
    step = start_step
    t0 = time.perf_counter()
    paused = 0.0  # checkpoint writing is not training time
    window = _Window(step)
    last_loss, last_psnr = float("nan"), float("nan")
    shown: dict[str, float] = {}
    interrupted, ckpt = False, None

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - t0 - paused

    def log_window() -> None:
        nonlocal last_loss, last_psnr
        m = window.means()
        if m is None:
            return
        now = time.perf_counter()
        last_loss, mse, last_psnr = m
        dt = now - window.t
        sps = (step - window.step) / dt if dt > 0 else 0.0
        g = state.optimizer.param_groups[0]
        line = {
            "step": step,
            "loss": last_loss,
            "mse": mse,
            "psnr": last_psnr,
            "lr": g["lr"] / g["initial_lr"] * cfg.lr,
            "steps_per_s": sps,
            "rays_per_s": sps * cfg.batch_rays,
            "seconds": elapsed(),
        }
        if state.camera_opt is not None:  # mean size of the pose corrections
            a = state.camera_opt.adjustment.detach()
            line["pose_rot_deg"] = float(a[:, 3:].norm(dim=-1).mean()) * 180.0 / math.pi
            line["pose_trans"] = float(a[:, :3].norm(dim=-1).mean())
        folder.append_log(line)
        window.reset(step, now)

    def report(final: bool = False, advanced: bool = False) -> None:
        if on_progress is not None:
            event = _fit_event(cfg, step, start_step, elapsed(), time.perf_counter() - t0 - paused, shown, final)
            event.info["advanced"] = advanced  # a step was just completed (not the start or the end)
            on_progress(event)

    def save() -> Path:
        nonlocal paused
        t = time.perf_counter()
        path = save_state(prep, state, step, elapsed())
        paused += time.perf_counter() - t
        return path

    if start_step >= cfg.steps:
        message(on_progress, f"run is already at step {start_step} of {cfg.steps}: nothing to do")
    report()
    with sigint_flag() as flag:
        while step < cfg.steps:
            if flag["stop"]:
                interrupted = True
                break
            if cfg.time_budget is not None and elapsed() >= cfg.time_budget:
                break
            loss, mse = train_step(state, cfg, prep.dataset, prep.device, step)
            step += 1
            window.add(loss, mse)
            if step % cfg.log_every == 0 or step == cfg.steps:
                log_window()
            if step % 10 == 0 or step - start_step <= 10:
                m = window.means()
                shown = {"loss": m[0], "psnr": m[2]} if m else {"loss": last_loss, "psnr": last_psnr}
            report(advanced=True)
            if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                ckpt = save()
            state.schedule.advance(lr_progress(step, elapsed(), cfg))  # the lrs of the next step
    log_window()
    if ckpt is None or not ckpt.name.endswith(f"{step:07d}.pt"):
        ckpt = save()
    report(final=True)
    state.step = step

    seconds = time.perf_counter() - t0 - paused
    steps_run = step - start_step
    if interrupted:
        message(
            on_progress,
            f"interrupted at step {step}: checkpoint saved to {ckpt}\n"
            f"continue with: labelfield fit --resume {folder.path}",
            "warning",
        )
    return FitResult(
        run_dir=folder.path,
        step=step,
        steps_run=steps_run,
        seconds=seconds,
        total_seconds=seconds_before + seconds,
        steps_per_s=steps_run / seconds if seconds > 0 else 0.0,
        rays_per_s=steps_run * cfg.batch_rays / seconds if seconds > 0 else 0.0,
        psnr=last_psnr,
        loss=last_loss,
        interrupted=interrupted,
        checkpoint=ckpt,
    )


def _fit_event(
    cfg: FitConfig, step: int, start: int, elapsed: float, run_seconds: float, shown: dict[str, float], final: bool
) -> Progress:
    """Progress against whichever limit binds: steps, or seconds of the time budget when that is nearer."""
    sps = (step - start) / run_seconds if run_seconds > 0 else 0.0
    by_time = cfg.time_budget is not None and (
        elapsed / cfg.time_budget >= step / cfg.steps
        or (sps > 0 and (cfg.steps - step) / sps > cfg.time_budget - elapsed)
    )
    if by_time:
        assert cfg.time_budget is not None
        done, total, unit, eta = min(elapsed, cfg.time_budget), cfg.time_budget, "s", cfg.time_budget - elapsed
    else:
        done, total, unit = step, cfg.steps, "steps"
        eta = (cfg.steps - step) / sps if sps > 0 else None
    info = {
        "step": step,
        "steps": cfg.steps,
        "steps_per_s": sps,
        "eta_s": None if eta is None else max(eta, 0.0),
        **shown,
    }
    return Progress("fit", done, total, unit, info, final)


def summary(prep: Prepared) -> str:
    """One line describing the fit about to run."""
    d, c = prep.dataset, prep.config
    return (
        f"fit: {len(prep.scene.frames)} frames, {d.num_pixels:,} pixels ({d.nbytes() / 2**20:.0f} MiB cached), "
        f"{len(prep.sparse)} labelled frames ({d.num_labelled_pixels:,} labelled pixels), "
        f"{prep.scene.classes.num_classes} classes; {c.model} on {prep.device}"
        + (f" ({prep.threads} threads)" if prep.device.type == "cpu" else "")
    )


def run_fit(config: FitConfig, scene: Scene | None = None, on_progress: ProgressFn | None = None) -> FitResult:
    """Fit a model as `config` says and write the run folder (config.out, or config.resume to continue one).

    Args:
        config: the resolved options (for a resume: the run's config with any overrides applied).
        scene: an in-memory scene to use instead of loading `config.scene` (tests, benchmarks).
        on_progress: receives `Progress` events (frames loading, fit steps, messages); nothing is printed.

    Returns a FitResult. Raises LabelfieldError for bad input, before anything is written.
    """
    prep = prepare(config, scene, on_progress)
    state = initial_state(prep)
    write_run(prep, state)
    if state.step < config.steps:
        message(on_progress, summary(prep))
        from labelfield.train.geometry_priors import build_geometry_priors

        state.priors = build_geometry_priors(
            prep.config, prep.scene, prep.dataset, state.model, prep.folder.path, on_progress
        )
    return train_loop(prep, state, on_progress)


def fit(
    config: FitConfig,
    scene: Scene | None = None,
    console: Console | None = None,
    on_step: Callable[[int], None] | None = None,
    on_progress: ProgressFn | None = None,
) -> FitResult:
    """`run_fit` with terminal output: progress bars (when `config.progress`) and messages on `console`
    (default: stderr), unless `on_progress` is given; `on_step(step)` after every step."""
    if on_progress is None:
        from labelfield.console import RichProgress

        show = RichProgress(console, bars=config.progress)
    else:
        show = on_progress

    if on_step is None:
        with _closing(show):
            return run_fit(config, scene, show)

    def with_step(event: Progress) -> None:
        show(event)
        if event.stage == "fit" and event.info.get("advanced"):
            on_step(int(event.info["step"]))

    with _closing(show):
        return run_fit(config, scene, with_step)


@contextlib.contextmanager
def _closing(show: Any) -> Iterator[None]:
    try:
        yield
    finally:
        if hasattr(show, "close"):
            show.close()
