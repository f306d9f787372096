"""Thin, serializable Keras layers built on tfdet.ops."""

from tfdet.layers.carafe import CARAFEUpsample, make_upsampler
from tfdet.layers.normalization import FrozenBatchNormalization
from tfdet.layers.roi_align import MultiLevelRoIAlign

__all__ = ["CARAFEUpsample", "FrozenBatchNormalization", "MultiLevelRoIAlign", "make_upsampler"]
