"""The `labelfield` command: one subcommand per pipeline stage.

Each stage module defines a dataclass command (attribute docstrings become `--help`) with a `run()` method;
this file only collects them. Bad input raises `LabelfieldError`, printed here as one line with exit code 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Union

import tyro

from labelfield.allocator import keep_large_blocks
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
    ("batch", "labelfield.batch.command", "BatchCommand"),
    ("labels", "labelfield.label_import.command", "LabelsCommand"),
    ("demo", "labelfield.demo", "DemoCommand"),
    ("serve", "labelfield.serve.command", "ServeCommand"),
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


def _old_model_flag(args: list[str]) -> str | None:
    """`fit --model NAME` (the flag before models became subcommands): one line naming the new form."""
    if not args or args[0] != "fit":
        return None
    for i, a in enumerate(args):
        if a == "--model" or a.startswith("--model="):
            name = a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
            from labelfield.models import MODELS

            if name not in MODELS:
                return f"unknown model {name!r} (choose from {', '.join(MODELS)}: labelfield fit MODEL SCENE ...)"
            return f"the model is a subcommand now: labelfield fit {name} SCENE ... (not --model {name})"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = sys.argv[1:] if argv is None else list(argv)
    if (old := _old_model_flag(args)) is not None:
        print(f"labelfield: error: {old}", file=sys.stderr)
        return 2
    if args and args[0] in ("fit", "batch"):  # the model options were --model-config.* before models became subcommands
        args = ["--model." + a[len("--model-config.") :] if a.startswith("--model-config.") else a for a in args]
    types = _command_types()
    # CascadeSubcommandArgs: `labelfield fit semantic-nerf SCENE --out RUN` (options after the model name).
    cmd = tyro.cli(
        Union[tuple(types)] if len(types) > 1 else types[0],
        args=args,  # noqa: UP007
        config=(tyro.conf.CascadeSubcommandArgs,),
    )
    keep_large_blocks()  # every command renders or trains: reuse large freed buffers (labelfield.allocator)
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
