"""`labelfield eval LABELS --gt SCENE [--json FILE] [--report PATH]`: score a LABELS folder against GT."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro

from labelfield.errors import LabelfieldError


@dataclass
class EvalCommand:
    """Compare a LABELS folder (from annotate or a baseline) with a scene's full ground-truth labels."""

    labels: tyro.conf.Positional[Path]
    """LABELS folder (labels/, frames.json, classes.json)."""
    gt: Path
    """Ground-truth scene folder (any supported format), read at the LABELS folder's --downscale."""
    format: str | None = None
    """Scene format of --gt (auto-detected when omitted)."""
    json: Path | None = None
    """Also write the metrics as JSON here."""
    report: Path | None = None
    """Where to write report.html (default: LABELS/report.html)."""
    no_report: bool = False
    """Skip report.html."""
    k: int = 1
    """Consistency pairs frame i with frame i + k."""

    def run(self) -> int:
        from rich.console import Console
        from rich.table import Table

        from labelfield.console import RichProgress
        from labelfield.evaluate.core import evaluate
        from labelfield.evaluate.report import write_report
        from labelfield.formats import load_scene
        from labelfield.io import write_json
        from labelfield.labelset import read_labelset

        if self.k < 1:
            raise LabelfieldError(f"--k must be >= 1, got {self.k}")
        ls = read_labelset(self.labels)
        try:  # the GT is read at the resolution the labels were made at
            downscale = max(1, int(round(float(ls.downscale or 1))))
        except (TypeError, ValueError):
            downscale = 1
        scene = load_scene(self.gt, self.format, downscale=downscale)
        with RichProgress() as show:
            result = evaluate(ls, scene, k=self.k, on_progress=show)
        console = Console()
        table = Table(
            title=f"labelfield eval: {ls.method or '?'} ({result.n_unlabelled} of {result.n_frames} frames unlabelled)"
        )
        table.add_column("metric")
        table.add_column("unlabelled", justify="right")
        table.add_column("all", justify="right")
        fmt = lambda x: "–" if x is None else f"{x:.4f}"
        s = result.summary
        for label, key in (
            ("mIoU", "miou"),
            ("mIoU, GT classes only", "miou_gt_classes"),
            ("accuracy", "accuracy"),
            ("class-avg accuracy", "class_avg_accuracy"),
            ("3D consistency", "consistency"),
        ):
            table.add_row(label, fmt(s["unlabelled"][key]), fmt(s["all"][key]))
        table.add_row("PSNR (dB)", "", "–" if s["psnr"] is None else f"{s['psnr']:.2f}")
        console.print(table)
        if self.json is not None:
            write_json(self.json, s)
            console.print(f"metrics: {self.json}")
        if not self.no_report:
            path = write_report(
                result,
                self.report or Path(self.labels) / "report.html",
                title=f"labelfield eval: {Path(self.labels).name}",
            )
            console.print(f"report: {path}")
        return 0
