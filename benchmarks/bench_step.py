"""Roofline of one training step and one rendered frame: time, FLOPs, bytes and share of this CPU's peak per stage.

Usage: python benchmarks/bench_step.py [--run RUN] [--scene data/demo] [--threads 2] [--steps 8] [--frames 3]
                                       [--batch-rays 4096] [--json FILE]

What it does, all in one process so the figures are comparable:
1. Peak of this CPU with `--threads` threads: FLOP/s of a 2048^3 float32 matmul, bandwidth of a 256 MB copy
   (bytes read + written), best of 5 each.
2. A training step of `--batch-rays` rays on the scene, with the model of a fitted run (`--run`; its occupancy
   grid decides how many samples a ray gets; without --run, an untrained model whose occupancy grid is set
   from the scene's depth maps, as a trained one's would be: timing does not need quality).
   The step is `trainer.train_step` taken apart into the
   NGPModel stages (march, encoding, MLPs, composite) plus batch sampling, occupancy refresh (every 8th step,
   averaged), loss, backward and Adam. The backward is split by timing the backward of the encoding and of
   the MLPs alone on the same inputs (the rest is compositing + loss). The unsplit step is timed too.
3. One frame (the scene's frame `--frame`) rendered by `NGPModel.render_labels` (inference path of annotate:
   labels + confidence, no colour head), stage by stage (its `stage` hook), and whole by `render_labels_image`,
   interleaved with the same render on the PyTorch references of the compositing / rounds / MLP / labels
   kernels ($LABELFIELD_COMPOSITE=torch, $LABELFIELD_MLP=torch) and with the old `render_image`.
4. Fixed cost: the same training step with 64 rays (Python, dispatch and allocation overhead per step).

FLOPs and bytes are analytic estimates per stage (formulas in `stage_costs`): the multiply-adds of the MLPs,
trilinear weights and corner reads of the hash grid, Adam's 7 reads/writes per parameter, a few passes over
the packed samples for marching and compositing. Bytes count the data a stage must touch at least once (not
cache misses), so for gathers (hash grid) the true traffic is higher: a low share of peak there means
latency-bound, not idle. "% peak" is the larger of FLOP/s / peak FLOP/s and bytes/s / peak bandwidth (the
roofline bound), "cores" the process CPU time / wall time of the stage. On a shared machine the wall times are
inflated by other processes; cores < threads shows it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from labelfield.allocator import keep_large_blocks  # noqa: E402
from labelfield.io import atomic_path  # noqa: E402
from labelfield.render.chunked import render_image, render_labels_image  # noqa: E402
from labelfield.train.losses import compute_losses  # noqa: E402


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_peak(repeats: int = 5) -> dict[str, float]:
    """Peak FLOP/s (float32 matmul 2048^3) and bandwidth (256 MB copy, read + write) with torch's threads.

    Each also per CPU-second (work / process CPU time): on a shared machine the wall figures fall with the
    load, the per-CPU-second ones much less, so stage efficiencies are compared per CPU-second.
    """
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats + 1):
        c, t = time.process_time(), time.perf_counter()
        torch.mm(a, b)
        best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
    flops = 2 * n**3
    src = torch.ones(1 << 26)
    dst = torch.empty_like(src)
    bbest, bbest_cpu = float("inf"), float("inf")
    for _ in range(repeats + 1):
        c, t = time.process_time(), time.perf_counter()
        dst.copy_(src)
        bbest, bbest_cpu = min(bbest, time.perf_counter() - t), min(bbest_cpu, time.process_time() - c)
    nbytes = 2 * src.numel() * 4
    return {
        "flops": flops / best,
        "bandwidth": nbytes / bbest,
        "flops_per_cpu_s": flops / max(best_cpu, 1e-9),
        "bandwidth_per_cpu_s": nbytes / max(bbest_cpu, 1e-9),
    }


class Stages:
    """Wall and CPU seconds per named stage, summed over repeats."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.order: list[str] = []

    @contextmanager
    def __call__(self, name: str):
        if name not in self.order:
            self.order.append(name)
        c, t = time.process_time(), time.perf_counter()
        yield
        self.wall[name] += time.perf_counter() - t
        self.cpu[name] += time.process_time() - c


