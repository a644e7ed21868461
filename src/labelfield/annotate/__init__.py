"""Annotate: render every frame of a fitted run (or a camera path) into a LABELS folder.

`annotate_frames` is the core (any `render_fn`, so tests and baselines can drive it without a model);
`fitted.annotate_run` drives it with a loaded run's model and the labels the run trained on; `trajectory`
renders novel views to a video; `command.AnnotateCommand` is `labelfield annotate`.
"""

from labelfield.annotate.frames import annotate_frames, labels_from_render, to_numpy

__all__ = ["annotate_frames", "labels_from_render", "to_numpy"]
