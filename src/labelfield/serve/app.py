"""The HTTP side of `labelfield serve`: a Starlette app over an `Engine` (JSON API + the static page).

Security (the page can write files, so):
- bound to 127.0.0.1 by default; then only requests whose Host header is a loopback name are answered
  (a web page elsewhere cannot reach the server through DNS rebinding);
- with --host set to anything else a random token is required on every request (as Jupyter does): the URL
  printed at start carries `?token=...`, which the server turns into a cookie for that browser;
- every file served is resolved and must lie inside the package's static folder or the scene folder;
  frame images are addressed by index only;
- request bodies are limited (`MAX_BODY`, 413 above it), strokes to `strokes.MAX_POINTS` points.
- the 3D view's cloud is capped at `cloud.MAX_POINTS` points; bad query numbers are refused (400).
"""

from __future__ import annotations

import io
import json
import secrets
import time
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from labelfield.scene import ClassTable
from labelfield.serve.cloud import CloudBuilder, parse_cloud_query
from labelfield.serve.engine import Engine
from labelfield.serve.exporting import Exporter, check_formats
from labelfield.serve.strokes import parse_stroke

MAX_BODY = 4 * 2**20
STATIC_DIR = Path(__file__).parent / "static"
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
COOKIE = "labelfield_token"


def resolve_inside(root: Path, relative: str) -> Path | None:
    """`root / relative` resolved (links followed), or None when it leaves `root` or is not a file."""
    root = root.resolve()
    try:
        p = (root / relative).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if p != root and root not in p.parents:
        return None
    return p if p.is_file() else None


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES or host.startswith("127.")


def png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def rgba_labels(labels: np.ndarray, classes: ClassTable) -> np.ndarray:
    """(H, W) original ids -> (H, W, 4) uint8 class colours, alpha 0 on void."""
    rgba = np.zeros((*labels.shape, 4), np.uint8)
    rgba[..., :3] = classes.colorize(labels)
    rgba[..., 3] = np.where(labels != classes.void_id, 255, 0)
    return rgba


