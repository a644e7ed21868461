"""Segmentation metrics from a confusion matrix accumulated over frames.

Notation: the class table's ids in table order, void (id 0) at position 0; K = len(classes.ids).
`ConfusionMatrix.matrix[g, p]` (K, K) int64 counts pixels of GT position g predicted as position p. GT void
pixels (and GT ids outside the table) are never counted; a prediction of void or of an unknown id counts in
column 0, i.e. as a miss of the GT class.

mIoU is the mean over classes present in the GT or in the prediction (void excluded): a class predicted on
a few stray pixels of frames where it does not appear counts as IoU 0. `miou_gt_classes` is the mean over the
classes present in the GT only (Semantic-NeRF's and ScanNet's convention, where such a class is left out; its
stray pixels still cost the GT class they cover). accuracy is the fraction of non-void GT pixels predicted
right; class-average accuracy averages per-class recall over the classes present in the GT.
"""

from __future__ import annotations

import numpy as np

from labelfield.scene import ClassTable


class ConfusionMatrix:
    """Accumulates a (K, K) confusion matrix over frames; `compute()` gives the metrics dict."""

    def __init__(self, classes: ClassTable) -> None:
        self.classes = classes
        self.k = len(classes.ids)
        lut = np.zeros(classes.max_id + 1, np.int64)  # unknown ids -> position 0 (void)
        for pos, i in enumerate(classes.ids):
            lut[i] = pos
        self._lut = lut
        self._void_pos = classes.ids.index(classes.void_id)
        self.matrix = np.zeros((self.k, self.k), np.int64)

    def _positions(self, labels: np.ndarray) -> np.ndarray:
        lab = np.asarray(labels).astype(np.int64).reshape(-1)
        ok = (lab >= 0) & (lab < len(self._lut))
        return np.where(ok, self._lut[np.clip(lab, 0, len(self._lut) - 1)], self._void_pos)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one frame: gt, pred (H, W) original class ids."""
        if np.shape(gt) != np.shape(pred):
            raise ValueError(f"shape mismatch {np.shape(gt)} vs {np.shape(pred)}")
        g, p = self._positions(gt), self._positions(pred)
        keep = g != self._void_pos
        self.matrix += np.bincount(g[keep] * self.k + p[keep], minlength=self.k * self.k).reshape(self.k, self.k)

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.matrix += other.matrix
        return self

    def compute(self) -> dict:
        """{"miou", "miou_gt_classes", "accuracy", "class_avg_accuracy", "per_class_iou": {name: iou}} (None when
        undefined)."""
        m = self.matrix.astype(np.float64)
        cls = [i for i in range(self.k) if i != self._void_pos]
        tp = np.diag(m)
        gt_count, pred_count = m.sum(1), m.sum(0)
        per_class: dict[str, float] = {}
        recalls, present = [], []
        for i in cls:
            if gt_count[i] == 0 and pred_count[i] == 0:
                continue  # class absent from GT and prediction: not part of the mean
            per_class[self.classes.names[i]] = float(tp[i] / (gt_count[i] + pred_count[i] - tp[i]))
            if gt_count[i] > 0:
                recalls.append(tp[i] / gt_count[i])
                present.append(per_class[self.classes.names[i]])
        total = gt_count.sum()
        return {
            "miou": float(np.mean(list(per_class.values()))) if per_class else None,
            "miou_gt_classes": float(np.mean(present)) if present else None,
            "accuracy": float(tp[cls].sum() / total) if total > 0 else None,
            "class_avg_accuracy": float(np.mean(recalls)) if recalls else None,
            "per_class_iou": per_class,
        }

    def normalized(self) -> np.ndarray:
        """Row-normalised matrix without the void row (K-1, K): recall distribution per GT class."""
        rows = [i for i in range(self.k) if i != self._void_pos]
        m = self.matrix[rows].astype(np.float64)
        return m / np.maximum(m.sum(1, keepdims=True), 1)


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """PSNR in dB of two (H, W, 3) uint8 images (inf for identical ones)."""
    mse = np.mean((np.asarray(pred, np.float64) - np.asarray(gt, np.float64)) ** 2) / 255.0**2
    return float("inf") if mse == 0 else float(-10.0 * np.log10(mse))
