"""Necks: feature pyramids between backbones and heads."""

from tfdet.modeling.necks.fpn import FPN

__all__ = ["FPN"]
