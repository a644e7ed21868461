"""`labelfield batch`: manifests (YAML/JSON/CSV/folder, per-scene overrides), the serial executor, and on a local
Ray of 2 CPUs: a broken scene fails alone, reruns skip finished scenes, a SIGKILLed worker is retried and the
scene finishes from its checkpoint, and a batch scene equals the same scene run with fit + annotate directly."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from labelfield.cli import main
from labelfield.errors import LabelfieldError
from labelfield.formats import write_scene
from labelfield.io import read_image
from labelfield.synth.toy import toy_scene

HAVE_RAY = importlib.util.find_spec("ray") is not None
HAVE_YAML = importlib.util.find_spec("yaml") is not None
needs_ray = pytest.mark.skipif(
    not HAVE_RAY,
    reason="Ray is not installed (the `cluster` extra: pip install -e '.[cluster]'; `make test` installs it)",
)

# Sized for 4 frames of 24x16 on one shared core: a few seconds per scene.
SMALL = {
    "log2_table_size": 12,
    "n_levels": 4,
    "max_resolution": 128,
    "occupancy_resolution": 16,
    "hidden_dim": 16,
    "samples_per_diagonal": 64,
    "max_samples_per_ray": 16,
}
FIT_ARGS = ["--labelled", "every:2", "--batch-rays", "128", "--log-every", "10", "--seed", "3"] + [
    a for k, v in SMALL.items() for a in (f"--model.{k.replace('_', '-')}", str(v))
]


def make_scenes(root: Path, names=("a", "b"), broken: str | None = None) -> Path:
    for i, n in enumerate(names):
        write_scene(toy_scene(4, 24, 16, seed=i, binary=True, room=False), root / n, "replica")
    if broken:
        write_scene(toy_scene(4, 24, 16, seed=9, binary=True, room=False), root / broken, "replica")
        (root / broken / "traj_w_c.txt").unlink()  # unreadable scene: no poses
    return root


def summary(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text())
    return {r["name"]: r for r in s["scenes"]}


# --- manifests (no Ray) -------------------------------------------------------------------------------------
def test_manifest_formats_and_overrides(tmp_path):
    from labelfield.batch.manifest import read_manifest
    from labelfield.batch.pipeline import fit_option_names

    make_scenes(tmp_path / "scenes", ("a", "b"))
    defaults = {"steps": 100, "labelled": "every:10", "model_config": {"hidden_dim": 64, "n_levels": 16}}
    assert "steps" in fit_option_names() and "out" not in fit_option_names()
    (tmp_path / "m.json").write_text(
        json.dumps(
            {
                "defaults": {"steps": 50},
                "scenes": [
                    "scenes/a",
                    {
                        "path": "scenes/b",
                        "name": "bee",
                        "labelled": "count:2",
                        "gt": "scene",
                        "export": ["coco"],
                        "model_config": {"hidden_dim": 8},
                    },
                ],
            }
        )
    )
    a, b = read_manifest(tmp_path / "m.json", defaults)
    assert a.name == "a" and a.path == str(tmp_path / "scenes" / "a") and a.gt is None
    assert a.fit["steps"] == 50 and a.fit["labelled"] == "every:10"  # manifest defaults > command line
    assert b.name == "bee" and b.fit["labelled"] == "count:2" and b.gt == b.path and b.export == ["coco"]
    assert b.fit["model_config"] == {"hidden_dim": 8, "n_levels": 16}  # nested options merge key by key

    (tmp_path / "m.csv").write_text(
        "path,steps,depth_loss,model_config.hidden_dim,export\nscenes/a,7,on,12,cvat;coco\nscenes/b,,,,\n"
    )
    a, b = read_manifest(tmp_path / "m.csv", defaults, gt_default="scene")
    assert a.fit["steps"] == 7 and a.fit["depth_loss"] == "on" and a.fit["model_config"]["hidden_dim"] == 12
    assert a.export == ["cvat", "coco"] and b.fit["steps"] == 100 and b.gt == b.path

    found = read_manifest(tmp_path / "scenes", defaults)  # a folder: every scene below it
    assert [s.name for s in found] == ["a", "b"]
    if HAVE_YAML:
        (tmp_path / "m.yaml").write_text("- scenes/a\n- {path: scenes/b, time_budget: 30}\n")
        a, b = read_manifest(tmp_path / "m.yaml", defaults)
        assert b.fit["time_budget"] == 30 and a.fit.get("time_budget") is None


@pytest.mark.parametrize(
    "text, message",
    [
        ('["scenes/a", {"path": "scenes/a"}]', "two scenes are named 'a'"),
        ('[{"path": "scenes/a", "stepz": 3}]', "unknown key 'stepz'"),
        ('[{"path": "scenes/a", "out": "x"}]', "unknown key 'out'"),
        ('[{"path": "scenes/a", "export": ["pdf"]}]', "unknown export format 'pdf'"),
        ('[{"path": "scenes/a", "model_config": {"hiden_dim": 3}}]', "hiden_dim"),
        ("[]", "lists no scenes"),
    ],
)
def test_bad_manifest_is_one_line_naming_it(tmp_path, text, message):
    from labelfield.batch.manifest import read_manifest
    from labelfield.batch.pipeline import fit_options
    from labelfield.train.config import FitConfig

    (tmp_path / "m.json").write_text(text)
    with pytest.raises(LabelfieldError, match=message) as e:
        read_manifest(tmp_path / "m.json", fit_options(FitConfig()))
    assert "m.json" in str(e.value) and "\n" not in str(e.value)


def test_worker_visibility_check(tmp_path):
    from labelfield.batch.executor import _check_visible

    (tmp_path / "tok").write_text("abc")
    ok = _check_visible([str(tmp_path)], str(tmp_path / "tok"), "abc")
    assert ok["missing"] == [] and ok["out_ok"]
    bad = _check_visible([str(tmp_path / "nope")], str(tmp_path / "tok"), "other batch")
    assert bad["missing"] == [str(tmp_path / "nope")] and not bad["out_ok"]


def test_serial_batch_exit_2_when_a_worker_cannot_see_a_scene(tmp_path, monkeypatch, capsys):
    """The driver sees the scene, the process running it does not: one line, exit 2."""
    import labelfield.batch.command  # noqa: F401 - binds the driver's own check before the patch
    import labelfield.batch.pipeline as pipeline

    make_scenes(tmp_path / "scenes", ("a",))
    monkeypatch.setattr(pipeline, "scene_visible", lambda spec: spec.path)
    rc = main(["batch", str(tmp_path / "scenes"), "--out", str(tmp_path / "out"), "--local", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot see scene path" in err[0] and "scenes/a" in err[0]


# --- on a local Ray ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    if not HAVE_RAY:
        pytest.skip("Ray is not installed (the `cluster` extra)")
    import ray

    from labelfield.batch.executor import start_local_ray

    start_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def first_batch(local_ray, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    make_scenes(root / "scenes", ("a", "b"), broken="c")
    (root / "m.json").write_text(
        json.dumps({"defaults": {"steps": 30}, "scenes": ["scenes/a", "scenes/b", "scenes/c"]})
    )
    out = root / "out"
    args = ["batch", str(root / "m.json"), "--out", str(out), "--cpus-per-scene", "1", "--no-progress", *FIT_ARGS]
    rc = main(args + ["--eval-scene-labels"])
    return root, out, args, rc


@needs_ray
def test_broken_scene_fails_alone_and_rerun_skips_done(first_batch, capsys):
    root, out, args, rc = first_batch
    s = summary(out)
    assert rc == 1  # a failed scene: exit 1
    assert s["a"]["status"] == "done" and s["b"]["status"] == "done" and s["a"]["steps"] == 30
    assert s["a"]["miou"] is not None and (out / "a" / "labels" / "frames.json").is_file()
    assert s["c"]["status"] == "failed" and "traj_w_c.txt" in s["c"]["error"] and "\n" not in s["c"]["error"]
    assert "2 done" in (out / "summary.md").read_text()

    stamp = (out / "a" / "done.json").stat().st_mtime_ns
    rc2 = main(args + ["--eval-scene-labels"])
    s2 = summary(out)
    assert rc2 == 1 and s2["a"]["status"] == s2["b"]["status"] == "skipped" and s2["c"]["status"] == "failed"
    assert (out / "a" / "done.json").stat().st_mtime_ns == stamp  # not redone
    assert s2["a"]["miou"] == s["a"]["miou"]
    assert "2 skipped, 1 failed" in capsys.readouterr().out
    other_seed = [("4" if a == "3" and args[i - 1] == "--seed" else a) for i, a in enumerate(args)]
    assert main(other_seed) == 1  # other options: still skipped, and the user is told
    assert "were done with other options" in capsys.readouterr().err


@needs_ray
def test_batch_scene_equals_fit_and_annotate_run_directly(first_batch, tmp_path):
    root, out, _, _ = first_batch
    direct = tmp_path / "run"
    assert (
        main(
            [
                "fit",
                str(root / "scenes" / "a"),
                "--out",
                str(direct),
                "--steps",
                "30",
                "--threads",
                "1",
                "--device",
                "cpu",
                "--no-progress",
                *FIT_ARGS,
            ]
        )
        == 0
    )
    assert main(["annotate", str(direct), "--out", str(tmp_path / "labels"), "--no-progress"]) == 0
    names = sorted(p.name for p in (tmp_path / "labels" / "labels").glob("*.png"))
    assert len(names) == 4
    for n in names:
        mine, theirs = read_image(out / "a" / "labels" / "labels" / n), read_image(tmp_path / "labels" / "labels" / n)
        assert np.array_equal(mine, theirs), n
        assert np.array_equal(read_image(out / "a" / "labels" / "rgb" / n), read_image(tmp_path / "labels" / "rgb" / n))


@needs_ray
def test_killed_worker_is_retried_and_resumes(local_ray, tmp_path):
    make_scenes(tmp_path / "scenes", ("k",))
    out = tmp_path / "out"
    args = [
        "batch",
        str(tmp_path / "scenes"),
        "--out",
        str(out),
        "--cpus-per-scene",
        "1",
        "--no-progress",
        "--steps",
        "300",
        "--checkpoint-every",
        "20",
        "--retries",
        "2",
        *FIT_ARGS,
    ]
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(main(args)))
    t.start()
    ckpts = out / "k" / "run" / "checkpoints"
    deadline = time.time() + 60
    while time.time() < deadline and not list(ckpts.glob("step_*.pt")):
        time.sleep(0.05)
    pid = json.loads((out / "k" / "attempts.json").read_text())["pid"]
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)  # mid-fit: at least one checkpoint on disk, far from step 300
    t.join(120)
    s = summary(out)["k"]
    assert rc == [0] and s["status"] == "done" and s["steps"] == 300
    assert s["attempts"] == 2 and s["resumed_from"] is not None and s["resumed_from"] >= 20
