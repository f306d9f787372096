"""Mask R-CNN R-50-FPN 1x (mmdetection mask_rcnn_r50_fpn_1x_coco: 38.2 box / 34.7 mask AP).

--config=configs/mask_rcnn.py:backbone=r50,carafe   (variants: see configs/common.py)
"""

from configs import common


def get_config(arg=None):
    return common.make_config(arg, "MaskRCNN", {"rpn": common.rpn, "roi": common.roi, "mask": common.mask},
                              with_masks=True)
