"""`labelfield serve` in a real headless browser (Debian's chromium driven by Playwright), as a person uses it.

Start serve on a tiny generated scene, paint a stroke on frame 0, pick another class and paint on frame 3,
wait for the prediction overlay of an unlabelled frame, open the 3D view (points drawn, click a camera),
reload (strokes still there), kill -9 the server, restart it (strokes still there, training resumed), export
and read the LABELS folder.
Skips when Playwright or chromium is missing (`make browser` installs both). Screenshots go to tmp_path, or to
$LABELFIELD_SCREENSHOTS when set.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from labelfield.io import read_image

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("LABELFIELD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not found (make browser installs it)")

SRC = str(Path(__file__).resolve().parents[1] / "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(scene: Path, run: Path, port: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "labelfield.cli",
        "serve",
        str(scene),
        "--run",
        str(run),
        "--port",
        str(port),
        "--threads",
        "1",
        "--refresh",
        "0.5",
        "--checkpoint-every",
        "3",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 60
    lines = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "serve: open " in line:
            return proc, line.split("serve: open ", 1)[1].strip()
    proc.kill()
    raise AssertionError("serve did not start:\n" + "".join(lines))


def alpha_pixels(page, canvas_id: str) -> int:
    """Non-transparent pixels of a canvas of the page."""
    return page.evaluate(
        """(id) => { const c = document.getElementById(id);
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""",
        canvas_id,
    )


def paint(page, frac_pts: list[tuple[float, float]]) -> None:
    """Drag the mouse over the current frame through points given as fractions of the image box."""
    box = page.locator("#img").bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in frac_pts]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=6)
    page.mouse.up()


def goto_frame(page, i: int) -> None:
    page.locator(f'.thumb[data-frame-index="{i}"]').click()
    page.wait_for_function(
        f"document.body.dataset.frame === '{i}' && (document.body.dataset.strokesLoaded || '').startsWith('{i}:')"
    )


def wait_saved(page, run: Path, n: int) -> None:
    page.wait_for_function("document.body.dataset.pending === '0'")
    lines = (run / "strokes.jsonl").read_text().splitlines()
    assert len([ln for ln in lines if '"op":"stroke"' in ln]) == n


def check_3d_view(page, shots: Path) -> None:
    """The 3D tab: the point cloud and the cameras are drawn, RGB colours switch, clicking a camera picks its
    frame, and the 2D view comes back as it was."""
    page.locator("#toggle3d").click()
    page.wait_for_function("(document.body.dataset.cloudDrawn || '0:').split(':')[0] > 0", timeout=30000)
    page.wait_for_timeout(300)
    # pixels differing from the background (#111): points and frusta
    drawn = page.evaluate(
        """() => { const c = document.getElementById('cloud');
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] !== 17 || d[i+1] !== 17 || d[i+2] !== 17) n++;
             return [n, c.width * c.height]; }"""
    )
    assert drawn[0] > 0.01 * drawn[1], drawn
    page.screenshot(path=str(shots / "serve_3d.png"))
    before = page.evaluate("document.body.dataset.cloudDrawn")
    page.select_option("#cloud-color", "rgb")
    page.wait_for_function(f"document.body.dataset.cloudDrawn !== {before!r}")
    page.screenshot(path=str(shots / "serve_3d_rgb.png"))
    # click the apex of a camera that is not the current frame: that frame becomes the current one
    target = page.evaluate(
        """() => { const V = window.labelfield3d, S = window.labelfield;
             for (const c of V.camScreen) { const [x, y] = c.pts[0];
               if (c.frame !== S.cur && pickCamera(x, y) === c.frame) return [c.frame, x, y]; }
             return null; }"""
    )
    assert target is not None
    box = page.locator("#cloud").bounding_box()
    page.mouse.click(box["x"] + target[1], box["y"] + target[2])
    page.wait_for_function(f"document.body.dataset.frame === '{target[0]}'")
    # wheel zooms, drag orbits, shift-drag pans
    view = "(() => { const V = window.labelfield3d; return [V.dist, V.yaw, V.pitch, ...V.target]; })()"
    v0 = page.evaluate(view)
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, 300)
    page.mouse.down()
    page.mouse.move(cx + 80, cy + 40, steps=4)
    page.mouse.up()
    page.keyboard.down("Shift")
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 40, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    v1 = page.evaluate(view)
    assert v1[0] > v0[0] and v1[1] != v0[1] and v1[2] != v0[2] and v1[3:] != v0[3:], (v0, v1)
    assert page.evaluate("document.body.dataset.frame") == str(target[0])  # drags pick no camera
    page.locator("#toggle3d").click()
    assert page.evaluate("document.body.dataset.view") == "2d" and page.locator("#view3d").is_hidden()


def test_paint_propagate_reload_kill_restart_export(tmp_path):
    from test_serve import write_tiny_config, write_tiny_scene

    shots = Path(os.environ.get("LABELFIELD_SCREENSHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    scene = write_tiny_scene(tmp_path / "scene", n=8, w=64, h=48)
    run = tmp_path / "run"
    write_tiny_config(run, scene, batch_rays=512)
    port = free_port()
    proc, url = start_server(scene, run, port)
    names = sorted(p.stem for p in (scene / "rgb").iterdir())
    name0, name3 = f"rgb_{0}", f"rgb_{3}"
    assert name0 in names and name3 in names
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 720})
            page.goto(url)
            page.wait_for_function("document.body.dataset.ready === '1'")
            # frame 0: class 1 (the first), a stroke across the lower part (the floor)
            paint(page, [(0.2, 0.85), (0.5, 0.9), (0.8, 0.85)])
            wait_saved(page, run, 1)
            # another class (key 2), frame 3, a stroke across the upper part
            page.keyboard.press("2")
            goto_frame(page, 3)
            paint(page, [(0.15, 0.2), (0.85, 0.25)])
            wait_saved(page, run, 2)
            lab0 = read_image(run / "sparse_labels" / f"{name0}.png")
            lab3 = read_image(run / "sparse_labels" / f"{name3}.png")
            assert set(np.unique(lab0)) == {0, 1} and set(np.unique(lab3)) == {0, 2}
            # an unlabelled frame: the prediction overlay appears
            goto_frame(page, 5)
            page.wait_for_function(
                "+document.body.dataset.predStep >= 0 && document.body.dataset.predFrame === '5'", timeout=30000
            )
            assert alpha_pixels(page, "pred") > 0.5 * 64 * 48
            page.screenshot(path=str(shots / "serve_prediction.png"))
            page.keyboard.press("v")  # the confidence view
            page.wait_for_timeout(1500)
            page.screenshot(path=str(shots / "serve_confidence.png"))
            page.keyboard.press("v")
            check_3d_view(page, shots)
            # reload: the strokes are still there, pixel for pixel
            page.reload()
            page.wait_for_function("document.body.dataset.ready === '1'")
            assert alpha_pixels(page, "strokes") == int((lab0 != 0).sum())
            goto_frame(page, 3)
            assert alpha_pixels(page, "strokes") == int((lab3 != 0).sum())
            page.screenshot(path=str(shots / "serve_frame3.png"))
            # kill -9 the server, wait for a checkpoint first so the restart can resume
            deadline = time.time() + 30
            while not list((run / "checkpoints").glob("step_*.pt")) and time.time() < deadline:
                time.sleep(0.2)
            ckpt_step = max(int(p.stem[5:]) for p in (run / "checkpoints").glob("step_*.pt"))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            proc, url = start_server(scene, run, port)
            page.reload()
            page.wait_for_function("document.body.dataset.ready === '1'")
            assert alpha_pixels(page, "strokes") == int((lab0 != 0).sum())
            goto_frame(page, 3)
            assert alpha_pixels(page, "strokes") == int((lab3 != 0).sum())
            step = page.evaluate("fetch('/api/status').then(r => r.json()).then(s => s.step)")
            assert step >= ckpt_step  # resumed from the checkpoint, not from scratch
            # export a LABELS folder from the page
            page.locator("#export").click()
            page.wait_for_function("document.body.dataset.exportState === 'done'", timeout=60000)
            page.screenshot(path=str(shots / "serve_export.png"))
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    from labelfield.labelset import read_labelset

    ls = read_labelset(run / "labels")
    assert len(ls.names) == 8
    assert [r.given for r in ls.frames] == [i in (0, 3) for i in range(8)]
    out0, out3 = ls.load_labels(name0), ls.load_labels(name3)
    np.testing.assert_array_equal(out0[lab0 != 0], lab0[lab0 != 0])  # the user's strokes win
    np.testing.assert_array_equal(out3[lab3 != 0], lab3[lab3 != 0])
    assert (ls.load_labels(ls.names[5]) != 0).any()  # an unlabelled frame got labels from the field
    # a serve run is a run folder: `labelfield annotate` renders it and keeps the strokes as the user's labels
    from labelfield.annotate.command import AnnotateCommand

    AnnotateCommand(run, tmp_path / "L2", progress=False, device="cpu").run()
    ls2 = read_labelset(tmp_path / "L2")
    assert [r.given for r in ls2.frames] == [i in (0, 3) for i in range(8)]
    np.testing.assert_array_equal(ls2.load_labels(name3)[lab3 != 0], lab3[lab3 != 0])
