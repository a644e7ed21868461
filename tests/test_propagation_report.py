"""The propagation benchmark's bookkeeping: time for ngp to reach semantic-nerf's final mIoU, tables, plot."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import propagation_report as report  # noqa: E402


def _pt(seconds: float, miou: float | None, consistency: float | None = 0.9, steps: int | None = 1) -> dict:
    return {
        "seconds": seconds,
        "steps": steps,
        "miou": miou,
        "accuracy": miou,
        "class_avg_accuracy": miou,
        "consistency": consistency,
        "psnr": 20.0,
    }


def _run(method: str, points: list[dict], scene: str = "s0", fraction: float = 0.1) -> dict:
    return {
        "scene": scene,
        "fraction": fraction,
        "labelled": f"fraction:{fraction:g}",
        "method": method,
        "n_frames": 60,
        "n_labelled": 6,
        "eval_frames": [1, 2],
        "points": points,
    }


def _results(runs: list[dict]) -> dict:
    settings = {
        "budget_s": 10.0,
        "nerf_budget_s": 200.0,
        "nerf_budget_factor": 20.0,
        "density": "full",
        "noise": None,
        "seed": 0,
        "eval_set": "unlabelled",
    }
    return {
        "command": "python benchmarks/propagation.py",
        "machine": {"threads": 2},
        "settings": settings,
        "eval_note": "test",
        "runs": runs,
        "summary": report.summarise(runs),
    }


def test_time_to_reach_and_speedup() -> None:
    runs = [
        _run("ngp", [_pt(0.5, 0.3), _pt(1.0, 0.62), _pt(2.0, 0.7), _pt(10.0, 0.9, 0.95)]),
        _run("semantic-nerf", [_pt(50.0, 0.2), _pt(200.0, 0.6)]),
        _run("reproject", [_pt(0.1, 0.5, 0.97)]),
        _run("nearest", [_pt(0.001, 0.4, 0.5)]),
    ]
    (row,) = report.summarise(runs)
    assert row["nerf_final_miou"] == 0.6 and row["nerf_seconds"] == 200.0
    assert row["ngp_seconds_to_reach"] == 1.0 and row["speedup"] == pytest.approx(200.0)
    assert row["target_met"] is True and row["note"] == ""
    assert row["ngp_beats_reproject_miou"] is True and row["ngp_beats_reproject_consistency"] is False
    assert row["ngp_beats_nearest_consistency"] is True


def test_not_reached_and_failed_runs() -> None:
    runs = [
        _run("ngp", [_pt(1.0, 0.1), _pt(10.0, 0.2)]),
        _run("semantic-nerf", [_pt(200.0, 0.5)]),
        {**_run("reproject", []), "error": "LabelfieldError: no depth"},
    ]
    (row,) = report.summarise(runs)
    assert row["ngp_seconds_to_reach"] is None and row["speedup"] is None and row["target_met"] is False
    assert "ngp_beats_reproject_miou" not in row


def test_markdown_and_plot(tmp_path: Path) -> None:
    runs = [
        _run("ngp", [_pt(0.5, 0.3), _pt(1.0, 0.62)]),
        _run("semantic-nerf", [_pt(50.0, None, None), _pt(200.0, 0.6)]),
        _run("nearest", [_pt(0.001, 0.4)]),
        _run("ngp", [_pt(0.5, 0.2), _pt(1.0, 0.5)], fraction=0.02),
    ]
    results = _results(runs)
    report.write_markdown(results, tmp_path / "results.md")
    text = (tmp_path / "results.md").read_text()
    assert "| s0 | fraction:0.1 | ngp | 6/60 | 1.00 | 1 | 0.620 |" in text
    assert "<= 1.00 | >= 200x | yes |" in text and "reached at ngp's first point" not in text
    report.write_plot(results, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
