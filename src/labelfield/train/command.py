"""`labelfield fit SCENE --labelled SPEC --out RUN [--steps N] [--time-budget S] [--resume RUN] ...`.

Resuming: `labelfield fit --resume RUN` takes RUN/config.json as the config. Only the options that make sense
to change mid-run may be given with it — --steps, --time-budget, --device, --threads, --checkpoint-every,
--log-every, --progress/--no-progress — and they replace the saved values; anything else differing from its
default is refused, so a resumed run never silently mixes two configurations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from labelfield.errors import LabelfieldError
from labelfield.train.config import FitConfig

RESUME_OVERRIDES = ("steps", "time_budget", "device", "threads", "checkpoint_every", "log_every", "progress")


def resume_config(given: FitConfig) -> FitConfig:
    """The config of `given.resume`'s run with the allowed overrides from `given` applied."""
    from labelfield.run import RunFolder

    assert given.resume is not None
    run_dir = Path(given.resume)
    folder = RunFolder(run_dir)
    if not folder.exists():
        raise LabelfieldError("cannot resume: not a run folder (no config.json)", run_dir)
    if given.out is not None and Path(given.out).resolve() != run_dir.resolve():
        raise LabelfieldError("--out differs from --resume; a resumed run stays in its folder", given.out)
    saved = FitConfig.load(folder.config_path)
    defaults = FitConfig()
    changes = {}
    for f in dataclasses.fields(FitConfig):
        value = getattr(given, f.name)
        if f.name in ("resume", "out") or value == getattr(defaults, f.name):
            continue
        if f.name in RESUME_OVERRIDES:
            changes[f.name] = value
        elif _norm(value) != _norm(getattr(saved, f.name)):
            flag = "the model" if f.name == "model_config" else "--" + f.name.replace("_", "-")
            raise LabelfieldError(
                f"{flag} cannot change when resuming (only {', '.join(RESUME_OVERRIDES)} can)", run_dir
            )
    return dataclasses.replace(saved, resume=run_dir, out=None, **changes)


def _norm(value: object) -> object:
    """Paths compare resolved (the saved config holds absolute ones)."""
    return Path(value).resolve() if isinstance(value, Path) else value


@dataclass
class FitCommand(FitConfig):
    """Fit a semantic radiance field to a scene with a few labelled frames; writes a run folder."""

    def run(self) -> int:
        config = resume_config(self) if self.resume is not None else self
        config = FitConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(FitConfig)})
        from labelfield.train.trainer import fit

        result = fit(config)  # rich bars and messages on stderr
        table = Table(title=f"fit: {result.run_dir}", show_header=False)
        table.add_row("steps", f"{result.step} ({result.steps_run} in this run)")
        table.add_row("seconds", f"{result.seconds:.1f} (total {result.total_seconds:.1f})")
        table.add_row("steps/s", f"{result.steps_per_s:.2f}")
        table.add_row("rays/s", f"{result.rays_per_s:,.0f}")
        table.add_row("final train PSNR", f"{result.psnr:.2f} dB")
        table.add_row("final loss", f"{result.loss:.4f}")
        table.add_row("checkpoint", str(result.checkpoint))
        Console().print(table)
        return 130 if result.interrupted else 0
