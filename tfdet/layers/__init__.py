"""Thin, serializable Keras layers built on tfdet.ops."""

from tfdet.layers.roi_align import MultiLevelRoIAlign, assign_fpn_levels

__all__ = ["MultiLevelRoIAlign", "assign_fpn_levels"]
