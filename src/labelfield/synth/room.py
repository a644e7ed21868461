"""Procedural indoor room for `labelfield synth`: geometry, classes, instances and numpy textures.

No renderer is imported here: the room is a list of `Part`s (boxes, spheres, rectangles) with 4x4 world
transforms, a linear-reflectance texture each and their class / instance ids; `render.py` turns it into a
Mitsuba scene. Everything is deterministic from the seed.

World: z up, metres. The room is the box x in [-L/2, L/2], y in [-D/2, D/2], z in [0, H] (about 6.4 x 5.2 x 2.7).
Large furniture stands along the long walls (|y| near D/2), small items along the short walls (|x| near L/2),
pictures hang on the walls; the central `free_zone` (|x| < free_zone[0], |y| < free_zone[1]) stays empty so
cameras can move there. An emissive panel on the ceiling lights the room; it is labelled `ceiling`.

Primitive conventions (Mitsuba's): box = `cube` [-1, 1]^3, sphere = unit sphere at the origin, rect =
`rectangle` [-1, 1]^2 in the z = 0 plane facing +z. `to_world` maps those to the world.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from labelfield.scene import ClassTable

CLASS_NAMES = [
    "void", "floor", "wall", "ceiling", "table", "chair", "sofa", "bed", "cabinet", "lamp", "plant", "picture",
]  # fmt: skip
CLASS_COLORS = [
    (0, 0, 0), (152, 223, 138), (174, 199, 232), (120, 120, 120), (255, 127, 14), (214, 39, 40), (31, 119, 180),
    (148, 103, 189), (140, 86, 75), (255, 221, 0), (44, 160, 44), (227, 119, 194),
]  # fmt: skip
CLASS_ID = {name: i for i, name in enumerate(CLASS_NAMES)}


def room_classes() -> ClassTable:
    """The generator's class table (id = position in CLASS_NAMES, 0 = void; no background class)."""
    return ClassTable.from_names(CLASS_NAMES, CLASS_COLORS)


@dataclass
class Part:
    """One primitive. `texture` (h, w, 3) float32 is linear reflectance in [0, 1], repeated `uv_scale` times."""

    kind: str  # "box" | "sphere" | "rect"
    to_world: np.ndarray  # (4, 4) float64
    texture: np.ndarray
    class_id: int
    instance_id: int
    uv_scale: tuple[float, float] = (1.0, 1.0)
    emission: float = 0.0  # radiance of an area light (rect only); 0 = not a light


@dataclass
class Room:
    """The whole room: parts, its size (L, D, H), the camera-free zone and the instance names (id -> name)."""

    size: np.ndarray
    parts: list[Part]
    free_zone: tuple[float, float]
    instances: dict[int, str] = field(default_factory=dict)

    @property
    def classes(self) -> ClassTable:
        return room_classes()


# --- transforms -----------------------------------------------------------------------------------
def box_transform(center, half, yaw: float = 0.0) -> np.ndarray:
    """(4, 4) mapping the cube [-1, 1]^3 to a box with `half` extents, turned by `yaw` about z, at `center`."""
    c, s = np.cos(yaw), np.sin(yaw)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    m = np.eye(4)
    m[:3, :3] = R @ np.diag(half)
    m[:3, 3] = center
    return m


def sphere_transform(center, radius: float) -> np.ndarray:
    m = np.diag([radius, radius, radius, 1.0])
    m[:3, 3] = center
    return m


def rect_transform(center, u, v, half_u: float, half_v: float) -> np.ndarray:
    """Rectangle spanning +-half_u along unit `u` and +-half_v along unit `v`; it faces cross(u, v)."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = u * half_u, v * half_v, np.cross(u, v), center
    return m


# --- procedural textures (linear reflectance, (h, w, 3) float32) ------------------------------------
def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise (size, size) in about [0, 1]: a random (cells x cells) grid upsampled bicubically.

    The grid wraps (first row/column repeated), so the texture tiles without a seam.
    """
    g = rng.random((cells, cells)).astype(np.float32)
    g = np.pad(g, ((0, 1), (0, 1)), mode="wrap")
    big = size + size // cells  # the padded (cells + 1) grid at size / cells pixels per cell
    img = np.array(Image.fromarray(g, mode="F").resize((big, big), Image.BICUBIC))
    return np.clip(img[:size, :size], 0.0, 1.0)


