"""Sparse-label specs: --labelled, --label-density, --label-noise, determinism and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from labelfield.errors import LabelfieldError
from labelfield.labels import (
    count_labelled_pixels,
    downsample_labels,
    erode,
    make_sparse_labels,
    parse_labelled,
)
from labelfield.scene import ClassTable, Frame, Scene
from labelfield.synth.toy import toy_scene


@pytest.fixture(scope="module")
def scene():
    return toy_scene(20, 48, 36)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("every:10", [0, 10]),
        ("every:7", [0, 7, 14]),
        ("count:3", [0, 10, 19]),
        ("count:1", [0]),
        ("fraction:0.1", [0, 19]),
        ("fraction:0.01", [0]),
        ("0,5, 12", [0, 5, 12]),
        ("3", [3]),
        ("all", list(range(20))),
    ],
)
def test_parse_labelled(spec, expected):
    assert parse_labelled(spec, 20) == expected


def test_parse_random():
    a = parse_labelled("random:4:3", 20)
    assert len(a) == 4 and a == sorted(set(a)) and all(0 <= i < 20 for i in a)
    assert a == parse_labelled("random:4:3", 20, seed=99)  # the spec's own seed wins
    assert parse_labelled("random:4", 20, seed=1) == parse_labelled("random:4", 20, seed=1)
    assert any(parse_labelled("random:4", 20, seed=s) != parse_labelled("random:4", 20, seed=1) for s in range(5))


@pytest.mark.parametrize(
    "spec", ["every", "every:x", "every:0", "count:-1", "fraction:2", "random:a", "foo:3", "1,b", "", "random:1:2:3"]
)
def test_parse_malformed(spec):
    with pytest.raises(LabelfieldError, match="--labelled"):
        parse_labelled(spec, 20)


def test_parse_selects_none_or_out_of_range():
    with pytest.raises(LabelfieldError, match="selects no frame"):
        parse_labelled("count:0", 20)
    with pytest.raises(LabelfieldError, match="out of range"):
        parse_labelled("0,40", 20)


def test_full_density_keeps_labels(scene):
    sp = make_sparse_labels(scene, "every:10", "full")
    assert sorted(sp) == [0, 10]
    np.testing.assert_array_equal(sp[10], scene.frames[10].load_labels())


def test_clicks(scene):
    sp = make_sparse_labels(scene, "every:10", "clicks:3", seed=1)
    big = 0
    for i, m in sp.items():
        gt = scene.frames[i].load_labels()
        keep = m != 0
        assert np.all(m[keep] == gt[keep])
        for c in np.unique(gt):
            if c:
                # 3 clicks inside the class interior (eroded by 1 px at this size); fewer only when the
                # interior (or, with no interior, the class itself) has fewer than 3 pixels
                inner = erode(gt == c, 1)
                where = inner if inner.any() else gt == c
                assert (m == c).sum() == min(3, int(where.sum()))
                assert where[m == c].all()
                big += inner.sum() >= 3
    assert big >= 4  # the check above ran on real regions


def test_scribbles_inside_regions(scene):
    sp = make_sparse_labels(scene, "every:5", "scribbles", seed=2)
    total = 0
    for i, m in sp.items():
        gt = scene.frames[i].load_labels()
        keep = m != 0
        assert np.all(m[keep] == gt[keep])  # never crosses a region boundary
        frac = keep.mean()
        assert 0 < frac < 0.3  # thin strokes, not full labels
        total += keep.sum()
        # classes with a non-trivial area get at least one stroke pixel
        for c in np.unique(gt):
            if c and erode(gt == c, 1).sum() > 20:
                assert (m == c).sum() >= 3
    assert total > 0


def test_percent(scene):
    sp = make_sparse_labels(scene, "every:10", "percent:10", seed=0)
    m = sp[0]
    gt = scene.frames[0].load_labels()
    assert (m != 0).sum() == round(0.1 * (gt != 0).sum())
    assert np.all(m[m != 0] == gt[m != 0])


def test_lowres(scene):
    sp = make_sparse_labels(scene, "every:10", "lowres:8")
    gt = scene.frames[0].load_labels()
    m = sp[0]
    assert m.shape == gt.shape
    # constant on 8x8 blocks, and agrees with GT at the block centres
    blocks = m[:32, :48].reshape(4, 8, 6, 8)
    assert np.all(blocks == blocks[:, :1, :, :1])
    np.testing.assert_array_equal(m[4::8, 4::8], gt[4::8, 4::8])
    assert (m != gt).any()  # lost detail


def test_downsample_labels_factor_one_and_odd_size():
    lab = np.arange(35).reshape(5, 7)
    np.testing.assert_array_equal(downsample_labels(lab, 1), lab)
    d = downsample_labels(lab, 4)
    assert d.shape == (5, 7) and d[0, 0] == lab[2, 2] and d[4, 6] == lab[4, 6]


def test_noise(scene):
    clean = make_sparse_labels(scene, "every:10", "full")
    noisy = make_sparse_labels(scene, "every:10", "full", noise="pixel:0.3", seed=0)
    m, c = noisy[0], clean[0]
    flipped = m != c
    assert abs(flipped.sum() / (c != 0).sum() - 0.3) < 1e-3
    assert np.all(m[flipped] != 0) and set(np.unique(m)) <= set(scene.classes.ids)
    assert np.all(m[c == 0] == 0)


def test_deterministic(scene):
    for density in ("clicks:4", "scribbles", "percent:5"):
        a = make_sparse_labels(scene, "random:3", density, noise="pixel:0.2", seed=5)
        b = make_sparse_labels(scene, "random:3", density, noise="pixel:0.2", seed=5)
        c = make_sparse_labels(scene, "random:3", density, noise="pixel:0.2", seed=6)
        assert sorted(a) == sorted(b)
        assert all(np.array_equal(a[i], b[i]) for i in a)
        assert sorted(a) != sorted(c) or any(not np.array_equal(a[i], c[i]) for i in a)
    assert count_labelled_pixels(a) > 0


@pytest.mark.parametrize("spec", ["sparse", "clicks:0", "clicks:x", "percent:0", "percent:101", "lowres:0"])
def test_bad_density(scene, spec):
    with pytest.raises(LabelfieldError, match="--label-density"):
        make_sparse_labels(scene, "every:10", spec)


@pytest.mark.parametrize("spec", ["pixel:2", "pixel", "flip:0.1"])
def test_bad_noise(scene, spec):
    with pytest.raises(LabelfieldError, match="--label-noise"):
        make_sparse_labels(scene, "every:10", noise=spec)


def test_frame_without_labels(tmp_path):
    s = toy_scene(4, 16, 12)
    f = s.frames[2]
    s.frames[2] = Frame(f.name, f.intrinsics, f.c2w, rgb_path=tmp_path / "rgb_2.png", arrays={"rgb": f.load_rgb()})
    with pytest.raises(LabelfieldError, match="frame_002.*no label") as e:
        make_sparse_labels(s, "0,2")
    assert "rgb_2.png" in str(e.value)
    assert sorted(make_sparse_labels(s, "0,1")) == [0, 1]


def test_label_id_not_in_table(tmp_path):
    s = toy_scene(4, 16, 12)
    f = s.frames[1]
    bad = f.load_labels().copy()
    bad[0, 0] = 9
    s.frames[1] = Frame(f.name, f.intrinsics, f.c2w, label_path=tmp_path / "label_1.png", arrays={"labels": bad})
    with pytest.raises(LabelfieldError, match="label id 9 is not in the class table") as e:
        make_sparse_labels(s, "every:1")
    assert "label_1.png" in str(e.value)


def test_empty_after_density():
    s = toy_scene(4, 16, 12)
    blank = Scene(
        [Frame(f.name, f.intrinsics, f.c2w, arrays={"labels": np.zeros((12, 16), np.uint8)}) for f in s.frames],
        ClassTable.from_names(["void", "a"]),
    )
    with pytest.raises(LabelfieldError, match="empty label set"):
        make_sparse_labels(blank, "every:1", "clicks:2")
