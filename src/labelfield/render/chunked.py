"""Render whole frames in chunks of rays (bounded memory), for annotate / evaluate / export.

Outputs are CPU float32 tensors shaped (H, W[, k]), row-major like the image:
    rgb (H, W, 3) in [0, 1], composited over the model's background colour;
    depth (H, W) z-depth in metres along the optical axis (expected termination distance normalised by the
        opacity, times the ray's z_scale), 0 = unknown where opacity < 0.5 (nothing was hit);
    opacity (H, W) accumulated opacity in [0, 1];
    probs (H, W, C) class probabilities over training indices 0..C-1 (sum to 1 per pixel).
"""

from __future__ import annotations

import numpy as np
import torch

from labelfield.cameras import Intrinsics, frame_rays


@torch.no_grad()
def render_image(
    model: torch.nn.Module,
    intrinsics: Intrinsics,
    c2w: np.ndarray,
    chunk: int = 8192,
    device: torch.device | str = "cpu",
    background: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Render one frame with `model.render_rays` in chunks of `chunk` rays, in eval mode (no jitter).

    Args:
        model: a `labelfield.models.base.Model` (already on `device`).
        intrinsics, c2w: the camera (OpenCV c2w (4, 4)).
        chunk: rays per `render_rays` call; peak memory grows with it.
        device: where the rays are made and rendered.
        background: optional (3,) background colour; None = the model's.

    Returns:
        dict with rgb, depth, opacity, probs (see the module docstring).
    """
    H, W = intrinsics.height, intrinsics.width
    rays_o, rays_d, z_scale = frame_rays(intrinsics, c2w, device)
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "opacity": [], "probs": []}
    try:
        for i in range(0, H * W, chunk):
            out = model.render_rays(rays_o[i : i + chunk], rays_d[i : i + chunk], background=background)
            opacity = out["opacity"]
            hit = opacity >= 0.5
            depth = torch.where(hit, out["depth"] / opacity.clamp(min=1e-6) * z_scale[i : i + chunk], 0.0)
            if "log_probs" in out:
                probs = out["log_probs"].exp()
            else:
                probs = torch.softmax(out["logits"], -1)
            parts["rgb"].append(out["rgb"].float().cpu())
            parts["depth"].append(depth.float().cpu())
            parts["opacity"].append(opacity.float().cpu())
            parts["probs"].append(probs.float().cpu())
    finally:
        model.train(was_training)
    return {k: torch.cat(v).reshape(H, W, *v[0].shape[1:]) for k, v in parts.items()}


def render_labels_image(
    model: torch.nn.Module,
    intrinsics: Intrinsics,
    c2w: np.ndarray,
    rgb: bool = False,
    depth: bool = False,
    probs: bool = False,
    chunk: int = 1 << 16,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Inference-only render of one frame for annotate: labels and confidence, other outputs on request.

    Uses the model's `render_labels` when it has one (no autograd, no colour head unless `rgb`, argmax and
    confidence in one pass per chunk), else `render_image` and an argmax over its probabilities.

    Returns CPU tensors: label (H, W) int64 training index of the most probable class, confidence (H, W) its
    probability, opacity (H, W); rgb (H, W, 3), depth (H, W) z-depth in metres (0 where opacity < 0.5) and
    probs (H, W, C) only when asked (same conventions as `render_image`).
    """
    H, W = intrinsics.height, intrinsics.width
    if not hasattr(model, "render_labels"):
        full = render_image(model, intrinsics, c2w, chunk=min(chunk, 16384), device=device)
        conf, label = full["probs"].max(-1)
        out = {"label": label, "confidence": conf, "opacity": full["opacity"]}
        out.update({k: full[k] for k, want in (("rgb", rgb), ("depth", depth), ("probs", probs)) if want})
        return out
    rays_o, rays_d, z_scale = frame_rays(intrinsics, c2w, device)
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    try:
        with torch.inference_mode():
            for i in range(0, H * W, chunk):
                ro, rd = rays_o[i : i + chunk], rays_d[i : i + chunk]
                out = model.render_labels(ro, rd, rgb=rgb, depth=depth, probs=probs)
                if depth:
                    opacity = out["opacity"]
                    z = out["depth"] / opacity.clamp(min=1e-6) * z_scale[i : i + chunk]
                    out["depth"] = torch.where(opacity >= 0.5, z, 0.0)
                for k, v in out.items():
                    parts.setdefault(k, []).append(v.cpu())
    finally:
        model.train(was_training)
    return {k: torch.cat(v).reshape(H, W, *v[0].shape[1:]) for k, v in parts.items()}
