"""Backbones returning {level: feature map} (level l has stride 2**l) or ImageNet logits, built from a
config block by type (the BACKBONES registry of tfdet.modeling.registry):

    build_backbone({"type": "ResNet", "depth": 50, "norm": "frozen_bn", "frozen_stages": 1})

A builder is `fn(**options) -> keras.Model`; its keyword defaults are the block's defaults.
"""

from tfdet.modeling.backbones.fishnet import fishnet
from tfdet.modeling.backbones.resnet import resnet, resnext
from tfdet.modeling.backbones.tiny import tiny_convnet
from tfdet.modeling.registry import BACKBONES, as_dict, construct, register_backbone

for _name, _fn in {"ResNet": resnet, "ResNeXt": resnext, "FishNet": fishnet, "TinyConvNet": tiny_convnet}.items():
    register_backbone(_name, _fn)


def build_backbone(config):
    """Builds a backbone from a dict (or ml_collections.ConfigDict) with a "type" key; the other keys
    are the builder's keyword arguments (an unknown one is refused, naming it)."""
    options = as_dict(config)
    type_name = options.pop("type", None)
    if type_name is None:
        raise ValueError(f"model.backbone: no type; known: {BACKBONES.names()} or 'package.module:Name'.")
    return construct(BACKBONES.get(type_name), f"model.backbone ({type_name})", **options)


__all__ = ["BACKBONES", "build_backbone", "fishnet", "register_backbone", "resnet", "resnext", "tiny_convnet"]
