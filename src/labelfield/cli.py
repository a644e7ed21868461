"""The `labelfield` command: one subcommand per pipeline stage.

Each stage module defines a dataclass command (attribute docstrings become `--help`) with a `run()` method;
this file only collects them. Bad input raises `LabelfieldError`, printed here as one line with exit code 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Union

import tyro

from labelfield.errors import LabelfieldError

# (subcommand, module, class) in pipeline order. Modules import lazily-heavy deps inside run().
COMMANDS: list[tuple[str, str, str]] = [
    ("synth", "labelfield.synth.command", "SynthCommand"),
    ("capture", "labelfield.capture.command", "CaptureCommand"),
    ("info", "labelfield.formats.command", "InfoCommand"),
    ("convert", "labelfield.formats.command", "ConvertCommand"),
    ("fit", "labelfield.train.command", "FitCommand"),
    ("annotate", "labelfield.annotate.command", "AnnotateCommand"),
    ("eval", "labelfield.evaluate.command", "EvalCommand"),
    ("baseline", "labelfield.baselines.command", "BaselineCommand"),
    ("export", "labelfield.export.command", "ExportCommand"),
    ("labels", "labelfield.label_import.command", "LabelsCommand"),
    ("demo", "labelfield.demo", "DemoCommand"),
]


def _command_types() -> list:
    types = []
    for name, module, cls in COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):  # stage not built yet in this checkout
                continue
            raise
        types.append(Annotated[getattr(mod, cls), tyro.conf.subcommand(name)])
    return types


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    types = _command_types()
    cmd = tyro.cli(Union[tuple(types)] if len(types) > 1 else types[0], args=argv)  # noqa: UP007
    try:
        rc = cmd.run()
    except LabelfieldError as e:
        print(f"labelfield: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("labelfield: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)  # a command may report its own status (fit: 130 after a Ctrl-C that saved a checkpoint)


if __name__ == "__main__":
    sys.exit(main())
