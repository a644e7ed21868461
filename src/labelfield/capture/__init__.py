"""From a phone video or a folder of photos to a posed scene: frame sampling, SfM (pycolmap), normalisation.

`labelfield capture INPUT --out SCENE` (command.py) writes a transforms.json scene with the sparse SfM points
beside it. Modules: frames.py (video sampling, blur filter), sfm.py (pycolmap stages, lazily imported),
normalize.py (gravity up, unit box), command.py (the command and the scene writer).
"""
