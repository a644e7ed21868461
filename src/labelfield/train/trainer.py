"""The training loop: data, model, Adam with warm-up and decay, progress, log, checkpoints, Ctrl-C, resume.

One step (`step` counts completed steps; a checkpoint at step s holds the state after s steps):
    lr <- schedule(step)  ->  model.before_step(step)  ->  batch = dataset.sample(batch_rays, sampler)
    ->  pred = model.render_rays(rays_o, rays_d)  ->  L = MSE + lambda CE (+ depth)  ->  Adam step.

Reproducibility: the model is initialised after `torch.manual_seed(seed)`; batches come from a dedicated CPU
`torch.Generator` seeded with `seed`; checkpoints hold the model, optimizer, sampler and global RNG states, so a
run resumed from step s reaches the same parameters as one that never stopped (CPU, same thread count). The
schedule depends on the step only — unless `time_budget` binds first, in which case the decay follows elapsed
time (whichever of steps or time runs out first), and such a run is not bit-reproducible.

Defaults (measured on the toy room, 60 frames 64x48, every:10, 300 steps of 1024 rays, 2 shared cores; mIoU of
5 unlabelled frames): cosine decay 0.42 vs exponential 0.22 (exponential spends most of a short run at a small
lr: train PSNR 23.7 vs 20.2 dB); semantic weight 0.04 gave 0.44 and 0.1 gave 0.42 with cosine, a tie at this
length (geometry, not lambda, limits it); depth loss 0.53 (off by default, as the issue asks).

Ctrl-C: the first SIGINT only sets a flag; the loop finishes the step it is in, saves a checkpoint and returns
with `interrupted=True`. A second Ctrl-C raises KeyboardInterrupt at once (nothing saved).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from labelfield.errors import LabelfieldError
from labelfield.io import atomic_path
from labelfield.run import (
    CONFIG_FILE,
    LOG_FILE,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    scene_info,
    write_scene_info,
)
from labelfield.scene import Scene
from labelfield.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from labelfield.train.config import FitConfig
from labelfield.train.dataset import RayDataset
from labelfield.train.losses import compute_losses, psnr_from_mse
from labelfield.train.supervision import plan_supervision


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
def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; "cuda" without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LabelfieldError("--device cuda was asked for, but this PyTorch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise LabelfieldError(f"unknown device {name!r} (auto, cpu or cuda)")
    return torch.device(name)


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


def make_optimizer(param_groups: list[dict[str, Any]], config: FitConfig) -> torch.optim.Optimizer:
    """Adam (fused where this PyTorch has it for the device, else foreach); each group remembers its peak lr."""
    for g in param_groups:
        g.setdefault("lr", config.lr)
        g["initial_lr"] = g["lr"]
    kw = dict(lr=config.lr, betas=(0.9, 0.99), eps=config.adam_eps)
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


def check_out_dir(out: Path) -> None:
    """A new run needs an absent or empty folder: never mix two runs' checkpoints."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LabelfieldError("run folder exists and is not empty; use --resume to continue it, or another --out", out)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past `step` (written after the checkpoint a resume starts from)."""
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


