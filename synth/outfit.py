"""Outfits: garment types, colours and patterns, independent of the body.

Each identity wears several outfits. With probability ``share`` an outfit is taken
from a pool shared by all identities, so different people wear identical clothes
(the hard case for a colour matcher); otherwise it is drawn fresh. Outfits of one
identity are kept visibly different from each other (their top colours differ), so a
cloth-changing query really does change colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

TOP_TYPES = ("tshirt", "longsleeve", "tank")
TOP_PATTERNS = ("solid", "hstripes", "vstripes", "checks", "dots", "logo")
BOTTOM_TYPES = ("trousers", "shorts", "skirt")
BOTTOM_PATTERNS = ("solid", "denim", "checks", "hstripes")
SHOE_TYPES = ("shoes", "sneakers", "boots")
OUTER_TYPES = ("none", "jacket", "coat")
BAG_TYPES = ("none", "backpack", "shoulder")

# Garment colour palette (RGB in [0, 1]), roughly how often each appears in the street.
_PALETTE = np.array(
    [
        [0.08, 0.08, 0.09],  # black
        [0.92, 0.92, 0.90],  # white
        [0.50, 0.50, 0.52],  # grey
        [0.12, 0.16, 0.35],  # navy
        [0.20, 0.40, 0.78],  # blue
        [0.78, 0.14, 0.14],  # red
        [0.18, 0.45, 0.22],  # green
        [0.62, 0.56, 0.38],  # khaki
        [0.40, 0.26, 0.16],  # brown
        [0.85, 0.78, 0.62],  # beige
        [0.92, 0.80, 0.18],  # yellow
        [0.90, 0.55, 0.68],  # pink
        [0.42, 0.22, 0.55],  # purple
        [0.92, 0.48, 0.12],  # orange
        [0.10, 0.52, 0.55],  # teal
        [0.30, 0.42, 0.62],  # denim blue
    ]
)
_PALETTE_P = np.array([0.12, 0.08, 0.08, 0.07, 0.07, 0.06, 0.06, 0.06, 0.06, 0.06, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05])
_PALETTE_P = _PALETTE_P / _PALETTE_P.sum()

RGB = tuple[float, float, float]


def _dataclass_json(record) -> dict:
    """A dataclass as JSON: colour tuples become lists rounded to 6 places (stable metadata files)."""
    d = asdict(record)
    for k, v in d.items():
        if isinstance(v, tuple):
            d[k] = [round(float(c), 6) for c in v]
    return d


@dataclass(frozen=True)
class Outfit:
    uid: int  # global outfit id: equal uids mean identical clothes, even on different people
    top_type: str
    top_rgb: RGB
    top_rgb2: RGB  # second colour for patterns / logo
    top_pattern: str
    top_period: float  # pattern period in metres
    top_length: float  # hem below the waist, fraction of torso length
    bottom_type: str
    bottom_rgb: RGB
    bottom_rgb2: RGB
    bottom_pattern: str
    shoe_type: str
    shoe_rgb: RGB
    outer_type: str
    outer_rgb: RGB
    outer_open: bool
    bag_type: str
    bag_rgb: RGB
    fit: float  # garment radius / limb radius (looseness)

    def to_json(self) -> dict:
        return _dataclass_json(self)


def _colour(rng: np.random.Generator) -> RGB:
    base = _PALETTE[int(rng.choice(len(_PALETTE), p=_PALETTE_P))]
    c = np.clip(base * rng.uniform(0.85, 1.15) + rng.normal(0.0, 0.03, 3), 0.0, 1.0)
    return (float(c[0]), float(c[1]), float(c[2]))


def sample_outfit(rng: np.random.Generator, uid: int) -> Outfit:
    top_type = str(rng.choice(TOP_TYPES, p=[0.5, 0.38, 0.12]))
    outer_type = str(rng.choice(OUTER_TYPES, p=[0.70, 0.21, 0.09]))
    bottom_type = str(rng.choice(BOTTOM_TYPES, p=[0.72, 0.14, 0.14]))
    bottom_pattern = str(rng.choice(BOTTOM_PATTERNS, p=[0.55, 0.33, 0.06, 0.06]))
    bottom_rgb = _colour(rng)
    if bottom_pattern == "denim":
        bottom_rgb = (float(rng.uniform(0.12, 0.35)), float(rng.uniform(0.2, 0.42)), float(rng.uniform(0.4, 0.7)))
    return Outfit(
        uid=uid,
        top_type=top_type,
        top_rgb=_colour(rng),
        top_rgb2=_colour(rng),
        top_pattern=str(rng.choice(TOP_PATTERNS, p=[0.45, 0.15, 0.08, 0.12, 0.06, 0.14])),
        top_period=float(rng.uniform(0.04, 0.12)),
        top_length=float(rng.uniform(0.05, 0.35)),
        bottom_type=bottom_type,
        bottom_rgb=bottom_rgb,
        bottom_rgb2=_colour(rng),
        bottom_pattern=bottom_pattern,
        shoe_type=str(rng.choice(SHOE_TYPES, p=[0.45, 0.4, 0.15])),
        shoe_rgb=_colour(rng),
        outer_type=outer_type,
        outer_rgb=_colour(rng),
        outer_open=bool(rng.uniform() < 0.5),
        bag_type=str(rng.choice(BAG_TYPES, p=[0.6, 0.25, 0.15])),
        bag_rgb=_colour(rng),
        fit=float(rng.uniform(1.08, 1.35)),
    )


def visible_colour(o: Outfit) -> np.ndarray:
    """The dominant upper-body colour (outerwear if worn, else the top)."""
    return np.array(o.outer_rgb if o.outer_type != "none" else o.top_rgb)


def outfits_distinct(a: Outfit, b: Outfit, min_dist: float = 0.35) -> bool:
    """True when two outfits differ visibly in their upper-body colour."""
    return bool(np.linalg.norm(visible_colour(a) - visible_colour(b)) >= min_dist)


def grey_outfit(o: Outfit, grey: float = 0.5) -> Outfit:
    """The same garments (shapes, lengths, fit) painted one plain grey: no colour or pattern left.

    The top's pattern is kept with both colours grey (a logo is drawn as its own shape, which may stick out of
    the torso in side views, so dropping it would move mask pixels); denim's weave is dropped (colour only).
    """
    g = (grey, grey, grey)
    return replace(o, top_rgb=g, top_rgb2=g, bottom_rgb=g, bottom_rgb2=g, bottom_pattern="solid", shoe_rgb=g,
                   outer_rgb=g, bag_rgb=g)


def sample_wardrobes(
    n_people: int,
    per_person: int | Sequence[int],
    share: float,
    pool_size: int,
    rng_stream_person,
    rng_stream_pool,
) -> list[list[Outfit]]:
    """Outfits for ``n_people`` identities, ``per_person`` each (one count, or one per person).

    ``rng_stream_person(i)`` / ``rng_stream_pool(j)`` return the Generator for person i
    and pool outfit j. Pool outfits have uids 0..pool_size-1; fresh outfits get uids
    from pool_size upward in person order, so uids are stable for one seed.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"outfit share must be in [0, 1], got {share}")
    counts = [int(per_person)] * n_people if isinstance(per_person, (int, np.integer)) else [int(c) for c in per_person]
    if len(counts) != n_people:
        raise ValueError(f"per_person lists {len(counts)} counts for {n_people} people")
    if min(counts, default=1) < 1:
        raise ValueError(f"outfits per person must be >= 1, got {min(counts)}")
    pool = [sample_outfit(rng_stream_pool(j), uid=j) for j in range(pool_size)]
    next_uid = pool_size
    wardrobes: list[list[Outfit]] = []
    for i in range(n_people):
        rng = rng_stream_person(i)
        mine: list[Outfit] = []
        attempts = 0
        while len(mine) < counts[i]:
            attempts += 1
            if pool and attempts < 200 and rng.uniform() < share:
                cand = pool[int(rng.integers(len(pool)))]
            else:
                cand = sample_outfit(rng, uid=next_uid)
            # Keep one person's outfits apart; give up on the rule after many tries
            # (tiny pools) rather than loop forever.
            if attempts < 200 and not all(outfits_distinct(cand, m) for m in mine):
                continue
            if any(cand.uid == m.uid for m in mine):
                continue
            if cand.uid == next_uid:
                next_uid += 1
            mine.append(cand)
        wardrobes.append(mine)
    return wardrobes


