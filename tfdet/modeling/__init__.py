"""Detector components: backbones, necks, dense and RoI heads, detectors."""
