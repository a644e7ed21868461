"""`labelfield serve` without a browser: exact stroke rasterisation, the stroke log, HTTP security, bad input."""

from __future__ import annotations

import dataclasses
import http.client
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tiny import TINY_NGP

from labelfield.io import read_image
from labelfield.serve.strokes import SPARSE_DIR, STROKES_FILE, StrokeStore, parse_stroke, stroke_mask
from labelfield.synth.toy import toy_scene

SMALL = TINY_NGP


def write_tiny_scene(root: Path, n: int = 6, w: int = 32, h: int = 24) -> Path:
    from labelfield.formats import write_scene

    write_scene(toy_scene(n, w, h), root, "replica")
    return root


def write_tiny_config(run: Path, scene: Path, batch_rays: int = 256, depth_loss: bool = True) -> None:
    """A tiny model for tests: serve reuses RUN/config.json when it exists."""
    from labelfield.train.config import FitConfig

    cfg = FitConfig(
        scene=scene,
        out=run,
        batch_rays=batch_rays,
        depth_loss=depth_loss,
        progress=False,
        device="cpu",
        steps=2000,
        lr_final_ratio=0.2,
    )
    cfg = dataclasses.replace(cfg, model_config=dataclasses.replace(cfg.model_config, **SMALL))
    run.mkdir(parents=True, exist_ok=True)
    cfg.save(run / "config.json")


def test_stroke_rasterised_to_exactly_the_expected_pixels(tmp_path):
    scene = toy_scene(2, 12, 10)
    store = StrokeStore(tmp_path / "run", scene, scene.classes)
    # A horizontal brush stroke of radius 1 from (x=2, y=5) to (8, 5): centres within 1 px of the segment.
    store.add(
        parse_stroke(
            {"frame": 0, "class_id": 2, "tool": "brush", "radius": 1, "points": [[2, 5], [8, 5]]}, scene, scene.classes
        )
    )
    # A click: only the pixel nearest (3.4, 7.6), i.e. column 3, row 8, whatever radius is sent.
    store.add(
        parse_stroke(
            {"frame": 0, "class_id": 4, "tool": "click", "radius": 9, "points": [[3.4, 7.6]]}, scene, scene.classes
        )
    )
    # The eraser clears the pixels within 0.5 px of (8, 4), i.e. just (8, 4).
    store.add(parse_stroke({"frame": 0, "tool": "eraser", "radius": 0.5, "points": [[8, 4]]}, scene, scene.classes))
    expected = np.zeros((10, 12), np.uint8)
    expected[5, 1:10] = 2  # row 5: columns 1..9 (the end caps reach 1 px beyond the end points)
    expected[4, 2:9] = 2  # rows 4 and 6: columns 2..8 ((1, 4) is sqrt(2) away: not painted)
    expected[6, 2:9] = 2
    expected[8, 3] = 4
    expected[4, 8] = 0
    png = read_image(tmp_path / "run" / SPARSE_DIR / f"{scene.frames[0].name}.png")
    np.testing.assert_array_equal(png, expected)
    np.testing.assert_array_equal(store.frame_labels(0), expected)
    # A diagonal stroke: every painted pixel centre is within r of the segment, every other one is not.
    pts = np.array([[0.3, 0.2], [9.6, 7.1]])
    mask = stroke_mask(pts, 2.0, 10, 12)
    v, u = np.mgrid[0:10, 0:12]
    a, b = pts
    t = np.clip(((u - a[0]) * (b - a)[0] + (v - a[1]) * (b - a)[1]) / ((b - a) @ (b - a)), 0, 1)
    d = np.hypot(u - (a[0] + t * (b - a)[0]), v - (a[1] + t * (b - a)[1]))
    np.testing.assert_array_equal(mask, d <= 2.0)


