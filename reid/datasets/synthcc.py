"""SynthCC: the project's procedural clothes-changing set (written by `python -m synth people`).

Layout contract: LTCC naming `{pid:04d}_{clothes:02d}_c{cam:02d}_{idx:06d}.png` in train/query/test,
parts masks under masks/<split>/<same name>, and meta.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from reid.datasets.base import (DatasetLayoutError, EvalSplit, ReIDDataset, relabel_test_clothes, relabel_train,
                                require_dir, require_file)
from reid.datasets.ltcc import ALL_PROTOCOLS, parse_ltcc_style

LAYOUT = """  train/{pid:04d}_{clothes:02d}_c{cam:02d}_{idx:06d}.png   query/...   test/...
  masks/{train,query,test}/<same name>.png
  meta.json"""


def load_synthcc(root: str | Path) -> ReIDDataset:
    base = Path(root)
    for sub in ("train", "query", "test"):
        require_dir(base / sub, "synthcc", LAYOUT)
    meta_path = require_file(base / "meta.json", "synthcc", LAYOUT)
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetLayoutError(f"synthcc: {meta_path} is not valid JSON ({exc})") from exc

    def mask_of(path: str) -> str | None:
        p = Path(path)
        m = base / "masks" / p.parent.name / p.name
        return str(m) if m.is_file() else None

    # Cameras are kept as written; only equality matters to the protocols.
    raw_train = parse_ltcc_style(base / "train", "synthcc", 0)
    train, n_pids, n_clothes, pid2clothes = relabel_train(raw_train, mask_of)
    query, gallery = relabel_test_clothes(parse_ltcc_style(base / "query", "synthcc", 0),
                                          parse_ltcc_style(base / "test", "synthcc", 0), mask_of=mask_of)
    overlap = {r.pid for r in query + gallery} & {r[1] for r in raw_train}
    notes = [f"preset {meta.get('preset', '?')}, seed {meta.get('seed', '?')}, version {meta.get('version', '?')}"]
    if overlap:
        notes.append(f"WARNING: {len(overlap)} test identities also appear in train")
    return ReIDDataset("synthcc", str(base), train, n_pids, n_clothes, pid2clothes,
                       [EvalSplit("test", query, gallery, dict(ALL_PROTOCOLS))], selection="test/cloth_changing",
                       notes=notes)
