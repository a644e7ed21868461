"""Quality suite: fit -> annotate -> eval on every suite scene and setting, with the no-learning baselines.

Usage:
    python benchmarks/bench_quality.py [--quick] [--split tune|report|all] [--scenes a,b]
        [--settings rgbd-10,rgb-10,rgbd-5,rgbd-2] [--clock steps|time|both] [--steps 1000] [--time-budget 180]
        [--eval-frames 8 | --all-frames] [--set KEY=VALUE ...] [--json FILE] [--md FILE] [--resume]

Scenes: benchmarks/quality_scenes.py (10 synth rooms, 25 classes, 6 "tune", 4 "report" = held out, plus
../shared/data/lego-200 in "report" when present); missing ones are rendered into benchmarks/.scenes/ first.

Settings (labelled frames chosen with `fraction:F`, seed 0, the same frames for the field and the baselines):
    rgbd-10   10 % labelled, depth loss on          every scene with depth   baseline: reproject
    rgb-10    10 % labelled, RGB only               every scene              baseline: nearest
    rgbd-5    5 % labelled, depth loss on           scenes marked low_label  baseline: reproject
    rgbd-2    2 % labelled, depth loss on           scenes marked low_label  baseline: reproject
Clock: a fixed number of steps (--steps, default 1000) and/or a time budget (--time-budget, default 180 s);
--clock both runs each setting twice. --quick: the 3 QUICK scenes, 300 steps, settings rgbd-10 and rgb-10.

Scored (labelfield.evaluate, the code of `labelfield eval`) on a fixed subset of the unlabelled frames:
--eval-frames N (default 8, as adjacent pairs so that 3D consistency compares neighbours), or --all-frames.
3D consistency uses the ground-truth depth for every method. Reported per run: unlabelled mIoU, accuracy,
3D consistency, per-class IoU (small/thin classes of labelfield.synth.room.SMALL_CLASSES flagged, and their
mean), PSNR of the rendered colour, steps, training and total wall time; per split and setting: mean and worst
scene. The JSON (--json) and markdown (--md) are rewritten after every run; --resume keeps the finished runs
of an existing --json made with the same settings.

Every call into the labelfield pipeline is in `fit_and_score` / `baseline_and_score` (the adapters).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: idle threads must not spin

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fit import parse_set  # noqa: E402
from propagation import eval_subset, machine_info, run_baseline, score, score_model, warm_up  # noqa: E402
from quality_scenes import SuiteScene, cpu_model, ensure_rendered, select  # noqa: E402

from labelfield.io import atomic_path, write_json  # noqa: E402
from labelfield.synth.room import SMALL_CLASSES  # noqa: E402


@dataclass(frozen=True)
class Setting:
    name: str
    fraction: float
    depth: bool
    low_label_only: bool  # only on scenes marked low_label

    @property
    def baseline(self) -> str:
        return "reproject" if self.depth else "nearest"

    @property
    def spec(self) -> str:
        return f"fraction:{self.fraction:g}"


SETTINGS = {
    s.name: s
    for s in (
        Setting("rgbd-10", 0.10, True, False),
        Setting("rgb-10", 0.10, False, False),
        Setting("rgbd-5", 0.05, True, True),
        Setting("rgbd-2", 0.02, True, True),
    )
}


# --- the adapters: every call into the pipeline lives here ------------------------------------------
def fit_and_score(
    scene_path: Path,
    setting: Setting,
    clock: str,
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    """Fit the field on `scene_path` with `setting` under `clock` ("steps" or "time"), render the scored frames
    like `labelfield annotate`, evaluate them like `labelfield eval`. Returns the run's metrics dict."""
    from labelfield.run import load_run
    from labelfield.train.config import FitConfig
    from labelfield.train.trainer import fit, resolve_device

    t0 = time.perf_counter()
    out = workdir / "run"
    config = FitConfig(
        scene=scene_path,
        labelled=setting.spec,
        seed=args.seed,
        out=out,
        steps=args.steps if clock == "steps" else 10**7,
        time_budget=None if clock == "steps" else args.time_budget,
        device=args.device,
        threads=args.threads,
        depth_loss=setting.depth,
        checkpoint_every=10**9,  # only the final checkpoint
        keep_checkpoints=1,
        progress=False,
    )
    config = parse_set(args.set, config)
    from rich.console import Console

    log = io.StringIO()
    result = fit(config, console=Console(file=log, width=200))
    fit_wall = time.perf_counter() - t0
    device = resolve_device(args.device)
    run = load_run(out, device=device)
    scene = run.scene
    frames = eval_subset(scene, sorted(run.labelled), args.eval_frames, "unlabelled")
    metrics = score_model(run.model, scene, frames, set(run.labelled), "ngp", workdir, device, args.chunk)
    derived = {
        # what `labelfield annotate` writes by default, and ablations: without the depth-edge refinement, without
        # the nearest-labelled-point fill of pixels nothing reprojects to
        "field+fusion": score_fused(run, frames, workdir, args.chunk, scene_depth=setting.depth),
        "field+fusion, no refine": score_fused(run, frames, workdir, args.chunk, setting.depth, refine=False),
        "field+fusion, no unseen fill": score_fused(run, frames, workdir, args.chunk, setting.depth, unseen=False),
    }
    return {
        **metrics,
        "derived": derived,
        "steps": result.step,
        "train_seconds": result.seconds,
        "fit_wall_seconds": fit_wall,
        "wall_seconds": time.perf_counter() - t0,
        "n_labelled": len(run.labelled),
        "n_frames": len(scene.frames),
        "eval_frames": frames,
        "config": {k: v for k, v in config.to_dict().items() if k not in ("scene", "out", "resume")},
    }


