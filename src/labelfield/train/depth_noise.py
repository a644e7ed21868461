"""Sensor-like depth corruption for experiments (`--depth-noise`): holes, multiplicative and additive noise.

Spec: comma-separated `key=value` (or `key:value`) items, any subset, e.g. `holes=0.1,rel=0.01,abs=0.005`:
    holes  share of pixels set to 0 (unknown), in blobs of `blob` pixels (a coarse random mask, upsampled by
           nearest neighbour: real sensors lose regions — dark, shiny, far — not single pixels), plus
    edges  1 = also drop pixels at depth discontinuities (> 5 % jump to a 4-neighbour), where structured-light
           and ToF sensors fail most;
    rel    standard deviation of the multiplicative noise, z <- z * (1 + rel * N(0, 1));
    quad   standard deviation per metre^2 of depth-dependent noise, z <- z + quad * z^2 * N(0, 1) (Kinect-like);
    abs    standard deviation in metres of additive noise, z <- z + abs * N(0, 1);
    blob   hole blob size in pixels (default 8).
Deterministic: the noise of frame i depends only on (seed, i), so the trainer, the pseudo-labels and the
baselines all see the same corrupted depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelfield.errors import LabelfieldError


@dataclass(frozen=True)
class DepthNoise:
    """Parsed `--depth-noise` spec (see the module docstring)."""

    holes: float = 0.0
    edges: bool = False
    rel: float = 0.0
    quad: float = 0.0
    abs: float = 0.0
    blob: int = 8

    @staticmethod
    def parse(spec: str | None) -> DepthNoise | None:
        """`holes=0.1,rel=0.01` -> DepthNoise; None or "" or "none" -> None. Bad spec: LabelfieldError."""
        if spec is None or spec.strip().lower() in ("", "none", "off"):
            return None
        values: dict[str, float] = {}
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, val = item.replace(":", "=").partition("=")
            key = key.strip().lower()
            if not sep or key not in ("holes", "edges", "rel", "quad", "abs", "blob"):
                raise LabelfieldError(
                    f"--depth-noise: bad item {item!r} (use holes=F,edges=1,rel=F,quad=F,abs=F,blob=N)"
                )
            try:
                values[key] = float(val)
            except ValueError:
                raise LabelfieldError(f"--depth-noise: {item!r} needs a number") from None
        if not 0.0 <= values.get("holes", 0.0) < 1.0:
            raise LabelfieldError("--depth-noise: holes must be in [0, 1)")
        if min(values.get(k, 0.0) for k in ("rel", "quad", "abs")) < 0 or values.get("blob", 8) < 1:
            raise LabelfieldError("--depth-noise: rel, quad, abs must be >= 0 and blob >= 1")
        return DepthNoise(
            holes=values.get("holes", 0.0),
            edges=bool(values.get("edges", 0.0)),
            rel=values.get("rel", 0.0),
            quad=values.get("quad", 0.0),
            abs=values.get("abs", 0.0),
            blob=int(values.get("blob", 8)),
        )

    def apply(self, depth: np.ndarray, seed: int, frame_index: int) -> np.ndarray:
        """Corrupted copy of z-depth (H, W) float32 metres (0 = unknown stays 0). Deterministic in (seed, index)."""
        rng = np.random.default_rng([int(seed) % 2**32, int(frame_index), 0x0DE97])
        d = np.asarray(depth, np.float32).copy()
        known = d > 0
        H, W = d.shape
        if self.rel or self.quad or self.abs:
            n = rng.standard_normal((3, H, W)).astype(np.float32)
            d = d * (1.0 + self.rel * n[0]) + self.quad * d * d * n[1] + self.abs * n[2]
        if self.holes > 0:
            b = max(1, self.blob)
            coarse = rng.random(((H + b - 1) // b, (W + b - 1) // b)) < self.holes
            known &= ~np.repeat(np.repeat(coarse, b, 0), b, 1)[:H, :W]
        if self.edges:
            z = np.asarray(depth, np.float32)
            jump = np.zeros((H, W), bool)
            for a, c in ((z[1:], z[:-1]), (z[:, 1:], z[:, :-1])):
                j = np.abs(a - c) > 0.05 * np.maximum(np.minimum(a, c), 1e-6)
                if a.shape[0] < H:
                    jump[1:] |= j
                    jump[:-1] |= j
                else:
                    jump[:, 1:] |= j
                    jump[:, :-1] |= j
            known &= ~jump
        return np.where(known & (d > 0), d, 0.0).astype(np.float32)


def depth_loader(scene, noise: str | DepthNoise | None, seed: int):
    """`i -> depth (H, W) float32 or None` for frame i of `scene`, corrupted by `noise` when given."""
    spec = DepthNoise.parse(noise) if isinstance(noise, str) or noise is None else noise

    def load(i: int) -> np.ndarray | None:
        d = scene.frames[i].load_depth()
        if d is None or spec is None:
            return d
        return spec.apply(np.nan_to_num(d, nan=0.0), seed, i)

    return load
