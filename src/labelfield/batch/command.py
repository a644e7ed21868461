"""`labelfield batch MANIFEST --out DIR [--address ADDR] [--cpus-per-scene 2] [--gpus-per-scene 0] [--force]
[--retries N] [fit options...]`: fit -> annotate -> eval -> export for every scene of a manifest, one Ray task each.

The fit options (--labelled, --steps, --time-budget, --model-config.*, ...) apply to every scene unless the
manifest sets them for a scene (see manifest.py). Outputs: DIR/<scene>/ (see pipeline.py), DIR/summary.json,
DIR/summary.md. Rerunning skips finished scenes and resumes interrupted ones; --force redoes everything.
Exit status: 0 when every scene is done, 1 when any failed, 2 for bad input (manifest, a worker that cannot see
a scene path or DIR), 130 on Ctrl-C (a summary is written; the next run resumes).
"""

from __future__ import annotations

import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

from labelfield.batch.pipeline import scene_visible  # bound here: the driver's own check
from labelfield.errors import LabelfieldError
from labelfield.train.config import FitConfig


@dataclass(kw_only=True)
class BatchCommand(FitConfig):
    """Annotate many scenes (fit, annotate, eval, export each), as Ray tasks on a local Ray or a cluster."""

    manifest: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="MANIFEST")]
    """Scenes: a .yaml/.yml/.json/.csv list (path + optional per-scene options), or a folder (every scene below)."""
    out: Path = tyro.MISSING  # type: ignore[assignment]  # required here (optional in FitConfig)
    """Output folder: DIR/<scene>/{run, labels, metrics.json, export}, DIR/summary.json and summary.md."""
    address: Optional[str] = None
    """Ray cluster to use: auto, ray://host:10001 or host:6379 (default: start a local Ray on this machine)."""
    cpus_per_scene: float = 2.0
    """CPUs each scene's task reserves (also its PyTorch thread count unless --threads is given)."""
    gpus_per_scene: float = 0.0
    """GPUs each scene's task reserves (0: the scene runs on CPU)."""
    num_cpus: Optional[int] = None
    """CPUs of the local Ray (default: every core of this machine); ignored with --address."""
    force: bool = False
    """Redo every scene, deleting its previous outputs (default: finished scenes are skipped)."""
    retries: int = 2
    """Retries of a scene whose worker process or node was lost (the retry resumes from the last checkpoint)."""
    local: bool = False
    """Run the scenes one after another in this process, without Ray."""
    eval_scene_labels: bool = False
    """Evaluate every scene against its own full labels (a manifest's `gt:` overrides per scene)."""
    export: tuple[str, ...] = ()
    """Export formats for every scene (cvat, labelstudio, coco, replica, transforms, ply)."""
    # FitConfig fields the batch sets itself, hidden from --help.
    scene: tyro.conf.Suppress[Optional[Path]] = None
    resume: tyro.conf.Suppress[Optional[Path]] = None
    progress: bool = True
    """Show the live progress table."""

    def run(self) -> int:
        from rich.console import Console

        from labelfield.batch.executor import RayExecutor, SerialExecutor
        from labelfield.batch.manifest import read_manifest
        from labelfield.batch.pipeline import DONE_FILE, SceneResult, done_spec, fit_options, read_done, same_options
        from labelfield.batch.report import BatchState

        if self.cpus_per_scene <= 0 or self.gpus_per_scene < 0 or self.retries < 0:
            raise LabelfieldError("--cpus-per-scene must be > 0, --gpus-per-scene and --retries >= 0")
        defaults = fit_options(self)
        if defaults["threads"] == 0 and not self.local:  # one PyTorch thread per reserved CPU
            defaults["threads"] = max(1, int(self.cpus_per_scene))
        if self.gpus_per_scene == 0 and defaults["device"] == "auto" and not self.local:
            defaults["device"] = "cpu"  # a task without a GPU reservation must not grab one
        specs = read_manifest(self.manifest, defaults, "scene" if self.eval_scene_labels else None, self.export)
        out = self.out.expanduser().absolute()
        for s in specs:
            for p in (s.path, s.gt):
                if p is not None and (Path(p) == out or out in Path(p).parents or Path(p) in out.parents):
                    raise LabelfieldError(f"--out must not be inside (or contain) the scene {p}", out)
        out.mkdir(parents=True, exist_ok=True)
        if self.force:
            for s in specs:  # done marker first: a crash mid-delete leaves a scene to redo, never a stale "done"
                (out / s.name / DONE_FILE).unlink(missing_ok=True)
                shutil.rmtree(out / s.name, ignore_errors=True)

        executor = (
            SerialExecutor()
            if self.local
            else RayExecutor(self.address, self.cpus_per_scene, self.gpus_per_scene, self.retries, self.num_cpus)
        )
        meta = {
            "manifest": str(self.manifest.absolute()),
            "out": str(out),
            "executor": executor.name,
            "cpus_per_scene": self.cpus_per_scene,
            "gpus_per_scene": self.gpus_per_scene,
        }
        state = BatchState([s.name for s in specs], meta)
        console = Console(stderr=True)
        todo, changed = [], []
        for s in specs:
            done = read_done(out / s.name)
            if done is not None:
                done.status = "skipped"
                state.result(done)
                if not same_options(done_spec(out / s.name), s):
                    changed.append(s.name)
            elif (missing := scene_visible(s)) is not None:  # missing here too: a broken scene, not an FS problem
                state.result(SceneResult(s.name, "failed", path=s.path, error=f"{missing}: scene folder not found"))
            else:
                todo.append(s)

        if changed:
            console.print(
                f"[yellow]note:[/] {len(changed)} finished scene(s) (first: {changed[0]}) were done with "
                "other options; they are skipped (--force redoes them)"
            )

        def on_result(res: SceneResult) -> None:
            state.result(res)
            msg = f"{res.name}: {res.status} in {res.wall_s:.1f} s"
            msg += f" ({res.error})" if res.error else (f", mIoU {res.miou:.4f}" if res.miou is not None else "")
            console.print(msg, highlight=False)
            if state.elapsed() - last_write[0] > 10:  # keep a summary on disk during a long batch
                state.write(out)
                last_write[0] = state.elapsed()

        last_write = [0.0]
        rc = 0
        try:
            if todo:
                live = _live(console, state) if self.progress else None
                try:
                    executor.run(todo, out, uuid.uuid4().hex, state.progress, on_result)
                finally:
                    if live is not None:
                        live.stop()
        except KeyboardInterrupt:
            rc = 130
        finally:
            summary = state.write(out, interrupted=rc == 130)
        print(state.total_line(out), file=sys.stdout)
        if rc:
            return rc
        return 1 if summary["batch"]["failed"] else 0


def _live(console, state):
    from rich.live import Live

    live = Live(console=console, refresh_per_second=2, transient=True, get_renderable=state.table)
    live.start()
    return live
