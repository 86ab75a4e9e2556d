"""Identity: the body parameters that clothes do not change.

A ``Body`` fixes height, build, limb and torso proportions, head size and shape, skin
tone, hair style and colour, a beard, and gait (stride, arm swing, lean, cadence).
Outfits (``synth.outfit``) are drawn from separate random streams, so nothing in an
outfit depends on the body and vice versa.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

HAIR_STYLES: tuple[str, ...] = ("bald", "buzz", "short", "medium", "long", "ponytail", "bun", "curly")

# Named natural hair colours (RGB in [0, 1]) and how often they are drawn.
_HAIR_COLOURS = np.array(
    [
        [0.06, 0.05, 0.05],  # black
        [0.20, 0.13, 0.08],  # dark brown
        [0.40, 0.26, 0.14],  # brown
        [0.78, 0.63, 0.38],  # blonde
        [0.55, 0.22, 0.10],  # red
        [0.55, 0.55, 0.55],  # grey
        [0.88, 0.87, 0.84],  # white
        [0.45, 0.12, 0.45],  # dyed
    ]
)
_HAIR_COLOUR_P = np.array([0.30, 0.25, 0.15, 0.10, 0.05, 0.08, 0.04, 0.03])

# Skin tones along a dark-to-light line, with a warm/cool undertone axis.
_SKIN_DARK = np.array([0.30, 0.19, 0.13])
_SKIN_LIGHT = np.array([0.96, 0.80, 0.70])
_SKIN_UNDERTONE = np.array([0.04, -0.01, -0.04])


@dataclass(frozen=True)
class Body:
    """Identity parameters. Ratios are fractions of the body height."""

    height_m: float
    leg_ratio: float  # hip height / height
    shoulder_ratio: float  # half shoulder width / height
    hip_ratio: float  # half hip width / height
    depth_ratio: float  # torso depth (chest/belly) / height, seen from the side
    arm_ratio: float  # arm length / height
    leg_thick: float  # thigh radius / height
    arm_thick: float  # upper-arm radius / height
    head_ratio: float  # head height / height
    head_aspect: float  # head width / head height
    neck_ratio: float
    skin_tone: float  # 0 dark .. 1 light
    skin_undertone: float  # -1 cool .. 1 warm
    hair_style: int  # index into HAIR_STYLES
    hair_rgb: tuple[float, float, float]
    hair_volume: float  # 0..1
    hair_length: float  # 0..1, for long / ponytail styles
    fringe: float  # 0 high forehead .. 1 low fringe
    beard: bool
    stride: float  # hip swing amplitude (radians)
    arm_swing: float  # shoulder swing amplitude (radians)
    lean: float  # forward torso lean (radians)
    cadence: float  # steps per second at normal speed

    @property
    def skin_rgb(self) -> np.ndarray:
        base = _SKIN_DARK + (_SKIN_LIGHT - _SKIN_DARK) * self.skin_tone
        return np.clip(base + _SKIN_UNDERTONE * self.skin_undertone, 0.0, 1.0)

    def vector(self) -> list[float]:
        """The true body-parameter vector written to meta.json (see ``BODY_FIELDS``)."""
        style = [1.0 if i == self.hair_style else 0.0 for i in range(len(HAIR_STYLES))]
        return [
            self.height_m,
            self.leg_ratio,
            self.shoulder_ratio,
            self.hip_ratio,
            self.depth_ratio,
            self.arm_ratio,
            self.leg_thick,
            self.arm_thick,
            self.head_ratio,
            self.head_aspect,
            self.neck_ratio,
            self.skin_tone,
            self.skin_undertone,
            *self.hair_rgb,
            self.hair_volume,
            self.hair_length,
            self.fringe,
            1.0 if self.beard else 0.0,
            self.stride,
            self.arm_swing,
            self.lean,
            self.cadence,
            *style,
        ]

    def to_json(self) -> dict:
        d = asdict(self)
        d["hair_style"] = HAIR_STYLES[self.hair_style]
        d["hair_rgb"] = [round(float(c), 6) for c in self.hair_rgb]
        return d


BODY_FIELDS: tuple[str, ...] = (
    "height_m",
    "leg_ratio",
    "shoulder_ratio",
    "hip_ratio",
    "depth_ratio",
    "arm_ratio",
    "leg_thick",
    "arm_thick",
    "head_ratio",
    "head_aspect",
    "neck_ratio",
    "skin_tone",
    "skin_undertone",
    "hair_r",
    "hair_g",
    "hair_b",
    "hair_volume",
    "hair_length",
    "fringe",
    "beard",
    "stride",
    "arm_swing",
    "lean",
    "cadence",
    *(f"hair_style_{s}" for s in HAIR_STYLES),
)

# Population (mean, std, lo, hi) of each continuous parameter.
_CONT: dict[str, tuple[float, float, float, float]] = {
    "height_m": (1.72, 0.10, 1.45, 2.00),
    "leg_ratio": (0.50, 0.025, 0.44, 0.56),
    "shoulder_ratio": (0.125, 0.013, 0.095, 0.16),
    "hip_ratio": (0.100, 0.012, 0.075, 0.13),
    "depth_ratio": (0.125, 0.020, 0.085, 0.18),
    "arm_ratio": (0.44, 0.015, 0.40, 0.48),
    "leg_thick": (0.050, 0.008, 0.034, 0.070),
    "arm_thick": (0.029, 0.005, 0.019, 0.042),
    "head_ratio": (0.130, 0.010, 0.110, 0.155),
    "head_aspect": (0.78, 0.05, 0.66, 0.90),
    "neck_ratio": (0.030, 0.007, 0.018, 0.045),
    "skin_undertone": (0.0, 0.5, -1.0, 1.0),
    "hair_volume": (0.5, 0.3, 0.0, 1.0),
    "hair_length": (0.5, 0.3, 0.0, 1.0),
    "fringe": (0.4, 0.3, 0.0, 1.0),
    "stride": (0.42, 0.07, 0.28, 0.58),
    "arm_swing": (0.38, 0.12, 0.10, 0.65),
    "lean": (0.05, 0.04, -0.04, 0.14),
    "cadence": (1.85, 0.15, 1.5, 2.2),
}


def sample_body(rng: np.random.Generator, distinct: float = 1.0) -> Body:
    """Draw one identity.

    ``distinct`` scales each continuous parameter's spread around the population mean:
    1.0 is a natural population; smaller values make identities harder to tell apart by
    body cues alone (categorical cues such as hair style are unaffected).
    """
    if distinct <= 0:
        raise ValueError(f"body distinctness must be > 0, got {distinct}")
    vals: dict[str, float] = {}
    for name, (mean, std, lo, hi) in _CONT.items():
        vals[name] = float(np.clip(mean + distinct * std * rng.standard_normal(), lo, hi))
    skin_tone = float(np.clip(0.5 + distinct * (rng.uniform(0.0, 1.0) - 0.5), 0.0, 1.0))
    style = int(rng.choice(len(HAIR_STYLES), p=[0.05, 0.12, 0.22, 0.16, 0.17, 0.12, 0.06, 0.10]))
    colour_idx = int(rng.choice(len(_HAIR_COLOURS), p=_HAIR_COLOUR_P))
    hair = np.clip(_HAIR_COLOURS[colour_idx] * rng.uniform(0.85, 1.15) + rng.normal(0, 0.02, 3), 0.0, 1.0)
    beard = bool(style in (0, 1, 2, 7) and rng.uniform() < 0.3)
    return Body(
        skin_tone=skin_tone,
        hair_style=style,
        hair_rgb=(float(hair[0]), float(hair[1]), float(hair[2])),
        beard=beard,
        **vals,
    )
