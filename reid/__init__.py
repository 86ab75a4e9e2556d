"""Clothes-changing person ReID: models, methods, data sets, protocols, training, export, inference."""
