"""The suite's skip policy: only tests marked `gpu` (they need a CUDA GPU) may skip.

A skip anywhere else hides a part that is missing (../shared, GStreamer's RTSP server, `gi` in the venv,
redis-server, mosquitto, ...), and the suite would report green while never exercising it. So a skipped
(or xfailed) test without the `gpu` marker is turned into a failure that keeps the skip's reason, which
names what is missing. tests/conftest.py imports these hooks; tests/test_suite_policy.py checks them.
"""

from __future__ import annotations

import pytest

GPU_MARKER = "gpu"


def _reason(report) -> str:
    if getattr(report, "wasxfail", None) is not None:
        return f"xfail: {report.wasxfail or 'no reason given'}"
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped:
        return
    if item.get_closest_marker(GPU_MARKER) is not None:
        return
    reason = _reason(report)
    report.outcome = "failed"
    report.longrepr = (f"{item.nodeid} would have been skipped, and only tests marked `gpu` may skip "
                       f"(see tests/skip_policy.py). Install or provide what it needs ({reason}); "
                       "`make test` installs the system parts when run as root.")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    # A whole module skipped at import (`pytest.skip(..., allow_module_level=True)`, `pytest.importorskip`) never
    # reaches the hook above: it would pass silently, every test in it unrun. It fails instead, keeping the reason;
    # a GPU test skips inside its own body (or fixture), where the marker can be read.
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        report.outcome = "failed"
        report.longrepr = (f"{collector.nodeid} would have been skipped as a whole at import, and only tests marked "
                           f"`gpu` may skip, each in its own body (see tests/skip_policy.py). Install or provide "
                           f"what it needs ({_reason(report)}).")


def pytest_terminal_summary(terminalreporter):
    # Read from the reports the terminal collected, not from a list kept by the hook above: with pytest-xdist
    # (`make test` runs two workers) the hook runs in the workers and only the reports reach this process.
    # Every skip left after the hook is a GPU test's.
    skipped = [(r.nodeid, _reason(r)) for r in terminalreporter.stats.get("skipped", [])]
    if skipped:
        terminalreporter.write_sep("-", f"skipped: {len(skipped)} GPU tests (the only tests allowed to skip)")
        for nodeid, reason in skipped:
            terminalreporter.write_line(f"{nodeid}: {reason}")
