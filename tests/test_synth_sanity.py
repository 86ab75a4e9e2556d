"""SynthCC is hard in the right way: clothing colour fails cloth-changing queries, body cues do not."""

from __future__ import annotations

from pathlib import Path

from synth.people import generate_people
from synth.presets import PEOPLE_PRESETS
from synth.sanity import MATCHERS, format_table, run_sanity


def test_colour_matcher_collapses_on_cloth_changing_body_matcher_does_not(tmp_path: Path) -> None:
    generate_people(PEOPLE_PRESETS["tiny"], 0, tmp_path, preset="tiny", log=lambda m: None)
    rows = run_sanity(tmp_path, matchers=(MATCHERS[1], MATCHERS[3]))
    table = format_table(rows)
    got = {(r["matcher"], r["mode"]): r for r in rows}
    colour, body = MATCHERS[1], MATCHERS[3]
    sc, cc = got[(colour, "same_clothes")], got[(colour, "cloth_changing")]
    assert sc["n_valid"] > 0 and cc["n_valid"] > 0, table
    assert sc["rank1"] >= 50.0, table
    assert sc["rank1"] - cc["rank1"] >= 30.0, table
    for mode in ("general", "same_clothes", "cloth_changing"):
        assert got[(body, mode)]["rank1"] == 100.0, table
