"""Detectors: thin keras.Model subclasses composing backbone, neck and heads; `build_detector(config)`."""

from tfdet.modeling.detectors.base import Detector
from tfdet.modeling.detectors.cascade import CascadeMaskRCNN, CascadeRCNN, HybridTaskCascade
from tfdet.modeling.detectors.retinanet import RetinaNet
from tfdet.modeling.detectors.rpn import RPN
from tfdet.modeling.detectors.two_stage import FasterRCNN, KeypointRCNN, MaskRCNN

DETECTORS = {"RPN": RPN, "FasterRCNN": FasterRCNN, "MaskRCNN": MaskRCNN, "KeypointRCNN": KeypointRCNN,
             "RetinaNet": RetinaNet, "CascadeRCNN": CascadeRCNN, "CascadeMaskRCNN": CascadeMaskRCNN, "HybridTaskCascade": HybridTaskCascade}


def build_detector(model_config):
    """The detector named by model_config.type, built from model_config."""
    if model_config.type not in DETECTORS:
        raise ValueError(f"build_detector: unknown type {model_config.type!r}; known: {sorted(DETECTORS)}.")
    return DETECTORS[model_config.type](model_config)


__all__ = ["DETECTORS", "CascadeMaskRCNN", "CascadeRCNN", "Detector", "HybridTaskCascade", "FasterRCNN", "KeypointRCNN", "MaskRCNN", "RPN", "RetinaNet", "build_detector"]
