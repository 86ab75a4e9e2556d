"""Clothes-changing person ReID: models, methods, data sets, protocols, training, export, inference."""

from reid.telemetry import decline_openvino_telemetry

decline_openvino_telemetry()  # before any OpenVINO import (export, INT8 quantisation, inference)
