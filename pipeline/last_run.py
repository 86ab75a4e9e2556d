"""Where the last run of each config wrote its output (and its embedded store), so that `events`,
`identities` and `dashboard --config C` find it without `--output-dir`.

One small JSON file, `$XDG_STATE_HOME/ccreid-pipeline/last_runs.json` (default `~/.local/state/...`; the
folder can be set with `$PIPELINE_STATE_DIR`): resolved config path -> {output_dir, at}. It holds paths only,
never a store URL (which may carry a password); the store URL is read from the config itself.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("pipeline")
MAX_ENTRIES = 200


def state_file() -> Path:
    base = os.environ.get("PIPELINE_STATE_DIR")
    if base:
        return Path(base) / "last_runs.json"
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "ccreid-pipeline" / "last_runs.json"


def _key(config_path: str | Path) -> str:
    return str(Path(config_path).expanduser().resolve())


def record(config_path: str | Path, output_dir: str | Path) -> None:
    """Remember `output_dir` as the last run of `config_path` (best effort: a read-only home only loses this)."""
    path = state_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            runs = _read(path)
            runs[_key(config_path)] = {"output_dir": str(Path(output_dir).resolve()), "at": time.time()}
            if len(runs) > MAX_ENTRIES:
                runs = dict(sorted(runs.items(), key=lambda kv: kv[1].get("at", 0))[-MAX_ENTRIES:])
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(runs, indent=1))
            tmp.replace(path)
    except OSError as exc:
        log.debug("could not record the run's output dir in %s: %s", path, exc)


def output_dir_of_last_run(config_path: str | Path) -> Path | None:
    """The output dir the last run of this config used, when it still exists."""
    entry = _read(state_file()).get(_key(config_path))
    if not entry:
        return None
    out = Path(entry.get("output_dir", ""))
    return out if out.is_dir() else None


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