def test_log_replays_strokes_and_undo_and_drops_a_torn_line(tmp_path):
    scene = toy_scene(3, 16, 12)
    run = tmp_path / "run"
    store = StrokeStore(run, scene, scene.classes)
    s = lambda f, c, pts: parse_stroke({"frame": f, "class_id": c, "radius": 1.5, "points": pts}, scene, scene.classes)
    store.add(s(0, 1, [[1, 1], [10, 3]]))
    store.add(s(2, 3, [[5, 5]]))
    store.add(s(0, 5, [[2, 8], [12, 8]]))
    assert store.undo(0) == 2  # the last stroke on frame 0
    before = {i: lab.copy() for i, lab in store.labels.items()}
    with open(run / STROKES_FILE, "a") as f:
        f.write('{"op":"stroke","id":9,"frame":1,"cla')  # kill -9 in the middle of a write
    again = StrokeStore(run, scene, scene.classes)
    assert sorted(again.labels) == [0, 2] and sorted(again.strokes) == [0, 1]
    for i in before:
        np.testing.assert_array_equal(again.labels[i], before[i])
    again.repair()
    again.add(s(1, 2, [[3, 3]]))
    lines = (run / STROKES_FILE).read_text().splitlines()
    assert all(json.loads(line) for line in lines) and json.loads(lines[-1])["frame"] == 1
    # invalid strokes are refused with a reason
    for bad, msg in [
        ({"frame": 7, "class_id": 1, "points": [[0, 0]]}, "frame"),
        ({"frame": 0, "class_id": 42, "points": [[0, 0]]}, "class id 42"),
        ({"frame": 0, "class_id": 1, "points": [[0, float("nan")]]}, "finite"),
        ({"frame": 0, "class_id": 1, "points": []}, "points"),
        ({"frame": 0, "class_id": 1, "tool": "spray", "points": [[0, 0]]}, "tool"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_stroke(bad, scene, scene.classes)


def test_online_dataset_takes_new_labels(tmp_path):
    from labelfield.serve.online import OnlineRayDataset

    scene = toy_scene(3, 16, 12)
    ds = OnlineRayDataset(scene, load_depth=True)
    assert ds.num_labelled_pixels == 0
    lab = np.zeros((12, 16), np.uint8)
    lab[2:4, 5:9] = 4
    ds.set_frame_labels(1, lab, scene.classes)
    lab2 = np.zeros((12, 16), np.uint8)
    lab2[0, 0] = 2
    ds.set_frame_labels(2, lab2, scene.classes)
    assert ds.num_labelled_pixels == 9 and ds.labelled_frames == [1, 2]
    import torch

    batch = ds.sample(64, torch.Generator().manual_seed(0))
    labelled = batch.labels[:16]  # the labelled share of the batch (0.25 * 64)
    assert set(labelled.tolist()) == set(scene.classes.to_index(np.array([4, 2])).tolist())
    ds.set_frame_labels(1, np.zeros((12, 16), np.uint8), scene.classes)  # erased: no longer sampled
    assert ds.num_labelled_pixels == 1 and ds.labelled_frames == [2]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    from labelfield.cli import main

    run = tmp_path / "run"
    (tmp_path / "empty").mkdir()
    assert main(["serve", str(tmp_path / "empty"), "--run", str(run), "--port", "0"]) == 2
    assert not run.exists()
    scene = write_tiny_scene(tmp_path / "scene")
    other = write_tiny_scene(tmp_path / "other", n=4)
    run.mkdir()
    (run / "scene.json").write_text(json.dumps({"frames": ["x"], "scene": str(other)}))
    assert main(["serve", str(scene), "--run", str(run), "--port", "0"]) == 2
    assert "another scene" in capsys.readouterr().err
    (run / "scene.json").unlink()
    (run / "serve.json").write_text("{}")
    (run / STROKES_FILE).write_text('{"op":"stroke","id":0,"frame":0,"class_id":77,"radius":1,"points":[[1,1]]}\n')
    assert main(["serve", str(scene), "--run", str(run), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "class id 77" in err and STROKES_FILE in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in run.iterdir()) == ["serve.json", STROKES_FILE]


@pytest.fixture
def server(tmp_path):
    """An app over a non-training engine, in a thread on a free loopback port: (port, engine)."""
    pytest.importorskip("starlette")
    uvicorn = pytest.importorskip("uvicorn")
    from labelfield.formats import load_scene
    from labelfield.serve.app import make_app
    from labelfield.serve.engine import Engine

    scene_dir = write_tiny_scene(tmp_path / "scene", n=3)
    write_tiny_config(tmp_path / "run", scene_dir)
    engine = Engine(load_scene(scene_dir), scene_dir, tmp_path / "run", device="cpu", threads=1, train=False)
    engine.start()
    servers = []

    def start(token=None, loopback=True):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        srv = uvicorn.Server(uvicorn.Config(make_app(engine, token, loopback), log_level="warning"))
        threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True).start()
        while not srv.started:
            time.sleep(0.02)
        servers.append(srv)
        return sock.getsockname()[1]

    yield start, engine
    for srv in servers:
        srv.should_exit = True
    engine.close()


def _get(port, path, headers=None, method="GET", body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers=headers or {})  # the path is sent as is: no normalisation
    r = c.getresponse()
    return r.status, r.read(), dict(r.getheaders())


def test_no_path_traversal_host_check_token_and_size_limit(server, tmp_path):
    from labelfield.serve.app import resolve_inside

    start, engine = server
    port = start()
    assert _get(port, "/")[0] == 200 and _get(port, "/static/app.js")[0] == 200
    for path in [
        "/static/../app.py",
        "/static/../../serve/engine.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e/app.py",
        "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/static//etc/passwd",
        "/static/../../../../etc/passwd",
        "/api/frame/99/image",
        "/api/frame/-1/image",
        "/api/frame/..%2f..%2fetc/image",
    ]:
        status, body, _ = _get(port, path)
        assert status in (403, 404), path
        assert b"import" not in body and b"root:" not in body, path
    # symlinks out of a root are refused too
    (tmp_path / "root").mkdir()
    (tmp_path / "secret.txt").write_text("x")
    (tmp_path / "root" / "link.txt").symlink_to(tmp_path / "secret.txt")
    assert resolve_inside(tmp_path / "root", "link.txt") is None
    assert resolve_inside(tmp_path / "root", "../secret.txt") is None
    # DNS rebinding: a foreign Host is refused on a loopback bind
    assert _get(port, "/api/status", {"Host": "evil.example:80"})[0] == 403
    # body size limit and a class id beyond the table
    assert _get(port, "/api/strokes", method="POST", body=b"x" * (5 * 2**20))[0] == 413
    bad = json.dumps({"frame": 0, "class_id": 99, "points": [[1, 1]]})
    status, body, _ = _get(port, "/api/strokes", method="POST", body=bad)
    assert status == 400 and b"class id 99" in body
    assert not (tmp_path / "run" / STROKES_FILE).exists()
    # a non-loopback bind needs the token; the query token becomes a cookie
    tport = start(token="s3cret", loopback=False)
    assert _get(tport, "/api/status")[0] == 403
    assert _get(tport, "/api/status?token=wrong")[0] == 403
    status, _, headers = _get(tport, "/?token=s3cret")
    assert status == 200 and "labelfield_token=s3cret" in headers.get("set-cookie", "")
    assert _get(tport, "/api/status", {"Cookie": "labelfield_token=s3cret"})[0] == 200


def _cloud(port, query=""):
    from labelfield.serve.cloud import decode

    status, body, headers = _get(port, "/api/cloud" + query)
    assert status == 200, body[:200]
    assert headers["content-type"] == "application/octet-stream"
    return decode(body)


def _check_cloud(header, arrays, engine, max_points):
    from labelfield.serve.cloud import VOID_COLOR

    n = header["count"]
    assert 0 < n <= max_points
    assert arrays["xyz"].shape == (n, 3) and arrays["xyz"].dtype == np.float32
    assert np.isfinite(arrays["xyz"]).all()
    assert {k: arrays[k].shape for k in ("rgb", "label_rgb", "label")} == {
        "rgb": (n, 3),
        "label_rgb": (n, 3),
        "label": (n,),
    }
    label = arrays["label"].astype(np.int64)
    assert set(np.unique(label)) <= set(engine.classes.ids) | {engine.classes.void_id}
    want = engine.classes.colorize(label)
    want[label == engine.classes.void_id] = VOID_COLOR
    np.testing.assert_array_equal(arrays["label_rgb"], want)  # colour by label = the class table's colours
    cams = header["cameras"]
    assert [c["frame"] for c in cams] == list(range(len(engine.scene)))
    for c, f in zip(cams, engine.scene.frames):
        np.testing.assert_allclose(c["center"], f.c2w[:3, 3], atol=1e-4)
        np.testing.assert_allclose(c["forward"], f.c2w[:3, 2], atol=1e-4)
        assert np.asarray(c["corners"]).shape == (4, 3)
    # the points lie where the cameras look: in front of at least one camera
    front = [(arrays["xyz"] - f.c2w[:3, 3]) @ f.c2w[:3, 2] > 0 for f in engine.scene.frames]
    assert np.any(front, axis=0).mean() > 0.99


def test_cloud_endpoint_points_colours_cameras_and_bad_params(server):
    start, engine = server
    port = start()
    header, arrays = _cloud(port)
    assert header["depth"] == "scene" and header["frames"] == [0, 1, 2]
    assert header["labels_from"]["none"] == 3 and (arrays["label"] == 0).all()  # no stroke yet: all void
    _check_cloud(header, arrays, engine, 50_000)
    assert not any(c["labelled"] for c in header["cameras"])
    # a stroke: the worker fills in thumbnails (labels), the cloud takes them up, frame 1 is marked labelled
    body = json.dumps({"frame": 1, "class_id": 2, "radius": 3, "points": [[4, 4], [20, 15]]})
    assert _get(port, "/api/strokes", method="POST", body=body)[0] == 200
    deadline = time.time() + 60
    while len(engine.thumbs) < 3 and time.time() < deadline:
        time.sleep(0.1)
    header, arrays = _cloud(port, "?frames=1000&max_points=300")  # frames beyond the scene: all of them
    assert header["frames"] == [0, 1, 2] and header["labels_from"]["thumbnail"] == 3
    _check_cloud(header, arrays, engine, 300)
    assert (arrays["label"] != 0).all()  # every point carries a predicted class
    assert [c["labelled"] for c in header["cameras"]] == [False, True, False]
    header, arrays = _cloud(port, "?frames=1&max_points=1")
    assert header["frames"] == [0] and header["count"] == 1
    for bad in [
        "frames=0",
        "frames=abc",
        "frames=-1",
        "frames=1.5",
        "max_points=0",
        "max_points=200001",
        "max_points=1e3",
        "max_points=",
        "frames=99999999999",
    ]:
        status, body, _ = _get(port, "/api/cloud?" + bad)
        assert status == 400 and b"must be a whole number" in body, bad


def test_cloud_from_rendered_depth_when_the_scene_has_none(tmp_path):
    """A scene without depth maps: the cloud's depth is the field's, rendered small on the worker."""
    pytest.importorskip("starlette")
    from labelfield.formats import load_scene
    from labelfield.serve.cloud import RENDER_SIZE, CloudBuilder
    from labelfield.serve.engine import Engine

    scene_dir = write_tiny_scene(tmp_path / "scene", n=3)
    scene = load_scene(scene_dir)
    for f in scene.frames:
        f.depth_path = None
    write_tiny_config(tmp_path / "run", scene_dir, depth_loss=False)
    engine = Engine(scene, scene_dir, tmp_path / "run", device="cpu", threads=1, train=False)
    engine.start()
    try:
        # the untrained field: whatever it renders is finite, bounded, and made on the worker
        header, arrays = CloudBuilder(engine).build(3, 500)
        assert header["depth"] == "rendered" and header["labels_from"]["none"] == 3  # no stroke: no labels
        assert sorted(engine.geometry) == [0, 1, 2]
        assert max(engine.geometry[0].labels.shape) == min(RENDER_SIZE, max(scene.frames[0].size))
        assert header["count"] <= 500 and np.isfinite(arrays["xyz"]).all()
        # after a stroke the strip's thumbnails carry the rendered depth and the labels: no extra render
        stroke = {"frame": 0, "class_id": 3, "radius": 2, "points": [[5, 5], [9, 5]]}
        engine.store.add(parse_stroke(stroke, scene, engine.classes))
        deadline = time.time() + 60
        while len(engine.thumbs) < 3 and time.time() < deadline:
            time.sleep(0.1)
        assert all(p.depth is not None and p.depth.shape == p.labels.shape for p in engine.thumbs.values())
        header, arrays = CloudBuilder(engine).build(3, 500)
        assert header["labels_from"]["thumbnail"] == 3 and (arrays["label"] != 0).any()
        assert np.isfinite(arrays["xyz"]).all() and header["count"] <= 500
    finally:
        engine.close()
