"""Export from the page: a LABELS folder (what `labelfield annotate` writes) and any `labelfield export` format.

The LABELS folder goes to RUN/labels (replaced atomically); every frame is rendered at full resolution by the
engine's worker (training pauses for each frame, not for the whole export), and pixels the user stroked keep
the user's label (`annotate_frames(..., given=strokes, keep_given=True)`): corrections always win.
Other formats are written by `labelfield export` from that folder into RUN/exports/<format>-<step>[.ext].
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

from labelfield.annotate.frames import annotate_frames
from labelfield.export import FORMATS
from labelfield.io import atomic_dir
from labelfield.render.chunked import render_image
from labelfield.serve.engine import Engine

_SUFFIX = {"cvat": ".zip", "labelstudio": ".json", "coco": ".json", "ply": ".ply"}


class Exporter:
    """One export at a time, in a background thread; `status()` for the page to poll."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self.state: dict[str, Any] = {"running": False, "done": 0, "total": 0, "error": None, "outputs": []}

    def status(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.state)

    def start(self, formats: list[str]) -> bool:
        """Start an export; False when one is already running. `formats` are checked by the caller."""
        with self.lock:
            if self.state["running"]:
                return False
            self.state = {"running": True, "done": 0, "total": len(self.engine.scene), "error": None, "outputs": []}
        threading.Thread(target=self._run, args=(formats,), daemon=True, name="labelfield-export").start()
        return True

    def _run(self, formats: list[str]) -> None:
        try:
            outputs = export_all(self.engine, formats, self._progress)
            with self.lock:
                self.state.update(outputs=outputs)
        except Exception as e:  # reported to the page, the server keeps running
            with self.lock:
                self.state["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        finally:
            with self.lock:
                self.state["running"] = False

    def _progress(self, done: int) -> None:
        with self.lock:
            self.state["done"] = done


def export_all(engine: Engine, formats: list[str], progress=None) -> list[str]:
    """Write RUN/labels, then each format in `formats` from it. Returns the output paths."""
    out = engine.run_dir / "labels"
    scene = engine.scene
    given = engine.store.snapshot()
    done = [0]

    def render_fn(intr, c2w):
        r = engine.call(lambda: render_image(engine.model, intr, c2w, chunk=16384, device=engine.device))
        done[0] += 1
        if progress is not None:
            progress(done[0])
        return r

    with atomic_dir(out) as tmp:
        annotate_frames(
            render_fn,
            scene,
            engine.classes,
            tmp,
            range(len(scene)),
            set(given),
            given,
            keep_given=True,
            scene_path=engine.scene_path.resolve(),
            downscale=engine.config.downscale,
            method="labelfield-serve",
        )
    outputs = [str(out)]
    for fmt in formats:
        if fmt == "labels":
            continue
        from labelfield.export.command import ExportCommand

        target = engine.run_dir / "exports" / f"{fmt}-{engine.step:07d}-{int(time.time())}{_SUFFIX.get(fmt, '')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        ExportCommand(labels=out, format=fmt, out=target, scene=engine.scene_path).run()
        outputs.append(str(target))
    return outputs


def check_formats(formats: Any) -> list[str]:
    """Validate the page's list of formats ("labels" plus any `labelfield export` format)."""
    if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats) or len(formats) > 8:
        raise ValueError("formats must be a list of names")
    bad = [f for f in formats if f != "labels" and f not in FORMATS]
    if bad:
        raise ValueError(f"unknown export format {bad[0]!r} (labels, {', '.join(FORMATS)})")
    return formats
