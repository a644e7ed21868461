"""The depth loss: masked L1 on z-depth, and its gradient pulls a field's rendered depth toward the target."""

from __future__ import annotations

import torch
from tiny import TINY_NGP

from labelfield.models.configs import NGPConfig
from labelfield.train.losses import compute_losses, depth_loss

TINY = {**TINY_NGP, "max_samples_per_ray": 32}


def test_depth_loss_values() -> None:
    pred = torch.tensor([1.0, 2.0, 3.0, 4.0])
    z_scale = torch.tensor([1.0, 0.5, 1.0, 1.0])
    target = torch.tensor([1.5, 1.0, 0.0, 3.0])  # third pixel: depth unknown, ignored
    assert depth_loss(pred, z_scale, target).item() == (0.5 + 0.0 + 1.0) / 3
    assert depth_loss(pred, z_scale, torch.zeros(4)).item() == 0.0


def test_depth_loss_pulls_rendered_depth_to_target() -> None:
    """Rays straight down +z from z = -1.5 into the box [-1, 1]^3; the target is a wall at z = 0.5 (z-depth
    2.0). A few Adam steps on the depth term alone must bring the rendered depth much closer."""
    torch.manual_seed(0)
    model = NGPConfig(**TINY).setup([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], num_classes=2)
    model.train()
    n = 128
    xy = torch.rand(n, 2) * 1.2 - 0.6
    rays_o = torch.cat([xy, torch.full((n, 1), -1.5)], 1)
    rays_d = torch.tensor([[0.0, 0.0, 1.0]]).expand(n, 3).contiguous()
    target = torch.full((n,), 2.0)
    z_scale = torch.ones(n)
    rgb = torch.full((n, 3), 0.5)
    labels = torch.full((n,), -1)  # no semantic term: only the depth term can move the depth
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def depth_error() -> float:
        with torch.no_grad():
            return float((model.render_rays(rays_o, rays_d)["depth"] - target).abs().mean())

    before = depth_error()
    for step in range(60):
        model.before_step(step)
        losses = compute_losses(model.render_rays(rays_o, rays_d), rgb, labels, 0.0, target, z_scale, 1.0)
        opt.zero_grad()
        losses.total.backward()
        opt.step()
    after = depth_error()
    assert before > 0.5
    assert after < 0.3 * before
    # with depth_weight 0 the depth term is reported as zero and adds nothing
    out = compute_losses(model.render_rays(rays_o, rays_d), rgb, labels, 0.0, target, z_scale, 0.0)
    assert out.depth.item() == 0.0
