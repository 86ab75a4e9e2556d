"""Model resolver: finds model files offline; never downloads.

Search order for a bare file name: the path as given, `$PIPELINE_MODELS`, `./models`, `../shared/models`
(from the working directory and from the project checkout), each searched recursively.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ModelNotFound(FileNotFoundError):
    pass


# Files the project builds from ../shared on this machine (never downloaded): how to make each.
BUILT_HERE = {
    "person-reidentification-retail-0288-224x112-int8.xml":
        "the default ReID model, built by `make install` (`make models/reid/person-reidentification-retail-0288-224x112-"
        "int8.xml`: Intel's 0288 from ../shared/models/reid at a 224x112 input, quantised to INT8 by `python -m reid "
        "export --input-size 224x112 --int8`)",
    "person-reidentification-retail-0288-int8.xml": "built by `make reid-0288-full` (0288 at its own 256x128, INT8)",
    "person-reidentification-retail-0267-int8.xml": "built by `make reid-int8`",
}


def search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("PIPELINE_MODELS"):
        dirs += [Path(p) for p in os.environ["PIPELINE_MODELS"].split(os.pathsep) if p]
    dirs += [Path("models"), Path("../shared/models"), PROJECT_ROOT / "models", PROJECT_ROOT.parent / "shared" / "models"]
    unique: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def resolve_model(name: str | Path) -> Path:
    """Return an existing file for `name`, or raise ModelNotFound saying where we looked."""
    given = Path(name).expanduser()
    if given.exists():
        return given.resolve()
    looked = []
    for base in search_dirs():
        direct = base / given
        if direct.exists():
            return direct.resolve()
        matches = sorted(base.rglob(given.name))
        if matches:
            return matches[0].resolve()
        looked.append(str(base))
    built = BUILT_HERE.get(given.name)
    raise ModelNotFound(
        f"model file {str(name)!r} not found (looked in: {', '.join(looked) or 'no model folders exist'}). "
        + (f"It is {built}; or name another model file. " if built else "")
        + "Put the file in ./models or a folder named by $PIPELINE_MODELS, or give its full path."
    )
