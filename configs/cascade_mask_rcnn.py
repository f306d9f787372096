"""Cascade Mask R-CNN R-50-FPN 1x (mmdetection cascade_mask_rcnn_r50_fpn_1x_coco: 41.2 box / 35.9 mask AP).

--config=configs/cascade_mask_rcnn.py:backbone=x101,carafe   (variants: see configs/common.py)
"""

from configs import common


def get_config(arg=None):
    return common.make_config(arg, "CascadeMaskRCNN", {"rpn": common.rpn, "roi": common.cascade_roi,
                                                       "cascade": common.cascade, "mask": common.mask},
                              with_masks=True)
