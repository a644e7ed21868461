"""The semantic hash-grid radiance field ("ngp"): Instant-NGP's field plus a position-only semantic head.

Pipeline of `render_rays` (tensor vocabulary of docs/architecture.md):
    march_rays (occupancy-culled, packed t_starts, t_ends, ray_indices) -> sample midpoints x (n_samples, 3)
    -> hash encoding of (x - aabb_min) / aabb_size -> DensityHead: sigma, geometry features g
    -> ColorHead(g, SH(d)) per sample -> composite (weights; per ray rgb, depth, opacity, semantic features)
    -> semantics (below) -> background for the remaining transmittance.

Semantic logits (`semantic_head`): Semantic-NeRF composites per-sample logits, z = sum_i w_i s(x_i). With a
linear head s(x) = W g(x) + b this equals W (sum_i w_i g_i) + b * opacity (tested): composite the geometry
features once, apply the head once per ray ("per_ray", the default). "per_sample" runs a 64-wide MLP per
sample and composites its logits. Measured (1 thread, 4096 rays, ~10 samples/ray, 5 classes, whole training
step forward + backward + Adam): per_ray 0.141 s, per_sample 0.150 s CPU; the gap grows with samples per ray
and classes (C logits per sample instead of per ray). The per-ray head is exact for a linear head, and the
semantic gradient still reaches g, the density MLP and the hash table. Either way the logits depend on
position only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch

from labelfield.field.encodings import SphericalHarmonics
from labelfield.field.hashgrid import HashGrid
from labelfield.field.heads import ColorHead, DensityHead, SemanticHead
from labelfield.field.mlp_kernel import density_inference, mlp_inference
from labelfield.models import marching
from labelfield.models.base import Model, semantic_outputs
from labelfield.models.configs import NGPConfig
from labelfield.render.composite import accumulate
from labelfield.render.composite_kernel import RoundCompositor, composite, labels_from_features
from labelfield.render.occupancy import OccupancyGrid
from labelfield.render.sampling import march_rays


def _scale_grad(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x in the forward pass; gradient multiplied by `scale` (broadcastable to x) in the backward pass."""
    return x.detach() + (x - x.detach()) * scale


