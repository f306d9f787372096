"""Per-RoI heads: box, mask, keypoint and HTC heads with their targets, losses and inference, and the RoI
head specs that compose them, chosen by `model.roi.type` from the ROI_HEADS registry:
"standard" (Faster / Mask / Keypoint R-CNN), "cascade" (Cascade (Mask) R-CNN), "htc" (Hybrid Task
Cascade). Box heads are chosen by `model.roi.box_head.type` from BOX_HEADS ("ConvFC").
"""

from tfdet.modeling.registry import BOX_HEADS, ROI_HEADS, as_dict
from tfdet.modeling.roi_heads.bbox_head import BBoxHead, bbox_detections, bbox_losses, sample_rois
from tfdet.modeling.roi_heads.keypoint_head import COCO_KEYPOINT_FLIP_MAP, COCO_KEYPOINT_NAMES, KeypointHead
from tfdet.modeling.roi_heads.mask_head import MaskHead, mask_targets, paste_masks
from tfdet.modeling.roi_heads.standard import RoIHead, StandardRoIHead
from tfdet.modeling.roi_heads.cascade import CascadeRoIHead, HybridTaskCascadeRoIHead


def build_roi_head(config, num_classes, impl=None, default_type="standard"):
    """The RoI head spec of a model config (type model.roi.type, else `default_type`)."""
    return ROI_HEADS.get(as_dict(config.get("roi")).get("type", default_type))(config, num_classes, impl)


__all__ = ["BBoxHead", "BOX_HEADS", "COCO_KEYPOINT_FLIP_MAP", "COCO_KEYPOINT_NAMES", "CascadeRoIHead",
           "HybridTaskCascadeRoIHead", "KeypointHead", "MaskHead", "ROI_HEADS", "RoIHead", "StandardRoIHead",
           "bbox_detections", "bbox_losses", "build_roi_head", "mask_targets", "paste_masks", "sample_rois"]
