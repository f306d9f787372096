"""Backbones returning {level: feature map} (level l has stride 2**l) or ImageNet logits, and a registry
keyed by config type:

    build_backbone({"type": "ResNet", "depth": 50, "norm": "frozen_bn", "frozen_stages": 1})
"""

from tfdet.modeling.backbones.fishnet import fishnet
from tfdet.modeling.backbones.resnet import resnet, resnext
from tfdet.modeling.backbones.tiny import tiny_convnet

BACKBONES = {"ResNet": resnet, "ResNeXt": resnext, "FishNet": fishnet, "TinyConvNet": tiny_convnet}


def register_backbone(type_name):
    """Decorator adding a builder `fn(**options) -> keras.Model` to the registry under `type_name`."""
    def register(fn):
        if type_name in BACKBONES:
            raise ValueError(f"backbone type '{type_name}' is already registered.")
        BACKBONES[type_name] = fn
        return fn
    return register


def build_backbone(config):
    """Builds a backbone from a dict (or ml_collections.ConfigDict) with a "type" key; the other keys
    are the builder's keyword arguments."""
    options = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    type_name = options.pop("type", None)
    if type_name not in BACKBONES:
        raise ValueError(f"build_backbone: unknown type {type_name!r}; known types: {sorted(BACKBONES)}.")
    return BACKBONES[type_name](**options)


__all__ = ["BACKBONES", "build_backbone", "fishnet", "register_backbone", "resnet", "resnext", "tiny_convnet"]
