"""Vendor usage telemetry declined for this process: OpenVINO's and Ultralytics'.

* The first `import openvino` in a process reports it to Google Analytics (openvino_telemetry 2025.2, through
  `openvino.tools.ovc`): it assumes consent when no consent file exists (~/intel/openvino_telemetry), writes a
  client id and a usage count under ~/intel, and forks a process to send the event.
* `import ultralytics` resolves two public DNS names to learn whether it is online (a lookup that can stall a
  start on a network with a slow resolver); online, its predictions and exports send usage events.

A camera system must not report its runs to third parties, nor fork beside running threads (the child can
deadlock); so every process of this project declines both before its first import of either (`pipeline` and
`reid` call this from their package init). For this process only: OpenVINO's `opt_in_out --opt_out` declines it
for the user, and `YOLO_OFFLINE=0` in the environment turns Ultralytics' online check back on.
"""

from __future__ import annotations

import importlib.util
import logging
import os

log = logging.getLogger(__name__)
_declined = False


def decline_vendor_telemetry() -> None:
    """OpenVINO's telemetry finds consent declined (nothing written, nothing sent) and Ultralytics runs offline
    (`YOLO_OFFLINE`, unless the environment sets it). Idempotent; a release that moved OpenVINO's consent check is
    named in the log rather than left to send silently."""
    global _declined
    if _declined:
        return
    _declined = True
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if importlib.util.find_spec("openvino_telemetry") is None:
        return
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError as exc:
        log.warning("could not decline OpenVINO's telemetry (%s): importing openvino may report usage to Intel; "
                    "run OpenVINO's `opt_in_out --opt_out` to decline it for this user", exc)
        return

    # The consent check is the one place every sender asks (Telemetry.init sets `consent` from it); declined, no
    # client id is made, no usage counted and no event sent, whatever a caller's dialog and CI settings.
    def declined(self, enable_opt_in_dialog=True, disable_in_ci=False):
        return ConsentCheckResult.DECLINED

    OptInChecker.check = declined
