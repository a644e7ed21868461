"""Read a batch manifest (YAML, JSON, CSV, or a folder of scenes) into resolved `SceneSpec`s.

YAML / JSON: a list of scenes, or an object `{"defaults": {...}, "scenes": [...]}`. A scene is a path string or
an object with `path` and optional `name`, `gt`, `export`, `annotate` and any fit option (`labelled`, `steps`,
`time_budget`, `model_config: {...}`, ...):

    defaults: {steps: 2000, depth_loss: true}
    scenes:
      - scans/scene0000_00
      - {path: scans/scene0001_00, labelled: "every:20", gt: scene, export: [coco]}

CSV: a header row with `path` and any of the same keys as columns (`model_config.log2_table_size` for model
options, `export` as `cvat;coco`); an empty cell means "not set". A folder: every scene folder below it (the
first level at which a scene layout is detected), named by its folder name.

Relative paths are relative to the manifest's folder. `gt: scene` (or `true`) evaluates against the scene's own
full labels. Precedence per option: FitConfig default < command line < the manifest's defaults < the scene.
"""

from __future__ import annotations

import csv
import json
import re
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from labelfield.batch.pipeline import (
    ANNOTATE_DEFAULTS,
    EXPORT_SUFFIX,
    SceneSpec,
    fit_option_names,
    make_fit_config,
    merge_fit_options,
)
from labelfield.errors import LabelfieldError

SCENE_KEYS = ("path", "name", "gt", "export", "annotate")
_NAME_OK = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_MAX_DEPTH = 4  # how deep a folder manifest looks for scenes


