"""The hostile cases of issue 13, reproduced against a source tree: one row per case, what happened.

    PIPELINE_MODELS=../shared/models .venv/bin/python benchmarks/runtime_faults.py [--tree DIR] [--cases 1,2,...]

`--tree` is the checkout whose `python -m pipeline` is run (default: this one); point it at a copy of an
older commit to measure "before". Every case uses real parts: redis-server processes started here on
loopback ports, the pipeline as a subprocess on the PETS video from ../shared/data, real signals.

Cases (issue 13): 1 store frozen (SIGSTOP 10 s) mid-run; 2 OOM / READONLY / MISCONF mid-run; 3 the embedded
server and Ctrl-C, a follower that started it, an orphan after SIGKILL; 4 redaction of tricky URLs;
5 configs `validate` accepts that `run` rejects; 6 a store that comes back empty; 7 `[...]` in user text;
8 `events --follow` when the run ends, and the time a reader of the embedded store takes to exit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# One list of tricky URLs, one way to find a store's server and to read the metrics: the tests'.
from tests.test_embedded_store import _server_pids as _redis_pids_under  # noqa: E402
from tests.test_redact import TRICKY  # noqa: E402
from tests.test_runtime_faults import _scrape  # noqa: E402

SHARED = Path(os.environ.get("CCREID_SHARED", ROOT.parent / "shared"))
PETS = SHARED / "data" / "pets09-s2l1" / "vtest.avi"
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A plain redis-server on a loopback port (no pipeline code involved)."""

    def __init__(self, folder: Path, port: int | None = None, persist: bool = False) -> None:
        self.folder, self.port, self.persist = folder, port or free_port(), persist
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder),
             "--appendonly", "yes" if persist else "no", "--enable-protected-configs", "yes",
             "--logfile", str(folder / "redis.log")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


