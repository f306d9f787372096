"""Per-RoI heads: box, mask and keypoint heads with their targets, losses and inference."""

from tfdet.modeling.roi_heads.bbox_head import BBoxHead, bbox_detections, bbox_losses, sample_rois
from tfdet.modeling.roi_heads.keypoint_head import COCO_KEYPOINT_FLIP_MAP, COCO_KEYPOINT_NAMES, KeypointHead
from tfdet.modeling.roi_heads.mask_head import MaskHead, mask_targets, paste_masks

__all__ = ["BBoxHead", "COCO_KEYPOINT_FLIP_MAP", "COCO_KEYPOINT_NAMES", "KeypointHead", "MaskHead", "bbox_detections",
           "bbox_losses", "mask_targets", "paste_masks", "sample_rois"]
