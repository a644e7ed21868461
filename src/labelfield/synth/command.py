"""`labelfield synth OUT --seed S`: render a procedural room with exact labels, instances, depth and poses."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from labelfield.cameras import Intrinsics
from labelfield.errors import LabelfieldError


@dataclass
class SynthCommand:
    """Render a procedural indoor room (Mitsuba 3) with ground-truth labels, instances, depth and poses."""

    out: tyro.conf.Positional[Path]
    """Output scene folder (replaced atomically when everything is written)."""
    seed: int = 0
    """Seed for the room layout, textures, camera path and render noise (same seed, same scene)."""
    frames: int = 80
    """Number of frames along the camera path."""
    width: int = 320
    """Image width in pixels."""
    height: int = 240
    """Image height in pixels."""
    spp: int = 32
    """Path-tracing samples per pixel for the RGB images (labels and depth are exact regardless)."""
    fov: float = 80.0
    """Horizontal field of view in degrees."""
    format: Literal["replica", "transforms"] = "replica"
    """Output layout: Replica (rgb/, depth/, semantic_class/, ...) or transforms.json."""
    variant: Literal["auto", "scalar_rgb", "llvm_ad_rgb"] = "auto"
    """Mitsuba variant; auto picks llvm_ad_rgb when it works on this machine, else scalar_rgb."""
    objects: Literal["basic", "rich"] = "basic"
    """basic: the demo room's 11 classes; rich: 25 classes with small and thin things (books, mugs, bottles,
    bowls, vases, balls, teddies, a desk lamp, stools and thin chair legs, pillows, rug, door, window, clock)."""
    walls: Literal["plaster", "plain", "wallpaper", "random"] = "plaster"
    """Wall texture: mottled plaster, plain (untextured, one colour), striped wallpaper, or random per seed."""
    path: Literal["loop", "walk", "orbit"] = "loop"
    """Camera path: loop (small loop looking outwards), walk (ScanNet-like walk-through, panning), or orbit
    (round the room centre, looking at it)."""
    max_depth: int = 4
    """Path-tracing depth: 4 (default), 3 (one indirect bounce, about half the time), 2 (direct light only)."""

    def check(self) -> None:
        if self.frames < 1:
            raise LabelfieldError(f"--frames must be at least 1, got {self.frames}")
        if self.width < 8 or self.height < 8:
            raise LabelfieldError(f"image size {self.width}x{self.height} is too small (at least 8x8)")
        if self.spp < 1:
            raise LabelfieldError(f"--spp must be at least 1, got {self.spp}")
        if self.max_depth < 2:
            raise LabelfieldError(f"--max-depth must be at least 2 (direct light), got {self.max_depth}")
        if not 10.0 <= self.fov <= 150.0:
            raise LabelfieldError(f"--fov must be between 10 and 150 degrees, got {self.fov}")
        if self.out.exists() and not self.out.is_dir():
            raise LabelfieldError("output exists and is not a folder", self.out)

    def run(self) -> int:
        from rich.console import Console

        from labelfield.console import RichProgress
        from labelfield.formats import write_scene
        from labelfield.synth.render import render_room
        from labelfield.synth.room import make_room
        from labelfield.synth.trajectory import make_trajectory

        self.check()
        room = make_room(self.seed, self.objects, self.walls)
        poses = make_trajectory(self.path, self.frames, room.free_zone, self.seed)
        intr = Intrinsics.from_fov_x(np.deg2rad(self.fov), self.width, self.height)
        t0 = time.perf_counter()
        with RichProgress() as show:
            scene = render_room(
                room, poses, intr, self.spp, self.seed, self.variant, on_progress=show, max_depth=self.max_depth
            )
        seconds = time.perf_counter() - t0
        write_scene(scene, self.out, self.format)
        present = np.unique(np.concatenate([np.unique(f.arrays["labels"]) for f in scene.frames]))
        names = ", ".join(scene.classes.name_of(int(c)) for c in present if c != 0)
        Console().print(
            f"wrote {self.out} ({self.format}): {self.frames} frames {self.width}x{self.height}, spp {self.spp}, "
            f"rendered in {seconds:.1f} s; {len(present) - (0 in present)} classes seen: {names}"
        )
        return 0