def score_fused(
    run: Any, frames: list[int], workdir: Path, chunk: int, scene_depth: bool, refine: bool = True, unseen: bool = True
) -> dict[str, Any]:
    """What `labelfield annotate` writes by default: the field fused with the user's labels reprojected through
    depth (the scene's in RGB-D settings; the field's rendered depth in RGB-only ones, as for a scene without
    depth maps), pixels nothing reprojects to filled by the nearest labelled 3D points (`unseen`), label
    boundaries refined on the same depth's edges (`refine`). Scored like `score_model`
    (consistency on GT depth)."""
    from labelfield.annotate.fitted import run_labels_fn
    from labelfield.annotate.frames import annotate_frames, auto_opacity_threshold
    from labelfield.annotate.fuse import FusedRenderer
    from labelfield.annotate.refine import DEFAULT_TOL

    fuse = FusedRenderer(
        run_labels_fn(run, chunk, rgb=False, depth=True, probs=True),
        run.scene,
        run.classes,
        run.sparse_labels(),
        scene_depth=scene_depth,
        refine=DEFAULT_TOL if refine else None,
        **({} if unseen else {"unseen_k": 0}),
    )

    def render(intr: Any, c2w: np.ndarray) -> dict[str, Any]:
        out = fuse(intr, c2w)
        out["depth"] = None  # consistency on GT depth for every method
        return out

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        annotate_frames(
            render,
            run.scene,
            run.classes,
            tmp,
            frames,
            set(run.labelled),
            given=None,
            keep_given=False,
            scene_path=run.scene.root,
            method="ngp+fusion",
            opacity_threshold=auto_opacity_threshold(run.scene, run.classes),  # as annotate's default
        )
        return score(Path(tmp), run.scene)


