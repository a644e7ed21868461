"""`labelfield batch` throughput on a local Ray: N tiny generated scenes, K scenes at a time at C CPUs each.

Usage: python benchmarks/bench_batch.py [--scenes 4] [--num-cpus 2] [--steps 200] [--repeats 1] [--json FILE]

Two layouts of the same `--num-cpus` (default 2): `--num-cpus` scenes at a time at 1 CPU (1 thread) each, and
1 scene at a time at `--num-cpus` CPUs (that many threads). Runs are interleaved (A, B, A, B, ...) so both see
the same background load. Each run is one `labelfield batch` subprocess (Ray start + shutdown included; its
per-scene wall and CPU seconds (process_time of the worker, all threads) come from summary.json.
"CPU use" = the scenes' CPU seconds / (wall seconds x --num-cpus); "start/stop s" = the subprocess's wall time
minus the batch's own (Python and Ray start-up, ray.shutdown).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from labelfield.formats import write_scene  # noqa: E402
from labelfield.synth.toy import toy_scene  # noqa: E402

SMALL = {
    "log2_table_size": 14,
    "n_levels": 8,
    "max_resolution": 256,
    "occupancy_resolution": 32,
    "hidden_dim": 32,
    "samples_per_diagonal": 128,
    "max_samples_per_ray": 32,
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def run_batch(scenes: Path, out: Path, num_cpus: int, cpus: int, steps: int, frames: int) -> dict:
    args = [
        sys.executable,
        "-m",
        "labelfield.cli",
        "batch",
        str(scenes),
        "--out",
        str(out),
        "--num-cpus",
        str(num_cpus),
        "--cpus-per-scene",
        str(cpus),
        "--no-progress",
        "--steps",
        str(steps),
        "--labelled",
        f"every:{max(1, frames // 4)}",
        "--batch-rays",
        "512",
        "--eval-scene-labels",
    ]
    for k, v in SMALL.items():
        args += [f"--model-config.{k.replace('_', '-')}", str(v)]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"batch failed ({proc.returncode}): {proc.stderr[-2000:]}")
    s = json.loads((out / "summary.json").read_text())
    rows = s["scenes"]
    n = len(rows)
    scene_cpu = sum(r["cpu_s"] for r in rows)
    return {
        "layout": f"{num_cpus // cpus} at a time x {cpus} CPU",
        "cpus_per_scene": cpus,
        "wall_s": wall,
        "batch_wall_s": s["batch"]["wall_s"],
        "scenes_per_hour": 3600 * n / wall,
        "scene_wall_s": sum(r["wall_s"] for r in rows) / n,
        "scene_fit_s": sum(r["fit_s"] for r in rows) / n,
        "scene_cpu_s": scene_cpu / n,
        "steps_per_s": sum(r["steps_per_s"] for r in rows) / n,
        "miou": sum(r["miou"] for r in rows) / n,
        "start_stop_s": wall - s["batch"]["wall_s"],
        "cpu_use": scene_cpu / (wall * num_cpus),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--size", type=int, nargs=2, default=(64, 48), metavar=("W", "H"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "bench_batch.json")
    a = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        scenes = Path(tmp) / "scenes"
        for i in range(a.scenes):
            scene = toy_scene(a.frames, a.size[0], a.size[1], seed=i, binary=True, room=False)
            write_scene(scene, scenes / f"s{i}", "replica")
        for rep in range(a.repeats):
            for cpus in (1, a.num_cpus):
                r = run_batch(scenes, Path(tmp) / f"out_{cpus}_{rep}", a.num_cpus, cpus, a.steps, a.frames)
                print(f"  {r['layout']}: {r['wall_s']:.1f} s, {r['scenes_per_hour']:.0f} scenes/h", flush=True)
                results.append(r)
    load = os.getloadavg()
    print(
        f"\n{a.scenes} scenes ({a.frames} frames {a.size[0]}x{a.size[1]}, {a.steps} steps), local Ray "
        f"--num-cpus {a.num_cpus}; {cpu_model()}, load average {load[0]:.1f} (shared machine)"
    )
    head = [
        "layout",
        "wall s",
        "scenes/h",
        "scene wall s",
        "fit s",
        "steps/s",
        "CPU s/scene",
        "CPU use",
        "start/stop s",
        "mIoU",
    ]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in results:
        print(
            f"| {r['layout']} | {r['wall_s']:.1f} | {r['scenes_per_hour']:.0f} | {r['scene_wall_s']:.1f} | "
            f"{r['scene_fit_s']:.1f} | {r['steps_per_s']:.1f} | {r['scene_cpu_s']:.1f} | "
            f"{r['cpu_use']:.0%} | {r['start_stop_s']:.1f} | {r['miou']:.3f} |"
        )
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(
        json.dumps(
            {
                "cpu": cpu_model(),
                "load_average": load,
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
                "runs": results,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"-> {a.json}")


if __name__ == "__main__":
    main()
