"""report.html: a self-contained page (PNG figures embedded as base64) a person can open.

Sections: summary table (unlabelled / all frames), per-class IoU bars, row-normalised confusion matrix over
all frames, and a strip of sample frames GT | prediction | error (red = wrong, grey = GT void).
Figures are drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from labelfield.evaluate.core import EvalResult
from labelfield.io import atomic_path


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.4f}"


def _iou_bars(result: EvalResult):
    import matplotlib.pyplot as plt

    names = [n for i, n in zip(result.classes.ids, result.classes.names) if i != result.classes.void_id]
    a, u = result.summary["all"]["per_class_iou"], result.summary["unlabelled"]["per_class_iou"]
    names = [n for n in names if n in a or n in u]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.2))
    ax.bar(x - 0.2, [u.get(n, 0.0) for n in names], 0.4, label="unlabelled frames")
    ax.bar(x + 0.2, [a.get(n, 0.0) for n in names], 0.4, label="all frames")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    ax.legend(fontsize=8)
    return fig


def _confusion(result: EvalResult):
    import matplotlib.pyplot as plt

    m = result.confusion_all.normalized()
    names = result.classes.names
    void_pos = result.classes.ids.index(result.classes.void_id)
    rows = [n for i, n in enumerate(names) if i != void_pos]
    fig, ax = plt.subplots(figsize=(0.45 * len(names) + 2.5, 0.45 * len(rows) + 2))
    im = ax.imshow(m, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if len(names) <= 16:
        for r in range(m.shape[0]):
            for c in range(m.shape[1]):
                if m[r, c] >= 0.005:
                    ax.text(
                        c,
                        r,
                        f"{m[r, c]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="black" if m[r, c] > 0.5 else "white",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def _strip(result: EvalResult):
    import matplotlib.pyplot as plt

    n = len(result.samples)
    fig, axes = plt.subplots(n, 3, figsize=(9, 2.4 * n + 0.3), squeeze=False)
    for r, (name, gt, pred) in enumerate(result.samples):
        err = np.zeros((*gt.shape, 3), np.uint8)
        err[(gt != 0) & (pred != gt)] = (220, 30, 30)
        err[(gt != 0) & (pred == gt)] = (245, 245, 245)
        err[gt == 0] = (128, 128, 128)
        wrong = float(((gt != 0) & (pred != gt)).sum() / max((gt != 0).sum(), 1))
        imgs = [result.classes.colorize(gt), result.classes.colorize(pred), err]
        titles = [f"{name}: GT", "prediction", f"error ({100 * wrong:.1f}% wrong)"]
        for c in range(3):
            axes[r, c].imshow(imgs[c], interpolation="nearest")
            axes[r, c].set_title(titles[c], fontsize=9)
            axes[r, c].axis("off")
    fig.tight_layout()
    return fig


def write_report(result: EvalResult, path: str | Path, title: str = "labelfield evaluation") -> Path:
    """Write the self-contained report to `path` (atomically) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    s = result.summary
    rows = [
        ("mIoU", "miou"),
        ("mIoU, GT classes only", "miou_gt_classes"),
        ("pixel accuracy", "accuracy"),
        ("class-average accuracy", "class_avg_accuracy"),
        ("3D consistency", "consistency"),
    ]
    table = "".join(
        f"<tr><td>{label}</td><td>{_fmt(s['unlabelled'][key])}</td><td>{_fmt(s['all'][key])}</td></tr>"
        for label, key in rows
    )
    psnr_txt = "–" if s["psnr"] is None else f"{s['psnr']:.2f}"
    table += f"<tr><td>PSNR (dB)</td><td colspan=2>{psnr_txt}</td></tr>"
    figs = [
        ("Per-class IoU", _png(_iou_bars(result))),
        ("Confusion matrix (all frames, rows normalised)", _png(_confusion(result))),
    ]
    if result.samples:
        figs.append(("Sample frames: GT | prediction | error", _png(_strip(result))))
    body = "".join(f"<h2>{t}</h2><img src='data:image/png;base64,{b}'>" for t, b in figs)
    doc = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}td:first-child{{text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>method: <b>{html.escape(result.method or "?")}</b> &middot; {result.n_frames} frames,
{result.n_unlabelled} unlabelled (not in the training label spec)</p>
<table><tr><th>metric</th><th>unlabelled frames</th><th>all frames</th></tr>{table}</table>
{body}
</body></html>
"""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    return path
