"""Make the README's dashboard screenshots: run the demo's two cameras (paced in real time) with the dashboard
on, open each page in Debian's headless chromium (Selenium + chromium-driver) and save docs/dashboard-*.png.

    .venv/bin/python docs/screenshots.py [--seconds 40] [--out docs]

Needs the shared videos and models (as `make run`) and the Debian packages chromium and chromium-driver
(`make test` installs them)."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
VIDEOS = PROJECT.parent / "shared" / "data" / "videos"


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, fn, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            if fn():
                return
        except Exception as exc:  # not up yet (connection refused, page not rendered): try again, say it at the end
            last_error = exc
        time.sleep(0.5)
    why = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
    raise SystemExit(f"error: timed out waiting for {what}{why}")


def _save_small(png: bytes, path: Path, width: int = 1100, colours: int = 128) -> None:
    """Scaled and palette-quantised: a README picture, not a 1 MB photo."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    img.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=40.0, help="let the cameras run this long first")
    ap.add_argument("--out", default=str(PROJECT / "docs"))
    args = ap.parse_args()
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        print("error: install the Debian packages chromium and chromium-driver", file=sys.stderr)
        return 2
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    port = _free_port()
    work = Path(tempfile.mkdtemp(prefix="dashboard-shots-"))
    cfg = work / "demo.yaml"
    cfg.write_text(
        "cameras:\n"
        f"  - {{id: room-mp4, source: {VIDEOS / 'one-by-one-person-detection.mp4'}, realtime: true}}\n"
        f"  - {{id: room-h264, source: {VIDEOS / 'people-detection.264'}, source_fps: 10, realtime: true}}\n"
        f"dashboard: {{port: {port}}}\noutput: {{video: false}}\n")
    run = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(cfg), "--output-dir", str(work / "out"),
                            "--no-progress"], cwd=PROJECT, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    drv = None
    try:
        _wait("the dashboard", lambda: all(c["has_frame"] for c in _get(base + "/api/cameras")["cameras"]), 120)
        time.sleep(args.seconds)
        opts = webdriver.ChromeOptions()
        opts.binary_location = browser
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1400,1000", "--hide-scrollbars"):
            opts.add_argument(a)
        drv = webdriver.Chrome(service=Service(driver), options=opts)
        for page, ready in (("cameras", "document.querySelectorAll('.camera img[data-loaded]').length >= 2"),
                            ("identities", "document.querySelectorAll('img.snapshot').length >= 1"),
                            ("events", "document.querySelectorAll('#event-rows tr.live').length >= 3")):
            drv.get(f"{base}/{page}")
            _wait(f"the {page} page", lambda: drv.execute_script("return " + ready), 60)
            time.sleep(1.0)
            _save_small(drv.get_screenshot_as_png(), out / f"dashboard-{page}.png")
            print(out / f"dashboard-{page}.png")
    finally:
        if drv is not None:
            drv.quit()
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
        run.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