def staged_train_step(model, dataset, optimizer, config, sampler, step: int, st: Stages, batch_rays: int) -> int:
    """One training step, the stages of trainer.train_step + NGPModel.render_rays timed apart.

    Returns the number of packed samples."""
    with st("batch sampling"):
        batch = dataset.sample(batch_rays, sampler)
    keep = getattr(model, "_bench_fixed_grid", None)
    with st("occupancy refresh"):
        model.before_step(step)
    if keep is not None:  # untrained model: its refreshes would fill the grid from depth; keep that one
        model.occupancy.density.copy_(keep[0])
        model.occupancy.binary.copy_(keep[1])
        model.occupancy.mark_changed()
    with st("marching"):
        t_starts, t_ends, ray_indices = model.march(batch.rays_o, batch.rays_d)
        t_mid = 0.5 * (t_starts + t_ends)
        x = batch.rays_o[ray_indices] + batch.rays_d[ray_indices] * t_mid[:, None]
    with st("encoding"):
        h = model.encoding(model._normalise(x).contiguous())
    with st("MLPs"):
        sigma, g = model.density_head(h)
        rgb_s = model.color_head(g, model.dir_encoding(batch.rays_d), ray_indices)
    with st("compositing"):
        pred = model.composite(t_starts, t_ends, ray_indices, sigma, g, rgb_s, batch.rays_o)
    with st("loss"):
        losses = compute_losses(
            pred, batch.rgb, batch.labels, config.semantic_weight, batch.depth, batch.z_scale, config.depth_weight
        )
    with st("backward"):
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
    with st("optimiser (Adam)"):
        optimizer.step()
    # Backward split: the encoding's and the MLPs' backward alone, on the same inputs.
    with torch.enable_grad():
        xn = model._normalise(x).contiguous()
        h2 = model.encoding(xn)
        gh = torch.randn_like(h2)
        with st("  backward: encoding"):
            h2.backward(gh)
        hd = h.detach().requires_grad_(True)
        s2, g2 = model.density_head(hd)
        r2 = model.color_head(g2, model.dir_encoding(batch.rays_d), ray_indices)
        total = s2.sum() + g2.sum() + r2.sum()
        with st("  backward: MLPs"):
            total.backward()
    optimizer.zero_grad(set_to_none=True)
    return int(ray_indices.numel())


def staged_frame(model, intrinsics, c2w, st: Stages, chunk: int = 1 << 16) -> int:
    """`NGPModel.render_labels` (labels + confidence) for a whole frame, stage by stage (its `stage` hook).

    Returns the number of packed samples the marcher gave (before the early stop)."""
    from labelfield.cameras import frame_rays

    model.eval()
    total = 0
    march = model.march

    def counted_march(*a, **k):
        nonlocal total
        out = march(*a, **k)
        total += int(out[2].numel())
        return out

    model.march = counted_march  # an instance attribute: shadows the method for this function only
    try:
        with torch.inference_mode():
            with st("rays"):
                rays_o, rays_d, _ = frame_rays(intrinsics, c2w)
            for i in range(0, rays_o.shape[0], chunk):
                model.render_labels(rays_o[i : i + chunk], rays_d[i : i + chunk], stage=st)
    finally:
        del model.march
    return total