class Tree:
    def __init__(self, path: Path, work: Path) -> None:
        self.path, self.work = path, work
        self.env = {**os.environ, "PIPELINE_MODELS": str(SHARED / "models"), "PYTHONUNBUFFERED": "1"}

    def cmd(self, *args) -> list[str]:
        return [PY, "-m", "pipeline", *map(str, args)]

    def run(self, *args, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(self.cmd(*args), cwd=self.path, env=self.env, capture_output=True, text=True,
                                  timeout=timeout, **kw)
        except subprocess.TimeoutExpired as exc:  # its output comes as bytes, whatever `text` said
            text = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")  # noqa: E731
            return subprocess.CompletedProcess(exc.cmd, "timeout", text(exc.stdout), text(exc.stderr))

    def popen(self, *args, **kw) -> subprocess.Popen:
        # SIGINT as a terminal's Ctrl-C finds it: a process started in the background of a shell inherits
        # SIGINT ignored, and Python would then never raise KeyboardInterrupt.
        return subprocess.Popen(self.cmd(*args), cwd=self.path, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)

    def config(self, name: str, text: str) -> Path:
        path = self.work / f"{name}.yaml"
        path.write_text(text)
        return path


def _traceback(text: str) -> bool:
    return "Traceback (most recent call last)" in (text or "")


def _wait_frames(port: int, proc: subprocess.Popen, n: int, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            got = _scrape(port)
            if got.get("frames", 0) >= n:
                return got
        except OSError:
            pass  # the metrics server is not listening yet: poll again until the deadline
        time.sleep(0.1)
    raise RuntimeError(f"run did not reach {n} frames: rc {proc.poll()}")


def _events(client: redis.Redis, stream: str = "pipeline:events") -> tuple[list[dict], int]:
    seen, order, repeats = set(), [], 0
    for _, f in client.xrange(stream):
        e = json.loads(f[b"json"])
        if e["event_id"] in seen:
            repeats += 1
            continue
        seen.add(e["event_id"])
        order.append(e)
    return order, repeats


def _lost(events: list[dict]) -> int:
    """Tracks that started without ending (a run that drained ends every track it started)."""
    started = {e["tracklet_id"] for e in events if e["type"] == "track.started"}
    ended = {e["tracklet_id"] for e in events if e["type"] == "track.ended"}
    return len(started - ended)


def _one_camera(tree: Tree, name: str, store: str, port: int | None = None, extra: str = "") -> Path:
    metrics = f"metrics: {{port: {port}}}\n" if port else ""
    return tree.config(name, f"cameras: [{{id: pets, source: {PETS}}}]\nstore: {store}\noutput: {{video: false}}\n"
                             f"events: {{drain_timeout_s: 20}}\n{metrics}{extra}")


# -- case 1 ---------------------------------------------------------------------------------------------
def case_frozen_store(tree: Tree) -> list[str]:
    srv = Server(tree.work / "c1-redis")
    port = free_port()
    cfg = _one_camera(tree, "c1", srv.url, port)
    proc = tree.popen("run", cfg, "--max-frames", 450, "--output-dir", tree.work / "c1", "--no-progress")
    try:
        start = _wait_frames(port, proc, 60)
        t0 = time.monotonic()
        time.sleep(5)
        before = _scrape(port)["frames"] - start["frames"]
        rate = before / (time.monotonic() - t0)
        os.kill(srv.proc.pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        f0, up_samples = _scrape(port)["frames"], []
        while time.monotonic() - t_stop < 10:
            time.sleep(0.5)
            s = _scrape(port)
            up_samples.append((round(time.monotonic() - t_stop, 1), s.get("up")))
        during = _scrape(port)["frames"] - f0
        os.kill(srv.proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=400)
        events, repeats = _events(srv.client)
        up_for = max([t for t, u in up_samples if u == 1.0], default=0.0)
        return [f"SIGSTOP 10 s after frame {int(f0)}: {int(during)} frames processed while frozen, "
                f"{during / 10:.1f} fps vs {rate:.1f} before ({100 * during / 10 / max(rate, 1e-9):.0f} %); "
                f"pipeline_store_up read 1 until {up_for:.1f} s into the freeze; exit {proc.returncode}; "
                f"{_lost(events)} tracks without track.ended, {repeats} repeats"]
    finally:
        if proc.poll() is None:
            proc.kill()
        srv.stop()


# -- case 2 ---------------------------------------------------------------------------------------------
def _fault_mid_run(tree: Tree, name: str, start_fault, end_fault, hold_s: float = 6.0) -> str:
    srv = Server(tree.work / f"{name}-redis")
    port = free_port()
    cfg = _one_camera(tree, name, srv.url, port)
    out_dir = tree.work / name
    proc = tree.popen("run", cfg, "--max-frames", 300, "--output-dir", out_dir, "--no-progress")
    try:
        _wait_frames(port, proc, 60)
        start_fault(srv)
        time.sleep(hold_s)
        end_fault(srv)
        out, err = proc.communicate(timeout=400)
        events, _ = _events(srv.client)
        undelivered = out_dir / "undelivered_events.jsonl"
        return (f"exit {proc.returncode}{', traceback' if _traceback(err) else ''}; "
                f"{'undelivered file' if undelivered.exists() else 'no undelivered file'}; "
                f"{_lost(events)} tracks without track.ended in the store")
    finally:
        if proc.poll() is None:
            proc.kill()
        srv.stop()


def case_store_errors(tree: Tree) -> list[str]:
    def oom_on(s):
        s.client.config_set("maxmemory-policy", "noeviction")
        s.client.config_set("maxmemory", "1")

    def oom_off(s):
        s.client.config_set("maxmemory", "0")

    def ro_on(s):
        s.client.replicaof("127.0.0.1", str(free_port()))  # nothing listens there: a replica that keeps its data

    def ro_off(s):
        s.client.replicaof("NO", "ONE")

    def misconf_on(s):
        # An RDB save that cannot write (the disk full under the embedded store): writes are refused (MISCONF).
        s.client.config_set("save", "3600 1")
        s.dir = s.client.config_get("dir")["dir"]
        s.client.config_set("dir", "/proc")
        s.client.bgsave()

    def misconf_off(s):
        s.client.config_set("dir", s.dir)
        s.client.bgsave()
        time.sleep(0.5)
        s.client.config_set("save", "")

    return [f"OOM (maxmemory 1, noeviction, 6 s): {_fault_mid_run(tree, 'c2-oom', oom_on, oom_off)}",
            f"READONLY (REPLICAOF an absent primary, 6 s): {_fault_mid_run(tree, 'c2-ro', ro_on, ro_off)}",
            f"MISCONF (RDB save fails, 6 s): {_fault_mid_run(tree, 'c2-misconf', misconf_on, misconf_off)}"]


# -- case 3 ---------------------------------------------------------------------------------------------
def _embedded_cfg(tree: Tree, name: str) -> Path:
    return tree.config(name, f"cameras: [{{id: pets, source: {PETS}}}]\noutput: {{video: false}}\n"
                             "events: {drain_timeout_s: 5}\n")


def _stored_events(tree: Tree, cfg: Path, out: Path) -> tuple[list[dict], str]:
    r = tree.run("events", "--config", cfg, "--output-dir", out, "--from-start", timeout=60)
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")], r.stderr


def case_embedded_owner(tree: Tree) -> list[str]:
    rows = []
    # a. Ctrl-C in the terminal: SIGINT to the run's whole process group.
    cfg = _embedded_cfg(tree, "c3a")
    out = tree.work / "c3a"
    proc = tree.popen("run", cfg, "--output-dir", out, "--no-progress", start_new_session=True)
    time.sleep(14)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    events, _ = _stored_events(tree, cfg, out)
    undelivered = out / "undelivered_events.jsonl"
    n_und = len(undelivered.read_text().splitlines()) if undelivered.exists() else 0
    rows.append(f"Ctrl-C (SIGINT to the process group): exit {proc.returncode}; {n_und} events undelivered; "
                f"{_lost(events)} tracks without track.ended in the store")
    # b. A follower starts the embedded server first, a run adopts it, the follower is stopped.
    cfg = _embedded_cfg(tree, "c3b")
    out = tree.work / "c3b"
    (out / "store").mkdir(parents=True)
    follower = tree.popen("events", "--config", cfg, "--output-dir", out, "--follow", start_new_session=True)
    time.sleep(3)
    run = tree.popen("run", cfg, "--max-frames", 250, "--output-dir", out, "--no-progress")
    time.sleep(14)
    os.killpg(follower.pid, signal.SIGINT)
    follower.communicate(timeout=60)
    _, err = run.communicate(timeout=300)
    undelivered = out / "undelivered_events.jsonl"
    rows.append(f"follower started the server, run adopted it, follower Ctrl-C'd: run exit {run.returncode}"
                f"{', traceback' if _traceback(err) else ''}; "
                f"{'undelivered file' if undelivered.exists() else 'no undelivered file'}")
    # c. A run is SIGKILLed: its server is orphaned; the next run of the same config.
    cfg = _embedded_cfg(tree, "c3c")
    out = tree.work / "c3c"
    proc = tree.popen("run", cfg, "--output-dir", out, "--no-progress")
    time.sleep(12)
    proc.kill()
    proc.wait()
    orphans = _redis_pids_under(out / "store")
    again = tree.run("run", cfg, "--max-frames", 20, "--output-dir", out, "--no-progress", timeout=200)
    left = _redis_pids_under(out / "store")
    rows.append(f"run SIGKILLed: {len(orphans)} redis-server left running; next run exit {again.returncode}, "
                f"said {'something' if 'orphan' in again.stderr.lower() or 'left running' in again.stderr else 'nothing'}"
                f" about it; {len(left)} redis-server still running after it "
                f"({'the orphan' if set(left) & set(orphans) else 'none of them the orphan'})")
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return rows


# -- case 4 ---------------------------------------------------------------------------------------------
TRICKY_URLS = TRICKY[:17]  # (text, secret): the 17 the reviewer tried; tests/test_redact.py adds more


def case_redaction(tree: Tree) -> list[str]:
    code = ("import json, sys; import pipeline.redact as r\n"
            "f = getattr(r, 'redact', None) or r.redact_text\n"
            "print(json.dumps([f(t) for t in json.load(sys.stdin)]))")
    r = subprocess.run([PY, "-c", code], cwd=tree.path, input=json.dumps([t for t, _ in TRICKY_URLS]),
                       capture_output=True, text=True, env=tree.env)
    outs = json.loads(r.stdout)
    leaks = [f"{t} -> {o}" for (t, secret), o in zip(TRICKY_URLS, outs)
             if any(part in o for part in re.split(r"[/@#?]", secret) if len(part) >= 3)]
    rows = [f"{len(leaks)} of {len(TRICKY_URLS)} tricky URLs leak a secret through the redaction"] + leaks
    # The same URLs as camera sources: what `validate` prints about them (a config error names the source).
    printed = []
    for i, (text, secret) in enumerate(TRICKY_URLS):
        url = text.split("'")[1] if "'" in text else text
        cfg = tree.config(f"c4-{i}", f"cameras: [{{id: cam, source: '{url}'}}]\nstore: 'redis://127.0.0.1:1/0'\n")
        r = tree.run("validate", cfg, timeout=60)
        said = r.stdout + r.stderr
        if any(part in said for part in re.split(r"[/@#?]", secret) if len(part) >= 3):
            printed.append(f"{url} -> {said.strip()[-160:]}")
    rows.append(f"{len(printed)} of {len(TRICKY_URLS)} leak as camera sources through `validate`")
    return rows + printed


# -- case 5 ---------------------------------------------------------------------------------------------
def case_validate_run(tree: Tree) -> list[str]:
    not_a_model = tree.work / "notes.onnx"
    not_a_model.write_text("this is a text file, not a model\n")
    base = f"cameras: [{{id: pets, source: {PETS}}}]\noutput: {{video: false}}\n"
    cams = lambda extra: f"cameras: [{{id: pets, source: {PETS}{extra}}}]\noutput: {{video: false}}\n"  # noqa: E731
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    configs = {
        "fps .inf": cams(", fps: .inf").replace("video: false", "video: true"),
        "store port 99999": base + "store: redis://127.0.0.1:99999/0\n",
        "events.maxlen 1e20": base + "events: {maxlen: 100000000000000000000}\n",
        "metrics host unresolvable": base + "metrics: {port: 0, host: no-such-host.invalid}\n",
        "tracker param wrong type": base + "tracker: {params: {track_buffer: many}}\n",
        "text file as reid model": base + f"reid: {{model: {not_a_model}}}\n",
        "retention_s .inf": base + "matcher: {retention_s: .inf}\n",
        "fps 1e-300": cams(", fps: 1.0e-300"),
        "metrics port in use": base + f"metrics: {{port: {busy.getsockname()[1]}}}\n",
        "camera read_timeout_s .nan": cams(", read_timeout_s: .nan"),
        "matcher.top_k 10**12": base + "matcher: {top_k: 1000000000000}\n",
    }
    rows, bad = [], 0
    for name, text in configs.items():
        cfg = tree.config("c5-" + name.replace(" ", "_").replace("*", ""), text)
        v = tree.run("validate", cfg, timeout=60)
        r = tree.run("run", cfg, "--max-frames", 5, "--output-dir", tree.work / "c5", "--no-progress", timeout=90)
        ok = v.returncode == r.returncode == 2 and not _traceback(r.stderr)
        bad += not ok
        rows.append(f"{name}: validate {v.returncode}, run {r.returncode}"
                    f"{' (traceback)' if _traceback(r.stderr) else ''}")
    busy.close()
    # Non-UTF-8 config, --output-dir a file, bad events --store URLs.
    raw = tree.work / "c5-latin1.yaml"
    raw.write_bytes(f"# caf\xe9\n{base}".encode("latin-1"))
    v, r = tree.run("validate", raw, timeout=60), tree.run("run", raw, "--max-frames", 2, timeout=90)
    bad += not (v.returncode == r.returncode == 2 and not _traceback(v.stderr + r.stderr))
    rows.append(f"non-UTF-8 config: validate {v.returncode}{' (traceback)' if _traceback(v.stderr) else ''}, "
                f"run {r.returncode}{' (traceback)' if _traceback(r.stderr) else ''}")
    afile = tree.work / "c5-a-file"
    afile.write_text("x")
    cfg = tree.config("c5-ok", base)
    r = tree.run("run", cfg, "--max-frames", 2, "--output-dir", afile, timeout=90)
    bad += not (r.returncode == 2 and not _traceback(r.stderr))
    rows.append(f"--output-dir a file: run {r.returncode}{' (traceback)' if _traceback(r.stderr) else ''}")
    for url in ("redis://127.0.0.1:99999/0", "redis://[::1/0", "redis://127.0.0.1:6379/notadb"):
        r = tree.run("events", "--store", url, timeout=30)
        bad += not (r.returncode == 2 and not _traceback(r.stderr))
        rows.append(f"events --store {url}: exit {r.returncode}{' (traceback)' if _traceback(r.stderr) else ''}")
    # SIGHUP while running, with the config rewritten as non-UTF-8.
    port = free_port()
    cfg = tree.config("c5-hup", base + f"metrics: {{port: {port}}}\n")
    proc = tree.popen("run", cfg, "--max-frames", 200, "--output-dir", tree.work / "c5-hup", "--no-progress")
    _wait_frames(port, proc, 10)  # running: the reload is what is tested, not a signal during start-up
    cfg.write_bytes(f"# caf\xe9\n{base}".encode("latin-1"))
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=300)
    bad += not (proc.returncode == 0)
    rows.append(f"SIGHUP with a non-UTF-8 config: run exit {proc.returncode}"
                f"{' (traceback)' if _traceback(err) else ''}")
    return [f"{bad} of {len(rows)} inputs not answered by exit 2 (SIGHUP: 0) without a traceback"] + rows


# -- case 6 ---------------------------------------------------------------------------------------------
def case_store_reset(tree: Tree) -> list[str]:
    srv = Server(tree.work / "c6-redis")
    port = free_port()
    cfg = _one_camera(tree, "c6", srv.url, port, extra="matcher: {min_crops: 1}\n")
    proc = tree.popen("run", cfg, "--max-frames", 400, "--output-dir", tree.work / "c6", "--no-progress")
    try:
        _wait_frames(port, proc, 150)
        first, _ = _events(srv.client)
        srv_port = srv.port
        srv.stop()  # a store without persistence restarts empty
        srv = Server(tree.work / "c6-redis2", port=srv_port)
        out, err = proc.communicate(timeout=400)
        second, _ = _events(srv.client)
    finally:
        if proc.poll() is None:
            proc.kill()
        srv.stop()
    created_before = {e["identity_id"] for e in first if e["type"] == "identity.created"}
    created_after = [e["identity_id"] for e in second if e["type"] == "identity.created"]
    reused = sorted(created_before & set(created_after))
    resets = [e for e in second if e["type"] == "store.reset"]
    return [f"store restarted empty after frame ~150: {len(created_before)} identities created before, "
            f"{len(created_after)} after; ids created again for other people: {reused or 'none'}; "
            f"store.reset events: {len(resets)}; exit {proc.returncode}"]


# -- case 7 ---------------------------------------------------------------------------------------------
def case_markup(tree: Tree) -> list[str]:
    cfg = tree.config("c7", f"cameras: [{{id: pets, source: {PETS}}}]\noutput: {{video: false}}\n")
    out = tree.work / "c7" / "[/x]"
    r = tree.run("run", cfg, "--max-frames", 3, "--output-dir", out, "--no-progress", timeout=120)
    broken = tree.work / "bad[gstreamer].mp4"
    broken.write_bytes(b"not a video" * 100)
    cfg2 = tree.config("c7b", f"cameras: [{{id: bad, source: '{broken}'}}]\noutput: {{video: false}}\n")
    r2 = tree.run("run", cfg2, "--output-dir", tree.work / "c7b", "--no-progress", timeout=120)
    return [f"--output-dir .../[/x]: exit {r.returncode}{' (traceback)' if _traceback(r.stderr) else ''}; "
            f"a failed camera whose path holds [gstreamer]: '[gstreamer]' "
            f"{'printed' if 'bad[gstreamer].mp4' in r2.stdout else 'missing'} in the summary"]


# -- case 8 ---------------------------------------------------------------------------------------------
def case_follow(tree: Tree) -> list[str]:
    rows = []
    for group in (False, True):
        cfg = _embedded_cfg(tree, f"c8{'g' if group else ''}")
        out = tree.work / f"c8{'g' if group else ''}"
        run = tree.popen("run", cfg, "--max-frames", 200, "--output-dir", out, "--no-progress")
        deadline = time.monotonic() + 120
        while not (out / "store" / "redis.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        args = ["events", "--config", cfg, "--output-dir", out, "--follow", "--from-start"]
        if group:
            args += ["--group", "g", "--consumer", "c1"]
        follower = tree.popen(*args, start_new_session=True)
        first = follower.stdout.readline()  # following the run's store while the run goes on
        during = run.poll() is None
        run.communicate(timeout=300)
        time.sleep(15)  # a client retrying a closed connection gives up within seconds
        alive = follower.poll() is None
        if alive:
            os.killpg(follower.pid, signal.SIGINT)
        fout, ferr = follower.communicate(timeout=60)
        what = ("still following" if alive else f"exited {follower.returncode}"
                + (f", traceback of {len(ferr.splitlines())} lines" if _traceback(ferr) else ""))
        if alive:
            what += f"; exit {follower.returncode} on Ctrl-C"
        rows.append(f"events --follow{' --group' if group else ''} (attached {'during' if during else 'AFTER'} "
                    f"the run, first line {'read' if first else 'missing'}) 15 s after the run ended: {what}")
        for pid in _redis_pids_under(out / "store"):
            os.kill(pid, signal.SIGKILL)
    cfg = _embedded_cfg(tree, "c8t")
    out = tree.work / "c8t"
    tree.run("run", cfg, "--max-frames", 5, "--output-dir", out, "--no-progress", timeout=120)
    t = time.monotonic()
    r = tree.run("identities", "--config", cfg, "--output-dir", out, "--json", timeout=60)
    took = time.monotonic() - t
    t = time.monotonic()
    r2 = tree.run("events", "--config", cfg, "--output-dir", out, "--from-start", timeout=60)
    took2 = time.monotonic() - t
    rows.append(f"reader of the embedded store: `identities` {took:.1f} s (exit {r.returncode}), "
                f"`events` {took2:.1f} s (exit {r2.returncode})")
    return rows


CASES = {1: case_frozen_store, 2: case_store_errors, 3: case_embedded_owner, 4: case_redaction,
         5: case_validate_run, 6: case_store_reset, 7: case_markup, 8: case_follow}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default=str(ROOT), help="source tree whose `python -m pipeline` runs")
    ap.add_argument("--cases", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    if not shutil.which("redis-server"):
        print("redis-server is needed", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="faults-"))
    tree = Tree(Path(args.tree).resolve(), work)
    print(f"tree {tree.path}; {platform.machine()}, {os.cpu_count()} cores; {date.today().isoformat()}; work {work}")
    for n in (int(c) for c in args.cases.split(",")):
        t = time.monotonic()
        try:
            rows = CASES[n](tree)
        except Exception as exc:  # a case that cannot be measured says why; the others still run
            rows = [f"could not measure: {type(exc).__name__}: {exc}"]
        for row in rows:
            print(f"| {n} | {row} |", flush=True)
        print(f"|   | ({time.monotonic() - t:.0f} s) |", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
