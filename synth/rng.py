"""Deterministic random streams.

Every random draw in SynthCC comes from a numpy ``Generator`` seeded with a tuple of
integers ``(seed, stream, *indices)``. Streams are fixed integer constants (never
``hash()`` of a string, which is salted per process), so that one identity's or one
image's draws do not shift when another part of the generator changes.
"""

from __future__ import annotations

import numpy as np

# Stream ids. Append new ones; never renumber (that would change every data set).
IDENTITY = 1
OUTFIT = 2
OUTFIT_POOL = 3
CAMERA = 4
IMAGE = 5
SPLIT = 6
SCENE_LAYOUT = 7
SCENE_ROUTE = 8
SCENE_FRAME = 9
BACKGROUND = 10
SCENE_PEOPLE = 11
PERSON = 12  # v2 people sets: bodies keyed by (split code, index within the split)
WARDROBE = 13  # v2 people sets: a person's outfits, keyed like PERSON
ACCESSORY = 14  # v2 people sets: accessories a person keeps across outfits, keyed like PERSON
CAMERA_RANGE = 15  # v2 people sets: which cameras are near and which far
SCENE_OUTFIT_PLAN = 16  # scenes with an outfit seed: which outfit each walk wears, keyed by person

# Split codes for the v2 keys: a training body and a test body never share a key, whatever the set sizes.
SPLIT_TRAIN = 0
SPLIT_TEST = 1


def rng_for(seed: int, stream: int, *indices: int) -> np.random.Generator:
    """A Generator that depends only on ``seed``, ``stream`` and ``indices``."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng([int(seed), int(stream), *(int(i) for i in indices)])