def read_manifest(
    path: str | Path,
    fit_defaults: dict[str, Any],
    gt_default: str | None = None,
    export_default: Iterable[str] = (),
) -> list[SceneSpec]:
    """Scenes of the manifest at `path` with every option resolved. One-line LabelfieldError naming the manifest
    for anything malformed (unknown key, bad value, duplicate name, no scenes)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise LabelfieldError("manifest not found", path)
    if path.is_dir():
        defaults: dict[str, Any] = {}
        entries: list[Any] = [{"path": str(p), "name": n} for n, p in _scenes_below(path)]
        base = path
    else:
        defaults, entries = _read_file(path)
        base = path.parent
    if not entries:
        raise LabelfieldError("manifest lists no scenes", path)
    specs = [
        _resolve(e, i, defaults, fit_defaults, gt_default, tuple(export_default), base, path)
        for i, e in enumerate(entries)
    ]
    seen: dict[str, str] = {}
    for s in specs:
        if s.name in seen:
            raise LabelfieldError(
                f"two scenes are named {s.name!r} ({seen[s.name]} and {s.path}); give one a `name`", path
            )
        seen[s.name] = s.path
    return specs


def _read_file(path: Path) -> tuple[dict[str, Any], list[Any]]:
    suffix = path.suffix.lower()
    text = _read_text(path)
    if suffix == ".csv":
        return {}, _read_csv(text, path)
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise LabelfieldError(
                "reading a YAML manifest needs PyYAML: pip install 'labelfield[cluster]'", path
            ) from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise LabelfieldError(f"not valid YAML ({str(e).splitlines()[0]})", path) from None
    elif suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelfieldError(f"not valid JSON ({e})", path) from None
    else:
        raise LabelfieldError("manifest must be .yaml, .yml, .json or .csv (or a folder of scenes)", path)
    if isinstance(doc, list):
        return {}, doc
    if isinstance(doc, dict) and "scenes" in doc:
        unknown = sorted(set(doc) - {"scenes", "defaults"})
        if unknown:
            raise LabelfieldError(f"unknown top-level key {unknown[0]!r} (expected scenes, defaults)", path)
        defaults = doc.get("defaults") or {}
        if not isinstance(defaults, dict) or not isinstance(doc["scenes"], list):
            raise LabelfieldError("`defaults` must be a mapping and `scenes` a list", path)
        return defaults, doc["scenes"]
    raise LabelfieldError("expected a list of scenes or a mapping with `scenes:`", path)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise LabelfieldError(f"unreadable manifest ({e})", path) from None


def _read_csv(text: str, path: Path) -> list[dict[str, Any]]:
    rows = list(csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#")))
    if rows and "path" not in rows[0]:
        raise LabelfieldError("CSV manifest needs a `path` column", path)
    out = []
    for row in rows:
        entry: dict[str, Any] = {}
        for key, cell in row.items():
            if key is None or cell is None or not cell.strip():
                continue  # empty cell: not set
            key, cell = key.strip(), cell.strip()
            if key == "export":
                entry[key] = [t for t in re.split(r"[;|\s]+", cell) if t]
            elif "." in key:
                head, sub = key.split(".", 1)
                entry.setdefault(head, {})[sub] = cell
            else:
                entry[key] = cell
        out.append(entry)
    return out


def _scenes_below(root: Path) -> list[tuple[str, Path]]:
    """(name, path) of every scene folder below `root` (not descending into a scene)."""
    from labelfield.formats import detect_format

    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        for child in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                detect_format(child)
                found.append(child)
            except LabelfieldError:
                if depth < _MAX_DEPTH:
                    walk(child, depth + 1)

    walk(root, 1)
    counts: dict[str, int] = {}
    for p in found:
        counts[p.name] = counts.get(p.name, 0) + 1
    return [(p.name if counts[p.name] == 1 else "_".join(p.relative_to(root).parts), p) for p in found]


def _resolve(
    entry: Any,
    i: int,
    defaults: dict[str, Any],
    fit_defaults: dict[str, Any],
    gt_default: str | None,
    export_default: tuple[str, ...],
    base: Path,
    where: Path,
) -> SceneSpec:
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict) or "path" not in entry:
        raise LabelfieldError(f"scene #{i + 1}: expected a path or a mapping with `path`", where)
    entry = {**defaults, **entry}
    allowed = set(SCENE_KEYS) | set(fit_option_names())
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise LabelfieldError(f"scene #{i + 1}: unknown key {unknown[0]!r}", where)
    scene_path = _abs(entry["path"], base)
    name = str(entry.get("name") or scene_path.name)
    if not _NAME_OK.match(name):
        raise LabelfieldError(f"scene #{i + 1}: name {name!r} must be letters, digits, _ . - (a folder name)", where)
    label = f"{where} (scene {name})"
    # fit options: command line < manifest defaults < scene, typed like FitConfig's fields
    overrides = {k: v for k, v in entry.items() if k not in SCENE_KEYS}
    fit = merge_fit_options(fit_defaults, _typed(overrides, label))
    make_fit_config(fit, scene_path, None, where=label)  # validates keys and values now, not on a worker
    gt_value = entry.get("gt", gt_default)
    gt = None
    if gt_value is not None and gt_value is not False and str(gt_value).lower() not in ("", "none", "false", "no"):
        gt = (
            str(scene_path)
            if gt_value is True or str(gt_value).lower() in ("scene", "true", "yes")
            else str(_abs(gt_value, base))
        )
    export = entry.get("export", list(export_default))
    if isinstance(export, str):
        export = [t for t in re.split(r"[;,|\s]+", export) if t]
    bad = [f for f in export if f not in EXPORT_SUFFIX]
    if bad:
        raise LabelfieldError(
            f"scene {name}: unknown export format {bad[0]!r} (choose from {', '.join(EXPORT_SUFFIX)})", where
        )
    annotate = entry.get("annotate") or {}
    if not isinstance(annotate, dict) or set(annotate) - set(ANNOTATE_DEFAULTS):
        raise LabelfieldError(f"scene {name}: `annotate` takes {', '.join(ANNOTATE_DEFAULTS)}", where)
    return SceneSpec(
        name=name, path=str(scene_path), fit=fit, annotate={**ANNOTATE_DEFAULTS, **annotate}, gt=gt, export=list(export)
    )


def _abs(p: Any, base: Path) -> Path:
    q = Path(str(p)).expanduser()
    return (q if q.is_absolute() else base / q).absolute()


def _typed(values: dict[str, Any], where: str) -> dict[str, Any]:
    """CSV cells are strings: convert each to its FitConfig field's type (YAML/JSON values pass through)."""
    from labelfield.train.config import FitConfig

    hints = typing.get_type_hints(FitConfig)
    out: dict[str, Any] = {}
    for k, v in values.items():
        if k == "model_config" and isinstance(v, dict):
            from labelfield.models import config_class

            # model_config is a union of model configs: the row's model (default ngp) names the class
            mc_type = config_class(str(values.get("model", v.get("name", "ngp"))))
            sub = typing.get_type_hints(mc_type)
            out[k] = {kk: _coerce(vv, sub.get(kk), f"{k}.{kk}", where) for kk, vv in v.items()}
        else:
            out[k] = _coerce(v, hints.get(k), k, where)
    return out


def _strip(hint: Any) -> Any:
    while typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    return hint


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    if not isinstance(value, str) or hint is None:
        return value
    hint = _strip(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union or type(hint).__name__ == "UnionType":
        if value.lower() in ("none", "null"):
            return None
        hint = args[0] if len(args) == 1 else str
    try:
        if hint is bool:
            if value.lower() in ("true", "yes", "1", "on"):
                return True
            if value.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            return int(value)
        if hint is float:
            return float(value)
    except ValueError:
        raise LabelfieldError(f"{key}: {value!r} is not a valid {hint.__name__}", where) from None
    return value