class NGPModel(Model):
    """Semantic Instant-NGP field over the box `aabb` (2, 3) with `num_classes` semantic classes."""

    def __init__(
        self,
        config: NGPConfig,
        aabb: torch.Tensor,
        num_classes: int,
        background_class_index: int | None = None,
    ) -> None:
        super().__init__(aabb, num_classes, background_class_index)
        if config.semantic_head not in ("per_ray", "per_sample"):
            raise ValueError(f"semantic_head must be 'per_ray' or 'per_sample', got {config.semantic_head!r}")
        self.config = config
        if config.near is not None:
            self.near = float(config.near)
        c = config
        self.encoding = HashGrid(
            c.n_levels, c.n_features, c.log2_table_size, c.base_resolution, c.max_resolution, c.hash_backend
        )
        self.density_head = DensityHead(self.encoding.output_dim, c.hidden_dim, c.density_layers, c.geo_feat_dim)
        self.dir_encoding = SphericalHarmonics(c.sh_degree)
        self.color_head = ColorHead(c.geo_feat_dim, self.dir_encoding.output_dim, c.hidden_dim, c.color_layers)
        if c.semantic_head == "per_ray":
            self.semantic_head = SemanticHead(c.geo_feat_dim, num_classes, hidden_dim=0)
        else:
            self.semantic_head = SemanticHead(c.geo_feat_dim, num_classes, c.semantic_hidden_dim, 1)
        diag = float((self.aabb[1] - self.aabb[0]).norm())
        self.step_size = float(c.step_size) if c.step_size else diag / c.samples_per_diagonal
        sigma_threshold = -math.log(1.0 - c.occupancy_threshold) / self.step_size
        warmup_updates = max(1, math.ceil(c.occupancy_warmup_steps / max(c.occupancy_update_interval, 1)))
        self.occupancy = OccupancyGrid(
            self.aabb, c.occupancy_resolution, sigma_threshold, c.occupancy_decay, warmup_updates
        )
        self.register_buffer("background_color", torch.tensor(c.background_color, dtype=torch.float32))

    # --- field -------------------------------------------------------------------------------------
    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.aabb[0]) / (self.aabb[1] - self.aabb[0])).clamp(0.0, 1.0)

    def geometry(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points x (N, 3) -> sigma (N,), geometry features g (N, geo_feat_dim)."""
        return self.density_head(self.encoding(self._normalise(x).contiguous()))

    @torch.no_grad()
    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Density sigma (N,) at world points x (N, 3), without gradient (occupancy updates).

        The MLP goes through the inference kernel (`density_inference`; the module itself elsewhere): a refresh
        evaluates 131k-262k points every `occupancy_update_interval` steps, a sizeable share of a step's cost."""
        h = self.encoding(self._normalise(x).contiguous())
        return density_inference(self.density_head, h)[0]

    # --- training hooks -----------------------------------------------------------------------------
    def before_step(self, step: int) -> None:
        """Refresh the occupancy grid every `occupancy_update_interval` steps (warm-up: all cells)."""
        if self.training and step % max(self.config.occupancy_update_interval, 1) == 0:
            self.occupancy.update(self.density)

    def param_groups(self, lr: float) -> list[dict]:
        """Hash table (no decay) and MLPs (L2 `weight_decay`), both with the config's Adam eps."""
        table = list(self.encoding.parameters())
        ids = {id(p) for p in table}
        mlps = [p for p in self.parameters() if id(p) not in ids and p.requires_grad]
        c = self.config
        return [
            {"params": table, "lr": lr * c.lr_scale, "eps": c.adam_eps, "weight_decay": 0.0},
            {"params": mlps, "lr": lr * c.lr_scale, "eps": c.adam_eps, "weight_decay": c.weight_decay},
        ]

    # --- rendering ----------------------------------------------------------------------------------
    def _background(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """(3,) or (n, 3) colour for the remaining transmittance (see NGPConfig.random_background)."""
        random_bg = self.config.random_background
        if random_bg is None:
            random_bg = self.background_class_index is None
        if self.training and random_bg:
            return torch.rand(n, 3, dtype=like.dtype, device=like.device)
        return self.background_color

    def render_rays(
        self,
        rays_o: torch.Tensor,
        rays_d: torch.Tensor,
        near: float | torch.Tensor | None = None,
        far: float | torch.Tensor | None = None,
        background: torch.Tensor | None = None,
        return_samples: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Render rays (n, 3) (unit directions); see models/base.py for the outputs.

        return_samples: also return the packed samples (for the ray-termination and distortion losses):
        t_starts, t_ends, ray_indices, weights (n_samples,), weights carrying the graph.

        near, far: scalars or (n,) distances (None: `self.near` and the box exit); background: (3,) or (n, 3)
        colour for the remaining transmittance (None: config.background_color). Training mode jitters the
        samples (stratified marching); eval mode does not.
        """
        t_starts, t_ends, ray_indices = self.march(rays_o, rays_d, near, far)
        t_mid = 0.5 * (t_starts + t_ends)
        x = rays_o[ray_indices] + rays_d[ray_indices] * t_mid[:, None]
        sigma, g = self.geometry(x)
        if self.training and self.config.near_grad_radius > 0:  # forward unchanged, gradient scaled down
            scale = (t_mid.detach() / self.config.near_grad_radius).square().clamp(max=1.0)
            sigma = _scale_grad(sigma, scale)
            g = _scale_grad(g, scale[:, None])
        rgb_s = self.color_head(g, self.dir_encoding(rays_d), ray_indices)
        return self.composite(t_starts, t_ends, ray_indices, sigma, g, rgb_s, rays_o, background, return_samples)

    # The stages of render_rays, apart so benchmarks/bench_step.py can time each one.
    def march(
        self,
        rays_o: torch.Tensor,
        rays_d: torch.Tensor,
        near: float | torch.Tensor | None = None,
        far: float | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Occupancy-culled, early-stopped packed samples: t_starts, t_ends (n_samples,), ray_indices (n_samples,).

        CPU float32 rays go through the C++ marching kernel (`models.marching`, same samples), others through
        `render.sampling.march_rays`.
        """
        if rays_o.device.type == "cpu" and rays_o.dtype == torch.float32 and marching.available():
            return marching.march_grid(
                rays_o,
                rays_d,
                self.aabb,
                self.step_size,
                self.occupancy,
                near=self.near if near is None else near,
                far=far,
                stratified=self.training,
                max_samples_per_ray=self.config.max_samples_per_ray,
                early_stop_eps=self.config.early_stop_eps,
            )
        return march_rays(
            rays_o,
            rays_d,
            self.aabb,
            self.step_size,
            near=self.near if near is None else near,
            far=far,
            occupied_fn=self.occupancy.is_occupied,
            stratified=self.training,
            max_samples_per_ray=self.config.max_samples_per_ray,
            proxy_density_fn=None if self.config.early_stop_eps is None else self.occupancy.proxy_density,
            early_stop_eps=self.config.early_stop_eps or 1e-4,
            near_occupied_fn=self.occupancy.is_occupied_near,
        )

    def composite(
        self,
        t_starts: torch.Tensor,
        t_ends: torch.Tensor,
        ray_indices: torch.Tensor,
        sigma: torch.Tensor,
        g: torch.Tensor,
        rgb_s: torch.Tensor,
        rays_o: torch.Tensor,
        background: torch.Tensor | None = None,
        return_samples: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Per-sample sigma (S,), g (S, geo), rgb_s (S, 3) -> the per-ray outputs of render_rays.

        One `composite` call (C++ kernel on CPU float32, else the PyTorch reference) over [semantic feature, rgb]:
        the geometry features g for the per-ray semantic head, the per-sample logits otherwise.
        """
        n = rays_o.shape[0]
        per_ray = self.config.semantic_head == "per_ray"
        sem = g if per_ray else self.semantic_head(g)
        k = sem.shape[1]
        comp = composite(t_starts, t_ends, sigma, ray_indices, n, torch.cat([sem, rgb_s], 1))
        weights, opacity, total_tau = comp.weights, comp.opacity, comp.tau
        sem_ray, rgb_ray = comp.acc[:, :k], comp.acc[:, k:]
        if per_ray:
            lin = self.semantic_head.net[-1]
            logits = sem_ray @ lin.weight.T + opacity[:, None] * lin.bias  # = sum_i w_i (W g_i + b)
        else:
            logits = sem_ray
        bg = self._background(n, rays_o) if background is None else background.to(rays_o)
        rgb = rgb_ray + (1.0 - opacity)[:, None] * bg
        out = {
            "rgb": rgb,
            "depth": comp.depth,
            "opacity": opacity,
            "n_samples": torch.tensor(len(ray_indices)),
        }
        out.update(semantic_outputs(logits, opacity, total_tau, self.background_class_index))
        if return_samples:
            out.update(t_starts=t_starts, t_ends=t_ends, ray_indices=ray_indices, weights=weights)
        return out

    # --- inference ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def render_labels(
        self,
        rays_o: torch.Tensor,
        rays_d: torch.Tensor,
        rgb: bool = False,
        depth: bool = False,
        probs: bool = False,
        min_weight: float = 1e-4,
        stop_transmittance: float | None = 1e-4,
        stage: Callable[[str], contextlib.AbstractContextManager] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Inference-only render of rays (n, 3): what annotate needs and nothing more (eval mode assumed).

        Always returns `label` (n,) int64 training index of the most probable class, `confidence` (n,) its
        probability and `opacity` (n,); `rgb` (n, 3), `depth` (n,) (distance along the ray, not normalised) and
        `probs` (n, C) only when asked. Same maths as `render_rays` in eval mode, except that
        - the density is evaluated front to back in rounds of samples (4, 4, 8, 16, ... per ray) and composited
          as it comes (`RoundCompositor`); a ray whose transmittance has fallen below `stop_transmittance` gets
          no more samples (Instant-NGP's early termination with the real density; the proxy early stop of the
          marcher is coarser): what is dropped weighs less than stop_transmittance in all (None: every sample
          is evaluated, in one round);
        - the colour head runs only when rgb is asked, and only on samples whose weight is at least
          `min_weight` (the others change a colour by less than min_weight * 32 samples).
        On CPU float32 the compositing, the round bookkeeping, the density MLP and the labels run in C++ kernels
        (docs/performance.md); elsewhere their PyTorch references. `stage(name)`: a context manager around each
        stage (benchmarks/bench_step.py times them).
        """
        st = stage or (lambda name: contextlib.nullcontext())
        n = rays_o.shape[0]
        with st("marching"):
            t_starts, t_ends, ray_indices = self.march(rays_o, rays_d)
        per_ray = self.config.semantic_head == "per_ray"
        dim = self.config.geo_feat_dim if per_ray else self.num_classes
        with st("early-stop rounds (bookkeeping)"):
            rc = RoundCompositor(
                rays_o, rays_d, t_starts, t_ends, ray_indices, self.aabb, dim, stop_transmittance or 0.0, depth
            )
            rounds = rc.rounds() if stop_transmittance is not None else [(0, rc.max_count)]
        kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (sel, weights, g) for the colour head
        for lo, hi in rounds:
            with st("early-stop rounds (bookkeeping)"):
                sel, xn = rc.select(lo, hi)
            if sel.numel() == 0:
                break
            with st("encoding"):
                h = self.encoding(xn)
            with st("MLPs"):
                sigma, g = density_inference(self.density_head, h)
                feat = g if per_ray else mlp_inference(self.semantic_head.net, g)
            with st("compositing"):
                w = rc.add(sel, sigma, feat, weights=rgb)
            if rgb:
                assert w is not None
                keep = (w >= min_weight).nonzero()[:, 0]
                kept.append((sel[keep], w[keep], g[keep]))
        with st("labels (semantic head, argmax)"):
            opacity = rc.opacity
            head = self.semantic_head.net[-1] if per_ray else None
            label, conf, log_p = labels_from_features(
                rc.acc, opacity, rc.tau, head, self.background_class_index, log_probs=probs
            )
        out = {"label": label, "confidence": conf, "opacity": opacity}
        if probs:
            assert log_p is not None
            out["probs"] = log_p.exp()
        if depth:
            assert rc.depth is not None
            out["depth"] = rc.depth
        if rgb:
            bg = (1.0 - opacity)[:, None] * self.background_color
            if kept:
                sel_k = torch.cat([k[0] for k in kept])
                ri = ray_indices[sel_k]
                rgb_s = self.color_head(torch.cat([k[2] for k in kept]), self.dir_encoding(rays_d), ri)
                out["rgb"] = accumulate(torch.cat([k[1] for k in kept]), rgb_s, ri, n) + bg
            else:
                out["rgb"] = bg
        return out