def _fbm(rng: np.random.Generator, size: int, octaves=(4, 8, 16)) -> np.ndarray:
    out = sum(_noise(rng, size, c) / (k + 1) for k, c in enumerate(octaves))
    out = out - out.min()
    return out / max(float(out.max()), 1e-6)


def _tint(gray: np.ndarray, color, contrast: float) -> np.ndarray:
    """Colour `color` (3,) modulated by a grey pattern in [0, 1] with the given contrast."""
    m = 1.0 - contrast / 2 + contrast * gray
    return np.clip(m[..., None] * np.asarray(color, np.float32), 0.0, 1.0).astype(np.float32)


def wood_planks(rng: np.random.Generator, color, size: int = 256, planks: int = 4) -> np.ndarray:
    """Floor boards: `planks` boards per tile, each with its own shade, fine grain and a dark seam."""
    v = np.arange(size)[:, None] / size
    board = np.floor(v * planks).astype(int)
    shade = rng.uniform(0.75, 1.15, planks)[board]
    grain = _noise(rng, size, 32)
    grain = np.repeat(grain.mean(0, keepdims=True), size, 0) * 0.6 + grain * 0.4  # streaks along u
    seam = (np.abs((v * planks) % 1.0 - 0.5) > 0.47).astype(np.float32)
    pattern = np.broadcast_to(shade, (size, size)) * (0.8 + 0.35 * grain) * (1.0 - 0.5 * seam)
    return np.clip(pattern[..., None] * np.asarray(color, np.float32), 0, 1).astype(np.float32)


def plaster(rng: np.random.Generator, color, size: int = 128, contrast: float = 0.2) -> np.ndarray:
    return _tint(_fbm(rng, size), color, contrast)


def fabric(rng: np.random.Generator, color, size: int = 128) -> np.ndarray:
    """Woven look: a fine weave pattern plus blotchy noise."""
    y, x = np.mgrid[0:size, 0:size]
    weave = 0.5 + 0.5 * np.sin(x * 2 * np.pi / 8) * np.sin(y * 2 * np.pi / 8)
    return _tint(0.6 * _fbm(rng, size) + 0.4 * weave, color, 0.35)


def stripes(rng: np.random.Generator, color_a, color_b, size: int = 128, n: int = 6) -> np.ndarray:
    """Bed linen / wallpaper stripes between two colours, with a little noise."""
    u = np.arange(size)[None, :] / size
    mask = (np.floor(u * n * 2) % 2)[..., None]
    base = np.where(mask > 0, np.asarray(color_a, np.float32), np.asarray(color_b, np.float32))
    base = np.broadcast_to(base, (size, size, 3))
    return np.clip(base * (0.9 + 0.2 * _fbm(rng, size))[..., None], 0, 1).astype(np.float32)