def stage_costs(model, n_rays: int, n_samples: int, train: bool) -> dict[str, tuple[float, float]]:
    """Analytic (FLOPs, bytes) per stage for n_rays rays and n_samples packed samples (see module doc)."""
    c = model.config
    S, n, L, F, Hd = n_samples, n_rays, c.n_levels, c.n_features, c.hidden_dim
    enc = L * F
    geo = c.geo_feat_dim
    dens_layers = [(enc, Hd)] + [(Hd, Hd)] * (c.density_layers - 1) + [(Hd, 1 + geo)]
    col_layers = [(geo, Hd)] + [(Hd, Hd)] * (c.color_layers - 1) + [(Hd, 3)]
    mlp_flops = sum(2 * S * a * b for a, b in dens_layers + col_layers) + 2 * n * c.sh_degree**2 * Hd
    mlp_bytes = sum(4 * S * (a + b) for a, b in dens_layers + col_layers) + 4 * S * Hd * 2  # + ReLU passes
    if not train:  # inference: density head only
        mlp_flops = sum(2 * S * a * b for a, b in dens_layers)
        mlp_bytes = sum(4 * S * (a + b) for a, b in dens_layers) + 4 * S * Hd
    enc_flops = S * L * (8 * (2 * F + 3) + 20)  # 8 corners: trilinear weight (3 mul) + F FMA; hashing
    enc_bytes = S * (12 + 4 * enc) + S * L * 8 * F * 4  # positions, output, corner values read
    march_flops, march_bytes = S * 60, S * 160  # ~10 elementwise passes over candidates (rough)
    comp_ch = 1 + 1 + geo + 3 + 1  # opacity, tau, geometry features, rgb, depth
    comp_flops = S * (20 + 2 * comp_ch)
    comp_bytes = S * (8 * 6 + 4 * comp_ch + 8) + n * 4 * comp_ch
    out = {
        "marching": (march_flops, march_bytes),
        "encoding": (enc_flops, enc_bytes),
        "MLPs": (mlp_flops, mlp_bytes),
        "compositing": (comp_flops, comp_bytes),
    }
    if train:
        P = sum(p.numel() for p in model.parameters())
        out.update(
            {
                "batch sampling": (n * 60, n * 64),
                "loss": (n * 60, n * 4 * 30),
                "backward": (
                    2 * mlp_flops + S * L * 8 * F * 2 + 2 * comp_flops,
                    2 * mlp_bytes + enc_bytes + 2 * comp_bytes,
                ),
                "  backward: encoding": (S * L * 8 * F * 2, enc_bytes + S * L * 8 * F * 4),
                "  backward: MLPs": (2 * mlp_flops, 2 * mlp_bytes),
                "optimiser (Adam)": (15 * P, 28 * P),
            }
        )
    else:
        out["labels (semantic head, argmax)"] = (
            n * (10 + 2 * c.geo_feat_dim) * model.num_classes,
            n * 4 * (2 * model.num_classes + geo),
        )
        out["rays"] = (n * 40, n * 28)
        out["early-stop rounds (bookkeeping)"] = (S * 10, S * 36)  # select: indices, midpoints, positions (rough)
    return out


def table_rows(st: Stages, reps: int, costs: dict, peak: dict, total_wall: float) -> list[dict]:
    """One row per stage; "peak_frac" compares the work per CPU-second with the per-CPU-second peak."""
    rows = []
    for name in st.order:
        t, cpu = st.wall[name] / reps, st.cpu[name] / reps
        flops, nbytes = costs.get(name, (0.0, 0.0))
        f_frac = flops / cpu / peak["flops_per_cpu_s"] if cpu > 0 else 0.0
        b_frac = nbytes / cpu / peak["bandwidth_per_cpu_s"] if cpu > 0 else 0.0
        rows.append(
            {
                "stage": name,
                "ms": 1e3 * t,
                "cpu_ms": 1e3 * cpu,
                "share": t / total_wall if total_wall > 0 else 0.0,
                "gflop": flops / 1e9,
                "mb": nbytes / 1e6,
                "gflop_per_cpu_s": flops / cpu / 1e9 if cpu > 0 else 0.0,
                "gb_per_cpu_s": nbytes / cpu / 1e9 if cpu > 0 else 0.0,
                "peak_frac": max(f_frac, b_frac),
                "bound": "compute" if f_frac >= b_frac else "memory",
                "cores": cpu / t if t > 0 else 0.0,
            }
        )
    return rows


def print_table(console: Console, title: str, rows: list[dict]) -> None:
    tab = Table(title=title, title_justify="left")
    cols = ("stage", "wall ms", "CPU ms", "% wall", "GFLOP", "MB", "GFLOP/CPU-s", "GB/CPU-s", "% peak", "bound")
    cols += ("cores",)
    for col in cols:
        tab.add_column(col, justify="left" if col in ("stage", "bound") else "right")
    for r in rows:
        sub = r["stage"].startswith("  ")
        tab.add_row(
            r["stage"],
            f"{r['ms']:.1f}",
            f"{r['cpu_ms']:.1f}",
            "" if sub else f"{100 * r['share']:.0f}",
            f"{r['gflop']:.3f}",
            f"{r['mb']:.1f}",
            f"{r['gflop_per_cpu_s']:.2f}",
            f"{r['gb_per_cpu_s']:.2f}",
            f"{100 * r['peak_frac']:.1f}",
            r["bound"],
            f"{r['cores']:.2f}",
        )
    console.print(tab)


