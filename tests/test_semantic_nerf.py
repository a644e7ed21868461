"""Semantic-NeRF model: outputs, coarse + fine loss, learning on toy_scene, importance sampling, fit/load_run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labelfield.cameras import frame_rays
from labelfield.models import build_model
from labelfield.models.semantic_nerf import SemanticNeRFConfig, SemanticNeRFModel, sample_pdf
from labelfield.render.bounds import scene_bounds
from labelfield.render.chunked import render_image
from labelfield.synth.toy import toy_scene
from labelfield.train.config import FitConfig
from labelfield.train.losses import compute_losses

TINY = {"width": 32, "depth": 4, "skip_layer": 1, "head_width": 16, "n_coarse": 16, "n_importance": 16}


def _model(room: bool = True, n_frames: int = 4, **overrides):
    scene = toy_scene(n_frames, 32, 24, room=room)
    aabb, near = scene_bounds(scene)
    bg = scene.classes.background_class
    bg_index = None if bg is None else int(scene.classes.to_index(np.array([bg]))[0])
    torch.manual_seed(0)
    model = build_model("semantic-nerf", {**TINY, "near": near, **overrides}, aabb, scene.classes.num_classes, bg_index)
    return scene, model


def _targets(scene, i: int):
    f = scene.frames[i]
    rays_o, rays_d, _ = frame_rays(f.intrinsics, f.c2w)
    labels = torch.as_tensor(scene.classes.to_index(f.load_labels()).reshape(-1)).long()
    rgb = torch.as_tensor(f.load_rgb().reshape(-1, 3) / 255.0, dtype=torch.float32)
    return rays_o, rays_d, rgb, labels


def test_default_architecture_is_the_papers() -> None:
    c = SemanticNeRFConfig()
    m = SemanticNeRFModel(c, torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), 7)
    assert m.pos_encoding.output_dim == 63 and m.dir_encoding.output_dim == 27
    assert len(m.coarse.trunk) == 8 and all(layer.out_features == 256 for layer in m.coarse.trunk)
    assert m.coarse.trunk[5].in_features == 256 + 63  # input concatenated after layer 4
    assert m.coarse.color[0].in_features == 256 + 27 and m.coarse.color[0].out_features == 128
    assert m.coarse.semantic[-1].out_features == 7 and m.fine is not None
    assert (c.n_coarse, c.n_importance) == (64, 128)


@pytest.mark.parametrize("room", [True, False])
def test_outputs_and_loss(room: bool) -> None:
    scene, model = _model(room)
    rays_o, rays_d, rgb, labels = _targets(scene, 0)
    model.train()
    out = model.render_rays(rays_o, rays_d)
    n, C = len(rays_o), scene.classes.num_classes
    for k in ("rgb", "rgb_coarse"):
        assert out[k].shape == (n, 3)
    for k in ("depth", "opacity", "opacity_coarse"):
        assert out[k].shape == (n,)
    for k in ("logits", "log_probs", "logits_coarse", "log_probs_coarse"):
        assert out[k].shape == (n, C)
    assert int(out["n_samples"]) == n * (2 * 16 + 16)
    assert torch.allclose(out["log_probs"].exp().sum(-1), torch.ones(n), atol=1e-4)
    assert float(out["opacity"].detach().max()) <= 1.0 + 1e-6
    losses = compute_losses(out, rgb, labels, 0.04)
    fine_only = compute_losses({k: v for k, v in out.items() if not k.endswith("_coarse")}, rgb, labels, 0.04)
    assert torch.isfinite(losses.total)
    assert float(losses.total.detach()) > float(fine_only.total.detach())  # the coarse terms are added
    losses.total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert float(model.coarse.trunk[0].weight.grad.abs().sum()) > 0  # the coarse net learns from its own loss


def test_a_few_steps_reduce_the_loss() -> None:
    scene, model = _model(True)
    rays_o, rays_d, rgb, labels = _targets(scene, 1)
    opt = torch.optim.Adam(model.param_groups(1e-2))
    model.train()
    torch.manual_seed(1)
    history = []
    for _ in range(40):
        loss = compute_losses(model.render_rays(rays_o, rays_d), rgb, labels, 0.04).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert np.mean(history[-5:]) < 0.7 * np.mean(history[:5])


def test_sample_pdf_follows_the_weights() -> None:
    bins = torch.linspace(0.0, 1.0, 11).expand(3, 11).contiguous()  # 10 bins of width 0.1
    weights = torch.zeros(3, 10)
    weights[0, 3] = 1.0  # all the mass in [0.3, 0.4]
    weights[1, 7] = 1.0
    weights[1, 2] = 1.0  # half in [0.7, 0.8], half in [0.2, 0.3]
    # ray 2: no weight at all -> uniform
    g = torch.Generator().manual_seed(0)
    t = sample_pdf(bins, weights, 2000, generator=g)
    assert t.shape == (3, 2000) and float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert ((t[0] >= 0.3) & (t[0] <= 0.4)).float().mean() > 0.98
    in_a, in_b = ((t[1] >= 0.7) & (t[1] <= 0.8)).float().mean(), ((t[1] >= 0.2) & (t[1] <= 0.3)).float().mean()
    assert in_a > 0.45 and in_b > 0.45
    assert abs(float(t[2].mean()) - 0.5) < 0.05
    det = sample_pdf(bins, weights, 50, deterministic=True)
    assert (det[:, 1:] >= det[:, :-1]).all()


def test_importance_samples_go_where_the_coarse_weights_are() -> None:
    """A coarse net with a thin opaque slab at z in [0.4, 0.5]: most fine samples land around it."""
    c = SemanticNeRFConfig(**{**TINY, "n_coarse": 32, "n_importance": 64}, near=0.0)
    model = SemanticNeRFModel(c, torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), 3)

    def slab(x_enc: torch.Tensor, d_enc: torch.Tensor):
        z = x_enc[:, 2]  # the encoding starts with the input; the box [-1, 1]^3 maps to itself
        sigma = torch.where((z >= 0.4) & (z <= 0.5), 100.0, -1.0)
        return sigma, torch.zeros(len(z), 3), torch.zeros(len(z), 3)

    model.coarse.forward = slab  # type: ignore[method-assign]
    seen: list[torch.Tensor] = []
    composite = model._composite
    model._composite = lambda net, t, *a: (seen.append(t), composite(net, t, *a))[1]  # type: ignore[method-assign]
    n = 64
    rays_o = torch.zeros(n, 3)
    rays_o[:, :2] = torch.rand(n, 2) * 0.5
    rays_d = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3)
    for training in (True, False):
        seen.clear()
        model.train(training)
        with torch.no_grad():
            model.render_rays(rays_o, rays_d)
        t_coarse, t_fine = seen
        assert t_fine.shape == (n, 32 + 64)
        near_slab = lambda t: ((t >= 0.35) & (t <= 0.55)).float().sum(1).mean()  # samples per ray near the slab
        assert near_slab(t_fine) - near_slab(t_coarse) > 0.8 * 64  # >80 % of the importance samples are there
        assert (t_fine[:, 1:] >= t_fine[:, :-1]).all()


def test_fit_and_load_run(tmp_path) -> None:
    from labelfield.run import load_run
    from labelfield.train.trainer import fit

    scene = toy_scene(4, 32, 24)
    config = FitConfig(
        model_config=SemanticNeRFConfig(**TINY),
        out=tmp_path / "run",
        steps=6,
        batch_rays=64,
        progress=False,
        labelled="every:2",
        checkpoint_every=100,
        threads=1,
    )
    assert config.model == "semantic-nerf"
    result = fit(config, scene=scene)
    assert result.step == 6 and np.isfinite(result.loss)
    back = FitConfig.load(tmp_path / "run" / "config.json")
    assert isinstance(back.model_config, SemanticNeRFConfig) and back.model_config.width == 32
    assert back.model == "semantic-nerf" and back.model_config.near is None  # the config is saved as given
    run = load_run(tmp_path / "run", scene=scene)
    assert run.model.near == pytest.approx(scene_bounds(scene)[1])  # the scene's near reaches rendering
    f = scene.frames[1]
    img = render_image(run.model, f.intrinsics, f.c2w, chunk=256)
    assert img["probs"].shape == (24, 32, scene.classes.num_classes) and torch.isfinite(img["rgb"]).all()


def test_paper_learning_rate_and_chunked_rendering() -> None:
    scene, model = _model(True)
    (group,) = model.param_groups(1e-2)
    assert group["lr"] == pytest.approx(5e-4) and group["eps"] == 1e-8  # the paper's Adam settings
    rays_o, rays_d, _, _ = _targets(scene, 2)
    model.eval()
    with torch.no_grad():
        whole = model.render_rays(rays_o, rays_d)
        model.config.net_chunk = 100  # many network calls per pass
        chunked = model.render_rays(rays_o, rays_d)
    for k in ("rgb", "depth", "log_probs", "rgb_coarse"):
        assert torch.allclose(whole[k], chunked[k], atol=1e-5), k
