"""The quality suite's scenes: which rooms, how they are rendered, and a cache that renders the missing ones.

Usage:
    python benchmarks/quality_scenes.py [--split tune|report|all] [--scenes a,b] [--list]

Ten `labelfield synth` rooms with 25 classes (objects="rich": small and thin things such as mugs, books,
bottles, a desk lamp on a 1.6 cm pole, stools and chairs on thin legs), plain, plaster or wallpaper walls, and
the three camera paths (loop, ScanNet-like walk, orbit round the centre), 64-100 frames at 320x240. Six of
them are for tuning ("tune"; two added on 2026-12-03 so that the report split's plaster walk and plain orbit
have tune counterparts); four ("report") plus `../shared/data/lego-200` (when present) are held out and only
reported. Two rooms of each split also run the 2 % and 5 % labelled settings (`low_label`).

Labels and depth are exact at any spp (one ray per pixel centre, see labelfield.synth.render), so the RGB is
rendered cheaply: 3 samples per pixel, one indirect bounce (max_depth 3), `scalar_rgb`. Rendered scenes live in
benchmarks/.scenes/ (gitignored), named by their definition, so a changed definition renders a new folder.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / ".scenes"
LEGO = "lego-200"


@dataclass(frozen=True)
class SuiteScene:
    """One scene of the suite: a synth room (seed, options) or an existing folder (`path`)."""

    name: str
    split: str  # "tune" | "report"
    seed: int = 0
    objects: str = "rich"
    walls: str = "plaster"
    path_kind: str = "loop"
    frames: int = 80
    width: int = 320
    height: int = 240
    spp: int = 3
    max_depth: int = 3
    low_label: bool = False
    """Also run the 2 % and 5 % labelled RGB-D settings on this scene."""
    folder: str | None = None
    """An existing scene folder instead of a synth room (relative to the repository root)."""

    def key(self) -> str:
        """Cache folder name: changes whenever anything that shapes the render changes."""
        return (
            f"{self.name}_s{self.seed}_{self.objects}_{self.walls}_{self.path_kind}_{self.frames}f_"
            f"{self.width}x{self.height}_spp{self.spp}_d{self.max_depth}"
        )

    def location(self, cache: Path = CACHE) -> Path:
        if self.folder is None:
            return cache / self.key()
        # ../shared sits beside the repository (main checkout) or one level further up (a git worktree).
        for base in (ROOT, ROOT.parent) if not Path(self.folder).is_absolute() else (Path("/"),):
            if (base / self.folder).is_dir():
                return (base / self.folder).resolve()
        return ROOT / self.folder


SUITE: list[SuiteScene] = [
    # tune: the scenes settings may be chosen on
    SuiteScene("t-loop-plaster", "tune", seed=11, walls="plaster", path_kind="loop", frames=80),
    SuiteScene("t-walk-plain", "tune", seed=12, walls="plain", path_kind="walk", frames=100, low_label=True),
    SuiteScene("t-orbit-wallpaper", "tune", seed=13, walls="wallpaper", path_kind="orbit", frames=64),
    SuiteScene("t-walk-wallpaper", "tune", seed=14, walls="wallpaper", path_kind="walk", frames=90, low_label=True),
    # added 2026-12-03 (evening): the report split's plaster walk and plain orbit had no tune counterpart
    SuiteScene("t-walk-plaster", "tune", seed=15, walls="plaster", path_kind="walk", frames=100),
    SuiteScene("t-orbit-plain", "tune", seed=16, walls="plain", path_kind="orbit", frames=80),
    # report: held out, never tuned on
    SuiteScene("r-walk-plaster", "report", seed=21, walls="plaster", path_kind="walk", frames=100, low_label=True),
    SuiteScene("r-orbit-plain", "report", seed=22, walls="plain", path_kind="orbit", frames=80),
    SuiteScene("r-loop-wallpaper", "report", seed=23, walls="wallpaper", path_kind="loop", frames=72),
    SuiteScene("r-walk-plain", "report", seed=24, walls="plain", path_kind="walk", frames=96, low_label=True),
    SuiteScene(LEGO, "report", folder=f"../shared/data/{LEGO}"),
]
QUICK = ["t-loop-plaster", "t-walk-plain", "t-orbit-wallpaper"]


def select(split: str = "all", names: list[str] | None = None, quick: bool = False) -> list[SuiteScene]:
    """Suite scenes of `split` ("tune", "report", "all"), or those named (or scene folders); `quick`: QUICK.

    Folder scenes that are not present (lego-200 without ../shared) are left out.
    """
    by_name = {s.name: s for s in SUITE}
    if names:
        unknown = [n for n in names if n not in by_name and not Path(n).is_dir()]
        if unknown:
            raise SystemExit(f"unknown suite scene {unknown[0]!r} (known: {', '.join(by_name)}, or a scene folder)")
        # A folder that is not a suite scene runs as split "extra" with every setting (quick checks, new data).
        chosen = [
            by_name[n]
            if n in by_name
            else SuiteScene(Path(n).name, "extra", folder=str(Path(n).resolve()), low_label=True)
            for n in names
        ]
    elif quick:
        chosen = [by_name[n] for n in QUICK]
    else:
        if split not in ("tune", "report", "all"):
            raise SystemExit(f"--split must be tune, report or all, not {split!r}")
        chosen = [s for s in SUITE if split in ("all", s.split)]
    return [s for s in chosen if s.folder is None or s.location().is_dir()]


def ensure_rendered(scene: SuiteScene, cache: Path = CACHE, log=print) -> tuple[Path, float | None]:
    """The scene's folder, rendering it first when it is missing; returns (folder, render seconds or None)."""
    path = scene.location(cache)
    if path.is_dir():  # synth writes its folder atomically: one that exists is complete
        return path, None
    from labelfield.synth.command import SynthCommand

    cache.mkdir(parents=True, exist_ok=True)
    log(f"rendering {scene.name} into {path} ({scene.frames} frames {scene.width}x{scene.height}, spp {scene.spp})")
    t0, c0 = time.perf_counter(), time.process_time()
    SynthCommand(
        out=path,
        seed=scene.seed,
        frames=scene.frames,
        width=scene.width,
        height=scene.height,
        spp=scene.spp,
        variant="scalar_rgb",
        objects=scene.objects,
        walls=scene.walls,
        path=scene.path_kind,
        max_depth=scene.max_depth,
    ).run()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0  # CPU: all of Mitsuba's threads
    with open(cache / "render_log.jsonl", "a") as f:
        f.write(
            json.dumps(
                {
                    "scene": scene.key(),
                    "seconds": seconds,
                    "cpu_seconds": cpu_seconds,
                    "cpu": cpu_model(),
                    "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
            )
            + "\n"
        )
    return path, seconds


def cpu_model() -> str:
    """CPU model name from lscpu (platform.processor() as a fallback)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="all", help="tune | report | all (default)")
    ap.add_argument("--scenes", default="", help="comma-separated scene names (overrides --split)")
    ap.add_argument("--quick", action="store_true", help="only the three scenes of bench_quality --quick")
    ap.add_argument("--list", action="store_true", help="print the suite and exit")
    args = ap.parse_args(argv)
    names = [n for n in args.scenes.split(",") if n]
    chosen = select(args.split, names, args.quick)
    if args.list:
        for s in SUITE:
            present = "present" if s.location().is_dir() else "missing"
            print(json.dumps({**asdict(s), "cache": str(s.location()), "state": present}))
        return 0
    for s in chosen:
        path, seconds = ensure_rendered(s)
        print(f"{s.name}: {path}" + ("" if seconds is None else f" (rendered in {seconds:.0f} s)"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
