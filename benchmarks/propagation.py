"""Label propagation benchmark: ngp vs Semantic-NeRF vs no-learning baselines, mIoU against training time.

Usage:
    python benchmarks/propagation.py [--scene DIR ...] [--budget 60] [--fractions 0.02,0.05,0.1]
        [--methods ngp,semantic-nerf,reproject,nearest] [--nerf-budget-factor 20] [--out DIR]
        [--density full|clicks:N|scribbles|percent:P|lowres:F] [--noise pixel:P] [--eval-frames 6]

For every scene and labelled fraction F (spec `fraction:F`), each method propagates the labels of the
labelled frames to the others:
    ngp            `labelfield fit ngp` (the trainer's own step, config and schedule), time budget B;
    semantic-nerf  the same with `labelfield fit semantic-nerf` (paper settings: 1024 rays, lambda 0.04, lr 5e-4),
                   budget B x nerf_budget_factor;
    reproject      depth + pose warping from the nearest labelled frames (labelfield.baselines.reproject);
    nearest        copy of the nearest labelled frame (labelfield.baselines.nearest).
Models are evaluated at several points of their training clock (fractions of their budget, --checkpoints /
--nerf-checkpoints); the clock is paused while evaluating, so a point's time is pure training time. The
learning-rate schedule follows the whole budget (as `fit --time-budget` does), so an early point is an
intermediate state of one long run, not a short run. Baselines have one point: their runtime.

Evaluation: the same code as `labelfield eval` (labelfield.evaluate.evaluate on a LABELS folder written like
`labelfield annotate` / `labelfield baseline` write theirs, renders by labelfield.render.chunked.render_image),
on a fixed subset of the unlabelled frames (--eval-frames, default 6: pairs of adjacent frames, so that the
3D consistency, frame i vs i + 1, is measured between neighbours), the same subset for every method. 3D
consistency uses the ground-truth depth for every method (the models' rendered depth is not written), so
the methods are compared on one geometry. With --eval-set labelled (denoising experiments, --noise) the
subset is taken from the labelled frames instead: models are scored on what they render there, baselines on
the labels they were given; the reference is always the clean ground truth.

Default scenes (no --scene): rooms from `labelfield synth` with fixed seeds (--synth-seeds, 60 frames
160x120), generated once into OUT/cache/.

Writes OUT/results.json (every point, settings, machine; rewritten after each run, so a long benchmark keeps
what it has, and --resume runs only what is missing), OUT/results.md (tables, and "time for ngp to reach
semantic-nerf's final mIoU") and OUT/propagation.png (mIoU vs training time, log axis, one panel per
fraction), via propagation_report.py.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: idle threads must not spin

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from propagation_report import summarise, write_markdown, write_plot  # noqa: E402

from labelfield.io import write_json  # noqa: E402
from labelfield.models import config_class  # noqa: E402
from labelfield.scene import Scene  # noqa: E402
from labelfield.train.config import FitConfig  # noqa: E402

MODELS = ("ngp", "semantic-nerf")
BASELINES = ("reproject", "nearest")


# --- scenes ------------------------------------------------------------------------------------------
def default_scenes(cache: Path, seeds: list[int], frames: int, width: int, height: int, console: Console) -> list[Path]:
    """Generate (once) the synthetic rooms the benchmark runs on by default; returns their folders."""
    from labelfield.synth.command import SynthCommand

    paths = []
    for s in seeds:
        path = cache / f"synth_seed{s}_{frames}f_{width}x{height}"
        if not path.is_dir():  # synth writes its folder atomically: one that exists is complete
            console.print(f"generating {path.name} with labelfield synth (once)")
            SynthCommand(out=path, seed=s, frames=frames, width=width, height=height).run()
        paths.append(path)
    return paths


def eval_subset(scene: Scene, labelled: list[int], n: int, which: str) -> list[int]:
    """Frames to score: `n` (0 = all) unlabelled frames with GT labels, as pairs of neighbours (i, i + 1) spread
    evenly over the sequence; with which == "labelled", `n` labelled frames evenly spaced."""
    lab = set(labelled)
    has = [i for i, f in enumerate(scene.frames) if f.has_labels()]
    if which == "labelled":
        pool = [i for i in has if i in lab]
        if n <= 0 or len(pool) <= n:
            return pool
        return sorted({pool[k] for k in np.linspace(0, len(pool) - 1, n).round().astype(int)})
    pool = [i for i in has if i not in lab]
    if n <= 0 or len(pool) <= n:
        return pool
    poolset = set(pool)
    anchors = [i for i in pool if i + 1 in poolset]
    if len(anchors) < max(1, n // 2):
        return sorted({pool[k] for k in np.linspace(0, len(pool) - 1, n).round().astype(int)})
    pick = np.linspace(0, len(anchors) - 1, max(1, n // 2)).round().astype(int)
    return sorted({j for k in pick for j in (anchors[k], anchors[k] + 1)})


# --- evaluation --------------------------------------------------------------------------------------
def score(labels_dir: Path, scene: Scene) -> dict[str, Any]:
    """Metrics of a LABELS folder holding exactly the evaluated frames (`labelfield eval`'s "all" block)."""
    from labelfield.evaluate.core import evaluate
    from labelfield.labelset import read_labelset

    result = evaluate(read_labelset(labels_dir), scene, k=1)
    block = result.summary["all"]
    keys = ("miou", "miou_gt_classes", "accuracy", "class_avg_accuracy", "consistency", "per_class_iou")
    return {**{k: block[k] for k in keys}, "psnr": result.summary["psnr"]}


def score_model(
    model: torch.nn.Module,
    scene: Scene,
    frames: list[int],
    labelled: set[int],
    method: str,
    workdir: Path,
    device: torch.device,
    chunk: int,
) -> dict[str, Any]:
    """Render `frames` with the model (as `labelfield annotate` does, without its depth) and score them."""
    from labelfield.annotate.frames import annotate_frames, auto_opacity_threshold
    from labelfield.render.chunked import render_image

    def render(intr: Any, c2w: np.ndarray) -> dict[str, Any]:
        out = render_image(model, intr, c2w, chunk=chunk, device=device)
        out["depth"] = None  # consistency on GT depth for every method
        return out

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        annotate_frames(
            render,
            scene,
            scene.classes,
            tmp,
            frames,
            labelled,
            given=None,
            keep_given=False,
            scene_path=scene.root,
            method=method,
            opacity_threshold=auto_opacity_threshold(scene, scene.classes),  # as annotate's default
        )
        return score(Path(tmp), scene)


def score_dense(
    dense: dict[int, np.ndarray], scene: Scene, frames: list[int], labelled: set[int], method: str, workdir: Path
) -> dict[str, Any]:
    """Write a baseline's labels of `frames` as a LABELS folder (like `labelfield baseline`) and score them."""
    from labelfield.labelset import FrameRecord, write_frame, write_manifest

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        records = []
        for i in frames:
            f = scene.frames[i]
            write_frame(tmp, f.name, dense[i], scene.classes)
            records.append(FrameRecord.from_frame(f, i, labelled=i in labelled, given=i in labelled))
        write_manifest(
            tmp,
            scene_path=scene.root,
            format=scene.format,
            downscale=1,
            method=method,
            classes=scene.classes,
            frames=records,
        )
        return score(Path(tmp), scene)


# --- methods -----------------------------------------------------------------------------------------
def run_baseline(
    method: str,
    scene: Scene,
    sparse: dict[int, np.ndarray],
    frames: list[int],
    workdir: Path,
) -> dict[str, Any]:
    from labelfield.baselines.nearest import nearest_labels
    from labelfield.baselines.reproject import reproject_labels

    t0 = time.perf_counter()
    if method == "nearest":
        dense = nearest_labels(sparse, len(scene.frames))
    else:
        dense = reproject_labels(scene, sparse)
    seconds = time.perf_counter() - t0
    point = {"seconds": seconds, "steps": None, **score_dense(dense, scene, frames, set(sparse), method, workdir)}
    return {"points": [point], "note": "time = runtime for all frames"}


def run_model(
    config: FitConfig,
    scene: Scene,
    sparse: dict[int, np.ndarray],
    dataset: Any,
    frames: list[int],
    checkpoints: list[float],
    workdir: Path,
    device: torch.device,
    chunk: int,
    on_progress: Callable[[float, str], None],
) -> dict[str, Any]:
    """Train with the trainer's step under `config.time_budget`, scoring at each checkpoint (seconds of training).

    Same set-up as `labelfield.train.trainer.fit` (seeding, scene bounds and near, model, optimizer, sampler)
    and the same step (`trainer.train_step`), without the run folder; the training clock stops while scoring.
    """
    from labelfield.models import build_model
    from labelfield.render.bounds import scene_bounds
    from labelfield.train.trainer import TrainState, make_optimizer, seed_everything, train_step

    budget = float(config.time_budget or 0.0)
    seed_everything(config.seed)
    classes = scene.classes
    bg = classes.background_class
    bg_index = None if bg is None else int(classes.to_index(np.array([bg]))[0])
    aabb, near = scene_bounds(scene)
    model = build_model(config.model, config.model_config, aabb, classes.num_classes, bg_index, near).to(device)
    optimizer = make_optimizer(model.param_groups(config.lr), config)
    sampler = torch.Generator().manual_seed(config.seed)
    state = TrainState(model, optimizer, sampler)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    points: list[dict[str, Any]] = []
    todo = sorted(checkpoints)
    trained, step, loss = 0.0, 0, float("nan")
    model.train()
    while todo:
        t0 = time.perf_counter()
        loss_t, _ = train_step(state, config, dataset, device, step, max(step / config.steps, trained / budget))
        sync()
        trained += time.perf_counter() - t0
        step += 1
        if step % 10 == 0 or trained >= todo[0]:
            loss = float(loss_t)
            on_progress(trained, f"step {step}  loss {loss:.4f}")
        if trained >= todo[0] or step >= config.steps:
            on_progress(trained, f"step {step}  scoring {len(frames)} frames")
            metrics = score_model(model, scene, frames, set(sparse), config.model, workdir, device, chunk)
            model.train()
            points.append({"seconds": trained, "steps": step, "loss": loss, **metrics})
            while todo and (trained >= todo[0] or step >= config.steps):
                todo.pop(0)
    return {"points": points, "batch_rays": config.batch_rays, "steps_per_s": step / trained if trained else 0.0}


def warm_up(device: torch.device) -> None:
    """Build and run a throwaway ngp model once, so the hash-grid kernel's first-use build is not timed."""
    from labelfield.models import build_model

    m = build_model("ngp", None, np.array([[-1.0, -1, -1], [1, 1, 1]]), 2).to(device)
    m.train()
    m.before_step(0)
    rays_o = torch.zeros(64, 3, device=device)
    rays_d = torch.nn.functional.normalize(torch.randn(64, 3, device=device), dim=-1)
    m.render_rays(rays_o, rays_d)["rgb"].sum().backward()


# --- main --------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    floats = lambda s: [float(x) for x in s.split(",") if x.strip()]
    ap.add_argument("--scene", type=Path, action="append", default=[], help="scene folder (repeatable)")
    ap.add_argument("--budget", type=float, default=60.0, help="ngp training seconds per run (default 60)")
    ap.add_argument("--nerf-budget-factor", type=float, default=20.0, help="semantic-nerf budget = budget x this")
    ap.add_argument("--fractions", type=floats, default=[0.02, 0.05, 0.1], help="labelled fractions")
    ap.add_argument("--methods", default="ngp,semantic-nerf,reproject,nearest")
    ap.add_argument(
        "--checkpoints",
        type=floats,
        default=[1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0],
        help="ngp scoring points, as fractions of its budget",
    )
    ap.add_argument(
        "--nerf-checkpoints",
        type=floats,
        default=[1 / 4, 1 / 2, 1.0],
        help="semantic-nerf scoring points, as fractions of its budget (rendering it is slow)",
    )
    ap.add_argument("--density", default="full", help="label density: full, clicks:N, scribbles, percent:P, lowres:F")
    ap.add_argument("--noise", default=None, help="label noise on the labelled frames, e.g. pixel:0.3")
    ap.add_argument("--depth-loss", action="store_true", help="both models also fit the scene's depth (RGB-D)")
    ap.add_argument("--eval-frames", type=int, default=6, help="frames scored per point (0 = all unlabelled)")
    ap.add_argument("--eval-set", choices=("unlabelled", "labelled"), default="unlabelled")
    ap.add_argument("--nerf-batch-rays", type=int, default=1024, help="semantic-nerf rays per step (paper: 1024)")
    ap.add_argument("--nerf-semantic-weight", type=float, default=0.04, help="semantic-nerf lambda (paper: 0.04)")
    ap.add_argument("--chunk", type=int, default=8192, help="rays per render call when scoring")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synth-seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    ap.add_argument("--synth-frames", type=int, default=60)
    ap.add_argument("--synth-size", default="160x120", help="WxH of the generated scenes")
    ap.add_argument("--out", type=Path, default=Path("out/propagation"))
    ap.add_argument("--resume", action="store_true", help="keep finished runs of OUT/results.json (same settings)")
    args = ap.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in MODELS + BASELINES]
    if bad:
        ap.error(f"unknown method {bad[0]!r} (choose from {', '.join(MODELS + BASELINES)})")
    return args


