"""Evaluation of a LABELS folder against a ground-truth scene: metrics, 3D consistency, PSNR, report."""
