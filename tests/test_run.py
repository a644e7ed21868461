"""The run folder package: manifest, sparse labels, checkpoints and the optimiser settings the fit used."""

from __future__ import annotations

import numpy as np
import pytest

from labelfield.errors import LabelfieldError
from labelfield.models import NGPConfig
from labelfield.progress import Progress
from labelfield.run import RunFolder, load_run
from labelfield.synth.toy import toy_scene
from labelfield.train import FitConfig, fit
from labelfield.train.trainer import initial_state, prepare

TINY = dict(log2_table_size=12, n_levels=4, max_resolution=64, occupancy_resolution=16, hidden_dim=16)


def test_fit_saves_sparse_labels_manifest_and_reports_progress(tmp_path):
    scene = toy_scene(4, 16, 12, seed=0, binary=True, room=False)
    events: list[Progress] = []
    cfg = FitConfig(
        out=tmp_path / "run",
        labelled="every:2",
        label_density="clicks:5",
        steps=3,
        batch_rays=32,
        threads=1,
        model_config=NGPConfig(**TINY),
    )
    result = fit(cfg, scene=scene, on_progress=events.append)
    assert result.step == 3
    folder = RunFolder(tmp_path / "run")
    sparse = folder.read_sparse_labels()
    assert sorted(sparse) == [0, 2] and all(0 < (a > 0).sum() < a.size for a in sparse.values())
    manifest = folder.read_manifest()
    assert manifest.labelled == [0, 2] and manifest.frames == scene.names
    run = load_run(folder.path, scene=scene)
    assert all(np.array_equal(run.sparse_labels()[i], sparse[i]) for i in sparse)
    fits = [e for e in events if e.stage == "fit"]
    assert fits[-1].final and fits[-1].done == 3 and fits[-1].total == 3 and fits[-1].unit == "steps"
    assert [e.info["step"] for e in fits if e.info["advanced"]] == [1, 2, 3]
    assert any(e.stage == "load" and e.final for e in events)
    with pytest.raises(LabelfieldError, match="no checkpoint at step 7"):
        folder.find_checkpoint(7)


def test_time_budget_progress_counts_seconds(tmp_path):
    scene = toy_scene(4, 16, 12, seed=0, binary=True, room=False)
    events: list[Progress] = []
    cfg = FitConfig(
        out=tmp_path / "run", steps=10**6, time_budget=0.5, batch_rays=32, threads=1, model_config=NGPConfig(**TINY)
    )
    fit(cfg, scene=scene, on_progress=events.append)
    last = [e for e in events if e.stage == "fit"][-1]
    assert last.unit == "s" and last.total == 0.5 and last.done == pytest.approx(0.5, abs=0.5)
    assert last.info["eta_s"] is not None


def test_adam_eps_overrides_the_models_own(tmp_path):
    scene = toy_scene(4, 16, 12, seed=0, binary=True, room=False)
    base = FitConfig(out=tmp_path / "a", steps=1, threads=1, model_config=NGPConfig(**TINY, weight_decay=0.5))
    state = initial_state(prepare(base, scene))
    assert {g["eps"] for g in state.optimizer.param_groups} == {1e-15}
    assert 0.5 in {g["weight_decay"] for g in state.optimizer.param_groups}
    state = initial_state(prepare(FitConfig(**{**base.__dict__, "adam_eps": 1e-6}), scene))
    assert {g["eps"] for g in state.optimizer.param_groups} == {1e-6}
