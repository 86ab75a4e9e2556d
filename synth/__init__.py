"""SynthCC: synthetic clothes-changing people (ReID crops with part masks) and multi-camera scenes.

Command line: ``python -m synth people|scenes --preset NAME --seed S --out DIR``; see synth/README.md.
Not needed at run time by the pipeline.
"""

from .body import BODY_FIELDS, HAIR_STYLES, Body, sample_body
from .outfit import Outfit, sample_outfit
from .presets import PEOPLE_PRESETS, SCENE_PRESETS, PeopleConfig, SceneConfig
from .render import LABELS, Pose, Sprite, render_person

__all__ = [
    "BODY_FIELDS", "HAIR_STYLES", "Body", "sample_body", "Outfit", "sample_outfit",
    "PEOPLE_PRESETS", "SCENE_PRESETS", "PeopleConfig", "SceneConfig",
    "LABELS", "Pose", "Sprite", "render_person",
]
