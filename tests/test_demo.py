"""`labelfield demo` end to end on a tiny generated scene (a few seconds of training): fit -> annotate ->
evaluate, the summary table, and the files it promises."""

from __future__ import annotations

import json

import pytest

from labelfield.cli import main
from labelfield.formats import write_scene
from labelfield.labelset import read_labelset
from labelfield.synth.toy import toy_scene


def test_demo_runs_on_a_tiny_scene(tmp_path, capsys: pytest.CaptureFixture) -> None:
    scene_dir = write_scene(toy_scene(6, 32, 24, binary=True, room=False), tmp_path / "scene", "replica")
    args = ["demo", "--scene", str(scene_dir), "--out", str(tmp_path / "demo"), "--labelled", "every:3"]
    assert main(args + ["--time-budget", "2", "--device", "cpu"]) == 0
    (run,) = (tmp_path / "demo").iterdir()  # one new timestamped run folder
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt"))
    ls = read_labelset(run / "labels")
    assert len(ls.names) == 6 and [r.labelled for r in ls.frames] == [i % 3 == 0 for i in range(6)]
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["all"]["miou"] <= 1.0 and metrics["unlabelled"]["accuracy"] is not None
    assert (run / "labels" / "report.html").is_file()
    out = capsys.readouterr().out
    assert "labelfield demo" in out and "mIoU" in out and str(run / "labels") in out.replace("\n", "")
    # a missing scene is one line and exit 2
    assert main(["demo", "--scene", str(tmp_path / "none"), "--out", str(tmp_path / "d2")]) == 2
