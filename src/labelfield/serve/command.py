"""`labelfield serve SCENE [--run RUN] [--port 8765] [--host 127.0.0.1]`: label a sequence in the browser.

Opens a local web page: paint strokes on any frame, the field trains online and shows its prediction on every
frame, export a LABELS folder (and any `labelfield export` format). Strokes live in RUN/strokes.jsonl (+ sparse
label PNGs in RUN/sparse_labels/); restarting on the same RUN resumes with every stroke and the last checkpoint.
Needs the optional extra: pip install 'labelfield[serve]'.
"""

from __future__ import annotations

import secrets
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from labelfield.errors import LabelfieldError


@dataclass
class ServeCommand:
    """Paint a few strokes in the browser and watch every frame label itself (online training), then export."""

    scene: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SCENE")]
    """Scene folder (any supported format)."""
    run_dir: Annotated[Path | None, tyro.conf.arg(name="run", metavar="RUN")] = None
    """Run folder for strokes, checkpoints and exports (default: runs/<scene name>-serve). Reuse it to resume."""
    port: int = 8765
    """Port to listen on (0 = any free port; the URL printed says which)."""
    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback requires the token printed at start."""
    device: str = "auto"
    """auto, cpu or cuda."""
    threads: int = 0
    """CPU threads for PyTorch (0 = $OMP_NUM_THREADS, else every usable core)."""
    downscale: int = 1
    """Load the scene's images downscaled by this integer factor."""
    batch_rays: int | None = None
    """Rays per training step (default: the run's config; 2048 for a new run)."""
    preview_size: int = 160
    """Longest side, in pixels, of the current frame's prediction (smaller refreshes faster; export is always
    full resolution)."""
    refresh: float = 2.0
    """Seconds between re-renders of the current frame's prediction while training."""
    checkpoint_every: float = 30.0
    """Seconds of training between checkpoints (strokes are saved at once, whatever this is)."""
    train: bool = True
    """Train in the background (--no-train: only paint and export the last checkpoint's prediction)."""

    def run(self) -> int:
        try:
            import starlette  # noqa: F401
            import uvicorn
        except ModuleNotFoundError as e:
            raise LabelfieldError(
                f"labelfield serve needs the 'serve' extra ({e.name} is missing): pip install 'labelfield[serve]'"
            ) from None
        from labelfield.formats import load_scene
        from labelfield.serve.app import is_loopback, make_app
        from labelfield.serve.engine import Engine

        if not 0 <= self.port <= 65535:
            raise LabelfieldError(f"--port must be in 0..65535, got {self.port}")
        scene = load_scene(self.scene, downscale=self.downscale)
        scene.validate()
        run_dir = self.run_dir if self.run_dir is not None else Path("runs") / f"{self.scene.resolve().name}-serve"
        engine = Engine(
            scene,
            self.scene,
            run_dir,
            device=self.device,
            threads=self.threads,
            preview_size=self.preview_size,
            refresh_s=self.refresh,
            checkpoint_s=self.checkpoint_every,
            batch_rays=self.batch_rays,
            train=self.train,
        )
        loopback = is_loopback(self.host)
        token = None if loopback else secrets.token_urlsafe(24)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise LabelfieldError(f"cannot listen on {self.host}:{self.port} ({e.strerror or e})") from None
        sock.listen(128)  # connections queue from now on, before uvicorn accepts (no "refused" on a restart)
        port = sock.getsockname()[1]
        print(f"serve: loading {len(scene)} frames of {self.scene} ...", file=sys.stderr, flush=True)
        engine.start()
        shown = "localhost" if loopback else self.host
        url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
        n_strokes = sum(engine.store.counts().values())
        print(f"serve: run {run_dir} (step {engine.step}, {n_strokes} strokes); Ctrl-C to stop", file=sys.stderr)
        print(f"serve: open {url}", flush=True)
        config = uvicorn.Config(
            make_app(engine, token, loopback), log_level="warning", access_log=False, timeout_graceful_shutdown=2
        )
        server = uvicorn.Server(config)
        try:
            server.run(sockets=[sock])
        finally:
            engine.close()
            print(f"serve: saved step {engine.step} to {run_dir}", file=sys.stderr)
        return 0
