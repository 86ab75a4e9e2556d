"""The runtime: config, sources, run loop, tracklets, matcher, identity store, events, output."""

from reid.telemetry import decline_openvino_telemetry

decline_openvino_telemetry()  # before any OpenVINO import: a camera system reports nothing to third parties
