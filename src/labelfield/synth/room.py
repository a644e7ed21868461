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

from labelfield.errors import LabelfieldError
from labelfield.scene import ClassTable

CLASS_NAMES = [
    "void",
    "floor",
    "wall",
    "ceiling",
    "table",
    "chair",
    "sofa",
    "bed",
    "cabinet",
    "lamp",
    "plant",
    "picture",
]
CLASS_COLORS = [
    (0, 0, 0),
    (152, 223, 138),
    (174, 199, 232),
    (120, 120, 120),
    (255, 127, 14),
    (214, 39, 40),
    (31, 119, 180),
    (148, 103, 189),
    (140, 86, 75),
    (255, 221, 0),
    (44, 160, 44),
    (227, 119, 194),
]
# The rich room (`make_room(..., objects="rich")`) adds small and thin things; ids continue after the basic ones,
# so a class keeps its id in both tables.
RICH_CLASS_NAMES = CLASS_NAMES + [
    "shelf",
    "book",
    "mug",
    "bottle",
    "ball",
    "toy",
    "vase",
    "bowl",
    "pillow",
    "rug",
    "door",
    "window",
    "clock",
    "stool",
]
RICH_CLASS_COLORS = CLASS_COLORS + [
    (196, 156, 148),
    (23, 190, 207),
    (255, 152, 150),
    (158, 218, 229),
    (219, 219, 141),
    (188, 189, 34),
    (247, 182, 210),
    (197, 176, 213),
    (255, 187, 120),
    (82, 84, 163),
    (107, 110, 207),
    (199, 199, 199),
    (57, 59, 121),
    (140, 162, 82),
]
CLASS_ID = {name: i for i, name in enumerate(RICH_CLASS_NAMES)}
SMALL_CLASSES = ("lamp", "book", "mug", "bottle", "ball", "toy", "vase", "bowl", "clock", "stool")
"""Small or thin classes (at most a few hundred pixels per frame at 320x240, or thin parts like lamp poles and
stool legs): benchmarks report them separately."""


def room_classes(objects: str = "basic") -> ClassTable:
    """The generator's class table (id = position in the names, 0 = void; no background class).

    objects: "basic" (the 11 classes of the demo room) or "rich" (25 classes, see RICH_CLASS_NAMES).
    """
    if objects == "rich":
        return ClassTable.from_names(RICH_CLASS_NAMES, RICH_CLASS_COLORS)
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
    objects: str = "basic"
    """"basic" or "rich": which class table the room uses (see `room_classes`)."""

    @property
    def classes(self) -> ClassTable:
        return room_classes(self.objects)


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


def build_table_set(rng, place: Place, length: float, inst: list[int], leg: float = 0.035) -> list[Part]:
    """A table against the wall with one chair at each end (three instances); `leg` = chair legs' half width."""
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
                m = _part_box(place, ca + da, td / 2 + db, 0.21, leg, leg, 0.21)
                parts.append(Part("box", m, tex, CLASS_ID["chair"], cid))
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


def build_shelf(rng, place: Place, length: float, inst: list[int]) -> list[Part]:
    """An open bookcase (0.9 wide, 0.35 deep, 1.6 tall): sides, back and five boards. Items: `shelf_items`."""
    sid = inst.pop(0)
    wood = wood_planks(rng, rng.uniform(0.5, 0.9) * np.array([0.8, 0.6, 0.4]), 64, planks=2)
    parts = [
        Part("box", _part_box(place, s * 0.44, 0.175, 0.8, 0.01, 0.175, 0.8), wood, CLASS_ID["shelf"], sid)
        for s in (-1, 1)
    ]
    parts.append(Part("box", _part_box(place, 0, 0.01, 0.8, 0.43, 0.01, 0.8), wood, CLASS_ID["shelf"], sid))
    for z in SHELF_BOARDS:
        parts.append(Part("box", _part_box(place, 0, 0.18, z, 0.43, 0.165, 0.01), wood, CLASS_ID["shelf"], sid))
    return parts


SHELF_BOARDS = (0.02, 0.42, 0.82, 1.22, 1.59)  # board centres (1 cm half thickness); items stand at z + 0.01

BUILDERS = {
    "table": build_table_set,
    "sofa": build_sofa,
    "bed": build_bed,
    "cabinet": build_cabinet,
    "lamp": build_lamp,
    "plant": build_plant,
    "shelf": build_shelf,
}


# --- small things of the rich room: each builder returns the parts of one instance resting at local (a, b, z0) ---
def _colour(rng) -> np.ndarray:
    """A saturated random colour (linear reflectance)."""
    c = rng.uniform(0.05, 0.3, 3)
    c[rng.integers(3)] = rng.uniform(0.5, 0.85)
    return c


