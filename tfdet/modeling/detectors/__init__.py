"""Detectors: keras.Models composing backbone, neck and heads, built by `build_detector(model_config)`
from the DETECTORS registry (model.type: a registered name, or "package.module:Class" for one defined
outside tfdet). train, evaluate, export and predict all build models through it."""

from tfdet.modeling.detectors.base import Detector
from tfdet.modeling.detectors.families import (RPN, CascadeMaskRCNN, CascadeRCNN, FasterRCNN, HybridTaskCascade,
                                               KeypointRCNN, MaskRCNN, RetinaNet)
from tfdet.modeling.registry import DETECTORS, as_dict, register_detector


def build_detector(model_config, build=True):
    """The detector of `model_config` (its class: model.type), built (every weight created) unless
    build=False. The class is constructed as `Class(model_config)`."""
    type_name = as_dict(model_config).get("type")
    if type_name is None:
        raise ValueError(f"model.type: missing; known: {DETECTORS.names()} or 'package.module:Class'.")
    model = DETECTORS.get(type_name)(model_config)
    if build and not model.built:
        model.build(None)
    return model


__all__ = ["CascadeMaskRCNN", "CascadeRCNN", "DETECTORS", "Detector", "FasterRCNN", "HybridTaskCascade",
           "KeypointRCNN", "MaskRCNN", "RPN", "RetinaNet", "build_detector", "register_detector"]
