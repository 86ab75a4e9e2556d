"""Camera topology: which cameras see the same space at once, and how long walking between two takes.

The matcher asks it whether one person could be on camera `b` `dt` seconds after camera `a`
(`matcher.topology` in the config; see README "Matching through clothing changes").
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Transit:
    min_s: float = 0.0
    max_s: float | None = None


@dataclass
class Topology:
    """Which cameras see the same space at once, and how long walking between two cameras takes."""

    overlapping: set[frozenset[str]] = field(default_factory=set)
    transits: dict[frozenset[str], Transit] = field(default_factory=dict)
    default_min_transit_s: float = 0.0
    revisit_after_s: float | None = 600.0

    def overlap(self, a: str, b: str) -> bool:
        return a != b and frozenset((a, b)) in self.overlapping

    def transit_ok(self, a: str, b: str, dt: float) -> bool:
        """Can a person last seen on `a` appear on `b` `dt` seconds later?"""
        if a == b or self.overlap(a, b):
            return True
        t = self.transits.get(frozenset((a, b)), Transit(self.default_min_transit_s))
        if dt < t.min_s:
            return False
        if t.max_s is not None and dt > t.max_s:
            return self.revisit_after_s is not None and dt >= self.revisit_after_s
        return True


    def within_window(self, a: str, b: str, dt: float) -> bool:
        """Is a walk of `dt` seconds from camera `a` to camera `b` inside a configured transit window (a pair
        with both min_s and max_s)? Few people can be the one arriving then: matcher.window_threshold."""
        if a == b or self.overlap(a, b):
            return False
        t = self.transits.get(frozenset((a, b)))
        return t is not None and t.max_s is not None and t.min_s <= dt <= t.max_s


def topology_from_config(cfg) -> Topology:
    """pipeline.config.TopologyConfig -> Topology."""
    if cfg is None:
        return Topology()
    return Topology(
        overlapping={frozenset(p) for p in cfg.overlapping},
        transits={frozenset(t.cameras): Transit(t.min_s, t.max_s) for t in cfg.transits},
        default_min_transit_s=cfg.default_min_transit_s,
        revisit_after_s=cfg.revisit_after_s,
    )