def small_mug(rng, place: Place, a: float, b: float, z0: float, iid: int) -> list[Part]:
    tex = plaster(rng, _colour(rng), 32, 0.1)
    body = _part_box(place, a, b, z0 + 0.05, 0.04, 0.04, 0.05)
    handle = _part_box(place, a + 0.05, b, z0 + 0.05, 0.012, 0.008, 0.03)
    return [Part("box", m, tex, CLASS_ID["mug"], iid) for m in (body, handle)]


def small_bottle(rng, place: Place, a: float, b: float, z0: float, iid: int) -> list[Part]:
    tex = plaster(rng, rng.choice([np.array([0.05, 0.3, 0.1]), np.array([0.3, 0.12, 0.03]), _colour(rng)]), 32, 0.1)
    body = _part_box(place, a, b, z0 + 0.09, 0.035, 0.035, 0.09)
    neck = _part_box(place, a, b, z0 + 0.22, 0.012, 0.012, 0.04)
    return [Part("box", m, tex, CLASS_ID["bottle"], iid) for m in (body, neck)]


def small_bowl(rng, place: Place, a: float, b: float, z0: float, iid: int) -> list[Part]:
    tex = plaster(rng, _colour(rng), 32, 0.15)
    return [Part("box", _part_box(place, a, b, z0 + 0.035, 0.09, 0.09, 0.035), tex, CLASS_ID["bowl"], iid)]


def small_ball(rng, place: Place, a: float, b: float, z0: float, iid: int, r: float = 0.1) -> list[Part]:
    tex = stripes(rng, _colour(rng), _colour(rng), 64, 3)
    return [Part("sphere", _sphere(place, a, b, z0 + r, r), tex, CLASS_ID["ball"], iid)]


def small_toy(rng, place: Place, a: float, b: float, z0: float, iid: int, s: float = 1.0) -> list[Part]:
    """A teddy: body, head and two ears (spheres), scaled by `s`."""
    tex = fabric(rng, np.array([0.45, 0.28, 0.12]) * rng.uniform(0.7, 1.2), 64)
    spheres = [(0, 0, 0.1, 0.1), (0, 0, 0.25, 0.07), (-0.05, 0, 0.31, 0.03), (0.05, 0, 0.31, 0.03)]
    return [
        Part("sphere", _sphere(place, a + s * da, b + s * db, z0 + s * dz, s * r), tex, CLASS_ID["toy"], iid)
        for da, db, dz, r in spheres
    ]


def small_vase(rng, place: Place, a: float, b: float, z0: float, iid: int) -> list[Part]:
    tex = plaster(rng, _colour(rng), 32, 0.3)
    return [
        Part("sphere", _sphere(place, a, b, z0 + 0.09, 0.09), tex, CLASS_ID["vase"], iid),
        Part("box", _part_box(place, a, b, z0 + 0.22, 0.03, 0.03, 0.06), tex, CLASS_ID["vase"], iid),
    ]


def small_book_lying(rng, place: Place, a: float, b: float, z0: float, iid: int) -> list[Part]:
    tex = plaster(rng, _colour(rng), 32, 0.1)
    return [Part("box", _part_box(place, a, b, z0 + 0.015, 0.1, 0.14, 0.015), tex, CLASS_ID["book"], iid)]


def small_desk_lamp(rng, place: Place, a: float, b: float, z0: float, iid: int) -> list[Part]:
    """A desk lamp with a 1.6 cm pole (thin)."""
    metal = plaster(rng, np.array([0.1, 0.1, 0.11]), 16, 0.1)
    shade = fabric(rng, np.array([0.8, 0.7, 0.4]), 32)
    return [
        Part("box", _part_box(place, a, b, z0 + 0.01, 0.06, 0.06, 0.01), metal, CLASS_ID["lamp"], iid),
        Part("box", _part_box(place, a, b, z0 + 0.2, 0.008, 0.008, 0.18), metal, CLASS_ID["lamp"], iid),
        Part("box", _part_box(place, a, b, z0 + 0.42, 0.07, 0.07, 0.05), shade, CLASS_ID["lamp"], iid),
    ]


