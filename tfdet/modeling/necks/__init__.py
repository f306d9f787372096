"""Necks: feature pyramids between backbones and heads, built from `model.neck` by type (the NECKS
registry of tfdet.modeling.registry; "FPN" by default). A neck is a Keras layer called on the
backbone's {level: map} that returns {level: map}; the block's other keys are its constructor's
arguments."""

from tfdet.modeling.necks.fpn import FPN
from tfdet.modeling.registry import NECKS, as_dict, construct, constructor_defaults, register_neck

register_neck("FPN", FPN)
FPN_DEFAULTS = {"type": "FPN", **constructor_defaults(FPN, skip=("impl",))}


def build_neck(block, impl=None, name="fpn"):
    """The neck of a `model.neck` block; `impl` is the custom-op implementation (model.ops_impl)."""
    options = as_dict(block)
    return construct(NECKS.get(options.pop("type", "FPN")), "model.neck", **options, impl=impl, name=name)


__all__ = ["FPN", "FPN_DEFAULTS", "NECKS", "build_neck", "register_neck"]
