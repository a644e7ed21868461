"""Core pieces every stage relies on: atomic I/O, the class table, frame loading, the CLI's error path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labelfield.cameras import Intrinsics
from labelfield.errors import LabelfieldError
from labelfield.io import atomic_dir, atomic_path, read_image, write_image
from labelfield.scene import ClassTable, Frame, Scene


def test_atomic_path_keeps_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_dir_replaces_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "x").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "y").write_text("2")
        raise RuntimeError("crash")
    assert sorted(p.name for p in out.iterdir()) == ["x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_image_round_trip_uint16_and_palette(tmp_path: Path) -> None:
    depth = (np.arange(12, dtype=np.uint16) * 5000).reshape(3, 4)
    write_image(tmp_path / "d.png", depth)
    assert np.array_equal(read_image(tmp_path / "d.png"), depth)
    lab = np.array([[0, 1], [2, 3]], np.uint8)
    write_image(tmp_path / "l.png", lab, palette=np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]))
    assert np.array_equal(read_image(tmp_path / "l.png"), lab)


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(LabelfieldError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(LabelfieldError, match="bad.png: unreadable"):
        read_image(bad)


def test_class_table_indices_and_ids() -> None:
    table = ClassTable([3, 7, 300], ["a", "b", "c"], [(1, 2, 3), (4, 5, 6), (7, 8, 9)], background_class=7)
    assert table.ids[0] == 0 and table.num_classes == 3
    labels = np.array([[0, 3], [7, 300]])
    index = table.to_index(labels)
    assert index.tolist() == [[-1, 0], [1, 2]]
    back = table.to_ids(index)
    assert back.dtype == np.uint16 and np.array_equal(back, labels)
    assert ClassTable.from_json(table.to_json()) == table
    with pytest.raises(LabelfieldError, match="label id 5"):
        table.check_labels(np.array([5]), "x.png")
    with pytest.raises(LabelfieldError, match="background_class"):
        ClassTable([1], ["a"], [(0, 0, 0)], background_class=4)


def test_frame_composites_rgba_over_background(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque pixel stays, transparent ones take the background
    write_image(tmp_path / "f.png", rgba)
    intr = Intrinsics(2.0, 2.0, 0.5, 0.5, 2, 2)
    frame = Frame("f", intr, np.eye(4), rgb_path=tmp_path / "f.png", background=(1, 0, 0))
    rgb = frame.load_rgb()
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[1, 1].tolist() == [255, 0, 0]


def test_frame_rejects_wrong_size_and_bad_pose(tmp_path: Path) -> None:
    write_image(tmp_path / "f.png", np.zeros((5, 7, 3), np.uint8))
    frame = Frame("f", Intrinsics(2.0, 2.0, 1.5, 1.5, 4, 4), np.eye(4), rgb_path=tmp_path / "f.png")
    with pytest.raises(LabelfieldError, match="f.png: image size 7x5"):
        frame.load_rgb()
    pose = np.eye(4)
    pose[0, 3] = np.nan
    scene = Scene([Frame("g", frame.intrinsics, pose)], ClassTable.from_names(["void", "a"]))
    with pytest.raises(LabelfieldError, match="not a finite"):
        scene.validate()


def test_cli_reports_bad_input_in_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from labelfield.cli import main

    code = main(["info", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nowhere" in err[0]
