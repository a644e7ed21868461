"""Terminal output for the command layer: draws `labelfield.progress.Progress` events with rich.

Library functions only emit events; commands (and `labelfield demo`) pass a `RichProgress` as `on_progress`.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichBar

from labelfield.progress import Progress

_STYLES = {"hint": "[yellow]hint:[/] ", "warning": "[yellow]warning:[/] ", "info": ""}


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def describe(event: Progress) -> str:
    """The text beside a bar: done/total in the event's unit, then the stage's numbers."""
    i = event.info
    if event.unit == "s":
        text = f"{event.done:.0f}/{event.total:.0f} s  step {i.get('step', 0)}"
    elif event.total is not None:
        text = f"{event.done:.0f}/{event.total:.0f} {event.unit}"
    else:
        text = f"{event.done:.0f} {event.unit}"
    if "loss" in i:
        text += f"  loss {i['loss']:.4f}  PSNR {i['psnr']:.2f} dB"
    if "steps_per_s" in i:
        text += f"  {i['steps_per_s']:.1f} steps/s"
    if "eta_s" in i:
        text += f"  ETA {_fmt_time(i['eta_s'])}"
    return text


class RichProgress:
    """An `on_progress` callback drawing one rich bar per stage (fit: steps, or seconds under a time budget)
    and printing messages. Call `close()` when done (stops the live display), or use it as a context manager."""

    def __init__(self, console: Console | None = None, bars: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.bars = bars
        self._live: RichBar | None = None
        self._tasks: dict[str, Any] = {}

    def __call__(self, event: Progress) -> None:
        if event.stage == "message":
            self.console.print(_STYLES.get(event.info.get("level", "info"), "") + str(event.info.get("text", "")))
            return
        if not self.bars:
            return
        if self._live is None:
            self._live = RichBar(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[text]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._live.start()
        task = self._tasks.get(event.stage)
        total = event.total if event.total else None
        if task is None:
            task = self._tasks[event.stage] = self._live.add_task(event.stage, total=total, text="")
        self._live.update(task, completed=event.done, total=total, text=describe(event))
        if event.final and event.stage == "load":  # loading is transient: drop its bar once done
            self._live.remove_task(task)
            del self._tasks[event.stage]

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            self._tasks.clear()

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
