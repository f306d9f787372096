"""Backbones returning {level: feature map} (level l has stride 2**l) or ImageNet logits, built from a
config block by type (the BACKBONES registry of tfdet.modeling.registry):

    build_backbone({"type": "ResNet", "depth": 50, "norm": "frozen_bn", "frozen_stages": 1})

A builder is `fn(**options) -> keras.Model`; its keyword defaults are the block's defaults.
"""

import inspect

from tfdet.modeling.backbones.fishnet import fishnet
from tfdet.modeling.backbones.resnet import resnet, resnext
from tfdet.modeling.backbones.tiny import tiny_convnet
from tfdet.modeling.registry import BACKBONES, as_dict, register_backbone

for _name, _fn in {"ResNet": resnet, "ResNeXt": resnext, "FishNet": fishnet, "TinyConvNet": tiny_convnet}.items():
    register_backbone(_name, _fn)


def build_backbone(config):
    """Builds a backbone from a dict (or ml_collections.ConfigDict) with a "type" key; the other keys
    are the builder's keyword arguments (an unknown one is refused, naming it)."""
    options = as_dict(config)
    type_name = options.pop("type", None)
    if type_name is None:
        raise ValueError(f"model.backbone: no type; known: {BACKBONES.names()} or 'package.module:Name'.")
    builder = BACKBONES.get(type_name)
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise ValueError(f"model.backbone ({type_name}): unknown field(s) {unknown}; known: "
                             f"{sorted(k for k in params if k != 'self')}.")
    try:
        return builder(**options)
    except TypeError as err:  # a builder taking **kwargs passes them on
        if "unexpected keyword" not in str(err):
            raise
        raise ValueError(f"model.backbone ({type_name}): {err}.") from err


__all__ = ["BACKBONES", "build_backbone", "fishnet", "register_backbone", "resnet", "resnext", "tiny_convnet"]