def occupancy_from_depth(model, scene, stride: int = 4) -> None:
    """Set the occupancy grid from the scene's depth maps (cells holding a back-projected pixel, dilated by
    one cell): a trained model's grid, without training, so marching yields realistic sample counts."""
    from labelfield.cameras import frame_rays

    occ = model.occupancy
    hit = torch.zeros(occ.resolution**3, dtype=torch.bool)
    for frame in scene.frames:
        depth = torch.as_tensor(np.asarray(frame.load_depth(), np.float32)).reshape(-1)
        ro, rd, z_scale = frame_rays(frame.intrinsics, frame.c2w)
        sel = torch.arange(0, depth.numel(), stride)
        sel = sel[depth[sel] > 0]
        x = ro[sel] + rd[sel] * (depth[sel] / z_scale[sel])[:, None]
        idx, inside = occ.cell_index(x)
        hit[idx[inside]] = True
    r = occ.resolution
    grid = torch.nn.functional.max_pool3d(hit.view(1, 1, r, r, r).float(), 3, 1, 1).view(-1) > 0
    with torch.no_grad():
        occ.density.copy_(torch.where(grid, 100.0 * occ.threshold, 0.0))
        occ.binary.copy_(grid)
        occ.n_updates.fill_(occ.warmup_updates)
    occ.mark_changed()


REFERENCES = {"LABELFIELD_COMPOSITE": "torch", "LABELFIELD_MLP": "torch"}  # the PyTorch paths of the new kernels
_ENV_KEYS = ("LABELFIELD_MARCH", *REFERENCES)