def small_stool(rng, place: Place, a: float, b: float, z0: float, iid: int) -> list[Part]:
    """A bar stool: seat on four 2.4 cm legs (thin)."""
    tex = wood_planks(rng, np.array([0.5, 0.32, 0.18]) * rng.uniform(0.7, 1.2), 32, planks=2)
    parts = [Part("box", _part_box(place, a, b, z0 + 0.47, 0.17, 0.17, 0.02), tex, CLASS_ID["stool"], iid)]
    for da in (-0.13, 0.13):
        for db in (-0.13, 0.13):
            m = _part_box(place, a + da, b + db, z0 + 0.225, 0.012, 0.012, 0.225)
            parts.append(Part("box", m, tex, CLASS_ID["stool"], iid))
    return parts


def books_row(rng, place: Place, a0: float, a1: float, b: float, z0: float, new_instance) -> list[Part]:
    """Books standing side by side from a0 to at most a1 (each its own instance)."""
    parts, a = [], a0
    while True:
        t, h, d = rng.uniform(0.012, 0.03), rng.uniform(0.09, 0.15), rng.uniform(0.08, 0.12)
        if a + 2 * t > a1:
            return parts
        tex = plaster(rng, _colour(rng), 16, 0.1)
        parts.append(
            Part("box", _part_box(place, a + t, b, z0 + h, t, d, h), tex, CLASS_ID["book"], new_instance("book"))
        )
        a += 2 * t + 0.002


def clock_face(size: int = 64) -> np.ndarray:
    """A white dial with a dark rim and two hands."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size * 2 - 1
    r = np.hypot(x, y)
    img = np.full((size, size), 0.85, np.float32)
    img[(r > 0.8) | (r < 0.06)] = 0.05
    img[(np.abs(x) < 0.04) & (y < 0) & (y > -0.6)] = 0.05  # hands
    img[(np.abs(y) < 0.04) & (x > 0) & (x < 0.45)] = 0.05
    return np.repeat(img[..., None], 3, -1)


def window_view(rng, size: int = 64) -> np.ndarray:
    """Sky above, a green band below, a white frame and cross bar."""
    v = (np.arange(size) + 0.5)[:, None] / size * np.ones((1, size))
    sky = np.array([0.35, 0.55, 0.85], np.float32) * (0.8 + 0.2 * (1 - v))[..., None]
    img = np.where((v > 0.65)[..., None], leaves(rng, size) * 1.5, sky).astype(np.float32)
    u = v.T
    frame = (np.minimum.reduce([u, 1 - u, v, 1 - v]) < 0.06) | (np.abs(u - 0.5) < 0.025) | (np.abs(v - 0.5) < 0.025)
    img[frame] = 0.9
    return np.clip(img, 0, 1).astype(np.float32)


def wall_texture(rng, style: str, color: np.ndarray) -> np.ndarray:
    """`plain`: one flat colour; `plaster`: the basic room's mottled plaster; `wallpaper`: bold stripes."""
    if style == "plain":
        return np.full((4, 4, 3), color, np.float32)
    if style == "wallpaper":
        return stripes(rng, color, color * rng.uniform(0.55, 0.75), 128, int(rng.integers(4, 9)))
    return plaster(rng, color, 128, 0.25)


