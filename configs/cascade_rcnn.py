"""Cascade R-CNN R-50-FPN 1x (mmdetection cascade_rcnn_r50_fpn_1x_coco: 40.3 box AP).

--config=configs/cascade_rcnn.py:backbone=r101,dcn   (variants: see configs/common.py)
"""

from configs import common


def get_config(arg=None):
    return common.make_config(arg, "CascadeRCNN", {"rpn": common.rpn, "roi": common.cascade_roi,
                                                   "cascade": common.cascade})
