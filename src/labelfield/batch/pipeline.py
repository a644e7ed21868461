"""One scene of a batch: fit -> annotate -> eval (when there is ground truth) -> export, resumable stage by stage.

This is the only module of `labelfield.batch` that calls into the pipeline (FitConfig, `fit`, `load_run`,
`annotate_frames`, `evaluate`, the exporters), so a change of those APIs is adapted here alone. It knows nothing
of Ray: `process_scene` runs the same in a Ray task, in a `--local` batch and in a test.

Layout of one scene's folder (every file written atomically; DONE_FILE last):
    DIR/<name>/run/            the fit's run folder (config.json, scene.json, checkpoints/, log.jsonl)
    DIR/<name>/fit.json        FitResult of the finished fit (the fit stage is done)
    DIR/<name>/labels/         the LABELS folder (written as one atomic folder: present = complete)
    DIR/<name>/metrics.json    evaluation summary + report.html (when the scene has ground truth)
    DIR/<name>/export/         one file or folder per export format
    DIR/<name>/attempts.json   attempts in this batch, pid and host of the last one (worker-loss bookkeeping)
    DIR/<name>/error.log       traceback of an unexpected error
    DIR/<name>/done.json       the SceneResult: the scene is finished and skipped on rerun (unless --force)

Each stage is skipped when its output exists, so a rerun after worker loss resumes at the stage it stopped in,
and the fit resumes from its last checkpoint (`fit(config with resume=run)`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelfield.errors import LabelfieldError
from labelfield.io import read_json, write_json

DONE_FILE = "done.json"
ATTEMPTS_FILE = "attempts.json"
FIT_FILE = "fit.json"
METRICS_FILE = "metrics.json"
# Per-scene FitConfig keys the batch sets itself (not allowed in a manifest).
RESERVED_FIT_KEYS = ("scene", "out", "resume", "progress")
# Keys that may differ between a run's saved config and the batch's when resuming it (as `fit --resume` allows).
RESUMABLE_KEYS = ("steps", "time_budget", "device", "threads", "checkpoint_every", "log_every", "progress")
# Annotate options a manifest may set (`annotate: {...}`), with annotate's defaults.
ANNOTATE_DEFAULTS: dict[str, Any] = {
    "frames": "all",
    "keep_given": True,
    "save_probs": False,
    "opacity_threshold": None,  # auto (annotate.frames.auto_opacity_threshold)
    "chunk": 16384,
}
EXPORT_SUFFIX = {
    "cvat": ".zip",
    "labelstudio": ".json",
    "coco": ".json",
    "ply": ".ply",
    "replica": "",
    "transforms": "",
}

Report = Callable[[dict[str, Any]], None]


@dataclass
class SceneSpec:
    """One scene of a batch, fully resolved (plain JSON values, so it travels to a Ray worker as is)."""

    name: str
    """Folder name under the batch's --out."""
    path: str
    """Absolute path of the scene folder (must be visible to every worker)."""
    fit: dict[str, Any]
    """FitConfig options (`FitConfig.to_dict()` without scene/out/resume/progress)."""
    annotate: dict[str, Any] = field(default_factory=lambda: dict(ANNOTATE_DEFAULTS))
    """Annotate options (keys of ANNOTATE_DEFAULTS)."""
    gt: str | None = None
    """Ground-truth scene to evaluate against (absolute path; may be `path` itself), or None."""
    export: list[str] = field(default_factory=list)
    """Export formats (labelfield export --format)."""


@dataclass
class SceneResult:
    """What happened to one scene; a row of summary.json. `wall_s`, `cpu_s` (CPU seconds of the process, all its
    threads): this attempt; `fit_s`: the fit's training time over all attempts."""

    name: str
    status: str  # done | skipped (done earlier) | failed | unreachable (a worker cannot see the scene path)
    path: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    fit_s: float | None = None
    steps: int | None = None
    steps_per_s: float | None = None
    psnr: float | None = None
    miou: float | None = None
    consistency: float | None = None
    attempts: int = 1
    resumed_from: int | None = None
    host: str = ""
    error: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SceneResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --- FitConfig adapter ---------------------------------------------------------------------------------