def make_room(seed: int = 0, objects: str = "basic", walls: str = "plaster") -> Room:
    """Build the room for `seed` (size, layout, colours and textures all follow from it).

    objects: "basic" (the demo room's 11 classes) or "rich" (25 classes: a bookcase with books, mugs, bottles,
        bowls, vases, balls, teddies, a desk lamp with a thin pole, stools and chairs with thin legs, pillows,
        a rug, a door, a window and a clock).
    walls: "plaster" (mottled, the demo room's), "plain" (one flat colour, untextured), "wallpaper" (stripes),
        or "random" (one of the three, chosen by the seed).
    With objects="basic" and walls="plaster" the room is exactly the one earlier versions made for `seed`;
    the other options draw their extras from a second random stream, so the layout stays that of `seed`.

    Example:
        >>> room = make_room(0)
        >>> sorted({p.class_id for p in room.parts})[:3]
        [1, 2, 3]
        >>> len({p.class_id for p in make_room(0, objects="rich").parts})
        25
    """
    if objects not in ("basic", "rich"):
        raise LabelfieldError(f"unknown room objects {objects!r} (choose basic or rich)")
    if walls not in WALL_STYLES:
        raise LabelfieldError(f"unknown wall style {walls!r} (choose from {', '.join(WALL_STYLES)})")
    rich = objects == "rich"
    extra_rng = np.random.default_rng([seed, 2])  # the options' own stream
    if walls == "random":
        walls = WALL_STYLES[int(extra_rng.integers(3))]
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
    parts.append(
        Part(
            "rect",
            rect_transform([0, 0, 0], ex, ey, L / 2, D / 2),
            floor_tex,
            CLASS_ID["floor"],
            fid,
            (L / 1.2, D / 1.2),
        )
    )
    ceil_tex = plaster(rng, np.array([0.9, 0.9, 0.88]), 128, 0.08)
    cid = new_instance("ceiling")
    parts.append(
        Part("rect", rect_transform([0, 0, H], ey, ex, D / 2, L / 2), ceil_tex, CLASS_ID["ceiling"], cid, (2.0, 2.0))
    )
    wall_col = [np.array([0.75, 0.72, 0.62]), np.array([0.62, 0.7, 0.72]), np.array([0.78, 0.66, 0.6])]
    wall_col = wall_col[rng.integers(len(wall_col))]
    wall_list = [  # (centre, along-wall axis u, inward normal n, half length)
        (np.array([0, D / 2, H / 2]), ex, -ey, L / 2),
        (np.array([0, -D / 2, H / 2]), -ex, ey, L / 2),
        (np.array([L / 2, 0, H / 2]), -ey, -ex, D / 2),
        (np.array([-L / 2, 0, H / 2]), ey, ex, D / 2),
    ]
    for k, (c, u, n, hl) in enumerate(wall_list):
        shade = wall_col * rng.uniform(0.92, 1.05)
        tex = plaster(rng, shade, 128, 0.25)  # drawn in every style, so the main stream stays the same
        if walls != "plaster":
            tex = wall_texture(extra_rng, walls, shade)
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
    if rich:
        small[3] = "shelf"
    rng.shuffle(big)
    rng.shuffle(small)
    slots = []
    for k, (c, u, n, _) in enumerate(wall_list):
        along = 1.5 if k < 2 else 1.0
        for s in (-1, 1):
            foot = c - np.array([0, 0, H / 2]) + s * along * u
            yaw = float(np.arctan2(n[1], n[0]))
            slots.append(((foot, u, n, yaw), k < 2))
    placed = []
    for place, is_long in slots:
        kind = big.pop() if is_long else small.pop()
        length = 2.2 if is_long else 1.0
        n_inst = 3 if kind == "table" else 1
        ids = [new_instance(kind if j == 0 else "chair") for j in range(n_inst)]
        thin = {"leg": 0.018} if rich and kind == "table" else {}  # thin chair legs in the rich room
        parts += BUILDERS[kind](rng, place, length, ids, **thin)
        placed.append((kind, place))

    # Pictures: one on each long wall, above the furniture, 1 cm proud of the wall.
    for c, u, n, _ in wall_list[:2]:
        pid = new_instance("picture")
        w, h = rng.uniform(0.45, 0.6), rng.uniform(0.3, 0.4)
        center = c + n * 0.012 + u * rng.uniform(-0.3, 0.3) + np.array([0, 0, rng.uniform(0.35, 0.5)])
        m = box_transform(center, (0.01, w, h), float(np.arctan2(n[1], n[0])))
        parts.append(Part("box", m, painting(rng), CLASS_ID["picture"], pid))

    if rich:
        parts += rich_extras(extra_rng, placed, wall_list, (L, D, H), new_instance)

    # Cameras stay clear of furniture: long-wall items reach 1 m in, short-wall ones 0.6 m, plus a margin.
    free = (L / 2 - 1.0, D / 2 - 1.3)
    return Room(np.array([L, D, H]), parts, free, instances, objects)


WALL_STYLES = ("plain", "plaster", "wallpaper", "random")


