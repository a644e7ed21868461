"""Baselines: nearest copies labels; reproject with GT depth beats a constant prediction; CLI writes LABELS."""

from __future__ import annotations

import numpy as np
import pytest

from labelfield import formats
from labelfield.baselines.nearest import nearest_labels, nearest_source
from labelfield.baselines.reproject import reproject_labels, warp_labels
from labelfield.errors import LabelfieldError
from labelfield.evaluate.metrics import ConfusionMatrix
from labelfield.labels import make_sparse_labels
from labelfield.scene import Frame
from labelfield.synth.toy import toy_scene


@pytest.fixture(scope="module")
def scene():
    return toy_scene(24, 48, 36)


def score(scene, dense, skip):
    cm = ConfusionMatrix(scene.classes)
    for i, f in enumerate(scene.frames):
        if i not in skip:
            cm.update(f.load_labels(), dense[i])
    return cm.compute()


def test_nearest_source_and_copy(scene):
    assert [nearest_source(i, [0, 10, 20]) for i in (0, 4, 5, 6, 16, 23)] == [0, 0, 0, 10, 20, 20]
    sp = make_sparse_labels(scene, "every:10")
    dense = nearest_labels(sp, len(scene.frames))
    assert sorted(dense) == list(range(24))
    np.testing.assert_array_equal(dense[4], sp[0])
    np.testing.assert_array_equal(dense[17], sp[20])
    np.testing.assert_array_equal(dense[10], sp[10])
    assert dense[4] is not sp[0]


def test_warp_to_itself_is_identity(scene):
    f = scene.frames[3]
    lab, d = f.load_labels(), f.load_depth()
    w = warp_labels(lab, d, f.intrinsics, f.c2w, f.intrinsics, f.c2w, d)
    assert (w == lab).mean() > 0.99


def test_reproject_beats_constant_and_nearest(scene):
    sp = make_sparse_labels(scene, "every:4")
    dense = reproject_labels(scene, sp, n_sources=2)
    r = score(scene, dense, sp)
    const = {i: np.full((36, 48), 2, np.uint8) for i in range(24)}  # everything "wall"
    c = score(scene, const, sp)
    nn = score(scene, nearest_labels(sp, 24), sp)
    assert r["miou"] > c["miou"] + 0.3
    assert r["miou"] > nn["miou"]
    hole = np.mean([(dense[i] == 0).mean() for i in range(24) if i not in sp])
    assert 0 < hole < 0.2  # holes stay void, but not many
    np.testing.assert_array_equal(dense[8], sp[8])  # given frames keep their labels
    more = score(scene, reproject_labels(scene, sp, n_sources=4), sp)
    assert more["accuracy"] >= r["accuracy"] - 1e-9  # farther sources only fill holes


def test_reproject_needs_depth(scene):
    s = toy_scene(6, 16, 12)
    f = s.frames[0]
    s.frames[0] = Frame(f.name, f.intrinsics, f.c2w, arrays={"labels": f.load_labels(), "rgb": f.load_rgb()})
    with pytest.raises(LabelfieldError, match="needs depth"):
        reproject_labels(s, make_sparse_labels(s, "0,3"))


def test_baseline_command(scene, tmp_path):
    from labelfield.baselines.command import BaselineCommand
    from labelfield.evaluate.core import evaluate
    from labelfield.labelset import read_labelset

    small = toy_scene(12, 32, 24)
    gt_dir = formats.write_scene(small, tmp_path / "gt", "replica")
    gt = formats.load_scene(gt_dir)
    results = {}
    for method in ("nearest", "reproject"):
        out = tmp_path / method
        assert BaselineCommand(gt_dir, out=out, method=method, labelled="every:4").run() == 0
        ls = read_labelset(out)
        assert ls.method == method and len(ls.names) == 12
        assert [r.index for r in ls.frames if r.given] == [0, 4, 8]
        assert (out / "overlay").is_dir()
        results[method] = evaluate(ls, gt).summary["unlabelled"]
        np.testing.assert_array_equal(ls.load_labels(ls.names[4]), gt.frames[4].load_labels())
    assert results["reproject"]["miou"] > results["nearest"]["miou"]
    with pytest.raises(LabelfieldError, match="inside the input scene"):
        BaselineCommand(gt_dir, out=gt_dir / "labels_out").run()
    with pytest.raises(LabelfieldError, match="selects no frame"):
        BaselineCommand(gt_dir, out=tmp_path / "x", labelled="count:0").run()
    assert not (tmp_path / "x").exists()


def test_reproject_sparse_clicks(scene):
    sp = make_sparse_labels(scene, "every:6", "clicks:5", seed=0)
    dense = reproject_labels(scene, sp)
    clicks = {i: int((m != 0).sum()) for i, m in sp.items()}
    for i, f in enumerate(scene.frames):
        m = dense[i] != 0
        srcs = sorted(sp, key=lambda j: (abs(j - i), j))[:4]
        assert 0 < m.sum() <= sum(clicks[j] for j in srcs)  # each click lands on at most one pixel
        assert (dense[i][m] == f.load_labels()[m]).mean() > 0.9


def test_cli_exit_code(tmp_path):
    from labelfield.cli import main

    gt_dir = formats.write_scene(toy_scene(6, 16, 12), tmp_path / "gt", "replica")
    assert main(["baseline", str(gt_dir), "--out", str(tmp_path / "L"), "--labelled", "every:x"]) == 2
    assert not (tmp_path / "L").exists()
    assert main(["baseline", str(gt_dir), "--out", str(tmp_path / "L"), "--method", "nearest"]) == 0
    assert main(["eval", str(tmp_path / "L"), "--gt", str(gt_dir), "--no-report"]) == 0
    assert main(["eval", str(tmp_path / "L"), "--gt", str(tmp_path / "missing")]) == 2


def test_baseline_depth_tolerance_default_is_the_library_default():
    from labelfield.baselines.command import BaselineCommand
    from labelfield.baselines.reproject import REL_TOL

    assert BaselineCommand.__dataclass_fields__["depth_tol"].default == REL_TOL
