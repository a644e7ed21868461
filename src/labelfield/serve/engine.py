"""The serve engine: one field trained online from the strokes, rendered on request, checkpointed, exported.

Threading (why one thread owns the model): a single worker thread runs the training steps *and* every render
(previews, thumbnails, export frames). HTTP handlers put a job in its queue and wait for the answer, so the
model is never read while Adam is writing it, and no lock can starve the renderer. A job waits at most one
training step. New strokes reach the ray dataset the same way, between steps (`OnlineRayDataset`).

Training starts when the server opens, before any stroke: colour (and depth) need no labels, and a field
whose geometry is already in place propagates the first stroke within seconds. Labels join as soon as they
are drawn. The learning rate warms up, follows the library's schedule over `config.steps` and then stays at
its final ratio (serve runs default to 0.2 of the peak, so late strokes still move the field).

Every import of training internals (trainer, dataset, losses, checkpoints, run folder) is in this module, so
a refactor of those needs to touch only this file.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labelfield.annotate.frames import labels_from_render
from labelfield.errors import LabelfieldError
from labelfield.io import read_json, write_json
from labelfield.models import build_model
from labelfield.render.bounds import scene_bounds
from labelfield.render.chunked import render_image, render_labels_image
from labelfield.run import (
    CONFIG_FILE,
    SCENE_FILE,
    RunFolder,
    RunManifest,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
)
from labelfield.scene import ClassTable, Scene
from labelfield.serve.online import OnlineRayDataset
from labelfield.serve.strokes import StrokeStore
from labelfield.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from labelfield.train.config import FitConfig
from labelfield.train.losses import compute_losses
from labelfield.train.trainer import lr_factor, make_optimizer, resolve_device, seed_everything, set_threads

CLASSES_FILE = "classes.json"  # the page's class table (added / renamed / recoloured classes)
SERVE_FILE = "serve.json"  # marks a run folder written by serve


@dataclass
class Prediction:
    """A rendered prediction of one frame at some size: labels (h, w) original ids, confidence (h, w) in [0, 1];
    depth (h, w) z-depth in metres (0 = no surface), rendered only for frames whose scene has no depth (the
    3D view's geometry), else None."""

    frame: int
    step: int
    time: float
    labels: np.ndarray
    confidence: np.ndarray
    opacity: np.ndarray
    depth: np.ndarray | None = None


@dataclass
class _Job:
    fn: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


def serve_config(scene_path: Path, run_dir: Path, scene: Scene, batch_rays: int | None = None) -> FitConfig:
    """The FitConfig of a new serve run: the fit defaults, depth loss on when the scene has depth."""
    cfg = FitConfig(
        scene=scene_path.resolve(),
        out=run_dir.resolve(),
        depth_loss=scene.frames[0].has_depth(),
        lr_final_ratio=0.2,
        steps=4000,
        batch_rays=2048,  # half the fit default: twice the updates per second, what a person waits for
        labelled_ray_fraction=0.5,  # few stroked pixels: give them half of every batch
        progress=False,
    )
    if batch_rays:
        cfg = replace(cfg, batch_rays=int(batch_rays))
    return cfg


def check_run(run_dir: Path, scene: Scene) -> None:
    """Refuse a run folder that belongs to another scene, or a path that is not a folder (nothing written)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise LabelfieldError("run path exists and is not a folder", run_dir)
    info_path = run_dir / SCENE_FILE
    if info_path.is_file():
        info = read_json(info_path)
        if list(info.get("frames", [])) != scene.names:
            raise LabelfieldError(
                f"this run was made on another scene ({len(info.get('frames', []))} frames, "
                f"{info.get('scene')}); use another --run",
                run_dir,
            )
    elif (
        run_dir.is_dir()
        and any(run_dir.iterdir())
        and not (run_dir / SERVE_FILE).is_file()
        and not (run_dir / CONFIG_FILE).is_file()
    ):
        raise LabelfieldError("run folder exists, is not empty and is not a labelfield run; use another --run", run_dir)


def load_classes(run_dir: Path, scene: Scene) -> ClassTable:
    """RUN/classes.json when the page edited the table, else the scene's."""
    path = run_dir / CLASSES_FILE
    if not path.is_file():
        return scene.classes
    try:
        table = ClassTable.from_json(read_json(path))
    except (KeyError, TypeError, ValueError, LabelfieldError) as e:
        raise LabelfieldError(f"malformed class table ({e})".splitlines()[0], path) from None
    if not set(scene.classes.ids) <= set(table.ids):
        raise LabelfieldError("class table lacks some of the scene's class ids", path)
    return table


class Engine:
    """The model, optimizer, online dataset and the worker thread of one serve session.

    Args:
        scene: the loaded scene; scene_path: its folder (saved in the run).
        run_dir: RUN; created on `start` (never before every check has passed).
        device, threads: as for `labelfield fit`.
        preview_size: longest side of the current frame's prediction; thumb_size: of the strip's thumbnails.
        refresh_s: a frame's prediction is re-rendered when older than this and the model has moved.
        checkpoint_s: seconds of training between checkpoints.
    """

    def __init__(
        self,
        scene: Scene,
        scene_path: Path,
        run_dir: Path,
        device: str = "auto",
        threads: int = 0,
        preview_size: int = 160,
        thumb_size: int = 96,
        refresh_s: float = 2.0,
        checkpoint_s: float = 30.0,
        batch_rays: int | None = None,
        train: bool = True,
    ) -> None:
        self.scene, self.scene_path, self.run_dir = scene, Path(scene_path), Path(run_dir)
        check_run(self.run_dir, scene)
        self.classes = load_classes(self.run_dir, scene)
        self.store = StrokeStore(self.run_dir, scene, self.classes)  # replays the log; bad log: exit 2
        if (self.run_dir / CONFIG_FILE).is_file():
            self.config = FitConfig.load(self.run_dir / CONFIG_FILE)
            if batch_rays:
                self.config = replace(self.config, batch_rays=int(batch_rays))
        else:
            self.config = serve_config(self.scene_path, self.run_dir, scene, batch_rays)
        self.ckpt_state = None
        if (found := latest_checkpoint(self.run_dir)) is not None:
            self.ckpt_state = load_checkpoint(found[1], map_location="cpu")
            if int(self.ckpt_state["model_args"]["num_classes"]) != self.classes.num_classes:
                raise LabelfieldError("the checkpoint's class count differs from the class table", found[1])
        self.device = resolve_device(device)
        self.threads = set_threads(threads) if self.device.type == "cpu" else torch.get_num_threads()
        self.preview_size, self.thumb_size = int(preview_size), int(thumb_size)
        self.refresh_s, self.checkpoint_s, self.train_enabled = float(refresh_s), float(checkpoint_s), bool(train)
        self.jobs: queue.Queue[_Job] = queue.Queue()
        self.stop_event = threading.Event()
        self.paused = False
        self.step = 0
        self.seconds = 0.0
        self.loss = float("nan")
        self.steps_per_s = 0.0
        self.previews: dict[int, Prediction] = {}
        self.thumbs: dict[int, Prediction] = {}
        self.geometry: dict[int, Prediction] = {}  # small depth renders for the 3D view (scenes without depth)
        self.first_stroke_time: float | None = None
        self.first_propagated: float | None = None  # seconds from the first stroke to the first preview
        self._applied_version = -1
        self._preview_cost = 0.0
        self._thread: threading.Thread | None = None
        self.model: torch.nn.Module | None = None

    # -- set-up -------------------------------------------------------------------------------------
    def start(self, on_frame: Callable[[int], None] | None = None) -> None:
        """Create the run folder, load the frames, build (or resume) the model and start the worker."""
        cfg = self.config
        seed_everything(cfg.seed)
        self.dataset = OnlineRayDataset(self.scene, cfg.depth_loss, cfg.labelled_ray_fraction, on_frame=on_frame)
        if self.ckpt_state is not None:
            self.model_args = dict(self.ckpt_state["model_args"])
        else:
            aabb, near = scene_bounds(self.scene)
            bg = None
            if self.classes.background_class is not None:
                bg = int(self.classes.to_index(np.array([self.classes.background_class]))[0])
            self.model_args = {
                "name": cfg.model,
                "aabb": np.asarray(aabb, np.float64).reshape(2, 3).tolist(),
                "near": float(near),
                "num_classes": self.classes.num_classes,
                "background_class_index": bg,
            }
        self.model = build_model(
            self.model_args["name"],
            cfg.model_config,
            np.asarray(self.model_args["aabb"], np.float64),
            self.model_args["num_classes"],
            self.model_args["background_class_index"],
            near=self.model_args["near"],  # the scene's near, unless the model config sets one (as fit does)
        ).to(self.device)
        self.optimizer = make_optimizer(self.model.param_groups(cfg.lr), cfg)
        self.sampler = torch.Generator().manual_seed(cfg.seed)
        if self.ckpt_state is not None:
            self.model.load_state_dict(self.ckpt_state["model"])
            try:
                self.optimizer.load_state_dict(self.ckpt_state["optimizer"])
            except (ValueError, KeyError):  # a class was added after this checkpoint's optimizer: fresh Adam
                pass
            restore_rng(self.ckpt_state["rng"], self.sampler)
            self.step = int(self.ckpt_state["step"])
            self.seconds = float(self.ckpt_state.get("seconds", 0.0))
            self.ckpt_state = None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.store.repair()
        write_json(self.run_dir / SERVE_FILE, {"scene": str(self.scene_path.resolve()), "version": 1})
        cfg.save(self.run_dir / CONFIG_FILE)
        self._write_scene_info()
        self.store.write_all_pngs()
        self._thread = threading.Thread(target=self._worker, name="labelfield-train", daemon=True)
        self._thread.start()

    def _write_scene_info(self) -> None:
        labelled = sorted(self.store.snapshot())
        spec = {"labelled": "strokes", "density": "strokes", "noise": None, "seed": self.config.seed}
        RunFolder(self.run_dir).write_manifest(
            RunManifest(
                scene=str(Path(self.scene_path).resolve()),
                format=self.scene.format,
                downscale=int(self.config.downscale),
                classes=self.classes.to_json(),
                frames=self.scene.names,
                labelled=[int(i) for i in labelled],
                label_spec=spec,
                aabb=self.model_args["aabb"],
                near=self.model_args["near"],
            )
        )

    def close(self) -> None:
        """Stop the worker and save a checkpoint (Ctrl-C, server shutdown)."""
        if self._thread is None:
            return
        self.stop_event.set()
        self._thread.join(timeout=60)
        self._thread = None
        if self.model is not None:
            self.save()

    # -- the worker ---------------------------------------------------------------------------------
    def call(self, fn: Callable[[], Any], timeout: float = 600.0) -> Any:
        """Run `fn` on the worker thread (between training steps) and return its result."""
        if self._thread is None or threading.current_thread() is self._thread:
            return fn()
        job = _Job(fn)
        self.jobs.put(job)
        if not job.done.wait(timeout):
            raise TimeoutError("the training thread did not answer in time")
        if job.error is not None:
            raise job.error
        return job.result

    def _run_jobs(self) -> None:
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            try:
                job.result = job.fn()
            except BaseException as e:  # handed to the waiting request
                job.error = e
            job.done.set()

    def _apply_strokes(self) -> None:
        if self.store.version == self._applied_version:
            return
        self._applied_version = self.store.version
        labels = {i: self.store.frame_labels(i) for i in list(self.store.labels)}
        for i, lab in labels.items():
            if lab is not None:
                self.dataset.set_frame_labels(i, lab, self.classes)

    def _worker(self) -> None:
        last_ckpt = time.perf_counter()
        next_thumb = 0.0
        rate_t, rate_step = time.perf_counter(), self.step
        while not self.stop_event.is_set():
            self._run_jobs()
            self._apply_strokes()
            if self.paused or not self.train_enabled:  # still fill in thumbnails not rendered at this step
                if time.perf_counter() >= next_thumb and self._render_next_thumb():
                    next_thumb = time.perf_counter() + 0.2
                else:
                    time.sleep(0.05)
                continue
            t = time.perf_counter()
            self._train_step()
            self.seconds += time.perf_counter() - t
            now = time.perf_counter()
            if now - rate_t >= 2.0:
                self.steps_per_s = (self.step - rate_step) / (now - rate_t)
                rate_t, rate_step = now, self.step
            if now - last_ckpt >= self.checkpoint_s:
                self.save()
                last_ckpt = time.perf_counter()
            if now >= next_thumb:  # thumbnails take at most about a quarter of the worker's time
                self._render_next_thumb()
                t_end = time.perf_counter()
                next_thumb = t_end + max(0.5, 3.0 * (t_end - now))
        self._run_jobs()

    def _train_step(self) -> None:
        cfg = self.config
        f = lr_factor(self.step, min(self.step / max(cfg.steps, 1), 1.0), cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
        self.model.train()
        self.model.before_step(self.step)
        batch = self.dataset.sample(cfg.batch_rays, self.sampler).to(self.device)
        pred = self.model.render_rays(batch.rays_o, batch.rays_d)
        losses = compute_losses(
            pred,
            batch.rgb,
            batch.labels,
            cfg.semantic_weight,
            batch.depth,
            batch.z_scale,
            cfg.depth_weight if cfg.depth_loss else 0.0,
        )
        self.optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        self.optimizer.step()
        self.step += 1
        self.loss = float(losses.total.detach())

    # -- checkpoints --------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write RUN/checkpoints/step_N.pt (atomic) and scene.json; keep the last `keep_checkpoints`."""

        def _save() -> Path:
            state = {
                "step": self.step,
                "seconds": self.seconds,
                "model": self.model.state_dict(),
                "model_args": self.model_args,
                "optimizer": self.optimizer.state_dict(),
                "rng": capture_rng(self.sampler),
            }
            path = save_checkpoint(checkpoint_path(self.run_dir, self.step), state)
            keep = max(self.config.keep_checkpoints, 1)
            for _, old in list_checkpoints(self.run_dir)[:-keep]:
                old.unlink(missing_ok=True)
            self._write_scene_info()
            return path

        return self.call(_save)

    # -- rendering ----------------------------------------------------------------------------------
    def _render(self, frame: int, size: int) -> Prediction:
        f = self.scene.frames[frame]
        intr = f.intrinsics
        scale = min(1.0, size / max(intr.width, intr.height))
        if scale < 1.0:
            intr = intr.scaled(scale)
        # the inference-only path (no colour head, no autograd): what a label preview needs and nothing more,
        # plus depth where the scene has none (the 3D view's points; a weighted sum per ray, nearly free)
        want_depth = not f.has_depth()
        out = render_labels_image(self.model, intr, f.c2w, depth=want_depth, chunk=16384, device=self.device)
        labels, conf = labels_from_render(out, self.classes)
        depth = out["depth"].numpy().astype(np.float32) if want_depth else None
        return Prediction(frame, self.step, time.time(), labels, conf, out["opacity"].numpy(), depth)

    def _has_labels(self) -> bool:
        return self.dataset.num_labelled_pixels > 0

    def preview(self, frame: int) -> Prediction | None:
        """The current frame's prediction, re-rendered when older than `refresh_s` and the model has moved.
        None until there is a labelled pixel (nothing to propagate yet)."""
        old = self.previews.get(frame)
        # at least as much training as rendering between two previews: the field must move to be worth showing
        wait = max(self.refresh_s, self._preview_cost)
        if old is not None and (time.time() - old.time < wait or old.step == self.step):
            return old

        def _do() -> Prediction | None:
            if not self._has_labels():
                return None
            t = time.perf_counter()
            p = self._render(frame, self.preview_size)
            self._preview_cost = time.perf_counter() - t
            self.previews[frame] = p
            self._note_propagated(frame)
            return p

        return self.call(_do)

    def _note_propagated(self, frame: int) -> None:
        if self.first_propagated is None and self.first_stroke_time is not None:
            if frame not in self.store.labels:
                self.first_propagated = time.time() - self.first_stroke_time

    def _render_next_thumb(self) -> bool:
        """Render the thumbnail of the frame whose thumbnail is oldest (never-rendered first); False if none."""
        if not self._has_labels():
            return False
        n = len(self.scene)
        order = sorted(range(n), key=lambda i: (self.thumbs[i].step if i in self.thumbs else -1, i))
        i = order[0]
        if i in self.thumbs and self.thumbs[i].step == self.step:
            return False
        self.thumbs[i] = self._render(i, self.thumb_size)
        self._note_propagated(i)
        return True

    def latest_prediction(self, frame: int) -> Prediction | None:
        """The newest rendered prediction of `frame` (its thumbnail or its preview; the thumbnail on a tie)."""
        found = [p for p in (self.thumbs.get(frame), self.previews.get(frame)) if p is not None]
        return max(found, key=lambda p: p.step) if found else None

    def geometry_of(self, frame: int, size: int, max_age_s: float) -> Prediction:
        """A small render of `frame` (labels, and depth where the scene has none) for the 3D view, made on the
        worker unless one younger than `max_age_s` (or of the current step) is cached. One frame per call, so
        training goes on between the frames of a request."""
        old = self.geometry.get(frame)
        if old is not None and (time.time() - old.time < max_age_s or old.step == self.step):
            return old

        def _do() -> Prediction:
            p = self._render(frame, size)
            self.geometry[frame] = p
            return p

        return self.call(_do)

    def frame_confidence(self) -> dict[int, float]:
        """Mean confidence of each frame's latest thumbnail (lower: label here next)."""
        return {i: float(p.confidence.mean()) for i, p in list(self.thumbs.items())}

    # -- classes ------------------------------------------------------------------------------------
    def set_classes(self, table: ClassTable) -> None:
        """Rename / recolour / add classes (never remove: strokes and the field refer to them)."""
        old = self.classes
        if table.ids[: len(old.ids)] != old.ids:
            raise ValueError("classes can be renamed, recoloured or added at the end, not removed or reordered")
        added = table.num_classes - old.num_classes

        def _do() -> None:
            if added:
                self._grow_semantic_head(added)
            self.classes = table
            self.store.classes = table
            write_json(self.run_dir / CLASSES_FILE, table.to_json())
            self._write_scene_info()
            self.previews.clear()
            self.thumbs.clear()
            self.geometry.clear()

        self.call(_do)

    def _grow_semantic_head(self, added: int) -> None:
        head = getattr(self.model, "semantic_head", None)
        if head is None or not isinstance(getattr(head, "net", None), torch.nn.Sequential):
            raise ValueError(f"model {self.model_args['name']!r} cannot add classes while serving")
        lin = head.net[-1]
        new = torch.nn.Linear(lin.in_features, lin.out_features + added).to(lin.weight.device)
        with torch.no_grad():
            new.weight.zero_()
            new.bias.fill_(-2.0)  # a new class starts unlikely; its strokes pull it up
            new.weight[: lin.out_features] = lin.weight
            new.bias[: lin.out_features] = lin.bias
        head.net[-1] = new
        self.model.num_classes += added
        self.model_args["num_classes"] = self.model.num_classes
        self.optimizer = make_optimizer(self.model.param_groups(self.config.lr), self.config)

    # -- export -------------------------------------------------------------------------------------
    def render_full(self, frame: int) -> dict[str, torch.Tensor]:
        """A full-resolution render_image dict of `frame` (for annotate_frames), made on the worker."""
        f = self.scene.frames[frame]
        return self.call(lambda: render_image(self.model, f.intrinsics, f.c2w, chunk=16384, device=self.device))
