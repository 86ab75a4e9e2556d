"""A real RTSP server on loopback for tests and benchmarks, serving real video from ../shared/data.

Run as a script by the *system* Python (Debian's python3-gi + gir1.2-gst-rtsp-server-1.0; the venv does
not need GStreamer's server bindings): `/usr/bin/python3 tests/rtsp_server.py --video V --port P`.
It prints `READY <port>` once it listens. `RtspServer` (imported by tests from the venv) launches that
process on a free port and can kill it (SIGKILL, like a camera losing power), pause it (SIGSTOP, like a
hung camera), and start it again on the same port.

Each client gets its own media pipeline (not shared), which plays the file from its start, looped, at
the requested frame rate, encoded with x264 (zero-latency tuning).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_PYTHON = os.environ.get("PIPELINE_GST_PYTHON", "/usr/bin/python3")
MOUNT = "/cam"


def _launch_line(video: str, fps: int, width: int | None) -> str:
    scale = f"videoscale ! video/x-raw,width={width},height={int(width * 3 / 4) // 2 * 2} ! " if width else ""
    return (f"( multifilesrc location=\"{video}\" loop=true ! decodebin ! videoconvert ! {scale}"
            f"videorate ! video/x-raw,framerate={fps}/1 ! "
            f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} threads=1 ! "
            "rtph264pay name=pay0 pt=96 config-interval=1 )")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True)
    ap.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--width", type=int, default=None, help="scale to this width (4:3), default: native size")
    args = ap.parse_args(argv)

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_launch_line(str(Path(args.video).resolve()), args.fps, args.width))
    factory.set_shared(False)
    server.get_mount_points().add_factory(MOUNT, factory)
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on 127.0.0.1:{args.port}", flush=True)
        return 1
    print(f"READY {server.get_bound_port()}", flush=True)
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    loop.run()
    return 0


def server_unavailable() -> str | None:
    """None when the system Python can run the server, else why not (for pytest.skip)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (set PIPELINE_GST_PYTHON)"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True, text=True)
    if probe.returncode != 0:
        return ("GStreamer RTSP server bindings missing for the system Python (make system-test-deps installs "
                f"gir1.2-gst-rtsp-server-1.0 python3-gi and GStreamer plugins): {probe.stderr.strip()[-200:]}")
    return None


class RtspServer:
    """One server process serving one video at rtsp://127.0.0.1:<port>/cam."""

    def __init__(self, video: str | Path, fps: int = 10, width: int | None = None, port: int = 0) -> None:
        self.video, self.fps, self.width, self.port = str(video), fps, width, port
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{MOUNT}"

    def start(self, timeout: float = 20.0) -> "RtspServer":
        cmd = [SYSTEM_PYTHON, str(Path(__file__).resolve()), "--video", self.video, "--port", str(self.port),
               "--fps", str(self.fps)] + (["--width", str(self.width)] if self.width else [])
        deadline = time.monotonic() + timeout
        while True:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         env={**os.environ, "GST_DEBUG": "0"})
            line = self.proc.stdout.readline().strip()  # blocks until READY/ERROR or the process exits
            if line.startswith("READY"):
                self.port = int(line.split()[1])
                self.starts += 1
                return self
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            self._reap()
            # Restarting on the same port right after a kill can race the kernel releasing it: retry.
            if time.monotonic() > deadline:
                raise RuntimeError(f"RTSP server did not start: {line} {err[-500:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: the stream vanishes mid-frame, the TCP connection is reset."""
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)  # in case it was paused
                self.proc.kill()
            self._reap()

    def pause(self) -> None:
        """SIGSTOP: the connection stays open but no data flows (a hung camera)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self) -> "RtspServer":
        self.kill()
        return self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            self.proc.wait()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
            self.proc = None

    def __enter__(self) -> "RtspServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
