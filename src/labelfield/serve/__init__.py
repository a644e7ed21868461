"""`labelfield serve`: a local web page to paint strokes, watch the field label every frame, and export.

Modules: strokes.py (stroke validation, exact rasterisation, the append-only log), online.py (a RayDataset
whose labels change during training), engine.py (model, online training, rendering, checkpoints — every
import of training internals lives there), exporting.py (LABELS folder + export formats), app.py (HTTP API,
security), command.py (the CLI), static/ (the page: plain JS, no build step).
"""
