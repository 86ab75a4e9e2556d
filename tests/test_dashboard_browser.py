"""The dashboard in a real headless Chromium (issue 18): the pipeline runs two real videos (paced in real time,
as live cameras) with `dashboard: {port}`; the cameras page shows both cameras with a frame, the identities
page shows a snapshot, the events page receives a new event over SSE while it is open.

Browser: Debian's `chromium` driven through Debian's `chromium-driver` (Selenium); `make test` installs both.
A missing browser fails the test, naming the packages (it never skips)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from pipeline.redis_server import free_port

CHROMIUM, CHROMEDRIVER = "chromium", "chromedriver"


def browser_paths() -> tuple[str, str]:
    """Debian's chromium and chromedriver; fails the test, naming the packages, when they are missing."""
    browser, driver = shutil.which(CHROMIUM), shutil.which(CHROMEDRIVER)
    if browser is None or driver is None:
        pytest.fail("headless browser missing: install the Debian packages `chromium` and `chromium-driver` "
                    "(`make test` does: apt-get install chromium chromium-driver)", pytrace=False)
    return browser, driver


def chromium_driver(width: int = 1280, height: int = 900):
    """A headless Chromium (Debian's packages) under Selenium."""
    browser, driver = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _until(what: str, fn, timeout: float = 30.0, every: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.mark.slow
def test_dashboard_pages_in_chromium(tmp_path, shared_video, shared_models):
    browser_paths()  # before starting anything
    port = free_port()
    cfg = tmp_path / "cams.yaml"
    cfg.write_text(
        f"cameras:\n  - {{id: pets, source: {shared_video['pets']}, realtime: true}}\n"
        f"  - {{id: room, source: {shared_video['room_h264']}, source_fps: 10, fps: 5, realtime: true}}\n"
        f"dashboard: {{port: {port}, frame_fps: 4}}\nmatcher: {{min_crops: 2}}\noutput: {{video: false}}\n")
    run = subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(cfg), "--max-frames", "600",
                            "--output-dir", str(tmp_path / "out"), "--no-progress"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    browser = None
    try:
        # the run is up, and both cameras have a live frame
        _until("both cameras' frames", lambda: run.poll() is None and sum(
            c["has_frame"] for c in _get(base + "/api/cameras")["cameras"]) == 2, timeout=120)
        browser = chromium_driver()
        browser.set_page_load_timeout(30)

        browser.get(base + "/cameras")
        loaded_cards = ("return [...document.querySelectorAll('.camera')].filter(c => {const i = c.querySelector('img');"
                        " return i.complete && i.naturalWidth > 0 && i.dataset.loaded}).map(c => c.dataset.camera)")
        # wait for *both* cards: the cameras' first frames load independently, so one card alone is not yet a pass
        # (waiting for any non-empty list made CI fail whenever pets' frame arrived before room's)
        shown = _until("both camera cards with a loaded frame",
                       lambda: (lambda cams: cams if len(cams) == 2 else None)(browser.execute_script(loaded_cards)))
        assert sorted(shown) == ["pets", "room"]
        states = browser.execute_script("return [...document.querySelectorAll('.camera .state')].map(s => s.textContent)")
        assert set(states) == {"streaming"}

        browser.get(base + "/identities")
        snaps = _until("a snapshot in the gallery", lambda: browser.execute_script(
            "return [...document.querySelectorAll('.identity img.snapshot')].filter(i => i.complete && "
            "i.naturalWidth > 0).length"), timeout=40)
        assert snaps >= 1
        summary = browser.find_element("id", "identities-summary").text
        assert summary.split()[0].isdigit() and summary.split()[1] == "identities", summary

        browser.get(base + "/events")
        _until("the event table", lambda: browser.execute_script(
            "return document.querySelectorAll('#event-rows tr').length"))
        live = _until("a new event over SSE while the page is open", lambda: browser.execute_script(
            "return document.querySelectorAll('#event-rows tr.live').length"), timeout=40)
        assert live >= 1
        assert int(browser.find_element("id", "live-count").text) >= 1
        assert run.poll() is None, "the run must still be going: the events came from it, live"
    finally:
        if browser is not None:
            browser.quit()
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err[-3000:]
    assert "dashboard on http://127.0.0.1:" in err
