"""What a batch shows and leaves behind: the live progress table, DIR/summary.json, DIR/summary.md, the total line.

The live table holds one row of counts (queued / running / done / skipped / failed, throughput) and a row per
running scene (phase, step, steps/s, attempt); at 1,500 scenes only the running ones are listed, plus the last
few failures, so it stays a screenful.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from labelfield.batch.pipeline import SceneResult
from labelfield.io import atomic_path, write_json

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
_SHOW_FAILED = 5


class BatchState:
    """Per-scene state of a batch, fed by the executor's callbacks; renders the live table and the summaries."""

    def __init__(self, names: list[str], meta: dict[str, Any]) -> None:
        self.order = list(names)
        self.meta = dict(meta)
        self.t0 = time.perf_counter()
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.running: dict[str, dict[str, Any]] = {}
        self.results: dict[str, SceneResult] = {}

    # --- callbacks ---------------------------------------------------------------------------------
    def progress(self, name: str, info: dict[str, Any]) -> None:
        if name not in self.results:
            self.running.setdefault(name, {"t0": time.perf_counter()}).update(info)

    def result(self, res: SceneResult) -> None:
        self.running.pop(res.name, None)
        self.results[res.name] = res

    # --- numbers -----------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        c = {"queued": 0, "running": len(self.running), "done": 0, "skipped": 0, "failed": 0}
        for r in self.results.values():
            c[r.status if r.status in c else "failed"] += 1
        c["queued"] = len(self.order) - c["running"] - c["done"] - c["skipped"] - c["failed"]
        return c

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def scenes_per_hour(self) -> float | None:
        """Scenes processed here (done + failed, not skipped) per hour of this batch's wall time."""
        n = sum(r.status in ("done", "failed") for r in self.results.values())
        return 3600.0 * n / self.elapsed() if n and self.elapsed() > 0 else None

    # --- live table --------------------------------------------------------------------------------
    def table(self):
        from rich.table import Table

        c = self.counts()
        rate = self.scenes_per_hour()
        title = (
            f"labelfield batch: {c['queued']} queued, {c['running']} running, {c['done']} done, "
            f"{c['skipped']} skipped, {c['failed']} failed; {self.elapsed():.0f} s"
            + (f", {rate:.0f} scenes/h" if rate else "")
        )
        t = Table(title=title, title_justify="left")
        for col in ("scene", "phase", "step", "steps/s", "s", "try"):
            t.add_column(col, justify="left" if col in ("scene", "phase") else "right")
        now = time.perf_counter()
        for name, info in sorted(dict(self.running).items()):  # copy: the live thread renders
            step = f"{info['step']}/{info['steps']}" if "step" in info else ""
            rate_s = f"{info['steps_per_s']:.1f}" if "steps_per_s" in info else ""
            t.add_row(
                name, str(info.get("phase", "")), step, rate_s, f"{now - info['t0']:.0f}", str(info.get("attempts", ""))
            )
        failed = [r for r in list(self.results.values()) if r.status == "failed"][-_SHOW_FAILED:]
        for r in failed:
            t.add_row(r.name, "[red]failed[/]", "", "", f"{r.wall_s:.0f}", str(r.attempts))
        return t

    # --- summaries ---------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """One dict per scene in manifest order (scenes never reached are `queued`)."""
        out = []
        for name in self.order:
            r = self.results.get(name)
            out.append(dataclasses.asdict(r) if r is not None else {"name": name, "status": "queued"})
        return out

    def summary(self, interrupted: bool = False) -> dict[str, Any]:
        c = self.counts()
        return {
            "batch": {
                **self.meta,
                "started": self.started,
                "wall_s": round(self.elapsed(), 2),
                "scenes": len(self.order),
                **c,
                "scenes_per_hour": self.scenes_per_hour(),
                "interrupted": interrupted,
            },
            "scenes": self.rows(),
        }

    def write(self, out_dir: Path, interrupted: bool = False) -> dict[str, Any]:
        s = self.summary(interrupted)
        write_json(out_dir / SUMMARY_JSON, s)
        with atomic_path(out_dir / SUMMARY_MD) as tmp:
            tmp.write_text(markdown(s))
        return s

    def total_line(self, out_dir: Path) -> str:
        c = self.counts()
        rate = self.scenes_per_hour()
        line = (
            f"batch: {len(self.order)} scenes: {c['done']} done, {c['skipped']} skipped, {c['failed']} failed"
            + (f", {c['queued'] + c['running']} not run" if c["queued"] + c["running"] else "")
            + f" in {self.elapsed():.1f} s"
            + (f" ({rate:.0f} scenes/h)" if rate else "")
            + f" -> {out_dir / SUMMARY_MD}"
        )
        return line


def _f(x: Any, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def markdown(summary: dict[str, Any]) -> str:
    """summary.md: the batch's numbers and one table row per scene."""
    b = summary["batch"]
    lines = [
        "# labelfield batch",
        "",
        f"- manifest: `{b.get('manifest')}`, executor: {b.get('executor')}, {b.get('cpus_per_scene')} CPUs and "
        f"{b.get('gpus_per_scene')} GPUs per scene",
        f"- {b['scenes']} scenes: {b['done']} done, {b['skipped']} skipped, {b['failed']} failed"
        + (f", {b['queued'] + b['running']} not run (interrupted)" if b["queued"] + b["running"] else ""),
        f"- wall time {b['wall_s']:.1f} s" + (f", {b['scenes_per_hour']:.0f} scenes/h" if b["scenes_per_hour"] else ""),
        "",
        "| scene | status | wall s | CPU s | fit s | steps | steps/s | PSNR | mIoU (unlabelled) | consistency | tries "
        "| error |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in summary["scenes"]:
        err = (r.get("error") or "").replace("|", "\\|")
        lines.append(
            f"| {r['name']} | {r['status']} | {_f(r.get('wall_s'), '.1f')} | {_f(r.get('cpu_s'), '.1f')} | "
            f"{_f(r.get('fit_s'), '.1f')} | "
            f"{_f(r.get('steps'), 'd')} | {_f(r.get('steps_per_s'), '.1f')} | {_f(r.get('psnr'), '.2f')} | "
            f"{_f(r.get('miou'), '.4f')} | {_f(r.get('consistency'), '.4f')} | {_f(r.get('attempts'), 'd')} | {err} |"
        )
    return "\n".join(lines) + "\n"
