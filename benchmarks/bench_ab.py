"""Interleaved A/B of the training loop of two checkouts: they take turns, so machine drift hits both alike.

Usage: python benchmarks/bench_ab.py --a /path/to/checkout_a --b /path/to/checkout_b [--rounds 15] [--steps 40]
                                     [--scene data/demo] [--labelled every:10] [--json FILE]

Why: on the shared 2-core VMs these benchmarks run on, the same step time moves by 10-15 % between two runs a
minute apart, which hides the 5-15 % changes a speed patch makes. Here each checkout runs in its own process
(PYTHONPATH=<checkout>/src, the checkout's kernels), both prepare the same fit (`FitConfig` defaults, the scene,
`--labelled`), and then they alternate: A runs `--steps` real training steps (`trainer.train_step`, occupancy
refreshes, lr schedule), then B the same, `--rounds` times. The first round is warm-up (kernel builds, heap
growth) and is not counted. Prints per-round seconds, the totals and the share of rounds A won; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The worker: prepares the fit, then waits for its turn (a token file), runs `steps` steps, passes the token on.
_WORKER = r"""
import json, sys, tempfile, time
from pathlib import Path
tag, other, rounds, steps, scene, labelled, token = sys.argv[1:8]
rounds, steps, token = int(rounds), int(steps), Path(token)
from labelfield.train.config import FitConfig
from labelfield.train import trainer as T
cfg = FitConfig(scene=Path(scene), out=Path(tempfile.mkdtemp()) / "run", labelled=labelled, steps=rounds * steps)
prep = T.prepare(cfg)
state = T.initial_state(prep)
state.model.train()
print("ready", flush=True)
times, s = [], 0
for _ in range(rounds):
    while token.read_text().strip() != tag:
        time.sleep(0.005)
    t0 = time.perf_counter()
    for _ in range(steps):
        T.train_step(state, cfg, prep.dataset, prep.device, s)
        s += 1
        state.schedule.advance(T.lr_progress(s, 0.0, cfg))
    times.append(time.perf_counter() - t0)
    token.write_text(other)
print(json.dumps(times), flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, required=True, help="checkout A (its src/ is put on PYTHONPATH)")
    ap.add_argument("--b", type=Path, required=True, help="checkout B")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=40, help="training steps per turn")
    ap.add_argument("--scene", type=Path, default=Path("data/demo"))
    ap.add_argument("--labelled", default="every:10")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    scene = str(args.scene.resolve())
    with tempfile.TemporaryDirectory() as tmp:
        token = Path(tmp) / "token"
        token.write_text("none")
        procs = {}
        for tag, other, root in (("A", "B", args.a), ("B", "A", args.b)):
            env = {**os.environ, "PYTHONPATH": str(Path(root).resolve() / "src"), "OMP_WAIT_POLICY": "PASSIVE"}
            cmd = [sys.executable, "-c", _WORKER, tag, other, str(args.rounds), str(args.steps), scene, args.labelled]
            procs[tag] = subprocess.Popen([*cmd, str(token)], env=env, stdout=subprocess.PIPE, text=True)
        for p in procs.values():  # both prepared before the first turn
            if p.stdout.readline().strip() != "ready":
                raise SystemExit("a worker failed to start (see its error above)")
        t0 = time.perf_counter()
        token.write_text("A")
        times = {tag: json.loads(p.stdout.readline()) for tag, p in procs.items()}
        for p in procs.values():
            p.wait()
    a, b = times["A"][1:], times["B"][1:]
    won = sum(x < y for x, y in zip(a, b)) / max(len(a), 1)
    rays = 4096 * args.steps  # FitConfig's default batch
    print(f"CPU: {_cpu()}; {args.rounds} rounds x {args.steps} steps each, first round not counted")
    print("round   A s    B s")
    for i, (x, y) in enumerate(zip(a, b), 2):
        print(f"{i:5d} {x:6.2f} {y:6.2f}")
    print(
        f"total A {sum(a):.1f} s ({rays * len(a) / sum(a):,.0f} rays/s), B {sum(b):.1f} s "
        f"({rays * len(b) / sum(b):,.0f} rays/s); A/B time {sum(a) / sum(b):.3f}; "
        f"A faster in {100 * won:.0f} % of rounds"
    )
    if args.json is not None:
        out = {"a": str(args.a), "b": str(args.b), "steps_per_round": args.steps, "seconds_a": a, "seconds_b": b}
        out.update(cpu=_cpu(), wall_s=time.perf_counter() - t0, a_over_b=sum(a) / sum(b), a_won=won)
        args.json.write_text(json.dumps(out, indent=1))


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


if __name__ == "__main__":
    main()