def fit_option_names() -> list[str]:
    """FitConfig options a manifest or the command line may set for a scene."""
    from labelfield.train.config import FitConfig

    return [f.name for f in dataclasses.fields(FitConfig) if f.name not in RESERVED_FIT_KEYS]


def fit_options(config: Any) -> dict[str, Any]:
    """The per-scene fit options of a FitConfig (or a subclass such as the batch command) as plain JSON."""
    from labelfield.train.config import FitConfig

    base = FitConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(FitConfig)})
    return {k: v for k, v in base.to_dict().items() if k not in RESERVED_FIT_KEYS}


def merge_fit_options(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override` on top; nested dicts (model_config) merge key by key."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge_fit_options(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_fit_config(options: dict[str, Any], scene: str | Path | None, out: str | Path | None, where: Any = None):
    """A FitConfig from per-scene options; LabelfieldError naming `where` for an unknown key or a bad value."""
    from labelfield.train.config import FitConfig

    bad = sorted(set(options) & set(RESERVED_FIT_KEYS))
    if bad:
        raise LabelfieldError(f"option {bad[0]!r} is set by the batch itself and cannot be given per scene", where)
    d = {**options, "scene": None if scene is None else str(scene), "out": None if out is None else str(out)}
    return dataclasses.replace(FitConfig.from_dict(d, where), progress=False)


# --- one scene -----------------------------------------------------------------------------------------
def one_line(e: BaseException) -> str:
    """An exception as one line: LabelfieldError's message as is, anything else prefixed by its type."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, LabelfieldError) else f"{type(e).__name__}: {text}".rstrip(": ")


def scene_visible(spec: SceneSpec) -> str | None:
    """The first path of `spec` this process cannot see (scene, gt), or None."""
    for p in (spec.path, spec.gt):
        if p is not None and not Path(p).exists():
            return p
    return None


def read_done(scene_dir: Path) -> SceneResult | None:
    """The result stored by a finished scene, or None (absent or unreadable marker: the scene is not done)."""
    try:
        return SceneResult.from_dict(read_json(scene_dir / DONE_FILE)["result"])
    except (LabelfieldError, KeyError, TypeError):
        return None


def done_spec(scene_dir: Path) -> dict[str, Any] | None:
    """The SceneSpec (as a dict) a finished scene was made with, or None."""
    try:
        return read_json(scene_dir / DONE_FILE)["spec"]
    except (LabelfieldError, KeyError, TypeError):
        return None


def same_options(stored: dict[str, Any] | None, spec: SceneSpec) -> bool:
    """Whether a finished scene's stored spec matches `spec`, ignoring what may change without redoing it
    (threads, device, checkpoint and log intervals)."""
    if stored is None:
        return True
    strip = lambda d: {**d, "fit": {k: v for k, v in (d.get("fit") or {}).items() if k not in RESUMABLE_KEYS}}
    return strip(stored) == strip(dataclasses.asdict(spec))


def _count_attempt(scene_dir: Path, batch_id: str) -> int:
    """Attempts of this scene in batch `batch_id` (a retried task after worker loss counts 2, 3, ...)."""
    path = scene_dir / ATTEMPTS_FILE
    n = 0
    with contextlib.suppress(LabelfieldError, KeyError, TypeError):
        prev = read_json(path)
        n = int(prev["attempts"]) if prev.get("batch") == batch_id else 0
    n += 1
    write_json(path, {"batch": batch_id, "attempts": n, "pid": os.getpid(), "host": socket.gethostname()})
    return n


def _clean_partial(scene_dir: Path) -> None:
    """Remove temporary folders/files that a killed attempt left (atomic writes never leave them on success)."""
    for p in scene_dir.glob(".*.tmp"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    for p in scene_dir.glob(".*.old"):
        shutil.rmtree(p, ignore_errors=True)


def process_scene(
    spec: SceneSpec, out_dir: str | Path, batch_id: str = "", report: Report | None = None
) -> SceneResult:
    """Run (or finish) one scene into `out_dir/spec.name` and return its result; never raises for bad input.

    A finished scene (DONE_FILE present) is returned as `skipped`. A scene path this process cannot see gives
    status `unreachable` (the batch then stops: the scenes are not on a shared filesystem). Any other error
    gives `failed` with its one-line message (and error.log with the traceback for unexpected ones).
    `report(info)` receives progress: {"phase", "step", "steps", "steps_per_s", "pid", "host"}.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    report = report or (lambda info: None)
    scene_dir = Path(out_dir) / spec.name
    host = socket.gethostname()
    res = SceneResult(spec.name, "failed", path=spec.path, host=host)
    done = read_done(scene_dir)
    if done is not None:
        done.status = "skipped"
        return done
    missing = scene_visible(spec)
    if missing is not None:
        res.status, res.error = "unreachable", f"{missing}: not visible on host {host}"
        return res
    try:
        scene_dir.mkdir(parents=True, exist_ok=True)
        _clean_partial(scene_dir)
        res.attempts = _count_attempt(scene_dir, batch_id)
        report({"phase": "fit", "pid": os.getpid(), "host": host, "attempts": res.attempts})
        _fit_stage(spec, scene_dir, res, report)
        report({"phase": "annotate"})
        _annotate_stage(spec, scene_dir)
        if spec.gt is not None:
            report({"phase": "eval"})
            _eval_stage(spec, scene_dir, res)
        if spec.export:
            report({"phase": "export"})
            _export_stage(spec, scene_dir)
        res.status = "done"
        res.wall_s, res.cpu_s = time.perf_counter() - t0, time.process_time() - c0
        write_json(scene_dir / DONE_FILE, {"result": dataclasses.asdict(res), "spec": dataclasses.asdict(spec)})
    except Exception as e:  # one broken scene never stops the others: report it, keep going
        res.status, res.error = "failed", one_line(e)
        if not isinstance(e, LabelfieldError) and scene_dir.is_dir():
            with contextlib.suppress(OSError):
                (scene_dir / "error.log").write_text(traceback.format_exc())
    res.wall_s, res.cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return res


def _fit_stage(spec: SceneSpec, scene_dir: Path, res: SceneResult, report: Report) -> None:
    from labelfield.run import CONFIG_FILE, latest_checkpoint
    from labelfield.train.config import FitConfig
    from labelfield.train.trainer import fit

    run_dir = scene_dir / "run"
    fit_file = scene_dir / FIT_FILE
    if fit_file.is_file():  # finished earlier in this batch (an attempt lost later, in annotate or eval)
        _fill_fit(res, read_json(fit_file))
        return
    config = make_fit_config(spec.fit, spec.path, run_dir, where=spec.path)
    if (run_dir / CONFIG_FILE).is_file():  # an interrupted attempt: resume from its last checkpoint
        saved = FitConfig.load(run_dir / CONFIG_FILE).to_dict()
        new = config.to_dict()
        for key in sorted(set(saved) | set(new)):
            if key in RESUMABLE_KEYS or key in ("out", "resume"):
                continue
            a, b = saved.get(key), new.get(key)
            if key == "scene":
                a, b = (None if v is None else str(Path(v).resolve()) for v in (a, b))
            if key == "model_config" and isinstance(a, dict) and isinstance(b, dict):  # fit stores the scene's near
                a, b = ({k: v for k, v in d.items() if k != "near"} for d in (a, b))
            if a != b:
                raise LabelfieldError(
                    f"the run was started with another {key!r}; rerun with --force to redo it", run_dir
                )
        found = latest_checkpoint(run_dir)
        res.resumed_from = found[0] if found else 0
        config = dataclasses.replace(config, out=None, resume=run_dir)
    elif run_dir.exists():  # killed before the run folder was set up: start over
        shutil.rmtree(run_dir)
    steps = config.steps
    t_last = [0.0, time.perf_counter(), 0]  # last report time, window start, window start step

    def on_step(step: int) -> None:
        now = time.perf_counter()
        if now - t_last[0] >= 1.0 or step >= steps:
            rate = (step - t_last[2]) / max(now - t_last[1], 1e-9)
            t_last[:] = [now, now, step]
            report({"phase": "fit", "step": step, "steps": steps, "steps_per_s": rate})

    with contextlib.redirect_stdout(io.StringIO()):
        result = fit(config, console=_quiet_console(), on_step=on_step)
    if result.interrupted:  # Ctrl-C: the fit saved a checkpoint; stop the batch (a rerun resumes this scene)
        raise KeyboardInterrupt
    info = {
        "step": result.step,
        "total_seconds": result.total_seconds,
        "steps_per_s": result.steps_per_s,
        "psnr": result.psnr,
    }
    write_json(fit_file, info)
    _fill_fit(res, info)


def _fill_fit(res: SceneResult, info: dict[str, Any]) -> None:
    res.steps, res.fit_s = int(info["step"]), float(info["total_seconds"])
    res.steps_per_s, res.psnr = float(info["steps_per_s"]), float(info["psnr"])


def _quiet_console():
    from rich.console import Console

    return Console(file=io.StringIO(), stderr=False)


def _annotate_stage(spec: SceneSpec, scene_dir: Path) -> None:
    """Render every selected frame into scene_dir/labels, as `labelfield annotate RUN --out LABELS` does."""
    from labelfield.annotate.command import parse_frames
    from labelfield.annotate.fitted import annotate_run
    from labelfield.devices import resolve_device
    from labelfield.io import atomic_dir
    from labelfield.run import load_run

    labels_dir = scene_dir / "labels"
    if (labels_dir / "frames.json").is_file():
        return
    opts = {**ANNOTATE_DEFAULTS, **spec.annotate}
    loaded = load_run(scene_dir / "run", device=resolve_device(spec.fit.get("device", "auto")))
    indices = parse_frames(str(opts["frames"]), loaded.scene.names, set(loaded.labelled))
    with atomic_dir(labels_dir) as tmp:
        annotate_run(
            loaded,
            tmp,
            indices,
            keep_given=bool(opts["keep_given"]),  # the given labels: exactly what the run trained on
            opacity_threshold=None if opts["opacity_threshold"] is None else float(opts["opacity_threshold"]),
            save_probs=bool(opts["save_probs"]),
            chunk=int(opts["chunk"]),
        )


def _eval_stage(spec: SceneSpec, scene_dir: Path, res: SceneResult) -> None:
    """scene_dir/metrics.json and report.html against the ground-truth scene, as `labelfield eval` does."""
    from labelfield.evaluate.core import evaluate
    from labelfield.evaluate.report import write_report
    from labelfield.formats import load_scene
    from labelfield.labelset import read_labelset

    metrics = scene_dir / METRICS_FILE
    if not metrics.is_file():
        ls = read_labelset(scene_dir / "labels")
        try:
            downscale = max(1, int(round(float(ls.downscale or 1))))
        except (TypeError, ValueError):
            downscale = 1
        assert spec.gt is not None
        result = evaluate(ls, load_scene(spec.gt, downscale=downscale))
        write_report(result, scene_dir / "report.html", title=f"labelfield batch: {spec.name}")
        write_json(metrics, result.summary)
    summary = read_json(metrics)
    unl = summary.get("unlabelled") or {}
    res.miou, res.consistency = unl.get("miou"), unl.get("consistency")


def export_path(scene_dir: Path, name: str, fmt: str) -> Path:
    """Where format `fmt` of scene `name` goes: DIR/<name>/export/<name>.<ext> (a folder for scene layouts)."""
    suffix = EXPORT_SUFFIX[fmt]
    return scene_dir / "export" / (f"{name}{suffix}" if suffix else f"{name}_{fmt}")


def _export_stage(spec: SceneSpec, scene_dir: Path) -> None:
    from labelfield.export.command import ExportCommand

    for fmt in spec.export:
        out = export_path(scene_dir, spec.name, fmt)
        if out.exists():
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(io.StringIO()):
            ExportCommand(labels=scene_dir / "labels", format=fmt, out=out).run()
