"""Tables and plot of the propagation benchmark, from its results.json (see propagation.py).

Usage (regenerate results.md and the plot from a results.json): python benchmarks/propagation_report.py RESULTS

A run is one (scene, fraction, method) with `points`: [{"seconds", "steps", "miou", "accuracy",
"class_avg_accuracy", "consistency", "psnr"}] in training-time order (one point for a baseline).
"Time for ngp to reach semantic-nerf's final mIoU" is the training time of ngp's first scored point whose mIoU
is at least semantic-nerf's last one: an upper bound at the resolution of ngp's checkpoints (so the speed-up
semantic-nerf time / that time is a lower bound); None when ngp never reaches it.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

TARGET_SPEEDUP = 50.0
BASELINE_METHODS = ("reproject", "nearest")


def _final(run: dict[str, Any]) -> dict[str, Any] | None:
    return run["points"][-1] if run.get("points") else None


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (scene, fraction): semantic-nerf's final mIoU and time, ngp's time to reach it, the speed-up, and
    whether ngp's final mIoU / consistency beat each baseline's."""
    by_key: dict[tuple[str, float], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in runs:
        if "error" not in r and r.get("points"):
            by_key[(r["scene"], r["fraction"])][r["method"]] = r
    out = []
    for (scene, frac), methods in by_key.items():
        row: dict[str, Any] = {"scene": scene, "fraction": frac}
        ngp, nerf = methods.get("ngp"), methods.get("semantic-nerf")
        if ngp and nerf and _final(nerf)["miou"] is not None:
            target, nerf_t = _final(nerf)["miou"], _final(nerf)["seconds"]
            reach = next((p["seconds"] for p in ngp["points"] if p["miou"] is not None and p["miou"] >= target), None)
            row.update(
                nerf_final_miou=target,
                nerf_seconds=nerf_t,
                ngp_seconds_to_reach=reach,
                ngp_first_point_s=ngp["points"][0]["seconds"],
                speedup=None if reach is None else nerf_t / reach,
            )
            row["speedup_is_lower_bound"] = reach is not None
            row["target_met"] = reach is not None and nerf_t / reach >= TARGET_SPEEDUP
            notes = []
            if reach is not None and reach == ngp["points"][0]["seconds"]:
                notes.append("reached at ngp's first point: add earlier --checkpoints for a tighter bound")
            if target <= 0.0:
                notes.append("semantic-nerf's final mIoU is 0 (it labelled nothing): the comparison is vacuous")
            row["note"] = "; ".join(notes)
        if ngp:
            f = _final(ngp)
            for b in BASELINE_METHODS:
                if b in methods:
                    fb = _final(methods[b])
                    row[f"ngp_beats_{b}_miou"] = _gt(f["miou"], fb["miou"])
                    row[f"ngp_beats_{b}_consistency"] = _gt(f["consistency"], fb["consistency"])
        out.append(row)
    return out


def _gt(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a > b


def _fmt(x: Any, spec: str = ".3f") -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return format(x, spec)


def write_markdown(results: dict[str, Any], path: str | Path) -> None:
    """results.md: settings, final figures per run, per-fraction means, and the ngp vs semantic-nerf timing."""
    from labelfield.io import atomic_path

    runs, s, m = results["runs"], results["settings"], results["machine"]
    lines = [
        "# Propagation benchmark",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {m.get('processor')}, {m.get('cpu_count')} CPUs, {m.get('threads')} threads, device "
        f"{m.get('device')}{' (' + m['gpu'] + ')' if m.get('gpu') else ''}, torch {m.get('torch')}, "
        f"{m.get('platform')}",
        "",
        f"Budget: ngp {s['budget_s']:g} s, semantic-nerf {s['nerf_budget_s']:g} s (x{s['nerf_budget_factor']:g}); "
        f"label density {s['density']}, noise {s['noise'] or 'none'}, seed {s['seed']}.",
        "",
        f"Evaluation: {results['eval_note']}.",
        "",
        "## Final point of every run",
        "",
        "| scene | labelled | method | frames labelled | time (s) | steps | mIoU | accuracy | 3D consistency | PSNR |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        name = Path(r["scene"]).name
        if "error" in r:
            lines.append(
                f"| {name} | {r['labelled']} | {r['method']} | {r['n_labelled']}/{r['n_frames']} | "
                f"failed: {r['error']} | | | | | |"
            )
            continue
        p = _final(r)
        lines.append(
            f"| {name} | {r['labelled']} | {r['method']} | {r['n_labelled']}/{r['n_frames']} | "
            f"{_fmt(p['seconds'], '.2f')} | {_fmt(p['steps'], 'd')} | {_fmt(p['miou'])} | {_fmt(p['accuracy'])} | "
            f"{_fmt(p['consistency'])} | {_fmt(p['psnr'], '.2f')} |"
        )
    lines += [
        "",
        "## Mean over scenes, per labelled fraction",
        "",
        "| labelled | method | time (s) | mIoU | accuracy | 3D consistency |",
        "|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[float, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        if "error" not in r and r.get("points"):
            groups[(r["fraction"], r["method"])].append(_final(r))
    for (frac, method), pts in sorted(groups.items()):
        mean = lambda k: _mean([p[k] for p in pts])  # noqa: B023
        lines.append(
            f"| fraction:{frac:g} | {method} | {_fmt(mean('seconds'), '.2f')} | {_fmt(mean('miou'))} | "
            f"{_fmt(mean('accuracy'))} | {_fmt(mean('consistency'))} |"
        )
    lines += [
        "",
        "## Time for ngp to reach semantic-nerf's final mIoU (target: >= 50x sooner)",
        "",
        "ngp's time is its first scored point at or above semantic-nerf's final mIoU: an upper bound at the "
        "resolution of its checkpoints, so the speed-up is a lower bound.",
        "",
        "| scene | labelled | semantic-nerf final mIoU | semantic-nerf time (s) | ngp time to reach (s) | speed-up | "
        ">= 50x | ngp beats reproject (mIoU / consistency) | ngp beats nearest (mIoU / consistency) | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results.get("summary", []):
        if "nerf_final_miou" not in row:
            continue
        reach = row["ngp_seconds_to_reach"]
        reach_s = "not reached" if reach is None else f"<= {reach:.2f}"
        speed = "–" if row["speedup"] is None else f">= {row['speedup']:.0f}x"
        lines.append(
            f"| {Path(row['scene']).name} | fraction:{row['fraction']:g} | {_fmt(row['nerf_final_miou'])} | "
            f"{row['nerf_seconds']:.1f} | {reach_s} | {speed} | {_fmt(row['target_met'])} | "
            f"{_fmt(row.get('ngp_beats_reproject_miou'))} / {_fmt(row.get('ngp_beats_reproject_consistency'))} | "
            f"{_fmt(row.get('ngp_beats_nearest_miou'))} / {_fmt(row.get('ngp_beats_nearest_consistency'))} | "
            f"{row.get('note', '')} |"
        )
    lines += [
        "",
        "## Every scored point",
        "",
        "| scene | labelled | method | time (s) | steps | mIoU | 3D consistency |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        for p in r.get("points", []):
            lines.append(
                f"| {Path(r['scene']).name} | {r['labelled']} | {r['method']} | {p['seconds']:.2f} | "
                f"{_fmt(p['steps'], 'd')} | {_fmt(p['miou'])} | {_fmt(p['consistency'])} |"
            )
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _mean(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


COLORS = {"ngp": "tab:blue", "semantic-nerf": "tab:orange", "reproject": "tab:green", "nearest": "tab:gray"}


def write_plot(results: dict[str, Any], path: str | Path) -> None:
    """mIoU vs training time (log axis), one panel per labelled fraction, one colour per method, one line style
    per scene; baselines are single markers (their runtime) with a dotted level line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labelfield.io import atomic_path

    runs = [r for r in results["runs"] if "error" not in r and r.get("points")]
    fracs = sorted({r["fraction"] for r in runs}) or [0.0]
    scenes = sorted({r["scene"] for r in runs})
    styles = ["-", "--", "-.", ":"]
    fig, axes = plt.subplots(1, len(fracs), figsize=(5.0 * len(fracs), 4.0), squeeze=False, sharey=True)
    for ax, frac in zip(axes[0], fracs, strict=True):
        seen = set()
        for r in (r for r in runs if r["fraction"] == frac):
            pts = [p for p in r["points"] if p["miou"] is not None and p["seconds"] > 0]
            if not pts:
                continue
            t, y = [p["seconds"] for p in pts], [p["miou"] for p in pts]
            color = COLORS.get(r["method"], "black")
            label = r["method"] if r["method"] not in seen else None
            seen.add(r["method"])
            if r["method"] in BASELINE_METHODS:
                ax.plot(t, y, "s", color=color, label=label, markersize=7)
                ax.axhline(y[0], color=color, linestyle=":", linewidth=0.8)
            else:
                ls = styles[scenes.index(r["scene"]) % len(styles)]
                ax.plot(t, y, ls, marker="o", color=color, label=label, markersize=3)
        ax.set_xscale("log")
        ax.set_title(f"labelled fraction {frac:g}")
        ax.set_xlabel("training time (s), baselines: runtime")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[0][0].set_ylabel(
        "mIoU on unlabelled frames"
        if results["settings"]["eval_set"] == "unlabelled"
        else "mIoU on labelled frames (vs clean GT)"
    )
    if len(scenes) > 1:
        fig.suptitle(
            "line style = scene: " + ", ".join(f"{Path(s).name} ({styles[i % 4]})" for i, s in enumerate(scenes)),
            fontsize=8,
        )
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import json

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.splitlines()[2])
        return 2
    src = Path(argv[0])
    results = json.loads(src.read_text())
    results["summary"] = summarise(results["runs"])
    write_markdown(results, src.with_name("results.md"))
    write_plot(results, src.with_name("propagation.png"))
    print(src.with_name("results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
