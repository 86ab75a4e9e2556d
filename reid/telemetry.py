"""OpenVINO's usage telemetry, declined for this process.

The first `import openvino` in a process reports it to Google Analytics (openvino_telemetry 2025.2, through
`openvino.tools.ovc`): it assumes consent when no consent file exists (~/intel/openvino_telemetry), writes a
client id and a usage count under ~/intel, and forks a process to send the event. A camera system must not
report its runs to a third party, and a fork beside running threads can deadlock the child; so every process of
this project declines before its first OpenVINO import (`pipeline` and `reid` call this from their package
init). The decline holds for this process only: OpenVINO's own `opt_in_out --opt_out` declines for the user.
"""

from __future__ import annotations

import importlib.util
import logging

log = logging.getLogger(__name__)
_declined = False


def decline_openvino_telemetry() -> bool:
    """Makes OpenVINO's telemetry find consent declined in this process (nothing written, nothing sent). True when
    the telemetry package is installed and now declined; False when it is not installed. Idempotent."""
    global _declined
    if _declined:
        return True
    if importlib.util.find_spec("openvino_telemetry") is None:
        return False
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError as exc:  # a release that moved its consent check: say so rather than send silently
        log.warning("could not decline OpenVINO's telemetry (%s): importing openvino may report usage to Intel; "
                    "run OpenVINO's `opt_in_out --opt_out` to decline it for this user", exc)
        return False

    # The consent check is the one place every sender asks (Telemetry.init sets `consent` from it); declined, no
    # client id is made, no usage counted and no event sent, whatever a caller's dialog and CI settings.
    def declined(self, enable_opt_in_dialog=True, disable_in_ci=False):
        return ConsentCheckResult.DECLINED

    OptInChecker.check = declined
    _declined = True
    return True