def rgba_confidence(conf: np.ndarray) -> np.ndarray:
    """Confidence (H, W) in [0, 1] -> a heat map: unsure = opaque red/orange, sure = transparent."""
    u = (1.0 - np.clip(conf, 0.0, 1.0)).astype(np.float32)
    rgba = np.zeros((*conf.shape, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = (200 * (1.0 - u)).astype(np.uint8)
    rgba[..., 3] = (255 * np.clip(u * 1.6, 0, 1)).astype(np.uint8)
    return rgba


class _Guard:
    """ASGI middleware: Host check on loopback binds, token check otherwise, request body size limit."""

    def __init__(self, app: Any, token: str | None, loopback: bool) -> None:
        self.app, self.token, self.loopback = app, token, loopback

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.loopback:
            host = headers.get("host", "")
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if not is_loopback(name):
                return await _plain(send, 403, "forbidden host")
        set_cookie = False
        if self.token is not None:
            from urllib.parse import parse_qs

            q = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
            c = SimpleCookie(headers.get("cookie", "")).get(COOKIE)
            given = [q, headers.get("x-labelfield-token", ""), c.value if c else ""]
            if not any(g and secrets.compare_digest(g, self.token) for g in given):
                return await _plain(send, 403, "a token is required: open the URL printed by labelfield serve")
            set_cookie = bool(q)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return await _plain(send, 413, "request too large")
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > MAX_BODY:
                raise _TooLarge
            return msg

        started = False

        async def send_with_cookie(msg: dict) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            if set_cookie and msg["type"] == "http.response.start":
                cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode("latin-1")
                msg = {**msg, "headers": [*msg.get("headers", []), (b"set-cookie", cookie)]}
            await send(msg)

        try:
            await self.app(scope, limited_receive, send_with_cookie)
        except _TooLarge:
            if not started:  # a streamed body over the limit (no Content-Length to refuse it by)
                await _plain(send, 413, "request too large")


class _TooLarge(Exception):
    pass


async def _plain(send: Any, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def make_app(engine: Engine, token: str | None = None, loopback: bool = True) -> Any:
    """The ASGI app. Needs the `serve` extra (starlette)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    exporter = Exporter(engine)
    scene = engine.scene
    image_cache: dict[tuple[int, str], bytes] = {}

    def scene_file_ok(path: Path | None) -> bool:
        """A frame's file may be read for the page only from inside the scene folder."""
        if path is None or scene.root is None:
            return True
        root, p = Path(scene.root).resolve(), Path(path).resolve()
        return p == root or root in p.parents

    clouds = CloudBuilder(engine, scene_file_ok)

    def err(status: int, msg: str) -> JSONResponse:
        return JSONResponse({"error": msg}, status_code=status)

    def frame_of(request: Request) -> int | None:
        i = request.path_params["i"]
        return i if 0 <= i < len(scene) else None

    async def body_json(request: Request) -> Any:
        try:
            return json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError("body is not valid JSON") from None

    def png(data: bytes, **headers: str) -> Response:
        return Response(data, media_type="image/png", headers={"cache-control": "no-store", **headers})

    # -- page ------------------------------------------------------------------------------------
    async def index(request: Request) -> Response:
        return await static_file(request, "index.html")

    async def static(request: Request) -> Response:
        return await static_file(request, request.path_params["path"])

    async def static_file(request: Request, rel: str) -> Response:
        p = resolve_inside(STATIC_DIR, rel)
        if p is None or p.suffix not in _TYPES:
            return err(404, "not found")
        return Response(p.read_bytes(), media_type=_TYPES[p.suffix], headers={"cache-control": "no-cache"})

    # -- state -----------------------------------------------------------------------------------
    def state(request: Request) -> JSONResponse:
        counts = engine.store.counts()
        frames = [
            {"index": i, "name": f.name, "width": f.size[0], "height": f.size[1], "strokes": counts.get(i, 0)}
            for i, f in enumerate(scene.frames)
        ]
        return JSONResponse(
            {
                "scene": str(engine.scene_path),
                "run": str(engine.run_dir),
                "frames": frames,
                "classes": engine.classes.to_json(),
                **status_dict(),
            }
        )

    def status_dict() -> dict[str, Any]:
        return {
            "step": engine.step,
            "steps_per_s": round(engine.steps_per_s, 2),
            "loss": None if not np.isfinite(engine.loss) else round(engine.loss, 5),
            "paused": engine.paused,
            "labelled_pixels": engine.dataset.num_labelled_pixels,
            "strokes": {str(k): v for k, v in engine.store.counts().items()},
            "confidence": {str(k): round(v, 4) for k, v in engine.frame_confidence().items()},
            "thumb_steps": {str(k): p.step for k, p in list(engine.thumbs.items())},
            "first_propagated_s": engine.first_propagated,
            "export": exporter.status(),
        }

    def status(request: Request) -> JSONResponse:
        return JSONResponse(status_dict())

    # -- images ----------------------------------------------------------------------------------
    def image(request: Request) -> Response:
        i = frame_of(request)
        if i is None:
            return err(404, "no such frame")
        kind = "thumb" if request.query_params.get("size") == "thumb" else "full"
        if (i, kind) not in image_cache:
            f = scene.frames[i]
            if not scene_file_ok(f.rgb_path):
                return err(403, "frame image lies outside the scene folder")
            rgb = f.load_rgb()
            if kind == "thumb":
                im = Image.fromarray(rgb)
                im.thumbnail((engine.thumb_size, engine.thumb_size))
                rgb = np.asarray(im)
            image_cache[(i, kind)] = png_bytes(rgb)
        return Response(image_cache[(i, kind)], media_type="image/png", headers={"cache-control": "max-age=3600"})

    def strokes_png(request: Request) -> Response:
        i = frame_of(request)
        if i is None:
            return err(404, "no such frame")
        lab = engine.store.frame_labels(i)
        if lab is None:
            w, h = scene.frames[i].size
            lab = np.zeros((h, w), np.uint8)
        return png(png_bytes(rgba_labels(lab, engine.classes)))

    def pred(request: Request) -> Response:
        i = frame_of(request)
        if i is None:
            return err(404, "no such frame")
        p = engine.preview(i)
        if p is None:
            return Response(status_code=204)
        view = request.query_params.get("view", "labels")
        rgba = rgba_confidence(p.confidence) if view == "confidence" else rgba_labels(p.labels, engine.classes)
        return png(
            png_bytes(rgba),
            **{
                "x-step": str(p.step),
                "x-rendered": f"{p.time:.3f}",
                "x-confidence": f"{float(p.confidence.mean()):.4f}",
            },
        )

    def thumb_pred(request: Request) -> Response:
        i = frame_of(request)
        if i is None:
            return err(404, "no such frame")
        p = engine.thumbs.get(i)
        if p is None:
            return Response(status_code=204)
        return png(png_bytes(rgba_labels(p.labels, engine.classes)), **{"x-step": str(p.step)})

    def cloud(request: Request) -> Response:
        """The 3D view's points and cameras (binary; format in serve/cloud.py)."""
        try:
            k, max_points = parse_cloud_query(request.query_params, len(scene))
        except ValueError as e:
            return err(400, str(e))
        try:
            data = clouds.response(k, max_points)
        except TimeoutError as e:
            return err(503, str(e))
        return Response(data, media_type="application/octet-stream", headers={"cache-control": "no-store"})

    # -- changes ---------------------------------------------------------------------------------
    async def add_stroke(request: Request) -> JSONResponse:
        try:
            s = parse_stroke(await body_json(request), scene, engine.classes)
        except ValueError as e:
            return err(400, str(e))
        sid = await run_in_threadpool(engine.store.add, s)
        if engine.first_stroke_time is None:
            engine.first_stroke_time = time.time()
        return JSONResponse({"id": sid, "frame": s.frame})

    async def undo(request: Request) -> JSONResponse:
        try:
            d = await body_json(request)
            i = d.get("frame") if isinstance(d, dict) else None
            if not isinstance(i, int) or not 0 <= i < len(scene):
                raise ValueError("frame must be a frame index")
        except ValueError as e:
            return err(400, str(e))
        sid = await run_in_threadpool(engine.store.undo, i)
        return JSONResponse({"id": sid, "frame": i})

    async def set_classes(request: Request) -> JSONResponse:
        try:
            d = await body_json(request)
            rows = d.get("classes") if isinstance(d, dict) else None
            if not isinstance(rows, list) or not 1 <= len(rows) <= 1000:
                raise ValueError("classes must be a list of {id, name, color}")
            old = engine.classes
            ids, names, colors = [], [], []
            for r in rows:
                cid, name, color = int(r["id"]), str(r["name"])[:64], [int(c) for c in r["color"]]
                if len(color) != 3 or not all(0 <= c <= 255 for c in color) or not name.strip():
                    raise ValueError(f"class {cid}: bad name or colour")
                ids.append(cid), names.append(name.strip()), colors.append(tuple(color))
            table = ClassTable(ids, names, colors, old.background_class, old.void_id)
            await run_in_threadpool(engine.set_classes, table)
        except (KeyError, TypeError, ValueError) as e:
            return err(400, str(e).splitlines()[0])
        except Exception as e:  # LabelfieldError from the table's own checks
            return err(400, str(e).splitlines()[0])
        return JSONResponse({"classes": engine.classes.to_json()})

    async def pause(request: Request) -> JSONResponse:
        d = await body_json(request)
        engine.paused = bool(d.get("paused")) if isinstance(d, dict) else False
        return JSONResponse({"paused": engine.paused})

    async def export(request: Request) -> JSONResponse:
        if request.method == "GET":
            return JSONResponse(exporter.status())
        try:
            d = await body_json(request)
            formats = check_formats((d or {}).get("formats", ["labels"]) if isinstance(d, dict) else None)
        except ValueError as e:
            return err(400, str(e))
        if not exporter.start(formats):
            return err(409, "an export is already running")
        return JSONResponse(exporter.status())

    routes = [
        Route("/", index),
        Route("/static/{path:path}", static),
        Route("/api/state", state),
        Route("/api/status", status),
        Route("/api/frame/{i:int}/image", image),
        Route("/api/frame/{i:int}/strokes", strokes_png),
        Route("/api/frame/{i:int}/pred", pred),
        Route("/api/frame/{i:int}/thumbpred", thumb_pred),
        Route("/api/cloud", cloud),
        Route("/api/strokes", add_stroke, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/api/classes", set_classes, methods=["POST"]),
        Route("/api/pause", pause, methods=["POST"]),
        Route("/api/export", export, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes)
    return _Guard(app, token, loopback)
