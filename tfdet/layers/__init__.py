"""Thin, serializable Keras layers built on tfdet.ops."""

from tfdet.layers.carafe import CARAFEUpsample, make_upsampler
from tfdet.layers.deform_conv import DeformConv2D, ModulatedDeformConv2D
from tfdet.layers.deform_roi_pool import DeformRoIPool, ModulatedDeformRoIPoolPack
from tfdet.layers.grouped_conv import GroupedConv2D
from tfdet.layers.normalization import FrozenBatchNormalization
from tfdet.layers.roi_align import MultiLevelRoIAlign

__all__ = ["CARAFEUpsample", "DeformConv2D", "DeformRoIPool", "FrozenBatchNormalization", "GroupedConv2D",
           "ModulatedDeformConv2D", "ModulatedDeformRoIPoolPack", "MultiLevelRoIAlign", "make_upsampler"]
