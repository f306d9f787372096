"""Serving: SavedModel export for TF Serving (ServingModule, export) and prediction clients."""

from tfdet.serving.export import build_serving_model, export, next_version
from tfdet.serving.module import INPUT_TYPES, MASK_OUTPUTS, ServingModule

__all__ = ["INPUT_TYPES", "MASK_OUTPUTS", "ServingModule", "build_serving_model", "export", "next_version"]
