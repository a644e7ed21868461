"""Semantic-NeRF (Zhi et al., ICCV 2021), written from the paper, as the learned baseline ("semantic-nerf").

Architecture: positions normalised to [-1, 1]^3 over the scene box, frequency-encoded (10 frequencies, input
included: 63 values), directions 4 frequencies (27 values); a depth x width (8 x 256) ReLU trunk with the encoded
position concatenated again at the input of layer `skip_layer` + 1 (skip at layer 4); density from the trunk
features (ReLU of the raw value); a semantic head on the same view-independent features
(width -> head_width -> C); colour from a linear "feature" layer plus the direction encoding
(width + 27 -> head_width -> 3, sigmoid). Coarse and fine networks of the same shape: n_coarse (64) stratified
samples per ray in [near, far] for the coarse one; n_importance (128) more drawn from its weights (inverse
transform sampling) for the fine one, which evaluates all 192 sorted samples.

Sample i of a ray sits at t_i and stands for the interval [t_i, t_{i+1}] (the last one ends at `far`), so the
packed compositing of labelfield.render.composite applies unchanged (every ray has S samples,
ray_indices = arange(n).repeat_interleave(S)). Outputs follow models/base.py, plus rgb_coarse, opacity_coarse,
logits_coarse and log_probs_coarse for the loss MSE_c + MSE_f + lambda (CE_c + CE_f).
"""

from __future__ import annotations

import torch
from torch import nn

from labelfield.field.encodings import FrequencyEncoding
from labelfield.models.base import Model, semantic_outputs
from labelfield.models.configs import SemanticNeRFConfig
from labelfield.render.composite import accumulate, render_weights
from labelfield.render.sampling import ray_aabb_intersect