# --- the fit ---------------------------------------------------------------------------------------
def fit(
    config: FitConfig,
    scene: Scene | None = None,
    console: Console | None = None,
    on_step: Callable[[int], None] | None = None,
) -> FitResult:
    """Fit a model as `config` says and write the run folder (config.out, or config.resume to continue one).

    Args:
        config: the resolved options (for a resume: the run's config with any overrides applied).
        scene: an in-memory scene to use instead of loading `config.scene` (tests, benchmarks).
        console: where progress and messages go (default: stderr).
        on_step: called with the completed step count after every step (tests, benchmarks).

    Returns a FitResult. Raises LabelfieldError for bad input, before anything is written.
    """
    from labelfield.labels import make_sparse_labels
    from labelfield.models import build_model
    from labelfield.render.bounds import scene_bounds

    console = console or Console(stderr=True)
    resuming = config.resume is not None
    run_dir = Path(config.resume if resuming else (config.out or "")).expanduser()
    if not resuming and config.out is None:
        raise LabelfieldError("no run folder: pass --out RUN (or --resume RUN)")
    if resuming and not (run_dir / CONFIG_FILE).is_file():
        raise LabelfieldError(f"cannot resume: not a run folder (no {CONFIG_FILE})", run_dir)
    if not resuming:
        check_out_dir(run_dir)
    if config.steps < 1 or config.batch_rays < 1:
        raise LabelfieldError("--steps and --batch-rays must be at least 1")

    device = resolve_device(config.device)
    n_threads = set_threads(config.threads) if device.type == "cpu" else torch.get_num_threads()
    seed_everything(config.seed)

    # Everything that can fail on bad input happens before the run folder is touched.
    if scene is None:
        if config.scene is None:
            raise LabelfieldError("no scene given (labelfield fit SCENE --out RUN)")
        from labelfield.formats import load_scene

        scene = load_scene(config.scene, downscale=config.downscale)
    scene.validate()
    sparse = make_sparse_labels(scene, config.labelled, config.label_density, config.label_noise, config.seed)
    # Depth auto|on|off, sensor noise, pseudo-labels (labelfield.train.supervision).
    supervision = plan_supervision(config, scene, sparse)
    console.print(supervision.message)
    classes = scene.classes
    bg_index = None
    if classes.background_class is not None:
        bg_index = int(classes.to_index(np.array([classes.background_class]))[0])

    ckpt_state = None
    if resuming and (found := latest_checkpoint(run_dir)) is not None:
        ckpt_state = load_checkpoint(found[1], map_location="cpu")
    if ckpt_state is not None:
        model_args = dict(ckpt_state["model_args"])
    else:
        aabb, near = scene_bounds(scene)
        model_args = {
            "name": config.model,
            "aabb": np.asarray(aabb, np.float64).reshape(2, 3).tolist(),
            "near": float(near),
            "num_classes": classes.num_classes,
            "background_class_index": bg_index,
        }
    config = _with_scene_near(config, model_args["near"])
    if model_args["num_classes"] != classes.num_classes:
        raise LabelfieldError("the scene's class table differs from the run's", run_dir)

    with _loading_progress(console, len(scene.frames), config.progress) as advance:
        dataset = RayDataset(
            scene, sparse, supervision.depth, config.labelled_ray_fraction, on_frame=advance,
            class_balance=config.class_balance, depth_fn=supervision.depth_fn, pseudo=supervision.pseudo,
            pseudo_fraction=config.pseudo_fraction, pseudo_min_confidence=config.pseudo_min_confidence,
        )  # fmt: skip

    model = build_model(
        model_args["name"],
        config.model_config,
        np.asarray(model_args["aabb"], np.float64),
        model_args["num_classes"],
        model_args["background_class_index"],
    ).to(device)
    optimizer = make_optimizer(model.param_groups(config.lr), config)
    sampler = torch.Generator().manual_seed(config.seed)
    start_step, seconds_before = 0, 0.0
    if ckpt_state is not None:
        model.load_state_dict(ckpt_state["model"])
        optimizer.load_state_dict(ckpt_state["optimizer"])
        restore_rng(ckpt_state["rng"], sampler)
        start_step, seconds_before = int(ckpt_state["step"]), float(ckpt_state.get("seconds", 0.0))
        del ckpt_state

    run_dir.mkdir(parents=True, exist_ok=True)
    saved_config = replace(config, out=run_dir.resolve(), resume=None)
    if saved_config.scene is not None:
        saved_config = replace(saved_config, scene=Path(saved_config.scene).resolve())
    saved_config.save(run_dir / CONFIG_FILE)
    label_spec = {
        "labelled": config.labelled,
        "density": config.label_density,
        "noise": config.label_noise,
        "seed": config.seed,
    }
    info = scene_info(
        scene, config.scene, config.downscale, sorted(sparse), label_spec, model_args["aabb"], model_args["near"]
    )
    write_scene_info(run_dir, info)
    log_path = run_dir / LOG_FILE
    _truncate_log(log_path, start_step)

    if start_step >= config.steps:
        console.print(f"run is already at step {start_step} of {config.steps}: nothing to do")
    else:
        console.print(
            f"fit: {len(scene.frames)} frames, {dataset.num_pixels:,} pixels "
            f"({dataset.nbytes() / 2**20:.0f} MiB cached), {len(sparse)} labelled frames "
            f"({dataset.num_labelled_pixels:,} labelled pixels), {classes.num_classes} classes; "
            f"{config.model} on {device}" + (f" ({n_threads} threads)" if device.type == "cpu" else "")
        )

    loop = _Loop(config, model, optimizer, dataset, sampler, device, model_args["near"], run_dir, model_args)
    return loop.run(start_step, seconds_before, console, on_step)