def painting(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """A colourful abstract picture: a few random blobs of colour."""
    img = np.zeros((size, size, 3), np.float32)
    for _ in range(3):
        img += _noise(rng, size, 3)[..., None] * rng.uniform(0.1, 0.9, 3).astype(np.float32)
    img = img / img.max()
    return np.clip(0.08 + 0.85 * img, 0, 1).astype(np.float32)


def leaves(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    g = _fbm(rng, size, (8, 16, 32))
    dark, light = np.array([0.04, 0.18, 0.04], np.float32), np.array([0.18, 0.45, 0.10], np.float32)
    return (dark + (light - dark) * g[..., None]).astype(np.float32)


# --- furniture builders: each returns parts of one instance standing on the floor ---------------------
# Local frame of a slot: origin at the wall foot, +a along the wall, +b into the room; `place` maps it to world.
Place = tuple[np.ndarray, np.ndarray, np.ndarray, float]  # origin, a axis, b axis, yaw of the b axis


def _part_box(place: Place, a: float, b: float, z: float, ha: float, hb: float, hz: float) -> np.ndarray:
    """Box centred at local (a, b, z) with half extents (ha along the wall, hb into the room, hz up)."""
    origin, ax, bx, yaw = place
    center = origin + a * ax + b * bx + np.array([0.0, 0.0, z])
    return box_transform(center, (hb, ha, hz), yaw)  # box x axis = b direction (yaw), y axis = along the wall


def _sphere(place: Place, a: float, b: float, z: float, r: float) -> np.ndarray:
    origin, ax, bx, _ = place
    return sphere_transform(origin + a * ax + b * bx + np.array([0.0, 0.0, z]), r)


def build_table_set(rng, place: Place, length: float, inst: list[int]) -> list[Part]:
    """A table against the wall with one chair at each end (three instances)."""
    parts = []
    wood = wood_planks(rng, rng.uniform(0.35, 0.6) * np.array([0.85, 0.55, 0.3]), 128, planks=3)
    tl, td, th = min(length - 1.0, 1.3), 0.8, 0.74
    tid = inst.pop(0)
    parts.append(
        Part("box", _part_box(place, 0, td / 2, th - 0.03, tl / 2, td / 2, 0.03), wood, CLASS_ID["table"], tid)
    )
    for sa in (-1, 1):
        for sb in (0.08, td - 0.08):
            m = _part_box(place, sa * (tl / 2 - 0.08), sb, (th - 0.06) / 2, 0.045, 0.045, (th - 0.06) / 2)
            parts.append(Part("box", m, wood, CLASS_ID["table"], tid))
    chair_col = rng.uniform(0.15, 0.35) * np.array([1.0, 0.3, 0.25]) + 0.05
    for sa in (-1, 1):
        cid = inst.pop(0)
        tex = fabric(rng, chair_col, 64)
        ca = sa * (tl / 2 + 0.3)
        parts.append(Part("box", _part_box(place, ca, td / 2, 0.45, 0.23, 0.23, 0.04), tex, CLASS_ID["chair"], cid))
        back = _part_box(place, ca + sa * 0.2, td / 2, 0.72, 0.04, 0.23, 0.25)
        parts.append(Part("box", back, tex, CLASS_ID["chair"], cid))
        for da in (-0.17, 0.17):
            for db in (-0.17, 0.17):
                leg = _part_box(place, ca + da, td / 2 + db, 0.21, 0.035, 0.035, 0.21)
                parts.append(Part("box", leg, tex, CLASS_ID["chair"], cid))
    return parts


def build_sofa(rng, place: Place, length: float, inst: list[int]) -> list[Part]:
    sl, sd = min(length, 2.1), 0.9
    col = [np.array([0.1, 0.2, 0.45]), np.array([0.12, 0.35, 0.3]), np.array([0.4, 0.36, 0.3])][rng.integers(3)]
    tex, sid = fabric(rng, col), inst.pop(0)
    boxes = [
        (0, sd / 2 + 0.05, 0.25, sl / 2, sd / 2 - 0.05, 0.2),  # seat block
        (0, 0.12, 0.6, sl / 2, 0.12, 0.4),  # back rest along the wall
        (-sl / 2 + 0.1, sd / 2, 0.35, 0.1, sd / 2, 0.3),  # arms
        (sl / 2 - 0.1, sd / 2, 0.35, 0.1, sd / 2, 0.3),
    ]
    return [Part("box", _part_box(place, *b), tex, CLASS_ID["sofa"], sid) for b in boxes]


def build_bed(rng, place: Place, length: float, inst: list[int]) -> list[Part]:
    """A day-bed along the wall: wooden frame, striped mattress, headboard at one end."""
    bl, bd, bid = min(length, 2.0), 1.0, inst.pop(0)
    frame = wood_planks(rng, np.array([0.45, 0.3, 0.18]), 128, planks=2)
    linen = stripes(rng, np.array([0.75, 0.75, 0.8]), np.array([0.45, 0.5, 0.7]))
    parts = [
        Part("box", _part_box(place, 0, bd / 2, 0.17, bl / 2, bd / 2, 0.17), frame, CLASS_ID["bed"], bid),
        Part("box", _part_box(place, 0, bd / 2, 0.44, bl / 2 - 0.05, bd / 2 - 0.04, 0.1), linen, CLASS_ID["bed"], bid),
        Part("box", _part_box(place, -bl / 2 + 0.04, bd / 2, 0.5, 0.04, bd / 2, 0.5), frame, CLASS_ID["bed"], bid),
    ]
    return parts


def build_cabinet(rng, place: Place, length: float, inst: list[int], tall: bool = True) -> list[Part]:
    """A cabinet with doors: a body plus thin door panels in a contrasting shade."""
    cw, cd, ch, cid = min(length, 1.0), 0.5, (1.8 if tall else 0.9), inst.pop(0)
    body_col = [np.array([0.8, 0.78, 0.72]), np.array([0.3, 0.2, 0.12]), np.array([0.5, 0.55, 0.6])][rng.integers(3)]
    body = plaster(rng, body_col, 64, 0.15)
    doors = plaster(rng, body_col * 0.8, 64, 0.15)
    parts = [Part("box", _part_box(place, 0, cd / 2, ch / 2, cw / 2, cd / 2, ch / 2), body, CLASS_ID["cabinet"], cid)]
    for s in (-1, 1):  # two doors proud of the front by 1 cm
        m = _part_box(place, s * cw / 4, cd + 0.01, ch / 2, cw / 4 - 0.02, 0.01, ch / 2 - 0.05)
        parts.append(Part("box", m, doors, CLASS_ID["cabinet"], cid))
    return parts


def build_lamp(rng, place: Place, length: float, inst: list[int]) -> list[Part]:
    """A floor lamp: heavy base, pole and a big shade (all `lamp`)."""
    lid = inst.pop(0)
    metal = plaster(rng, np.array([0.08, 0.08, 0.09]), 32, 0.1)
    shade = fabric(rng, np.array([0.85, 0.75, 0.5]), 64)
    return [
        Part("box", _part_box(place, 0, 0.3, 0.03, 0.18, 0.18, 0.03), metal, CLASS_ID["lamp"], lid),
        Part("box", _part_box(place, 0, 0.3, 0.75, 0.04, 0.04, 0.72), metal, CLASS_ID["lamp"], lid),
        Part("box", _part_box(place, 0, 0.3, 1.55, 0.22, 0.22, 0.17), shade, CLASS_ID["lamp"], lid),
    ]


def build_plant(rng, place: Place, length: float, inst: list[int]) -> list[Part]:
    """A potted plant: terracotta pot and a cluster of leafy spheres (all `plant`)."""
    pid = inst.pop(0)
    pot = plaster(rng, np.array([0.55, 0.25, 0.12]), 32, 0.2)
    leaf = leaves(rng)
    r = rng.uniform(0.3, 0.4)
    parts = [Part("box", _part_box(place, 0, 0.3, 0.22, 0.2, 0.2, 0.22), pot, CLASS_ID["plant"], pid)]
    parts.append(Part("sphere", _sphere(place, 0, 0.3, 0.44 + r, r), leaf, CLASS_ID["plant"], pid, (2.0, 1.0)))
    for da, dz in ((-0.18, 0.5), (0.18, 0.6)):
        parts.append(Part("sphere", _sphere(place, da, 0.3, 0.44 + r + dz * r, 0.6 * r), leaf, CLASS_ID["plant"], pid))
    return parts


BUILDERS = {
    "table": build_table_set,
    "sofa": build_sofa,
    "bed": build_bed,
    "cabinet": build_cabinet,
    "lamp": build_lamp,
    "plant": build_plant,
}


def make_room(seed: int = 0) -> Room:
    """Build the room for `seed` (size, layout, colours and textures all follow from it).

    Example:
        >>> room = make_room(0)
        >>> sorted({p.class_id for p in room.parts})[:3]
        [1, 2, 3]
    """
    rng = np.random.default_rng(seed)
    L, D, H = 6.4 + rng.uniform(-0.2, 0.2), 5.2 + rng.uniform(-0.2, 0.2), 2.7
    parts: list[Part] = []
    instances: dict[int, str] = {}
    next_id = [1]

    def new_instance(name: str) -> int:
        i = next_id[0]
        next_id[0] += 1
        instances[i] = name
        return i

    # Room shell: floor, ceiling and four walls, all facing inwards.
    ex, ey, ez = np.eye(3)
    floor_tex = wood_planks(rng, rng.uniform(0.8, 1.0) * np.array([0.55, 0.38, 0.22]), 256, planks=4)
    fid = new_instance("floor")
    parts.append(Part("rect", rect_transform([0, 0, 0], ex, ey, L / 2, D / 2), floor_tex, CLASS_ID["floor"], fid,
                      (L / 1.2, D / 1.2)))  # fmt: skip
    ceil_tex = plaster(rng, np.array([0.9, 0.9, 0.88]), 128, 0.08)
    cid = new_instance("ceiling")
    parts.append(Part("rect", rect_transform([0, 0, H], ey, ex, D / 2, L / 2), ceil_tex, CLASS_ID["ceiling"], cid,
                      (2.0, 2.0)))  # fmt: skip
    wall_col = [np.array([0.75, 0.72, 0.62]), np.array([0.62, 0.7, 0.72]), np.array([0.78, 0.66, 0.6])]
    wall_col = wall_col[rng.integers(len(wall_col))]
    walls = [  # (centre, along-wall axis u, inward normal n, half length)
        (np.array([0, D / 2, H / 2]), ex, -ey, L / 2),
        (np.array([0, -D / 2, H / 2]), -ex, ey, L / 2),
        (np.array([L / 2, 0, H / 2]), -ey, -ex, D / 2),
        (np.array([-L / 2, 0, H / 2]), ey, ex, D / 2),
    ]
    for k, (c, u, n, hl) in enumerate(walls):
        tex = plaster(rng, wall_col * rng.uniform(0.92, 1.05), 128, 0.25)
        wid = new_instance(f"wall_{k}")
        # v = cross(n, u) points up for these walls, so the rectangle faces cross(u, v) = n (inwards).
        v = np.cross(n, u)
        parts.append(Part("rect", rect_transform(c, u, v, hl, H / 2), tex, CLASS_ID["wall"], wid, (hl / 1.5, 1.5)))

    # Ceiling light: one emissive panel 1 mm below the ceiling (labelled ceiling: part of it). Point or spot
    # lights were tried instead: their hot spots on ceiling or floor light the room indirectly with fireflies.
    # One emitter only: Mitsuba orders emitters differently on each load, which would change the noise.
    m = rect_transform([0, 0, H - 1e-3], ex, -ey, 0.9, 0.45)
    parts.append(Part("rect", m, np.full((4, 4, 3), 0.9, np.float32), CLASS_ID["ceiling"], cid, emission=18.0))

    # Furniture slots: two per wall. Long walls (|y| = D/2) take big items up to 2.2 m long and 1 m deep;
    # short walls (|x| = L/2) take small items up to 1 m wide and 0.6 m deep, so no two slots overlap.
    big = ["table", "sofa", "bed", ["cabinet", "sofa"][rng.integers(2)]]
    small = ["cabinet", "lamp", "plant", ["plant", "lamp"][rng.integers(2)]]
    rng.shuffle(big)
    rng.shuffle(small)
    slots = []
    for k, (c, u, n, _) in enumerate(walls):
        along = 1.5 if k < 2 else 1.0
        for s in (-1, 1):
            foot = c - np.array([0, 0, H / 2]) + s * along * u
            yaw = float(np.arctan2(n[1], n[0]))
            slots.append(((foot, u, n, yaw), k < 2))
    for place, is_long in slots:
        kind = big.pop() if is_long else small.pop()
        length = 2.2 if is_long else 1.0
        n_inst = 3 if kind == "table" else 1
        ids = [new_instance(kind if j == 0 else "chair") for j in range(n_inst)]
        parts += BUILDERS[kind](rng, place, length, ids)

    # Pictures: one on each long wall, above the furniture, 1 cm proud of the wall.
    for c, u, n, _ in walls[:2]:
        pid = new_instance("picture")
        w, h = rng.uniform(0.45, 0.6), rng.uniform(0.3, 0.4)
        center = c + n * 0.012 + u * rng.uniform(-0.3, 0.3) + np.array([0, 0, rng.uniform(0.35, 0.5)])
        m = box_transform(center, (0.01, w, h), float(np.arctan2(n[1], n[0])))
        parts.append(Part("box", m, painting(rng), CLASS_ID["picture"], pid))

    # Cameras stay clear of furniture: long-wall items reach 1 m in, short-wall ones 0.6 m, plus a margin.
    free = (L / 2 - 1.0, D / 2 - 1.3)
    return Room(np.array([L, D, H]), parts, free, instances)
