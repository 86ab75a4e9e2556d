"""Clothes-changing person ReID: models, methods, data sets, protocols, training, export, inference."""

from reid.telemetry import decline_vendor_telemetry

decline_vendor_telemetry()  # before any OpenVINO or Ultralytics import (export, training, inference)