def baseline_and_score(scene_path: Path, setting: Setting, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The setting's no-learning baseline (reproject with depth, nearest without) on the same frames."""
    from labelfield.formats import load_scene
    from labelfield.labels import make_sparse_labels

    t0 = time.perf_counter()
    scene = load_scene(scene_path)
    sparse = make_sparse_labels(scene, setting.spec, "full", None, args.seed)
    frames = eval_subset(scene, sorted(sparse), args.eval_frames, "unlabelled")
    res = run_baseline(setting.baseline, scene, sparse, frames, workdir)
    point = res["points"][0]
    return {
        **{k: v for k, v in point.items() if k not in ("seconds", "steps")},
        "steps": None,
        "train_seconds": point["seconds"],
        "wall_seconds": time.perf_counter() - t0,
        "n_labelled": len(sparse),
        "n_frames": len(scene.frames),
        "eval_frames": frames,
    }


def scene_has_depth(scene_path: Path) -> bool:
    from labelfield.formats import load_scene

    return bool(load_scene(scene_path).frames[0].has_depth())


# --- summaries ---------------------------------------------------------------------------------------
def small_stats(per_class: dict[str, float] | None) -> tuple[float | None, str | None]:
    """Mean IoU over the small/thin classes present, and the worst one as "name 0.12"."""
    if not per_class:
        return None, None
    small = {k: v for k, v in per_class.items() if k in SMALL_CLASSES}
    if not small:
        return None, None
    worst = min(small, key=small.get)
    return float(np.mean(list(small.values()))), f"{worst} {small[worst]:.2f}"


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (split, setting, clock, method): mean and worst scene of mIoU, consistency and small-class mIoU."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        if "error" in r or r.get("skipped"):
            continue
        groups.setdefault((r["split"], r["setting"], r["clock"], r["method"]), []).append(r)
    rows = []
    for (split, setting, clock, method), rs in sorted(groups.items()):
        row: dict[str, Any] = {"split": split, "setting": setting, "clock": clock, "method": method, "scenes": len(rs)}
        for key in ("miou", "miou_gt_classes", "consistency", "small_miou", "accuracy"):
            vals = [(r[key], r["scene"]) for r in rs if r.get(key) is not None]
            row[f"{key}_mean"] = float(np.mean([v for v, _ in vals])) if vals else None
            row[f"{key}_worst"] = min(vals)[0] if vals else None
            row[f"{key}_worst_scene"] = min(vals)[1] if vals else None
        rows.append(row)
    return rows


def _f(v: Any, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def markdown(results: dict[str, Any]) -> str:
    """The tables: summary per split, every run, and per-class IoU (small/thin classes marked *)."""
    m = results["machine"]
    lines = [
        f"# Quality suite ({results['label']})",
        "",
        f"CPU: {m['cpu_model']}, {m['threads']} threads, torch {m['torch']}; {results['eval_note']}",
        "",
        "## Mean and worst scene per split",
        "",
        "| split | setting | clock | method | scenes | mIoU mean | mIoU worst (scene) | mIoU GT classes mean | "
        "consistency mean | consistency worst | small-class mIoU mean | small worst |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in results["summary"]:
        lines.append(
            f"| {s['split']} | {s['setting']} | {s['clock']} | {s['method']} | {s['scenes']} | "
            f"{_f(s['miou_mean'])} | {_f(s['miou_worst'])} ({s['miou_worst_scene']}) | "
            f"{_f(s.get('miou_gt_classes_mean'))} | {_f(s['consistency_mean'])} | {_f(s['consistency_worst'])} | "
            f"{_f(s['small_miou_mean'])} | "
            f"{_f(s['small_miou_worst'])} |"
        )
    lines += [
        "",
        "## Every run",
        "",
        "| scene | split | setting | clock | method | labelled | steps | train s | wall s | mIoU | mIoU GT classes | "
        "accuracy | consistency | small mIoU | worst small class | PSNR |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        head = f"| {r['scene']} | {r['split']} | {r['setting']} | {r['clock']} | {r['method']} |"
        if "error" in r or r.get("skipped"):
            lines.append(f"{head} {r.get('error') or r.get('skipped')} ||||||||||||")
            continue
        lines.append(
            f"{head} {r['n_labelled']}/{r['n_frames']} | {_f(r['steps'], 'd')} | "
            f"{_f(r['train_seconds'], '.1f')} | {_f(r['wall_seconds'], '.0f')} | {_f(r['miou'])} | "
            f"{_f(r.get('miou_gt_classes'))} | "
            f"{_f(r['accuracy'])} | {_f(r['consistency'])} | {_f(r['small_miou'])} | "
            f"{r['worst_small'] or '–'} | {_f(r['psnr'], '.1f')} |"
        )
    names = sorted(
        {c for r in results["runs"] for c in (r.get("per_class_iou") or {})}, key=lambda c: (c not in SMALL_CLASSES, c)
    )
    if names:
        lines += [
            "",
            "## Per-class IoU (* = small or thin class)",
            "",
            "| scene | setting | clock | method | "
            + " | ".join(f"{c}{'*' if c in SMALL_CLASSES else ''}" for c in names)
            + " |",
            "|---|---|---|---|" + "---|" * len(names),
        ]
        for r in results["runs"]:
            pc = r.get("per_class_iou")
            if pc:
                cells = " | ".join(_f(pc.get(c), ".2f") for c in names)
                lines.append(f"| {r['scene']} | {r['setting']} | {r['clock']} | {r['method']} | {cells} |")
    return "\n".join(lines) + "\n"


# --- main --------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 tune scenes, 300 steps, rgbd-10 and rgb-10")
    ap.add_argument("--split", default="all", help="tune | report | all (default)")
    ap.add_argument("--scenes", default="", help="comma-separated suite scene names (overrides --split)")
    ap.add_argument("--settings", default=None, help=f"comma-separated, from {', '.join(SETTINGS)} (default: all)")
    ap.add_argument("--clock", default="steps", choices=("steps", "time", "both"))
    ap.add_argument("--steps", type=int, default=None, help="steps per fit with --clock steps (default 1000)")
    ap.add_argument("--time-budget", type=float, default=180.0, help="seconds per fit with --clock time")
    ap.add_argument("--eval-frames", type=int, default=8, help="unlabelled frames scored per run (pairs)")
    ap.add_argument("--all-frames", action="store_true", help="score every unlabelled frame")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="FitConfig overrides (as bench_fit)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--chunk", type=int, default=8192, help="rays per render call when scoring")
    ap.add_argument("--json", type=Path, default=Path("out/quality/results.json"))
    ap.add_argument("--md", type=Path, default=None, help="markdown table (default: beside --json)")
    ap.add_argument("--resume", action="store_true", help="keep the finished runs of --json (same settings)")
    ap.add_argument("--workdir", type=Path, default=None, help="where runs are written (default: system temp)")
    args = ap.parse_args(argv)
    if args.steps is None:
        args.steps = 300 if args.quick else 1000
    if args.settings is None:
        args.settings = "rgbd-10,rgb-10" if args.quick else ",".join(SETTINGS)
    args.settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    bad = [s for s in args.settings if s not in SETTINGS]
    if bad:
        ap.error(f"unknown setting {bad[0]!r} (choose from {', '.join(SETTINGS)})")
    if args.all_frames:
        args.eval_frames = 0
    if args.md is None:
        args.md = args.json.with_suffix(".md")
    return args


def plan(scenes: list[SuiteScene], args: argparse.Namespace) -> list[tuple[SuiteScene, Setting, str, str]]:
    """(scene, setting, clock, method) of every run, in order: setting by setting (a run stopped early has whole
    settings), scene by scene within one."""
    clocks = ["steps", "time"] if args.clock == "both" else [args.clock]
    todo = []
    for name in args.settings:
        st = SETTINGS[name]
        for sc in scenes:
            if st.low_label_only and not sc.low_label:
                continue
            if not args.no_baselines:
                todo.append((sc, st, "-", st.baseline))
            todo += [(sc, st, clock, "field") for clock in clocks]
    return todo


def main(argv: list[str] | None = None) -> int:
    from labelfield.train.trainer import resolve_device, set_threads

    args = parse_args(argv)
    names = [n for n in args.scenes.split(",") if n]
    scenes = select(args.split, names, args.quick)
    device = resolve_device(args.device)
    threads = set_threads(args.threads) if device.type == "cpu" else torch.get_num_threads()
    settings = {
        "settings": args.settings,
        "clock": args.clock,
        "steps": args.steps,
        "time_budget": args.time_budget,
        "eval_frames": args.eval_frames,
        "set": args.set,
        "seed": args.seed,
    }
    label = "quick" if args.quick else (args.scenes or args.split)
    results: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/bench_quality.py", *(argv if argv is not None else sys.argv[1:])]),
        "label": label,
        "machine": {**machine_info(device, threads), "cpu_model": cpu_model()},
        "settings": settings,
        "scenes": {s.name: {"split": s.split, "path": str(s.location()), "low_label": s.low_label} for s in scenes},
        "eval_note": (
            f"scored on {'all' if args.eval_frames <= 0 else args.eval_frames} unlabelled frames per "
            "scene (adjacent pairs, the same for every method); 3D consistency on GT depth"
        ),
        "runs": [],
    }
    done: dict[tuple, dict[str, Any]] = {}
    if args.resume and args.json.is_file():
        old = json.loads(args.json.read_text())
        if old.get("settings") == settings:
            done = {(r["scene"], r["setting"], r["clock"], r["method"]): r for r in old["runs"] if "error" not in r}
            print(f"resuming: {len(done)} finished run(s) kept from {args.json}")
    todo = plan(scenes, args)
    n_fits = sum(1 for t in todo if t[3] == "field")
    print(
        f"bench_quality: {len(scenes)} scene(s) {[s.name for s in scenes]}, {len(todo)} runs ({n_fits} fits, "
        f"clock {args.clock}: {args.steps} steps / {args.time_budget:.0f} s); CPU {results['machine']['cpu_model']}",
        flush=True,
    )
    warm_up(device)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    depth_of: dict[str, bool] = {}
    for sc, st, clock, method in todo:
        path, _ = ensure_rendered(sc)
        row: dict[str, Any] = {
            "scene": sc.name,
            "split": sc.split,
            "setting": st.name,
            "clock": clock,
            "method": method,
            "labelled": st.spec,
        }
        key = (sc.name, st.name, clock, method)
        if key in done:
            results["runs"].append(done[key])
            if method == "field":  # and the rows derived from that fit (fusion, ablations)
                results["runs"] += [r for k, r in done.items() if k[:3] == key[:3] and k[3].startswith("field+")]
            continue
        if sc.name not in depth_of:
            depth_of[sc.name] = scene_has_depth(path)
        if st.depth and not depth_of[sc.name]:
            row["skipped"] = "no depth"
        else:
            try:
                with tempfile.TemporaryDirectory(dir=args.workdir, prefix="labelfield_quality_") as tmp:
                    if method == "field":
                        row.update(fit_and_score(path, st, clock, args, Path(tmp)))
                        derived = [{**row, **m, "method": name} for name, m in row.pop("derived").items()]
                        for d in derived:
                            d["small_miou"], d["worst_small"] = small_stats(d.get("per_class_iou"))
                    else:
                        row.update(baseline_and_score(path, st, args, Path(tmp)))
                row["small_miou"], row["worst_small"] = small_stats(row.get("per_class_iou"))
            except Exception as e:  # noqa: BLE001 - one failing run must not lose the others' results
                row["error"] = f"{type(e).__name__}: {e}"
        results["runs"].append(row)
        if method == "field" and "error" not in row and "skipped" not in row:
            for d in derived:
                results["runs"].append(d)
                print(
                    f"{sc.name} {st.name} {clock} {d['method']}: mIoU {_f(d['miou'])} consistency "
                    f"{_f(d['consistency'])} small {_f(d['small_miou'])}",
                    flush=True,
                )
        msg = (
            row.get("error")
            or row.get("skipped")
            or (
                f"mIoU {_f(row['miou'])} consistency {_f(row['consistency'])} small {_f(row['small_miou'])} "
                f"steps {row['steps']} wall {row['wall_seconds']:.0f} s"
            )
        )
        print(f"{sc.name} {st.name} {clock} {method}: {msg}", flush=True)
        results["summary"] = summarise(results["runs"])
        results["total_seconds"] = time.perf_counter() - t_all
        write_json(args.json, results)
        with atomic_path(args.md) as t:
            t.write_text(markdown(results))
    results["summary"] = summarise(results["runs"])
    results["total_seconds"] = time.perf_counter() - t_all
    write_json(args.json, results)
    with atomic_path(args.md) as t:
        t.write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {args.json} and {args.md} in {results['total_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