@dataclass(frozen=True)
class Accessories:
    """What a person keeps whatever they wear (as real people keep their glasses and their bag)."""

    glasses: bool = False
    glasses_rgb: RGB = (0.05, 0.05, 0.06)
    bag_type: str = "none"  # one of BAG_TYPES; not "none" replaces every outfit's bag
    bag_rgb: RGB = (0.0, 0.0, 0.0)

    def to_json(self) -> dict:
        return _dataclass_json(self)


def sample_accessories(rng: np.random.Generator, p: float) -> Accessories:
    """Glasses with probability p, and (independently) one own bag with probability p."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"accessory probability must be in [0, 1], got {p}")
    # Every draw is made whatever p is, so changing p never shifts the other draws of this person.
    u_glasses, u_bag = rng.uniform(), rng.uniform()
    frame = np.clip(np.array([0.05, 0.05, 0.06]) + rng.uniform(0.0, 0.35) * rng.uniform(0, 1, 3), 0.0, 1.0)
    bag_type = str(rng.choice(BAG_TYPES[1:]))
    bag_rgb = _colour(rng)
    return Accessories(
        glasses=bool(u_glasses < p),
        glasses_rgb=(float(frame[0]), float(frame[1]), float(frame[2])),
        bag_type=bag_type if u_bag < p else "none",
        bag_rgb=bag_rgb,
    )
