"""Trainer, run folder and `labelfield fit`: losses, config round trip, ray batches, atomic checkpoints,
a tiny 2-class fit that must label an unlabelled frame, resume == uninterrupted, Ctrl-C, load_run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from labelfield.cameras import frame_rays
from labelfield.errors import LabelfieldError
from labelfield.run import checkpoint_path, list_checkpoints, load_run
from labelfield.synth.toy import toy_scene
from labelfield.train.checkpoint import load_checkpoint, save_checkpoint
from labelfield.train.config import FitConfig
from labelfield.train.dataset import RayDataset
from labelfield.train.losses import compute_losses, semantic_loss
from labelfield.train.trainer import LRSchedule, fit, lr_factor, lr_progress


def small_config(out: Path, **kw) -> FitConfig:
    """A config sized for 8 frames of 32x24 on one core: small hash grid, few samples."""
    cfg = FitConfig(out=out, labelled="every:4", steps=200, batch_rays=256, log_every=25, progress=False)
    small = dict(log2_table_size=14, n_levels=8, max_resolution=256, occupancy_resolution=32, hidden_dim=32)
    small.update(samples_per_diagonal=128, max_samples_per_ray=32)
    mc = dataclasses.replace(cfg.model_config, **small)
    return dataclasses.replace(cfg, model_config=mc, **kw)


@pytest.fixture(scope="module")
def binary_scene():
    """Two objects floating in empty space: classes background (rays that miss; the table's background_class)
    and object. (In the toy *room* at 32x24, two labelled views leave too many walls unseen for 0.9.)"""
    return toy_scene(8, 32, 24, seed=0, binary=True, room=False)


# --- losses ------------------------------------------------------------------------------------------
def test_semantic_loss_is_finite_without_labels_and_ignores_void():
    logits = torch.randn(6, 3, requires_grad=True)
    none = torch.full((6,), -1)
    loss, count = semantic_loss(logits, none)
    loss.backward()
    assert int(count) == 0 and torch.isfinite(loss) and loss.item() == 0.0
    assert torch.isfinite(logits.grad).all() and float(logits.grad.abs().sum()) == 0.0

    labels = torch.tensor([-1, 2, -1, 0, -1, 1])
    loss, count = semantic_loss(logits, labels)
    keep = labels >= 0
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    assert int(count) == 3 and torch.allclose(loss, expected)
    moved = logits.detach().clone()
    moved[~keep] += 100.0  # void rays' logits must not matter
    assert torch.allclose(semantic_loss(moved, labels)[0], expected)

    pred = {"rgb": torch.rand(6, 3), "logits": logits, "depth": torch.rand(6)}
    total = compute_losses(pred, torch.rand(6, 3), none, 0.5).total
    assert torch.isfinite(total)


def test_lr_schedule_warms_up_then_decays():
    cfg = FitConfig(lr_warmup_steps=10, lr_final_ratio=0.1)
    assert lr_factor(0, 0.0, cfg) == pytest.approx(0.01)
    assert lr_factor(10, 0.0, cfg) == pytest.approx(1.0)
    assert lr_factor(500, 1.0, cfg) == pytest.approx(0.1)
    cos = dataclasses.replace(cfg, lr_schedule="cosine")
    assert lr_factor(50, 0.5, cos) == pytest.approx(0.55)
    # LRSchedule applies it through LambdaLR: each group at its own peak lr, started at a resumed step
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([{"params": [w], "lr": 2.0}, {"params": [torch.zeros(1, requires_grad=True)], "lr": 1.0}])
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    sched = LRSchedule(opt, cos, step=5, progress=0.05)
    assert [g["lr"] for g in opt.param_groups] == [2.0 * lr_factor(5, 0.05, cos), lr_factor(5, 0.05, cos)]
    w.sum().backward()
    opt.step()
    sched.advance(0.5)
    assert opt.param_groups[0]["lr"] == 2.0 * lr_factor(6, 0.5, cos)
    assert lr_progress(10, 0.0, dataclasses.replace(cfg, steps=100)) == 0.1
    assert lr_progress(10, 30.0, dataclasses.replace(cfg, steps=100, time_budget=60.0)) == 0.5


# --- config --------------------------------------------------------------------------------------------
def test_config_round_trips_through_json(tmp_path):
    cfg = small_config(tmp_path / "run", scene=Path("/data/scene"), label_noise="pixel:0.1", time_budget=12.5)
    cfg.save(tmp_path / "config.json")
    back = FitConfig.load(tmp_path / "config.json")
    assert back == cfg
    assert isinstance(back.scene, Path) and type(back.model_config) is type(cfg.model_config)
    d = json.loads((tmp_path / "config.json").read_text())
    d["no_such_option"] = 1
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(LabelfieldError, match="no_such_option"):
        FitConfig.load(tmp_path / "bad.json")


# --- dataset ---------------------------------------------------------------------------------------------
def test_ray_batches_match_frames_and_are_seeded(binary_scene):
    scene = binary_scene
    labels = {0: scene.frames[0].load_labels(), 4: scene.frames[4].load_labels()}
    labels[4][:, :16] = 0  # half the frame unlabelled: those pixels must come back as -1
    ds = RayDataset(scene, labels, load_depth=True, labelled_fraction=0.5)
    assert ds.rgb.dtype == torch.uint8 and ds.num_labelled_pixels == 24 * 32 + 24 * 16

    b1 = ds.sample(256, torch.Generator().manual_seed(3))
    b2 = ds.sample(256, torch.Generator().manual_seed(3))
    assert torch.equal(b1.rays_d, b2.rays_d) and torch.equal(b1.labels, b2.labels)
    assert (b1.labels[:128] >= 0).all()  # the labelled share of the batch carries labels
    assert set(b1.frame[:128].tolist()) <= {0, 4}

    g = torch.tensor([0, 5, 24 * 32 + 7, 4 * 24 * 32 + 3 * 32 + 20, 4 * 24 * 32 + 3 * 32 + 2])
    b = ds.gather(g)
    f4 = scene.frames[4]
    o, d, _ = frame_rays(f4.intrinsics, f4.c2w)
    assert torch.allclose(b.rays_d[3], d[3 * 32 + 20], atol=1e-6) and torch.allclose(b.rays_o[3], o[0], atol=1e-6)
    expected_rgb = torch.from_numpy(f4.load_rgb()[3, 20].astype(np.float32) / 255)
    assert torch.allclose(b.rgb[3], expected_rgb)
    assert int(b.labels[3]) == int(scene.classes.to_index(f4.load_labels()[3, 20]))
    assert int(b.labels[4]) == -1 and int(b.labels[2]) == -1  # void column of frame 4; frame 1 unlabelled
    assert b.depth[3] == pytest.approx(float(f4.load_depth()[3, 20]), abs=1e-3)


# --- checkpoints ---------------------------------------------------------------------------------------
class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("boom")


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "checkpoints" / "step_0000010.pt"
    save_checkpoint(path, {"step": 10, "model": {"w": torch.ones(3)}})
    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"step": 20, "model": {"w": torch.zeros(1000)}, "bad": _Unpicklable()})
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left behind
    state = load_checkpoint(path)
    assert state["step"] == 10 and torch.equal(state["model"]["w"], torch.ones(3))
    path.write_bytes(b"truncated")
    with pytest.raises(LabelfieldError, match="unreadable checkpoint"):
        load_checkpoint(path)


# --- fitting ---------------------------------------------------------------------------------------------
def test_fit_labels_an_unlabelled_frame(tmp_path, binary_scene):
    scene = binary_scene
    result = fit(small_config(tmp_path / "run"), scene=scene)
    assert result.step == 200 and np.isfinite(result.loss)
    assert {"config.json", "scene.json", "log.jsonl", "checkpoints"} <= {p.name for p in (tmp_path / "run").iterdir()}

    from labelfield.render.chunked import render_image

    run = load_run(tmp_path / "run", scene=scene)
    assert run.step == 200 and run.labelled == [0, 4]
    frame = scene.frames[2]  # not labelled, 90 degrees from both labelled views
    out = render_image(run.model, frame.intrinsics, frame.c2w)
    pred = scene.classes.to_ids(out["probs"].argmax(-1).numpy())
    gt = frame.load_labels()
    accuracy = float((pred == gt)[gt > 0].mean())
    assert accuracy > 0.9, accuracy


def _interrupt_at(step: int):
    def on_step(s: int) -> None:
        if s == step:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does; the trainer must finish the step and save

    return on_step


def test_ctrl_c_then_resume_equals_uninterrupted_run(tmp_path, binary_scene):
    scene = binary_scene
    kw = dict(steps=40, batch_rays=256, checkpoint_every=1000, threads=1)  # one thread: bit-exact backward
    full = fit(small_config(tmp_path / "full", **kw), scene=scene)
    assert full.step == 40 and not full.interrupted

    part = fit(small_config(tmp_path / "part", **kw), scene=scene, on_step=_interrupt_at(17))
    assert part.interrupted and part.step == 17
    assert [s for s, _ in list_checkpoints(tmp_path / "part")] == [17]

    resumed = fit(dataclasses.replace(small_config(None, **kw), resume=tmp_path / "part"), scene=scene)
    assert resumed.step == 40 and resumed.steps_run == 23
    a = load_checkpoint(checkpoint_path(tmp_path / "full", 40))["model"]
    b = load_checkpoint(checkpoint_path(tmp_path / "part", 40))["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = [json.loads(line)["step"] for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert log == sorted(log) and log[-1] == 40


def test_run_folder_errors(tmp_path, binary_scene):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "something").write_text("x")
    with pytest.raises(LabelfieldError, match="not empty"):
        fit(small_config(tmp_path / "busy"), scene=binary_scene)
    with pytest.raises(LabelfieldError, match="not a run folder"):
        load_run(tmp_path / "busy")
    run = tmp_path / "nockpt"
    run.mkdir()
    small_config(run).save(run / "config.json")
    (run / "scene.json").write_text("{}")
    with pytest.raises(LabelfieldError, match="no checkpoint"):
        load_run(run)


def test_fit_command_line(tmp_path, binary_scene):
    from labelfield.cli import main
    from labelfield.formats import write_scene

    scene_dir = write_scene(binary_scene, tmp_path / "scene", "replica")
    out = tmp_path / "run"
    args = ["fit", str(scene_dir), "--labelled", "every:4", "--out", str(out), "--steps", "10", "--batch-rays", "64"]
    args += ["--no-progress", "--model.log2-table-size", "12"]
    assert main(args) == 0
    assert [s for s, _ in list_checkpoints(out)] == [10]
    assert FitConfig.load(out / "config.json").model_config.log2_table_size == 12
    assert main(args) == 2  # refuses to overwrite a non-empty run
    assert main(["fit", str(scene_dir), "--resume", str(out), "--steps", "15", "--no-progress"]) == 0
    assert [s for s, _ in list_checkpoints(out)][-1] == 15
    assert FitConfig.load(out / "config.json").steps == 15
    assert main(["fit", "--resume", str(out), "--seed", "5"]) == 2  # seed cannot change mid-run