def _with_scene_near(config: FitConfig, near: float | None) -> FitConfig:
    """Put the scene's near distance into the model config (unless the user set one), so the saved config
    renders with the same near plane as training: render_image calls render_rays without `near`."""
    mc = config.model_config
    if near is None or not hasattr(mc, "near") or mc.near != type(mc)().near:
        return config
    return replace(config, model_config=replace(mc, near=float(near)))


@contextlib.contextmanager
def _loading_progress(console: Console, n: int, show: bool) -> Iterator[Callable[[int], None]]:
    if not show:
        yield lambda i: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("loading frames"), BarColumn(), MofNCompleteColumn(), console=console, transient=True
    ) as p:
        task = p.add_task("load", total=n)
        yield lambda i: p.update(task, completed=i + 1)


class _Loop:
    """The optimisation loop and its bookkeeping (kept apart from set-up so each stays readable)."""

    def __init__(
        self,
        config: FitConfig,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: RayDataset,
        sampler: torch.Generator,
        device: torch.device,
        near: float | None,
        run_dir: Path,
        model_args: dict[str, Any],
    ) -> None:
        self.config, self.model, self.optimizer = config, model, optimizer
        self.dataset, self.sampler, self.device, self.near = dataset, sampler, device, near
        self.run_dir, self.model_args = run_dir, model_args

    def save(self, step: int, seconds: float) -> Path:
        state = {
            "step": step,
            "seconds": seconds,
            "model": self.model.state_dict(),
            "model_args": self.model_args,
            "optimizer": self.optimizer.state_dict(),
            "rng": capture_rng(self.sampler),
        }
        path = save_checkpoint(checkpoint_path(self.run_dir, step), state)
        keep = self.config.keep_checkpoints
        if keep > 0:
            for _, old in list_checkpoints(self.run_dir)[:-keep]:
                old.unlink(missing_ok=True)
        return path

    def set_lr(self, step: int, progress: float) -> float:
        f = lr_factor(step, progress, self.config)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
        return self.config.lr * f

    def train_step(self, step: int, lr_progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        self.set_lr(step, lr_progress)
        self.model.before_step(step)
        batch = self.dataset.sample(cfg.batch_rays, self.sampler).to(self.device)
        pred = self.model.render_rays(batch.rays_o, batch.rays_d)  # near: in the model config (see fit)
        losses = compute_losses(
            pred, batch.rgb, batch.labels, cfg.semantic_weight, batch.depth, batch.z_scale, cfg.depth_weight,
            label_weight=batch.label_weight,
        )
        self.optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        self.optimizer.step()
        return losses.total.detach(), losses.mse

    def run(
        self, start_step: int, seconds_before: float, console: Console, on_step: Callable[[int], None] | None
    ) -> FitResult:
        cfg = self.config
        self.model.train()
        step = start_step
        t0 = time.perf_counter()
        paused = 0.0  # checkpoint writing is not training time
        window: dict[str, Any] = {"loss": [], "mse": [], "n": 0, "t": t0, "step": step}  # device tensors: no sync
        last = {"loss": float("nan"), "psnr": float("nan")}
        interrupted, ckpt = False, None
        elapsed = lambda: seconds_before + time.perf_counter() - t0 - paused

        log = open(self.run_dir / LOG_FILE, "a")  # noqa: SIM115 - closed in finally
        progress, task = _train_progress(console, cfg, start_step)
        try:
            with sigint_flag() as flag:
                while step < cfg.steps:
                    if flag["stop"]:
                        interrupted = True
                        break
                    if cfg.time_budget is not None and elapsed() >= cfg.time_budget:
                        break
                    lr_progress = step / cfg.steps
                    if cfg.time_budget is not None:
                        lr_progress = max(lr_progress, elapsed() / cfg.time_budget)
                    loss, mse = self.train_step(step, lr_progress)
                    step += 1
                    window["loss"].append(loss)
                    window["mse"].append(mse)
                    window["n"] += 1
                    if on_step is not None:
                        on_step(step)
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        self._log(log, window, last, step, elapsed())
                    if progress is not None and (step % 10 == 0 or step - start_step <= 10):
                        shown = _window_means(window) or last
                        progress.update(task, completed=step, info=_info(shown, step, start_step, t0, paused))
                    if step % cfg.checkpoint_every == 0 and step < cfg.steps:
                        t = time.perf_counter()
                        ckpt = self.save(step, elapsed())
                        paused += time.perf_counter() - t
            if window["n"]:
                self._log(log, window, last, step, elapsed())
            if ckpt is None or not ckpt.name.endswith(f"{step:07d}.pt"):
                t = time.perf_counter()
                ckpt = self.save(step, elapsed())
                paused += time.perf_counter() - t
        finally:
            log.close()
            if progress is not None:
                progress.update(task, completed=step)
                progress.stop()

        seconds = time.perf_counter() - t0 - paused
        steps_run = step - start_step
        if interrupted:
            console.print(
                f"[yellow]interrupted[/] at step {step}: checkpoint saved to {ckpt}\n"
                f"continue with: labelfield fit --resume {self.run_dir}"
            )
        return FitResult(
            run_dir=self.run_dir,
            step=step,
            steps_run=steps_run,
            seconds=seconds,
            total_seconds=seconds_before + seconds,
            steps_per_s=steps_run / seconds if seconds > 0 else 0.0,
            rays_per_s=steps_run * cfg.batch_rays / seconds if seconds > 0 else 0.0,
            psnr=last["psnr"],
            loss=last["loss"],
            interrupted=interrupted,
            checkpoint=ckpt,
        )

    def _log(self, log: Any, window: dict[str, Any], last: dict[str, float], step: int, seconds: float) -> None:
        """Average the window since the last log line, write it, and reset the window."""
        n = window["n"]
        if n == 0:
            return
        now = time.perf_counter()
        mse = float(torch.stack(window["mse"]).mean())
        last["loss"], last["psnr"] = float(torch.stack(window["loss"]).mean()), psnr_from_mse(mse)
        dt = now - window["t"]
        sps = (step - window["step"]) / dt if dt > 0 else 0.0
        lr = self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0]["initial_lr"] * self.config.lr
        row = {
            "step": step,
            "loss": last["loss"],
            "mse": mse,
            "psnr": last["psnr"],
            "lr": lr,
            "steps_per_s": sps,
            "rays_per_s": sps * self.config.batch_rays,
            "seconds": seconds,
        }
        log.write(json.dumps(row) + "\n")
        log.flush()
        window.update(loss=[], mse=[], n=0, t=now, step=step)


def _window_means(window: dict[str, Any]) -> dict[str, float] | None:
    """Mean loss and PSNR of the steps since the last log line (for the progress bar), or None."""
    if not window["n"]:
        return None
    mse = float(torch.stack(window["mse"]).mean())
    return {"loss": float(torch.stack(window["loss"]).mean()), "psnr": psnr_from_mse(mse)}


def _info(last: dict[str, float], step: int, start: int, t0: float, paused: float) -> str:
    dt = time.perf_counter() - t0 - paused
    sps = (step - start) / dt if dt > 0 else 0.0
    return f"loss {last['loss']:.4f}  PSNR {last['psnr']:.2f} dB  {sps:.1f} steps/s"


def _train_progress(console: Console, cfg: FitConfig, start: int) -> tuple[Any, Any]:
    if not cfg.progress:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("fit"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
    )
    progress.start()
    task = progress.add_task("fit", total=cfg.steps, completed=start, info="")
    return progress, task
