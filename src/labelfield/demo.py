"""`labelfield demo`: the whole pipeline on the built-in demo scene, as `make demo` runs it.

built-in room (data/demo) -> fit with every 10th frame labelled -> annotate every frame -> eval against the
full ground truth -> summary table and the path of report.html. Each run goes to a new timestamped folder,
so running the demo again never overwrites an earlier result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.table import Table

from labelfield.errors import LabelfieldError
from labelfield.progress import ProgressFn

# src/labelfield/demo.py -> repository root (the demo scene is data, not package code).
DEMO_SCENE = Path(__file__).resolve().parents[2] / "data" / "demo"
REGENERATE = "labelfield synth data/demo --seed 0 --frames 80 --width 320 --height 240 --spp 32 --variant scalar_rgb"


@dataclass
class DemoCommand:
    """Fit the built-in demo scene from every 10th frame's labels, label every frame and evaluate."""

    out: Path = Path("runs/demo")
    """Parent folder; this run goes to a new OUT/<date-time> folder."""
    scene: Path | None = None
    """Scene folder to use instead of the built-in demo room."""
    labelled: str = "every:10"
    """Which frames keep their labels (the others are only used for evaluation)."""
    time_budget: float = 120.0
    """Training time in seconds."""
    seed: int = 0
    """Random seed (same seed, same result on CPU)."""
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""
    depth_loss: Literal["auto", "on", "off"] = "auto"
    """Supervise rendered depth with the scene's depth maps: auto = when the scene has them (the demo room does)."""

    def run(self) -> int:
        from labelfield.console import RichProgress
        from labelfield.train import FitConfig, fit

        scene = self.scene or DEMO_SCENE
        if not scene.is_dir():
            raise LabelfieldError(f"demo scene not found; regenerate it with: {REGENERATE}", scene)
        console = Console(stderr=True)
        run_dir = self.out / time.strftime("%Y%m%d-%H%M%S")
        labels_dir = run_dir / "labels"
        t0 = time.perf_counter()

        console.rule(f"1/3 fit {scene} ({self.labelled} labelled, {self.time_budget:.0f} s)")
        config = FitConfig(
            scene=scene,
            labelled=self.labelled,
            out=run_dir,
            steps=100_000,  # the time budget ends training
            time_budget=self.time_budget,
            seed=self.seed,
            device=self.device,  # type: ignore[arg-type]
            depth_loss=self.depth_loss,
        )
        show = RichProgress(console)
        with show:
            result = fit(config, on_progress=show)
        if result.interrupted:
            return 130
        t_fit = time.perf_counter() - t0

        console.rule("2/3 annotate every frame")
        with show:
            n = annotate_all(run_dir, labels_dir, self.device, on_progress=show)
        console.print(f"annotate: {n} frames -> {labels_dir}")
        t_annotate = time.perf_counter() - t0 - t_fit

        console.rule("3/3 evaluate against the full ground truth")
        metrics = evaluate_labels(labels_dir, scene, run_dir / "metrics.json")
        total = time.perf_counter() - t0

        table = Table(title="labelfield demo")
        table.add_column("")
        table.add_column("unlabelled frames", justify="right")
        table.add_column("all frames", justify="right")
        for key, label in [("miou", "mIoU"), ("accuracy", "pixel accuracy"), ("consistency", "3D consistency")]:
            table.add_row(label, _fmt(metrics["unlabelled"].get(key)), _fmt(metrics["all"].get(key)))
        table.add_row("RGB PSNR (dB)", "", _fmt(metrics.get("psnr"), 2))
        table.add_row("fit / annotate / total (s)", "", f"{t_fit:.0f} / {t_annotate:.0f} / {total:.0f}")
        table.add_row("training steps, rays/s", "", f"{result.step}, {result.rays_per_s:,.0f}")
        out = Console()
        out.print(table)
        out.print(f"labels: {labels_dir}\nreport: {labels_dir / 'report.html'}")
        return 0


def annotate_all(run_dir: Path, labels_dir: Path, device: str = "auto", on_progress: ProgressFn | None = None) -> int:
    """Render every frame of the run into a LABELS folder (the user's labels kept on labelled frames).
    Returns the number of frames written."""
    from labelfield.annotate.fitted import annotate_run
    from labelfield.devices import resolve_device
    from labelfield.io import atomic_dir
    from labelfield.run import load_run

    loaded = load_run(run_dir, device=resolve_device(device))
    with atomic_dir(labels_dir) as tmp:
        return len(annotate_run(loaded, tmp, on_progress=on_progress))


def evaluate_labels(labels_dir: Path, scene_dir: Path, metrics_path: Path) -> dict:
    """Score a LABELS folder against the scene's full labels; writes metrics JSON and LABELS/report.html."""
    from labelfield.evaluate.core import evaluate
    from labelfield.evaluate.report import write_report
    from labelfield.formats import load_scene
    from labelfield.io import write_json
    from labelfield.labelset import read_labelset

    ls = read_labelset(labels_dir)
    scene = load_scene(scene_dir, downscale=max(1, int(round(float(ls.downscale or 1)))))
    result = evaluate(ls, scene)
    write_json(metrics_path, result.summary)
    write_report(result, labels_dir / "report.html", title=f"labelfield eval: {labels_dir.name}")
    return result.summary


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