def compare(variants: dict[str, dict[str, str]], fn, reps: int, pass_name: bool = False) -> dict[str, dict[str, float]]:
    """Run fn(k[, name]) `reps` times per variant, round-robin (so load changes hit all alike), with the
    variant's environment ($LABELFIELD_MARCH / _COMPOSITE / _MLP = "torch": that stage's PyTorch reference).
    Returns name -> mean wall and CPU seconds per call."""
    out = {name: {"wall": 0.0, "cpu": 0.0} for name in variants}
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    try:
        for k in range(reps + 1):  # round 0 warms up
            for name, env in variants.items():
                for key in _ENV_KEYS:
                    os.environ[key] = env.get(key, "")
                c, t = time.process_time(), time.perf_counter()
                fn(k, name) if pass_name else fn(k)
                if k > 0:
                    out[name]["wall"] += (time.perf_counter() - t) / reps
                    out[name]["cpu"] += (time.process_time() - c) / reps
    finally:
        for key, v in saved.items():
            if v is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None, help="fitted run (default: untrained model, grid from depth)")
    ap.add_argument("--scene", type=Path, default=None, help="scene (default: the run's, else data/demo)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8, help="timed training steps (after 2 warm-up steps)")
    ap.add_argument("--frames", type=int, default=3, help="timed frame renders (after 1 warm-up)")
    ap.add_argument("--frame", type=int, default=5, help="frame index to render")
    ap.add_argument("--batch-rays", type=int, default=4096)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_large_blocks()  # as every CLI command does (labelfield.allocator; $LABELFIELD_MALLOPT=0 turns it off)
    console = Console(width=170)

    from labelfield.labels import make_sparse_labels
    from labelfield.run import load_run
    from labelfield.train.dataset import RayDataset
    from labelfield.train.trainer import make_optimizer

    if args.run is not None:
        run = load_run(args.run, device="cpu", scene=args.scene)
        from labelfield.train.config import FitConfig

        config = FitConfig.load(run.folder.config_path)
        model, scene, labelled, step0 = run.model, run.scene, run.labelled, run.step
        density = (run.manifest.label_spec or {}).get("density", "full")
        source = f"run {args.run} (step {run.step})"
    else:  # an untrained model with the occupancy grid a trained one would have (timing does not need quality)
        from labelfield.formats import load_scene
        from labelfield.models import build_model
        from labelfield.render.bounds import scene_bounds
        from labelfield.train.config import FitConfig

        scene = load_scene(args.scene or Path("data/demo"))
        config = FitConfig(scene=args.scene, depth_loss=scene.frames[0].has_depth())
        aabb, near = scene_bounds(scene)
        classes = scene.classes
        bg = classes.background_class
        bg = None if bg is None else int(classes.to_index(np.array([bg]))[0])
        model = build_model(
            "ngp", config.model_config, np.asarray(aabb, np.float64), classes.num_classes, bg, near=float(near)
        )
        occupancy_from_depth(model, scene)
        model._bench_fixed_grid = (model.occupancy.density.clone(), model.occupancy.binary.clone())
        labelled, density, step0 = list(range(0, len(scene.frames), 10)), "full", 10_000
        occupied = 100 * model.occupancy.occupancy_fraction()
        source = f"{scene.root}: untrained model, occupancy grid from depth ({occupied:.1f} % occupied)"
    peak = measure_peak()
    console.print(
        f"CPU: {cpu_name()}, {args.threads} threads; peak {peak['flops'] / 1e9:.1f} GFLOP/s (matmul), "
        f"{peak['bandwidth'] / 1e9:.1f} GB/s (copy); per CPU-second {peak['flops_per_cpu_s'] / 1e9:.1f} GFLOP, "
        f"{peak['bandwidth_per_cpu_s'] / 1e9:.1f} GB; load average {os.getloadavg()[0]:.1f}"
    )

    # --- training step ---
    console.print(f"model: {source}")
    sparse = make_sparse_labels(scene, ",".join(str(i) for i in labelled), density)
    dataset = RayDataset(scene, sparse, config.depth_loss, config.labelled_ray_fraction)
    optimizer = make_optimizer(model.param_groups(config.lr * 0.01), config)
    sampler = torch.Generator().manual_seed(0)
    model.train()
    st, samples = Stages(), []
    for k in range(args.steps + 2):
        s = Stages() if k < 2 else st  # warm-up steps are not recorded
        samples.append(staged_train_step(model, dataset, optimizer, config, sampler, step0 + k, s, args.batch_rays))
    samples = samples[2:]
    # Fixed cost per step: the same step with 64 rays.
    st_small = Stages()
    for k in range(args.steps):
        staged_train_step(model, dataset, optimizer, config, sampler, step0 + k, st_small, 64)
    fixed_ms = 1e3 * sum(v for k, v in st_small.wall.items() if not k.startswith("  ")) / args.steps
    name = "  Python/dispatch: whole step at 64 rays"  # a sub-row: this fixed cost is inside the rows above
    st.order.append(name)
    st.wall[name] = sum(v for k, v in st_small.wall.items() if not k.startswith("  "))
    st.cpu[name] = sum(v for k, v in st_small.cpu.items() if not k.startswith("  "))

    # The unsplit step (what the trainer runs): before (reference marcher) and after, interleaved.
    def unsplit(k: int) -> None:
        batch = dataset.sample(args.batch_rays, sampler)
        model.before_step(step0 + k)
        if getattr(model, "_bench_fixed_grid", None) is not None:
            model.occupancy.density.copy_(model._bench_fixed_grid[0])
            model.occupancy.binary.copy_(model._bench_fixed_grid[1])
            model.occupancy.mark_changed()
        pred = model.render_rays(batch.rays_o, batch.rays_d)
        losses = compute_losses(
            pred, batch.rgb, batch.labels, config.semantic_weight, batch.depth, batch.z_scale, config.depth_weight
        )
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        optimizer.step()

    train_cmp = compare(
        {"before": {"LABELFIELD_MARCH": "torch"}, "after: reference compositing": REFERENCES, "after": {}},
        unsplit,
        args.steps,
    )
    step_wall, step_cpu = train_cmp["after"]["wall"], train_cmp["after"]["cpu"]
    staged_total = sum(v for k, v in st.wall.items() if not k.startswith("  ")) / args.steps
    n_samples = int(np.mean(samples))
    costs = stage_costs(model, args.batch_rays, n_samples, train=True)
    train_rows = table_rows(st, args.steps, costs, peak, staged_total)
    print_table(
        console,
        f"training step: {args.batch_rays} rays, {n_samples / args.batch_rays:.1f} samples/ray; staged "
        f"{1e3 * staged_total:.0f} ms, unsplit {1e3 * step_wall:.0f} ms = {1 / step_wall:.2f} steps/s, "
        f"{args.batch_rays / step_wall:,.0f} rays/s, {step_cpu / step_wall:.2f} cores; fixed cost (64 rays) "
        f"{fixed_ms:.0f} ms; before (reference marcher, interleaved): {1e3 * train_cmp['before']['wall']:.0f} ms "
        f"wall, {1e3 * train_cmp['before']['cpu']:.0f} ms CPU; after {1e3 * step_cpu:.0f} ms CPU (with the PyTorch "
        f"compositing: {1e3 * train_cmp['after: reference compositing']['cpu']:.0f} ms CPU)",
        train_rows,
    )

    # --- one frame ---
    frame = scene.frames[args.frame]
    fst, fsamples = Stages(), 0
    staged_frame(model, frame.intrinsics, frame.c2w, Stages())
    for _ in range(args.frames):
        fsamples = staged_frame(model, frame.intrinsics, frame.c2w, fst)
    frame_total = sum(fst.wall.values()) / args.frames
    n_px = frame.intrinsics.width * frame.intrinsics.height
    frame_rows = table_rows(fst, args.frames, stage_costs(model, n_px, fsamples, train=False), peak, frame_total)
    frame_cmp = compare(
        {
            "before: render_image, reference marcher": {"LABELFIELD_MARCH": "torch"},
            "after: labels + confidence, PyTorch compositing/rounds/MLP/labels": REFERENCES,
            "after: labels + confidence": {},
            "after: + rgb + depth": {},
        },
        lambda k, which: (
            render_image(model, frame.intrinsics, frame.c2w)
            if which.startswith("before")
            else render_labels_image(model, frame.intrinsics, frame.c2w, rgb="rgb" in which, depth="rgb" in which)
        ),
        args.frames,
        pass_name=True,
    )
    fast = frame_cmp["after: labels + confidence"]["wall"]
    fast_all = frame_cmp["after: + rgb + depth"]["wall"]
    old = frame_cmp["before: render_image, reference marcher"]["wall"]
    print_table(
        console,
        f"rendered frame {frame.intrinsics.width}x{frame.intrinsics.height} (labels + confidence), "
        f"{fsamples / n_px:.1f} samples/ray: staged {1e3 * frame_total:.0f} ms; render_labels_image "
        f"{1e3 * fast:.0f} ms ({1 / fast:.1f} frames/s), with rgb + depth {1e3 * fast_all:.0f} ms; "
        f"render_image with the reference marcher (before) {1e3 * old:.0f} ms. CPU ms per frame (interleaved): "
        + ", ".join(f"{k} {1e3 * v['cpu']:.0f}" for k, v in frame_cmp.items()),
        frame_rows,
    )
    result = {
        "cpu": cpu_name(),
        "threads": args.threads,
        "torch": torch.__version__,
        "peak_gflops": peak["flops"] / 1e9,
        "peak_gbs": peak["bandwidth"] / 1e9,
        "peak_gflops_per_cpu_s": peak["flops_per_cpu_s"] / 1e9,
        "peak_gbs_per_cpu_s": peak["bandwidth_per_cpu_s"] / 1e9,
        "model": source,
        "batch_rays": args.batch_rays,
        "train_samples_per_ray": n_samples / args.batch_rays,
        "train_step_ms_staged": 1e3 * staged_total,
        "train_step_ms": 1e3 * step_wall,
        "train_steps_per_s": 1 / step_wall,
        "train_rays_per_s": args.batch_rays / step_wall,
        "train_cores": step_cpu / step_wall,
        "fixed_cost_ms_64_rays": fixed_ms,
        "train_stages": train_rows,
        "frame_size": [frame.intrinsics.width, frame.intrinsics.height],
        "frame_samples_per_ray": fsamples / n_px,
        "frame_ms_staged": 1e3 * frame_total,
        "frame_ms_render_labels": 1e3 * fast,
        "frame_ms_render_labels_rgb_depth": 1e3 * fast_all,
        "frame_ms_render_image_before": 1e3 * old,
        "frame_stages": frame_rows,
        "train_before_after": train_cmp,
        "frame_before_after": frame_cmp,
        "load_average": os.getloadavg(),
    }
    if args.json is not None:
        with atomic_path(args.json) as p:
            p.write_text(json.dumps(result, indent=1) + "\n")
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
