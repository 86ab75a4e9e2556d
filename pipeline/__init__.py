"""The runtime: config, sources, run loop, tracklets, matcher, identity store, events, output."""

from reid.telemetry import decline_vendor_telemetry

decline_vendor_telemetry()  # before any OpenVINO or Ultralytics import: a camera system reports nothing
