"""Export a LABELS folder to the formats annotation tools and other pipelines read.

One module per format; each has `export_<format>(labelset, out, ...)` and a reader used by the round-trip
tests (`read_<format>`). `command.ExportCommand` is `labelfield export`. Nothing here imports the trainer.
"""

FORMATS = ("cvat", "labelstudio", "coco", "replica", "transforms", "ply")

__all__ = ["FORMATS"]