class NeRFMLP(nn.Module):
    """(encoded x (N, P), encoded d (N, D)) -> raw density (N,), rgb (N, 3) in [0, 1], logits (N, C)."""

    def __init__(
        self, pos_dim: int, dir_dim: int, num_classes: int, depth: int, width: int, skip_layer: int, head_width: int
    ) -> None:
        super().__init__()
        self.skip_layer = skip_layer
        self.trunk = nn.ModuleList(
            nn.Linear(pos_dim if i == 0 else width + (pos_dim if i == skip_layer + 1 else 0), width)
            for i in range(depth)
        )
        self.sigma = nn.Linear(width, 1)
        nn.init.constant_(self.sigma.bias, 0.1)  # starts every ReLU density alive (a dead one never recovers)
        self.feature = nn.Linear(width, width)
        self.color = nn.Sequential(
            nn.Linear(width + dir_dim, head_width), nn.ReLU(inplace=True), nn.Linear(head_width, 3)
        )
        self.semantic = nn.Sequential(
            nn.Linear(width, head_width), nn.ReLU(inplace=True), nn.Linear(head_width, num_classes)
        )

    def forward(self, x_enc: torch.Tensor, d_enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = x_enc
        for i, layer in enumerate(self.trunk):
            if i == self.skip_layer + 1:
                h = torch.cat([h, x_enc], -1)
            h = torch.relu(layer(h))
        rgb = torch.sigmoid(self.color(torch.cat([self.feature(h), d_enc], -1)))
        return self.sigma(h)[:, 0], rgb, self.semantic(h)


def sample_pdf(
    bins: torch.Tensor,
    weights: torch.Tensor,
    n: int,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Inverse-transform samples from a piecewise-constant pdf (NeRF's hierarchical sampling).

    Args:
        bins: (n_rays, B) sorted bin edges; weights: (n_rays, B - 1) non-negative mass per bin (all zero =
            uniform); n: samples per ray; deterministic: evenly spaced quantiles (sorted) instead of random.
    Returns:
        (n_rays, n) samples in [bins[:, 0], bins[:, -1]], detached (no gradient flows into the weights).
    """
    w = weights.detach() + 1e-5
    cdf = torch.cumsum(w / w.sum(-1, keepdim=True), -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1).contiguous()
    shape = (cdf.shape[0], n)
    if deterministic:
        u = torch.linspace(0.0, 1.0, n, device=bins.device).expand(shape).contiguous()
    else:
        u = torch.rand(shape, generator=generator).to(bins.device)
    idx = torch.searchsorted(cdf, u, right=True)
    lo, hi = (idx - 1).clamp(min=0), idx.clamp(max=cdf.shape[1] - 1)
    cdf_lo, cdf_hi = cdf.gather(1, lo), cdf.gather(1, hi)
    bin_lo, bin_hi = bins.gather(1, lo), bins.gather(1, hi)
    span = cdf_hi - cdf_lo
    frac = torch.where(span < 1e-8, torch.zeros_like(span), (u - cdf_lo) / span.clamp(min=1e-8))
    return (bin_lo + frac * (bin_hi - bin_lo)).detach()


class SemanticNeRFModel(Model):
    """Coarse + fine Semantic-NeRF over the box aabb (2, 3) with num_classes classes."""

    def __init__(
        self,
        config: SemanticNeRFConfig,
        aabb: torch.Tensor,
        num_classes: int,
        background_class_index: int | None = None,
    ) -> None:
        super().__init__(aabb, num_classes, background_class_index)
        self.config = c = config
        if c.near is not None:
            self.near = float(c.near)
        self.pos_encoding = FrequencyEncoding(3, c.pos_freqs)
        self.dir_encoding = FrequencyEncoding(3, c.dir_freqs)
        args = (
            self.pos_encoding.output_dim,
            self.dir_encoding.output_dim,
            num_classes,
            c.depth,
            c.width,
            c.skip_layer,
            c.head_width,
        )
        self.coarse = NeRFMLP(*args)
        self.fine = NeRFMLP(*args) if c.n_importance > 0 else None
        self.register_buffer("background_color", torch.tensor(c.background_color, dtype=torch.float32))

    def param_groups(self, lr: float) -> list[dict]:
        """One group at lr x lr_scale with the config's Adam eps and weight decay (the paper's: none)."""
        params = [p for p in self.parameters() if p.requires_grad]
        c = self.config
        return [{"params": params, "lr": lr * c.lr_scale, "eps": c.adam_eps, "weight_decay": c.weight_decay}]

    def _net(
        self, net: nn.Module, x_enc: torch.Tensor, d_enc: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """net(x_enc, d_enc), in chunks of net_chunk samples when no graph is kept (whole-frame renders)."""
        chunk = self.config.net_chunk
        if torch.is_grad_enabled() or x_enc.shape[0] <= chunk:
            return net(x_enc, d_enc)
        parts = [net(x_enc[i : i + chunk], d_enc[i : i + chunk]) for i in range(0, x_enc.shape[0], chunk)]
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]

    def _composite(
        self,
        net: nn.Module,
        t: torch.Tensor,
        rays_o: torch.Tensor,
        rays_d: torch.Tensor,
        far: torch.Tensor,
        bg: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Evaluate `net` at sorted distances t (n, S) and composite. Returns per-ray outputs and weights (n, S)."""
        n, S = t.shape
        x = rays_o[:, None] + rays_d[:, None] * t[..., None]
        xn = (2.0 * (x - self.aabb[0]) / (self.aabb[1] - self.aabb[0]) - 1.0).reshape(-1, 3)
        d_enc = self.dir_encoding(rays_d)[:, None].expand(n, S, -1).reshape(n * S, -1)
        sigma_raw, rgb, logits = self._net(net, self.pos_encoding(xn), d_enc)
        if self.training and self.config.raw_noise_std > 0:
            sigma_raw = sigma_raw + torch.randn_like(sigma_raw) * self.config.raw_noise_std
        sigma = torch.relu(sigma_raw)
        t_starts = t.reshape(-1)
        t_ends = torch.cat([t[:, 1:], torch.maximum(far[:, None], t[:, -1:])], 1).reshape(-1)
        ri = torch.arange(n, device=t.device).repeat_interleave(S)
        w = render_weights(t_starts, t_ends, sigma, ri, n)
        opacity = accumulate(w, None, ri, n)
        total_tau = accumulate(sigma * (t_ends - t_starts), None, ri, n)
        out = {
            "rgb": accumulate(w, rgb, ri, n) + (1.0 - opacity)[:, None] * bg,
            "depth": accumulate(w, t_starts, ri, n),
            "opacity": opacity,
        }
        out.update(semantic_outputs(accumulate(w, logits, ri, n), opacity, total_tau, self.background_class_index))
        return out, w.reshape(n, S)

    def render_rays(
        self,
        rays_o: torch.Tensor,
        rays_d: torch.Tensor,
        near: float | torch.Tensor | None = None,
        far: float | torch.Tensor | None = None,
        background: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """See models/base.py; also returns rgb_coarse, opacity_coarse, logits_coarse, log_probs_coarse."""
        c = self.config
        n = rays_o.shape[0]
        bg = self.background_color if background is None else background.to(rays_o)
        t_in, t_out = ray_aabb_intersect(rays_o, rays_d, self.aabb)
        lo = torch.maximum(t_in, torch.as_tensor(self.near if near is None else near, dtype=rays_o.dtype))
        hi = t_out if far is None else torch.minimum(t_out, torch.as_tensor(far, dtype=rays_o.dtype))
        hi = torch.maximum(hi, lo + 1e-3)  # rays that miss the box get a short interval (and learn it empty)
        k = torch.arange(c.n_coarse, device=rays_o.device, dtype=rays_o.dtype)
        jitter = torch.rand(n, c.n_coarse, device=rays_o.device) if self.training else 0.5
        t_coarse = lo[:, None] + (hi - lo)[:, None] * (k + jitter) / c.n_coarse
        out_c, w_c = self._composite(self.coarse, t_coarse, rays_o, rays_d, hi, bg)
        if self.fine is None:
            out, n_samples = dict(out_c), t_coarse.numel()
        else:
            mids = 0.5 * (t_coarse[:, 1:] + t_coarse[:, :-1])
            t_imp = sample_pdf(mids, w_c[:, 1:-1], c.n_importance, deterministic=not self.training)
            t_fine = torch.sort(torch.cat([t_coarse, t_imp], 1), 1).values
            out, _ = self._composite(self.fine, t_fine, rays_o, rays_d, hi, bg)
            n_samples = t_coarse.numel() + t_fine.numel()
        out["n_samples"] = torch.tensor(n_samples)
        for key in ("rgb", "opacity", "logits", "log_probs"):
            out[f"{key}_coarse"] = out_c[key]
        return out
