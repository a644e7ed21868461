"""One progress-callback shape for every library function that takes time.

Library code never prints: it calls `on_progress(Progress(...))` and the command layer (or a test, or a
benchmark) decides what to show (`labelfield.console.RichProgress` draws rich bars).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Progress:
    """One progress event.

    stage: what is running ("load", "fit", ...), or "message" for a one-off note in `info["text"]`.
    done, total: progress of the stage in `unit` (total None: unknown); a stage ends with done == total or
        with `final=True`.
    unit: "frames", "steps", "s" (a time budget), ...
    info: stage-specific numbers for display (fit: step, loss, psnr, steps_per_s).
    """

    stage: str
    done: float = 0.0
    total: Optional[float] = None
    unit: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    final: bool = False


ProgressFn = Callable[[Progress], None]
"""The callback type library functions accept as `on_progress`."""


def message(on_progress: Optional[ProgressFn], text: str, level: str = "info") -> None:
    """Send a note (hint, warning) to the callback, if any."""
    if on_progress is not None:
        on_progress(Progress("message", info={"text": text, "level": level}))