def machine_info(device: torch.device, threads: int) -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main(argv: list[str] | None = None) -> int:
    from labelfield.formats import load_scene
    from labelfield.labels import make_sparse_labels
    from labelfield.train.dataset import RayDataset
    from labelfield.train.trainer import resolve_device, set_threads

    args = parse_args(argv)
    console = Console()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    threads = set_threads(args.threads) if device.type == "cpu" else torch.get_num_threads()
    scenes = list(args.scene)
    if not scenes:
        w, h = (int(v) for v in args.synth_size.lower().split("x"))
        scenes = default_scenes(out / "cache", args.synth_seeds, args.synth_frames, w, h, console)
    nerf_budget = args.budget * args.nerf_budget_factor
    results: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/propagation.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(device, threads),
        "settings": {
            "budget_s": args.budget,
            "nerf_budget_factor": args.nerf_budget_factor,
            "nerf_budget_s": nerf_budget,
            "fractions": args.fractions,
            "methods": args.methods,
            "density": args.density,
            "noise": args.noise,
            "eval_set": args.eval_set,
            "eval_frames": args.eval_frames,
            "seed": args.seed,
            "checkpoints": args.checkpoints,
            "nerf_checkpoints": args.nerf_checkpoints,
            "nerf_batch_rays": args.nerf_batch_rays,
            "nerf_semantic_weight": args.nerf_semantic_weight,
            "depth_loss": args.depth_loss,
        },
        "eval_note": (
            f"scored on {'all' if args.eval_frames <= 0 else args.eval_frames} {args.eval_set} frames per "
            "scene (adjacent pairs, the same for every method); 3D consistency on GT depth; model times "
            "are training seconds (clock paused while scoring), baseline times their runtime"
        ),
        "runs": [],
    }
    done: dict[tuple[str, float, str], dict[str, Any]] = {}
    if args.resume and (out / "results.json").is_file():
        import json

        old = json.loads((out / "results.json").read_text())
        same = lambda a, b: (
            {k: v for k, v in a.items() if k != "methods"} == {k: v for k, v in b.items() if k != "methods"}
        )
        if same(old.get("settings", {}), results["settings"]):
            done = {(r["scene"], r["fraction"], r["method"]): r for r in old["runs"] if "error" not in r}
            console.print(f"resuming: {len(done)} finished run(s) kept from {out / 'results.json'}")
        else:
            console.print("[yellow]--resume: results.json was made with other settings; starting afresh[/]")
    n_model_s = (
        len(scenes)
        * len(args.fractions)
        * (("ngp" in args.methods) * args.budget + ("semantic-nerf" in args.methods) * nerf_budget)
    )
    console.print(
        f"propagation benchmark: {len(scenes)} scene(s) x fractions {args.fractions} x {args.methods}; "
        f"training time alone {n_model_s / 60:.1f} min (+ scoring); {results['eval_note']}"
    )
    if "ngp" in args.methods:
        warm_up(device)

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        overall = progress.add_task("all runs", total=len(scenes) * len(args.fractions) * len(args.methods), info="")
        for scene_path in scenes:
            scene = load_scene(scene_path)
            scene.validate()
            for frac in args.fractions:
                spec = f"fraction:{frac:g}"
                sparse = make_sparse_labels(scene, spec, args.density, args.noise, args.seed)
                frames = eval_subset(scene, sorted(sparse), args.eval_frames, args.eval_set)
                dataset = None
                for method in args.methods:
                    if (str(scene_path), frac, method) in done:
                        results["runs"].append(done[(str(scene_path), frac, method)])
                        progress.advance(overall)
                        continue
                    desc = f"{Path(scene_path).name} {spec} {method}"
                    task = progress.add_task(desc, total=1.0, info="")
                    row: dict[str, Any] = {
                        "scene": str(scene_path),
                        "fraction": frac,
                        "labelled": spec,
                        "method": method,
                        "n_frames": len(scene.frames),
                        "n_labelled": len(sparse),
                        "eval_frames": frames,
                    }
                    try:
                        if method in BASELINES:
                            progress.update(task, info="running")
                            row.update(run_baseline(method, scene, sparse, frames, out))
                        else:
                            if dataset is None:
                                dataset = RayDataset(scene, sparse, args.depth_loss, FitConfig().labelled_ray_fraction)
                            budget = args.budget if method == "ngp" else nerf_budget
                            fr = args.checkpoints if method == "ngp" else args.nerf_checkpoints
                            config = FitConfig(
                                model_config=config_class(method)(),
                                labelled=spec,
                                label_density=args.density,
                                label_noise=args.noise,
                                seed=args.seed,
                                steps=10**9,
                                depth_loss=args.depth_loss,
                                time_budget=budget,
                                device=str(device.type),
                                threads=threads,
                                progress=False,
                            )
                            if method == "semantic-nerf":
                                config = replace(
                                    config, batch_rays=args.nerf_batch_rays, semantic_weight=args.nerf_semantic_weight
                                )
                            upd = lambda t, info, task=task, b=budget: progress.update(task, completed=t / b, info=info)
                            row.update(
                                run_model(
                                    config,
                                    scene,
                                    sparse,
                                    dataset,
                                    frames,
                                    [f * budget for f in fr],
                                    out,
                                    device,
                                    args.chunk,
                                    upd,
                                )
                            )
                    except Exception as e:  # noqa: BLE001 - one failing method must not lose the others' results
                        row["error"] = f"{type(e).__name__}: {e}"
                        console.print(f"[red]{desc} failed:[/] {row['error']}")
                    progress.update(task, completed=1.0, info=_final_info(row))
                    results["runs"].append(row)
                    results["summary"] = summarise(results["runs"])
                    write_json(out / "results.json", results)
                    progress.advance(overall)
    write_markdown(results, out / "results.md")
    write_plot(results, out / "propagation.png")
    print((out / "results.md").read_text())  # plain: rich would re-wrap the markdown table rows
    console.print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'propagation.png'}")
    for d in out.glob("tmp*"):  # temporary LABELS folders of an interrupted earlier run
        shutil.rmtree(d, ignore_errors=True)
    return 0


def _final_info(row: dict[str, Any]) -> str:
    if "error" in row:
        return "failed"
    p = row["points"][-1]
    miou = "–" if p["miou"] is None else f"{p['miou']:.3f}"
    return f"mIoU {miou} at {p['seconds']:.1f} s"


if __name__ == "__main__":
    sys.exit(main())
