"""Per-ray semantic outputs from composited logits: Semantic-NeRF's softmax, with an optional background class.

A rendering rule (a function of the composited logits, the opacity and the total optical depth of each ray), so it
lives in `render`: the models and the fused inference kernels (`render.composite_kernel`) share it.
"""

from __future__ import annotations

import torch


def semantic_outputs(
    logits: torch.Tensor, opacity: torch.Tensor, total_tau: torch.Tensor, background_class_index: int | None
) -> dict[str, torch.Tensor]:
    """Per-ray semantic outputs from composited logits z (n, C).

    Without a background class: Semantic-NeRF's rule, p = softmax(z); logits = z.
    With one (index b): the transmittance left over, 1 - opacity, is background:
        p = opacity * softmax(z) + (1 - opacity) * onehot(b),
    computed in log space (log(1 - opacity) = -total_tau exactly, log opacity = log(-expm1(-total_tau))), and
    logits = log p, which cross-entropy accepts (log_softmax(log p) = log p). A ray that hits nothing is then
    labelled background with certainty, and a background label teaches the field to stay empty there.

    Args:
        logits: (n, C) composited logits; opacity: (n,); total_tau: (n,) sum of sigma * delta per ray.
    """
    log_sm = torch.log_softmax(logits, -1)
    if background_class_index is None:
        return {"logits": logits, "log_probs": log_sm}
    log_o = torch.log((-torch.expm1(-total_tau)).clamp(min=1e-12))
    log_p = log_sm + log_o[:, None]
    b = background_class_index
    log_bg = torch.logaddexp(log_p[:, b], -total_tau)
    log_p = torch.cat([log_p[:, :b], log_bg[:, None], log_p[:, b + 1 :]], -1)
    del opacity  # the exact opacity comes from total_tau; the argument documents the relation
    return {"logits": log_p, "log_probs": log_p}
