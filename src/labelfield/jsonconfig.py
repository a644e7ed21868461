"""Dataclass configs <-> plain JSON: nested dataclasses as objects, paths as strings, tuples as lists.

Used by `FitConfig` (RUN/config.json) and by the run folder, which reads the model's config back without the
trainer. `from_dict` raises LabelfieldError naming the file for an unknown key or a bad value.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from labelfield.errors import LabelfieldError


def to_jsonable(x: Any) -> Any:
    """Dataclasses, paths, tuples and dicts -> plain JSON values."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: to_jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    return x


def _strip(hint: Any) -> Any:
    """Remove Annotated[...] wrappers (tyro markers) from a type hint."""
    while typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    return hint


def _convert(hint: Any, value: Any, where: str | Path | None, name: str) -> Any:
    """JSON value -> the field's type: nested dataclasses, Path, tuples; other values are kept."""
    hint = _strip(hint)
    if value is None or (dataclasses.is_dataclass(value) and not isinstance(value, type)):
        return value
    origin = typing.get_origin(hint)
    args = [_strip(a) for a in typing.get_args(hint)]
    if origin in (typing.Union, getattr(types, "UnionType", typing.Union)):
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value, where, name) if len(non_none) == 1 else value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise LabelfieldError(f"config key {name!r} must be an object", where)
        return from_dict(hint, value, where, prefix=f"{name}.")
    if hint is Path:
        return Path(value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value


def from_dict(cls: type, d: dict[str, Any], where: str | Path | None, prefix: str = "") -> Any:
    """A `cls` from a dict of its init fields (nested values converted by the field types)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(d) - names)
    if unknown:
        raise LabelfieldError(f"unknown config key {prefix}{unknown[0]!r}", where)
    kwargs = {k: _convert(hints[k], v, where, prefix + k) for k, v in d.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise LabelfieldError(f"bad config ({e})", where) from e
