"""`labelfield batch`: many scenes, one Ray task each (fit -> annotate -> eval -> export), resumable.

manifest.py (MANIFEST -> SceneSpec list), pipeline.py (`process_scene`: the only module calling the pipeline),
executor.py (serial and Ray executors, retries, shared-filesystem checks), report.py (live table, summaries),
command.py (the CLI).
"""
