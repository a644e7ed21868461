"""Training: config (FitConfig), dataset (ray batches), losses, checkpoint, trainer (the loop), command (`fit`).

Kept import-free on purpose: `labelfield.run.load_run` imports `train.config` and `train.checkpoint` and must not
pull in the trainer. Import what you need from the submodules, e.g. `from labelfield.train.trainer import fit`.
"""