def rich_extras(
    rng, placed: list[tuple[str, Place]], wall_list: list, size: tuple[float, float, float], new_instance
) -> list[Part]:
    """The rich room's small things: on the table, sofa, bed, cabinets and bookcase, in the corners, on the walls.

    `placed`: (kind, slot frame) of each furniture slot; `wall_list`: (centre, along axis, inward normal, half
    length) per wall, long walls first; `new_instance(name) -> id`.
    """
    L, D, _ = size
    parts: list[Part] = []
    for kind, place in placed:
        if kind == "table":  # table top 1.2 x 0.8 at z = 0.74: six things on eight spots
            spots = [(a, b) for a in (-0.45, -0.15, 0.15, 0.45) for b in (0.22, 0.55)]
            order = rng.permutation(len(spots))
            things = [
                ("lamp", small_desk_lamp),
                ("mug", small_mug),
                ("bowl", small_bowl),
                ("bottle", small_bottle),
                ("book", small_book_lying),
                ("mug", small_mug),
            ]
            for (name, build), k in zip(things, order):
                a, b = spots[k]
                parts += build(rng, place, a + rng.uniform(-0.03, 0.03), b, 0.74, new_instance(name))
        elif kind == "sofa":  # cushions against the back rest
            tex = fabric(rng, _colour(rng), 64)
            for a in (-0.6, 0.6):
                m = _part_box(place, a + rng.uniform(-0.1, 0.1), 0.31, 0.6, 0.2, 0.06, 0.15)
                parts.append(Part("box", m, tex, CLASS_ID["pillow"], new_instance("pillow")))
        elif kind == "bed":  # a pillow at the headboard end
            tex = fabric(rng, np.array([0.85, 0.85, 0.88]), 64)
            m = _part_box(place, -0.7, 0.5, 0.6, 0.15, 0.3, 0.06)
            parts.append(Part("box", m, tex, CLASS_ID["pillow"], new_instance("pillow")))
        elif kind == "cabinet":  # a vase on top (tall cabinets are 1.8 m)
            parts += small_vase(rng, place, rng.uniform(-0.2, 0.2), 0.25, 1.8, new_instance("vase"))
        elif kind == "shelf":  # books on three boards, a teddy, a vase, a bottle, a ball
            z = [zb + 0.01 for zb in SHELF_BOARDS]
            parts += books_row(rng, place, -0.42, 0.05, 0.18, z[0], new_instance)
            parts += small_toy(rng, place, 0.22, 0.18, z[0], new_instance("toy"), 0.9)
            parts += small_vase(rng, place, -0.25, 0.18, z[1], new_instance("vase"))
            parts += books_row(rng, place, -0.05, 0.42, 0.18, z[1], new_instance)
            parts += books_row(rng, place, -0.42, 0.1, 0.18, z[2], new_instance)
            parts += small_bottle(rng, place, 0.25, 0.18, z[2], new_instance("bottle"))
            parts += small_ball(rng, place, -0.2, 0.18, z[3], new_instance("ball"), 0.08)
            parts += small_mug(rng, place, 0.2, 0.18, z[3], new_instance("mug"))
    # Corners (free of furniture: long-wall items end 0.6 m before them, short-wall ones 1 m): a stool, a ball,
    # a teddy and a bowl on the floor, in a seeded order.
    corner_things = [("stool", small_stool), ("ball", small_ball), ("toy", small_toy), ("bottle", small_bottle)]
    order = rng.permutation(4)
    for (sx, sy), k in zip(((1, 1), (1, -1), (-1, 1), (-1, -1)), order):
        name, build = corner_things[k]
        origin = np.array([sx * (L / 2 - 0.3), sy * (D / 2 - 0.3), 0.0])
        place = (origin, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.pi / 2)
        parts += build(rng, place, 0.0, 0.0, 0.0, new_instance(name))
    # Rug on the floor in the middle (4 mm thick, under the cameras).
    m = box_transform(
        [rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.2), 0.004],
        (rng.uniform(0.9, 1.2), rng.uniform(0.6, 0.8), 0.004),
        rng.uniform(-0.3, 0.3),
    )
    parts.append(Part("box", m, stripes(rng, _colour(rng), _colour(rng), 128, 5), CLASS_ID["rug"], new_instance("rug")))

    # A door in the middle of one short wall, a window in the other, a clock high on a long wall.
    def wall_box(c, u, n, along: float, z: float, hw: float, hh: float) -> np.ndarray:  # 2 cm proud of the wall
        centre = c + n * 0.021 + u * along + np.array([0, 0, z - c[2]])
        return box_transform(centre, (0.02, hw, hh), float(np.arctan2(n[1], n[0])))

    short = [2, 3] if rng.random() < 0.5 else [3, 2]
    c, u, n, _ = wall_list[short[0]]
    door = wood_planks(rng, np.array([0.5, 0.35, 0.2]) * rng.uniform(0.6, 1.3), 64, planks=3)
    parts.append(Part("box", wall_box(c, u, n, 0.0, 1.0, 0.45, 1.0), door, CLASS_ID["door"], new_instance("door")))
    c, u, n, _ = wall_list[short[1]]
    parts.append(
        Part(
            "box", wall_box(c, u, n, 0.0, 1.45, 0.45, 0.5), window_view(rng), CLASS_ID["window"], new_instance("window")
        )
    )
    c, u, n, hl = wall_list[int(rng.integers(2))]
    along = rng.choice([-1, 1]) * rng.uniform(1.4, min(2.0, hl - 0.3))
    parts.append(
        Part("box", wall_box(c, u, n, along, 2.12, 0.14, 0.14), clock_face(), CLASS_ID["clock"], new_instance("clock"))
    )
    return parts
