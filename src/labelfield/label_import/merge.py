"""Match imported classes to a scene's class table by name, add unknown ones, report colour conflicts.

Rules: a source class matches the scene class of the same name (exact, else case- and space-insensitive).
Unknown names are added with the source's numeric id when it is free (COCO category ids, PNG ids), else the
next free id, and the source colour unless another class already has it. A matched class whose source colour
differs from the scene's keeps the scene's colour; both cases are reported as colour conflicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from labelfield.label_import.readers import SourceClass
from labelfield.scene import ClassTable, default_color


@dataclass
class Merged:
    """The new class table, `lut` (source class index -> scene class id) and what happened, for the report."""

    classes: ClassTable
    lut: np.ndarray
    matched: list[tuple[str, int]] = field(default_factory=list)
    added: list[tuple[str, int]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def _key(name: str) -> str:
    return " ".join(name.lower().split())


def merge_classes(table: ClassTable, sources: list[SourceClass]) -> Merged:
    """Merge `sources` (index 0 = void) into a copy of `table`."""
    ids, names, colors = list(table.ids), list(table.names), [tuple(c) for c in table.colors]
    exact = {n: i for i, n in zip(ids, names)}
    loose = {_key(n): i for i, n in zip(ids, names)}
    out = Merged(table, np.zeros(len(sources), np.int64))
    out.lut[0] = table.void_id
    for k, src in enumerate(sources[1:], start=1):
        cid = exact.get(src.name, loose.get(_key(src.name)))
        if cid is not None and cid != table.void_id:
            out.lut[k] = cid
            out.matched.append((src.name, cid))
            have = colors[ids.index(cid)]
            if src.color is not None and tuple(src.color) != have:
                out.conflicts.append(
                    f"{src.name!r}: colour {tuple(src.color)} in the source, {have} in the scene (kept the scene's)"
                )
            continue
        cid = src.id if src.id is not None and src.id > 0 and src.id not in ids else max(ids) + 1
        color = tuple(src.color) if src.color is not None else default_color(cid)
        if color in colors:
            other = names[colors.index(color)]
            new = default_color(cid)
            rng = np.random.default_rng(cid)
            while new in colors:
                new = tuple(int(x) for x in rng.integers(40, 256, 3))
            out.conflicts.append(f"{src.name!r}: colour {color} is {other!r}'s in the scene (gave it {new})")
            color = new
        ids.append(cid)
        names.append(src.name)
        colors.append(color)
        exact[src.name], loose[_key(src.name)] = cid, cid
        out.lut[k] = cid
        out.added.append((src.name, cid))
    out.classes = ClassTable(ids, names, colors, table.background_class, table.void_id)
    return out
