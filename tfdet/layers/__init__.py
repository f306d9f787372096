"""Thin, serializable Keras layers built on tfdet.ops."""

from tfdet.layers.normalization import FrozenBatchNormalization
from tfdet.layers.roi_align import MultiLevelRoIAlign

__all__ = ["FrozenBatchNormalization", "MultiLevelRoIAlign"]
